//! The sharded KV served by real `shardcore server` processes on 127.0.0.1: three sharded nodes
//! (every node hosts the controller and every shard group), groups joined through
//! `shardcore ctl`, then concurrent clients on the sharded path while the controller moves
//! shards around — joins, moves, leaves — and a kill -9 of a group's leader right after a
//! change is committed, while the groups are pulling the shards it moved.
//!
//! How it checks: every operation is recorded; the history must be linearizable and every
//! acknowledged append must be in the final values (the checking workload of
//! `shardcore::client::workload`, as `tests/cluster_kv.rs` uses it). Then, once the moves
//! settle, each group must serve exactly its shards of the latest configuration: a get sent
//! straight to a group (no routing) answers for the owner and is `WrongShard` everywhere else,
//! for a key of every shard. Waits are bounded by conditions (the client's deadlines, a settle
//! deadline); processes and directories are removed when the cluster is dropped.
//!
//! Two more tests are about size: a shard many log entries large moves in parts, is served
//! intact by its new owner and leaves the old owner's disk; and the one part the node still
//! refuses (a single value larger than an entry may hold) is refused by name.
//!
//! `SEED=<n>` fixes the workload's operation mix; `KEEP_CLUSTER_DIRS=1` keeps data and logs.

mod cluster_support;

use std::collections::BTreeMap;
use std::thread::sleep;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cluster_support::{assert_clean, with_client, TestCluster, GROUPS};
use shardcore::client::{Client, ClientConfig, ClientError};
use shardcore::raft::{GroupId, NodeId};
use shardcore::shardctl::{Config, CtlOp, CtlReply, Replica, LATEST};
use shardcore::shardkv::key_to_shard;

/// Few shards, so the workload's handful of keys share shards and every move hits some of them.
const SHARDS: usize = 8;
/// Operations the workload completes between two configuration changes or faults: about a
/// second of it on a quiet machine, so each change lands after the same amount of work.
const LOAD_OPS: u64 = 3000;
/// The workload's duration: only an upper bound, since it stops once the faults are done.
const PACED_LIMIT_SECS: u64 = 120;

fn seed() -> u64 {
    std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

fn every_node() -> Vec<Replica> {
    (1..=3).map(Replica::on).collect()
}

/// One controller change through the client library; returns the controller leader it found
/// (to kill it mid-migration).
fn change(cluster: &TestCluster, op: CtlOp) -> Option<NodeId> {
    let what = format!("{op:?}");
    let (result, leader) = cluster.ctl(op);
    match result {
        Ok(CtlReply::Changed { num }) => eprintln!("controller: {what} made config {num}"),
        other => panic!("{what}: {other:?}"),
    }
    leader
}

fn latest(cluster: &TestCluster) -> Config {
    match cluster.ctl(CtlOp::Query { num: LATEST }).0 {
        Ok(CtlReply::Config(config)) => config,
        other => panic!("query: {other:?}"),
    }
}

/// A key of every shard.
fn probe_keys() -> Vec<Bytes> {
    let mut keys: Vec<Option<Bytes>> = vec![None; SHARDS];
    for i in 0..10_000 {
        let key = format!("probe-{i}");
        let shard = key_to_shard(key.as_bytes(), SHARDS) as usize;
        keys[shard].get_or_insert_with(|| Bytes::from(key));
        if keys.iter().all(Option::is_some) {
            break;
        }
    }
    keys.into_iter()
        .map(|k| k.expect("a key for every shard"))
        .collect()
}

/// Sends a get for every probe key straight to every group (no routing) and lists what
/// disagrees with `config`: an owner that refuses, or another group that serves.
fn ownership_mismatches(client_config: ClientConfig, config: &Config) -> Vec<String> {
    let owners: Vec<GroupId> = config.shards.clone();
    let runtime = shardcore_io::RuntimeConfig {
        cores: 1,
        pinning: shardcore_io::runtime::Pinning::Unpinned,
        name: "test-probe".to_string(),
        ..shardcore_io::RuntimeConfig::default()
    };
    let mut outputs = shardcore_io::run(runtime, move |_core: shardcore_io::Core<()>| {
        let client_config = client_config.clone();
        let owners = owners.clone();
        async move {
            let client = Client::new(client_config).expect("client config");
            let mut wrong = Vec::new();
            for (shard, key) in probe_keys().into_iter().enumerate() {
                for group in 1..=GROUPS {
                    let owner = owners[shard] == group;
                    let answer = client.get_from_group(group, key.clone()).await;
                    let fine = match &answer {
                        Ok(_) => owner,
                        Err(ClientError::WrongShard { .. }) => !owner,
                        Err(_) => false,
                    };
                    if !fine {
                        wrong.push(format!(
                            "shard {shard} (owner g{}): g{group} answered {answer:?}",
                            owners[shard]
                        ));
                    }
                }
            }
            wrong
        }
    })
    .expect("client runtime");
    outputs.pop().expect("one core's output")
}

/// The node leading shard group `group` now: a write to a key of a shard `config` gives it is
/// answered by the group's leader only (followers refuse writes with a hint), and the client
/// caches who answered.
fn group_leader(cluster: &TestCluster, config: &Config, group: GroupId) -> NodeId {
    let shard = config
        .shards
        .iter()
        .position(|&g| g == group)
        .unwrap_or_else(|| panic!("g{group} holds no shard in config {}", config.num));
    let key = probe_keys()[shard].clone();
    let client_config = cluster.client_config();
    let runtime = shardcore_io::RuntimeConfig {
        cores: 1,
        pinning: shardcore_io::runtime::Pinning::Unpinned,
        name: "test-leader".to_string(),
        ..shardcore_io::RuntimeConfig::default()
    };
    let mut outputs = shardcore_io::run(runtime, move |_core: shardcore_io::Core<()>| {
        let (client_config, key) = (client_config.clone(), key.clone());
        async move {
            let client = Client::new(client_config).expect("client config");
            let written = client.put(key, Bytes::from_static(b"probe")).await;
            (written, client.leader_hint(group))
        }
    })
    .expect("client runtime");
    match outputs.pop().expect("one core's output") {
        (Ok(()), Some(leader)) => leader,
        other => panic!("finding g{group}'s leader: {other:?}"),
    }
}

/// Waits (bounded) until every group serves exactly its shards of the latest configuration.
fn assert_groups_serve_their_shards(cluster: &TestCluster) {
    let config = latest(cluster);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut client_config = cluster.client_config();
    client_config.op_timeout = Duration::from_secs(5);
    loop {
        let wrong = ownership_mismatches(client_config.clone(), &config);
        if wrong.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "after 30 s the groups still disagree with config {}:\n{}\n{}",
            config.num,
            wrong.join("\n"),
            cluster.log_tail(1)
        );
        sleep(Duration::from_millis(200));
    }
}

/// Joins, moves and leaves while six clients run the checking workload on the sharded path;
/// kill -9 of a gaining group's leader right after a leave commits (its shards are moving),
/// then of the leaving group's leader, each restarted. Linearizable, no acknowledged write
/// lost, final reads fine, and then each group serves exactly its shards.
#[test]
fn shards_move_under_load_and_kill_nine_linearizably() {
    let seed = seed();
    let mut cluster = TestCluster::start_sharded("shardkv", 3, SHARDS);

    let (code, out, err) = cluster.ctl_cli(&["join", "1", "2", "3"]);
    assert_eq!(code, 0, "join: {err}");
    assert_eq!(out, "config 1: joined g1, g2, g3\n");
    // The command-line client on the sharded path, through the first migration (from group 0:
    // nothing to pull).
    let (code, out, err) = cluster.kv_cli(&["put", "greeting", "hello"]);
    assert_eq!((code, out.as_str()), (0, "OK\n"), "kv put: {err}");
    let (code, out, err) = cluster.kv_cli(&["get", "greeting"]);
    assert_eq!((code, out.as_str()), (0, "hello\n"), "kv get: {err}");

    let mut config = cluster.workload_config(6, PACED_LIMIT_SECS, seed);
    config.keys = 8;
    let report = cluster.run_paced(config, |c| {
        c.await_progress(LOAD_OPS);
        change(
            c,
            CtlOp::Join {
                groups: BTreeMap::from([(4, every_node())]),
            },
        );
        c.await_progress(LOAD_OPS);
        change(c, CtlOp::Move { shard: 0, group: 2 });
        change(c, CtlOp::Move { shard: 1, group: 4 });
        c.await_progress(LOAD_OPS);
        // Group 2's shards move to the others. Kill the leader of a group that gains some as
        // soon as the leave is committed, so its pulls, installs and the old owner's deletes
        // go on under a new leader.
        let before = latest(c);
        let after = before.leave(&[2]).expect("g2 may leave");
        // A gainer that holds shards already, so a write finds its leader before the leave.
        let gainer = (0..SHARDS)
            .filter(|&s| before.shards[s] == 2 && after.shards[s] != 2)
            .map(|s| after.shards[s])
            .find(|g| before.shards.contains(g))
            .expect("g2's shards go to groups that hold some");
        let leader = group_leader(c, &before, gainer);
        change(c, CtlOp::Leave { groups: vec![2] });
        c.kill(leader);
        eprintln!("killed node {leader}, g{gainer}'s leader, as g2 left");
        c.await_progress(LOAD_OPS);
        c.restart(leader);
        c.await_progress(LOAD_OPS);
        change(
            c,
            CtlOp::Join {
                groups: BTreeMap::from([(2, every_node())]),
            },
        );
        c.await_progress(LOAD_OPS);
        // Group 1 leaves; the leader of group 1 itself (the old owner, answering pulls and
        // waiting to delete) dies at once.
        let before = latest(c);
        let leader = group_leader(c, &before, 1);
        change(c, CtlOp::Leave { groups: vec![1] });
        c.kill(leader);
        eprintln!("killed node {leader}, g1's leader, as g1 left");
        c.await_progress(LOAD_OPS);
        c.restart(leader);
        c.await_progress(LOAD_OPS);
    });
    assert_clean(&cluster, seed, &report);
    let stats = report.client_stats;
    eprintln!("client: {stats:?}");
    // The clients met the moves: some request reached a group that no longer (or not yet)
    // served its shard, and was sent again elsewhere.
    assert!(
        stats.wrong_shard > 0 && stats.router_refreshes > 1,
        "the workload never saw a shard move: {stats:?}"
    );
    assert_groups_serve_their_shards(&cluster);

    let (code, out, err) = cluster.kv_cli(&["get", "greeting"]);
    assert_eq!(
        (code, out.as_str()),
        (0, "hello\n"),
        "the first write survived every move: {err}"
    );
}

/// `count` keys of shard `shard`, named with `prefix`.
fn keys_of(shard: u32, prefix: &str, count: usize) -> Vec<Bytes> {
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .filter(|k| key_to_shard(k.as_bytes(), SHARDS) == shard)
        .take(count)
        .map(Bytes::from)
        .collect()
}

/// The value the big-shard test writes at key `i`: every byte depends on `i`, so a value
/// installed at the wrong key, cut short or repeated would not match.
fn big_value(i: usize, bytes: usize) -> Bytes {
    (0..bytes)
        .map(|j| (i.wrapping_mul(31).wrapping_add(j) % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

/// Bytes of group `group`'s snapshot files on node `id` (its latest snapshot; 0 if none).
fn snapshot_bytes(cluster: &TestCluster, id: u64, group: GroupId) -> u64 {
    let dir = cluster.configs[id as usize - 1]
        .data_dir
        .join("core-0")
        .join("snap");
    let prefix = format!("snap-{group}-");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with(&prefix) && name.ends_with(".snap")
        })
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// Waits (bounded) until `group` serves `key` when asked directly (no routing).
fn wait_served(cluster: &TestCluster, group: GroupId, key: Bytes, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut client_config = cluster.client_config();
    client_config.op_timeout = Duration::from_secs(2);
    loop {
        let asked = key.clone();
        let answer = with_client(client_config.clone(), move |client| {
            let key = asked.clone();
            async move { client.get_from_group(group, key).await }
        });
        if answer.is_ok() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "g{group} does not serve {key:?} after {limit:?}: {answer:?}\n{}",
            cluster.log_tail(1)
        );
        sleep(Duration::from_millis(50));
    }
}

/// A shard much larger than one log entry moves between groups, in parts. With the test nodes'
/// 1 MiB WAL segments an entry holds at most 512 KiB; the shard holds 12.5 MiB (128 values of
/// 100 KiB), more than the old single-entry bound (8 MiB) and about 25 parts of the node's
/// part size. The new owner serves it with every value intact; the old owner deletes its
/// frozen copy: it moves on to the next configuration (which it applies only once it holds no
/// shard it gave away) and its snapshots shrink from the shard's size to what it still serves.
/// No node stops, and nothing is refused.
#[test]
fn a_shard_larger_than_a_log_entry_moves_in_parts() {
    let mut cluster = TestCluster::start_with("shardkv-big", 3, 1, |config| {
        config.sharded = true;
        config.shards = SHARDS;
        // Snapshots every MiB of log, so both owners snapshot while the shard is loaded and
        // moved, and the old owner's snapshot after the move shows what it still holds.
        config.kv.max_raft_state_bytes = 1 << 20;
    });
    let (code, _, err) = cluster.ctl_cli(&["join", "1", "2"]);
    assert_eq!(code, 0, "join: {err}");
    let big_shard = 3;
    const VALUES: usize = 128;
    const VALUE_BYTES: usize = 100 << 10;
    let keys = keys_of(big_shard, "big", VALUES);
    let loaded = {
        let keys = keys.clone();
        with_client(cluster.client_config(), move |client| {
            let keys = keys.clone();
            async move {
                for (i, key) in keys.into_iter().enumerate() {
                    client.put(key, big_value(i, VALUE_BYTES)).await?;
                }
                Ok::<(), ClientError>(())
            }
        })
    };
    loaded.expect("the big shard loads");
    let config = latest(&cluster);
    let owner = config.shards[big_shard as usize];
    let to = if owner == 1 { 2 } else { 1 };
    let frozen_bytes = (1..=3)
        .map(|id| snapshot_bytes(&cluster, id, owner))
        .max()
        .unwrap_or(0);
    eprintln!("g{owner}'s largest snapshot before the move: {frozen_bytes} bytes");
    assert!(
        frozen_bytes > 8 << 20,
        "the old owner's snapshots hold the shard ({frozen_bytes} bytes)"
    );
    let (code, _, err) = cluster.ctl_cli(&["move", &big_shard.to_string(), &to.to_string()]);
    assert_eq!(code, 0, "move: {err}");
    let took = wait_served(&cluster, to, keys[0].clone(), Duration::from_secs(120));
    eprintln!(
        "g{to} serves the {} byte shard {took:?} after the move",
        VALUES * VALUE_BYTES
    );
    let checked = {
        let keys = keys.clone();
        with_client(cluster.client_config(), move |client| {
            let keys = keys.clone();
            async move {
                let mut wrong = Vec::new();
                for (i, key) in keys.into_iter().enumerate() {
                    match client.get_from_group(to, key.clone()).await {
                        Ok(Some(value)) if value == big_value(i, VALUE_BYTES) => {}
                        other => {
                            wrong.push(format!("{key:?}: {:?}", other.map(|v| v.map(|v| v.len()))))
                        }
                    }
                }
                wrong
            }
        })
    };
    assert!(
        checked.is_empty(),
        "values wrong after the move: {checked:?}"
    );
    // The old owner applies the next configuration only with no frozen shard left: a shard
    // moved to it is served only after it deleted the big one.
    let other = (0..SHARDS as u32)
        .find(|&s| s != big_shard && config.shards[s as usize] == to)
        .unwrap_or_else(|| panic!("g{to} owns some shard besides the moved one: {config:?}"));
    let (code, _, err) = cluster.ctl_cli(&["move", &other.to_string(), &owner.to_string()]);
    assert_eq!(code, 0, "move back: {err}");
    let small_key = keys_of(other, "small", 1).remove(0);
    wait_served(&cluster, owner, small_key.clone(), Duration::from_secs(60));
    // A MiB of overwrites of one key of that shard makes the old owner snapshot again: its
    // snapshots shrink to what it holds now.
    let written = with_client(cluster.client_config(), move |client| {
        let key = small_key.clone();
        async move {
            for i in 0..4 {
                client.put(key.clone(), big_value(i, 300 << 10)).await?;
            }
            Ok::<(), ClientError>(())
        }
    });
    written.expect("overwrites");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let sizes: Vec<u64> = (1..=3)
            .map(|id| snapshot_bytes(&cluster, id, owner))
            .collect();
        if sizes.iter().all(|&b| b > 0 && b < 2 << 20) {
            eprintln!("g{owner}'s snapshots after the move: {sizes:?} bytes");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "g{owner}'s snapshots still hold {sizes:?} bytes\n{}",
            cluster.log_tail(1)
        );
        sleep(Duration::from_millis(100));
    }
    for id in 1..=3 {
        let log = std::fs::read_to_string(cluster.log_file(id)).unwrap_or_default();
        assert!(
            !log.contains("cannot hand over") && !log.contains("cannot install"),
            "node {id} refused a part:\n{}",
            cluster.log_tail(id)
        );
    }
    assert_nodes_running(&mut cluster);
}

/// The one transfer the node still refuses: a part that cannot be cut smaller than a log entry
/// may hold, i.e. a single key whose value (grown by appends of 100 KiB) is larger than the
/// test nodes' 512 KiB entries. It is refused by name, not dropped and not allowed to stop a
/// node: the move stays unfinished, the node logs which shard and why, and every other shard is
/// served on.
#[test]
fn a_pair_larger_than_a_log_entry_is_refused_with_a_clear_error() {
    let mut cluster = TestCluster::start_sharded("shardkv-oversize", 3, SHARDS);
    let (code, _, err) = cluster.ctl_cli(&["join", "1", "2"]);
    assert_eq!(code, 0, "join: {err}");
    // Six appends of 100 KiB to one key (an argument may take at most 128 KiB): 600 KiB, over
    // the 512 KiB an entry may hold.
    let big_shard = 3;
    let key = String::from_utf8(keys_of(big_shard, "big", 1).remove(0).to_vec()).expect("utf-8");
    let chunk = "x".repeat(100 << 10);
    for _ in 0..6 {
        let (code, _, err) = cluster.kv_cli(&["append", &key, &chunk]);
        assert_eq!(code, 0, "append {key}: {err}");
    }
    let config = latest(&cluster);
    let owner = config.shards[big_shard as usize];
    let to = if owner == 1 { 2 } else { 1 };
    let (code, _, err) = cluster.ctl_cli(&["move", &big_shard.to_string(), &to.to_string()]);
    assert_eq!(code, 0, "move: {err}");
    let wanted = format!("group {owner} cannot hand over shard {big_shard}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let logged = loop {
        let found = (1..=3).find(|&id| {
            std::fs::read_to_string(cluster.log_file(id)).is_ok_and(|log| log.contains(&wanted))
        });
        if found.is_some() || Instant::now() >= deadline {
            break found;
        }
        sleep(Duration::from_millis(100));
    };
    assert!(
        logged.is_some(),
        "no node logged {wanted:?}:\n{}",
        cluster.log_tail(1)
    );
    // Every other shard is served on, and no node stopped.
    let other = (0..10_000)
        .map(|i| format!("small-{i}"))
        .find(|k| key_to_shard(k.as_bytes(), SHARDS) != big_shard)
        .expect("a key of another shard");
    let (code, out, err) = cluster.kv_cli(&["put", &other, "fine"]);
    assert_eq!((code, out.as_str()), (0, "OK\n"), "put {other}: {err}");
    let (code, out, err) = cluster.kv_cli(&["get", &other]);
    assert_eq!((code, out.as_str()), (0, "fine\n"), "get {other}: {err}");
    assert_nodes_running(&mut cluster);
}

/// No node of `cluster` has stopped.
fn assert_nodes_running(cluster: &mut TestCluster) {
    let logs: Vec<String> = (1..=cluster.children.len() as u64)
        .map(|id| cluster.log_tail(id))
        .collect();
    for (i, child) in cluster.children.iter_mut().enumerate() {
        let child = child.as_mut().expect("started");
        assert!(
            matches!(child.try_wait(), Ok(None)),
            "node {} stopped:\n{}",
            i + 1,
            logs[i]
        );
    }
}
