//! Real processes: clusters of the `shardcore` binary on 127.0.0.1, concurrent clients whose
//! histories are checked for linearizability and for lost acknowledged writes, under kill -9 of
//! single nodes and of every node at once, SIGSTOP/SIGCONT pauses (a partition without root),
//! graceful SIGTERM, and bad input on the client port.
//!
//! `SEED=<n>` fixes the workload's operation mix; failures print `SEED=` and save the history.
//! `KEEP_CLUSTER_DIRS=1` keeps the nodes' data and logs.

mod cluster_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread::sleep;
use std::time::Duration;

use bytes::Bytes;
use cluster_support::{assert_clean, TestCluster, GROUPS, PROGRESS_LIMIT};
use shardcore::node::placement::group_for_key;

/// Operations the workload completes between two faults: about a second of it on a quiet
/// machine, longer on a loaded one, so each fault lands after the same amount of work.
const LOAD_OPS: u64 = 3000;

/// The paced tests' workload duration: only an upper bound, since the workload stops once the
/// faults are done (each wait for progress is bounded by `PROGRESS_LIMIT` as well).
const PACED_LIMIT_SECS: u64 = 120;

fn seed() -> u64 {
    std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

#[test]
fn three_nodes_serve_linearizably() {
    let seed = seed();
    let mut cluster = TestCluster::start("three-basic", 3);
    let config = cluster.workload_config(6, 5, seed);
    let report = cluster.run_with(config, |_| {});
    assert_clean(&cluster, seed, &report);
}

#[test]
fn kill_nine_each_node_in_turn() {
    let seed = seed();
    let mut cluster = TestCluster::start("kill-each", 3);
    let config = cluster.workload_config(6, PACED_LIMIT_SECS, seed);
    let report = cluster.run_paced(config, |c| {
        // Every node leads some groups and follows in others, so each kill takes out leaders
        // and followers at once; the other two serve on while it is down.
        for id in 1..=3 {
            c.await_progress(LOAD_OPS);
            c.kill(id);
            c.await_progress(LOAD_OPS);
            c.restart(id);
        }
        c.await_progress(LOAD_OPS);
    });
    assert_clean(&cluster, seed, &report);
}

#[test]
fn kill_nine_every_node_at_once_then_restart() {
    let seed = seed();
    let mut cluster = TestCluster::start("kill-all", 3);
    let config = cluster.workload_config(6, PACED_LIMIT_SECS, seed);
    let report = cluster.run_paced(config, |c| {
        for _ in 0..2 {
            c.await_progress(LOAD_OPS);
            for id in 1..=3 {
                c.kill(id);
            }
            // The outage itself: nothing can make progress while every node is down, so its
            // length is a chosen duration, not a wait for a condition.
            sleep(Duration::from_millis(500));
            for id in 1..=3 {
                c.spawn(id);
            }
            for id in 1..=3 {
                c.wait_up(id);
            }
        }
        c.await_progress(LOAD_OPS);
    });
    assert_clean(&cluster, seed, &report);
}

#[test]
fn paused_nodes_make_partitions() {
    let seed = seed();
    let mut cluster = TestCluster::start("pause", 3);
    let config = cluster.workload_config(6, PACED_LIMIT_SECS, seed);
    let report = cluster.run_paced(config, |c| {
        for id in [1, 2, 3, 1] {
            c.await_progress(LOAD_OPS);
            c.pause(id);
            c.await_progress(LOAD_OPS);
            c.resume(id);
        }
        c.await_progress(LOAD_OPS);
    });
    assert_clean(&cluster, seed, &report);
}

#[test]
fn five_nodes_survive_two_failures() {
    let seed = seed();
    let mut cluster = TestCluster::start("five", 5);
    let config = cluster.workload_config(6, PACED_LIMIT_SECS, seed);
    let report = cluster.run_paced(config, |c| {
        c.await_progress(LOAD_OPS);
        c.kill(1);
        c.pause(2);
        c.await_progress(2 * LOAD_OPS);
        c.resume(2);
        c.restart(1);
        c.await_progress(LOAD_OPS);
        c.kill(4);
        c.kill(5);
        c.await_progress(LOAD_OPS);
        c.restart(4);
        c.restart(5);
        c.await_progress(LOAD_OPS);
    });
    assert_clean(&cluster, seed, &report);
}

/// `raft.preferred_leader = 2`: killed under load, node 2's groups move to the others and the
/// clients follow them; restarted, it catches up and takes every group back. The history stays
/// linearizable and no acknowledged write is lost across both hand-overs.
#[test]
fn a_preferred_leader_killed_and_restarted_leads_every_group_again() {
    let seed = seed();
    let mut cluster = TestCluster::start_with("preferred", 3, 1, |config| {
        config.raft.preferred_leader = 2;
    });
    assert_eq!(
        leaders_within(&cluster, PROGRESS_LIMIT),
        vec![Some(2); GROUPS as usize]
    );
    let config = cluster.workload_config(6, PACED_LIMIT_SECS, seed);
    let report = cluster.run_paced(config, |c| {
        c.await_progress(LOAD_OPS);
        c.kill(2);
        c.await_progress(LOAD_OPS);
        c.restart(2);
        c.await_progress(LOAD_OPS);
    });
    assert_clean(&cluster, seed, &report);
    assert_eq!(
        leaders_within(&cluster, PROGRESS_LIMIT),
        vec![Some(2); GROUPS as usize],
        "node 2 leads every group again"
    );
}

/// The node leading each group, as one put per group finds it; asked again until node 2
/// leads them all or `limit` passes (each leader hands over at the end of a check period).
fn leaders_within(cluster: &TestCluster, limit: Duration) -> Vec<Option<u64>> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let leaders = leaders_now(cluster);
        if leaders.iter().all(|l| *l == Some(2)) || std::time::Instant::now() > deadline {
            return leaders;
        }
        sleep(Duration::from_millis(200));
    }
}

fn leaders_now(cluster: &TestCluster) -> Vec<Option<u64>> {
    cluster_support::with_client(cluster.client_config(), |client| async move {
        let mut leaders = Vec::new();
        for group in 1..=GROUPS {
            // A key of this group: the first whose hash lands there.
            let key = (0u64..)
                .map(|i| format!("leader-probe-{i}"))
                .find(|k| group_for_key(k.as_bytes(), GROUPS) == group)
                .expect("some key lands in every group");
            let put = client.put(key.into(), Bytes::from_static(b"x")).await;
            leaders.push(put.ok().and_then(|()| client.leader_hint(group)));
        }
        leaders
    })
}

#[test]
fn sigterm_drains_and_exits_zero_and_data_survives() {
    let seed = seed();
    let mut cluster = TestCluster::start("sigterm", 3);
    let config = cluster.workload_config(4, 3, seed);
    let first = cluster.run_with(config, |_| {});
    assert_clean(&cluster, seed, &first);
    for id in 1..=3 {
        assert!(
            cluster.stop_gracefully(id),
            "node {id} did not exit 0 on SIGTERM; log:\n{}",
            cluster.log_tail(id)
        );
    }
    for id in 1..=3 {
        cluster.spawn(id);
    }
    for id in 1..=3 {
        cluster.wait_up(id);
    }
    // The second run starts from the first run's data: its history, placed after the first's,
    // must linearize with it (a read that missed a first-run write would not).
    let config = cluster.workload_config(4, 3, seed + 1);
    let second = cluster.run_with(config, |_| {});
    let shift = first
        .history
        .iter()
        .map(|op| op.return_ns)
        .max()
        .unwrap_or(0)
        + 1;
    let mut both = second.clone();
    both.history = first.history.clone();
    both.history
        .extend(second.history.iter().cloned().map(|mut op| {
            op.call_ns += shift;
            op.return_ns += shift;
            op
        }));
    both.completed += first.completed;
    both.acknowledged_writes += first.acknowledged_writes;
    assert_clean(&cluster, seed, &both);
}

/// Writes `bytes` on a fresh client connection and expects the node to close it.
fn expect_closed(addr: std::net::SocketAddr, bytes: &[u8], what: &str) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let _ = stream.write_all(bytes);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("{what}: the node answered {n} bytes instead of closing"),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("{what}: the connection was not closed: {e}"),
    }
}

#[test]
fn bad_frames_close_one_connection_and_the_node_serves_on() {
    let seed = seed();
    let mut cluster = TestCluster::start("bad-input", 3);
    let addr = cluster.configs[0].client_addr;
    // A client that holds a good connection open throughout.
    let config = cluster.workload_config(3, PACED_LIMIT_SECS, seed);
    let report = cluster.run_paced(config, |c| {
        c.await_progress(LOAD_OPS / 4);
        expect_closed(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "garbage");
        let mut header = Vec::new();
        header.extend_from_slice(b"SHCR");
        header.extend_from_slice(&[1, 3, 0, 0]);
        header.extend_from_slice(&u32::MAX.to_le_bytes());
        header.extend_from_slice(&[0, 0, 0, 0]);
        expect_closed(addr, &header, "oversize length");
        let mut truncated = header.clone();
        truncated[8..12].copy_from_slice(&100u32.to_le_bytes());
        expect_closed(addr, &truncated[..14], "truncated header");
        expect_closed(addr, &truncated, "bad checksum / truncated body");
        let mut frame = bytes::BytesMut::new();
        shardcore_protocol::encode(
            shardcore_protocol::FrameKind::Hello,
            b"not flatbuffers",
            &mut frame,
        )
        .expect("encode");
        expect_closed(addr, &frame, "a hello that fails the verifier");
        // Everyone else is still served.
        c.await_progress(LOAD_OPS / 4);
    });
    assert_clean(&cluster, seed, &report);
    let log = std::fs::read_to_string(cluster.log_file(1)).unwrap_or_default();
    assert!(
        log.contains("closing a client connection"),
        "the node did not log why it closed the bad connections:\n{}",
        cluster.log_tail(1)
    );
}
