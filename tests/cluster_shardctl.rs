//! The shard controller served by real `shardcore server` processes on 127.0.0.1: every node
//! hosts the controller's group beside its KV groups, and `shardcore ctl` (and the client
//! library) drive it over the client port.
//!
//! How it checks: every change is also applied locally with the controller's own pure
//! functions (`Config::join`, `leave`, `move_shard`), so the expected history is known exactly;
//! after a kill -9 of the controller's leader mid-sequence and after a restart of every node,
//! each historical config read back must equal the expected one and the latest number must be
//! the count of changes made — a change applied twice, or lost, would show as a config too many
//! or a mismatch. Bounded waits only (the client's deadlines); processes and directories are
//! removed when the cluster is dropped.

mod cluster_support;

use std::collections::BTreeMap;

use cluster_support::TestCluster;
use shardcore::client::ctl_cli::format_config;
use shardcore::client::{Client, ClientError, ShardRouter};
use shardcore::shardctl::{Config, CtlOp, CtlReply, Replica, DEFAULT_SHARDS, LATEST};

/// Every node of a 3-node cluster, as `shardcore ctl join` names them by default.
fn every_node() -> Vec<Replica> {
    (1..=3).map(Replica::on).collect()
}

fn query(cluster: &TestCluster, num: u64) -> Config {
    match cluster.ctl(CtlOp::Query { num }).0 {
        Ok(CtlReply::Config(config)) => config,
        other => panic!("query {num}: {other:?}"),
    }
}

/// Asserts the controller holds exactly `history` (config `i` is `history[i]`) and nothing past
/// it.
fn assert_history(cluster: &TestCluster, history: &[Config], when: &str) {
    for expected in history {
        assert_eq!(&query(cluster, expected.num), expected, "{when}");
    }
    let latest = query(cluster, LATEST);
    assert_eq!(
        latest.num,
        history.len() as u64 - 1,
        "{when}: a change was applied twice or lost"
    );
}

/// Join, query, move, leave and historical queries through the CLI, with its output and exit
/// codes; then a kill -9 of the controller's leader while a join is in flight, more changes
/// with one node down, and a restart of every node. The history must be exactly the expected
/// one throughout.
#[test]
fn controller_history_survives_leader_kill_and_restart() {
    let mut cluster = TestCluster::start("shardctl", 3);
    let mut history = vec![Config::initial(DEFAULT_SHARDS)];

    let (code, out, err) = cluster.ctl_cli(&["query"]);
    assert_eq!(code, 0, "query: {err}");
    assert_eq!(out, format!("{}\n", format_config(&history[0])));

    let (code, out, err) = cluster.ctl_cli(&["join", "1", "2", "3"]);
    assert_eq!(code, 0, "join: {err}");
    assert_eq!(out, "config 1: joined g1, g2, g3\n");
    let joined = BTreeMap::from([(1, every_node()), (2, every_node()), (3, every_node())]);
    history.push(history[0].join(&joined).expect("join"));
    let latest = query(&cluster, LATEST);
    assert!(latest.is_balanced(), "{latest:?}");
    assert_eq!(latest, history[1]);
    let (code, out, _) = cluster.ctl_cli(&["query"]);
    assert_eq!(
        (code, out),
        (0, format!("{}\n", format_config(&history[1])))
    );

    let (code, out, err) = cluster.ctl_cli(&["join", "2"]);
    assert_eq!((code, out.as_str()), (1, ""), "a second join of g2");
    assert!(err.contains("group 2 has already joined"), "{err}");

    let (code, out, err) = cluster.ctl_cli(&["move", "0", "3"]);
    assert_eq!(code, 0, "move: {err}");
    assert_eq!(out, "config 2: shard 0 -> g3\n");
    history.push(history[1].move_shard(0, 3).expect("move"));

    let (code, out, err) = cluster.ctl_cli(&["leave", "2"]);
    assert_eq!(code, 0, "leave: {err}");
    assert_eq!(out, "config 3: g2 left\n");
    history.push(history[2].leave(&[2]).expect("leave"));

    let (code, out, _) = cluster.ctl_cli(&["query", "1"]);
    assert_eq!(
        (code, out),
        (0, format!("{}\n", format_config(&history[1])))
    );
    assert_history(&cluster, &history, "before any fault");

    // Kill the controller's leader while a join is on its way: the client retries on the next
    // leader with the same session and sequence, and the join applies once.
    let leader = cluster
        .ctl(CtlOp::latest())
        .1
        .expect("a controller leader answered");
    let join4 = CtlOp::Join {
        groups: BTreeMap::from([(4, every_node())]),
    };
    let pending = {
        let config = cluster.client_config();
        let op = join4.clone();
        std::thread::spawn(move || cluster_support::ctl_with(config, op).0)
    };
    cluster.kill(leader);
    match pending.join().expect("join thread") {
        Ok(CtlReply::Changed { num }) => assert_eq!(num, 4),
        other => panic!("join 4 across the leader's death: {other:?}"),
    }
    history.push(
        history[3]
            .join(&BTreeMap::from([(4, every_node())]))
            .expect("join"),
    );
    // More changes with one node down.
    match cluster.ctl(CtlOp::Leave { groups: vec![1] }).0 {
        Ok(CtlReply::Changed { num }) => assert_eq!(num, 5),
        other => panic!("leave 1: {other:?}"),
    }
    history.push(history[4].leave(&[1]).expect("leave"));
    let (code, out, err) = cluster.ctl_cli(&["move", "5", "4"]);
    assert_eq!(
        (code, out.as_str()),
        (0, "config 6: shard 5 -> g4\n"),
        "{err}"
    );
    history.push(history[5].move_shard(5, 4).expect("move"));
    assert_history(&cluster, &history, "after the leader's kill");

    // The killed node comes back and catches up; then every node is killed and restarted.
    cluster.spawn(leader);
    cluster.wait_up(leader);
    for id in 1..=3 {
        cluster.kill(id);
    }
    for id in 1..=3 {
        cluster.spawn(id);
    }
    for id in 1..=3 {
        cluster.wait_up(id);
    }
    assert_history(&cluster, &history, "after restarting every node");
    match cluster.ctl(join4).0 {
        Err(ClientError::Refused(why)) => assert!(why.contains("group 4 has already joined")),
        other => panic!("a second join of g4: {other:?}"),
    }
}

/// With two cores a node, the controller's group lives on one core and client connections land
/// on either (SO_REUSEPORT): requests arriving on the other core cross the mesh and their
/// replies come back. Many fresh connections (each CLI run is one) make both paths all but
/// certain; every one must be answered correctly either way.
#[test]
fn controller_answers_on_every_core() {
    let cluster = TestCluster::start_with_cores("shardctl-cores", 3, 2);
    let (code, out, err) = cluster.ctl_cli(&["join", "1", "2", "--cores", "2"]);
    assert_eq!(
        (code, out.as_str()),
        (0, "config 1: joined g1, g2\n"),
        "{err}"
    );
    let expected = query(&cluster, 1);
    for group in [1, 2] {
        let core = shardcore::node::placement::core_of_group(group, 2) as u32;
        assert!(
            expected.groups[&group].iter().all(|r| r.core == Some(core)),
            "{expected:?}"
        );
    }
    for round in 0..12 {
        let (code, out, err) = cluster.ctl_cli(&["query", "1"]);
        assert_eq!(code, 0, "round {round}: {err}");
        assert_eq!(
            out,
            format!("{}\n", format_config(&expected)),
            "round {round}"
        );
    }
    // The sharded client's routing refreshes from the controller when a WrongShard names a
    // newer configuration than its own, and not when it names an older one.
    let (refreshed, stale) = refresh_router(&cluster);
    assert_eq!(refreshed.as_ref(), Ok(&expected));
    assert_eq!(stale, Ok(false));
}

/// A router at config 0 told of config 1 (refreshes), then told of config 1 again (does not).
fn refresh_router(
    cluster: &TestCluster,
) -> (Result<Config, ClientError>, Result<bool, ClientError>) {
    let config = cluster.client_config();
    let runtime = shardcore_io::RuntimeConfig {
        cores: 1,
        pinning: shardcore_io::runtime::Pinning::Unpinned,
        name: "test-router".to_string(),
        ..shardcore_io::RuntimeConfig::default()
    };
    let mut outputs = shardcore_io::run(runtime, move |_core: shardcore_io::Core<()>| {
        let config = config.clone();
        async move {
            let client = Client::new(config).expect("client config");
            let first_byte = |key: &[u8], shards: usize| {
                u64::from(key.first().copied().unwrap_or(0)) % shards as u64
            };
            let mut router = ShardRouter::new(Config::initial(DEFAULT_SHARDS), first_byte);
            let refreshed = match client.refresh_router(&mut router, 1).await {
                Ok(true) => Ok(router.config().clone()),
                Ok(false) => Err(ClientError::Refused("no refresh".to_string())),
                Err(e) => Err(e),
            };
            let stale = client.refresh_router(&mut router, 1).await;
            (refreshed, stale)
        }
    })
    .expect("client runtime");
    outputs.pop().expect("one core's output")
}

/// A malformed controller frame closes only its own connection, with the reason in the log;
/// the controller serves other connections before and after.
#[test]
fn bad_controller_frames_close_one_connection() {
    use std::io::{Read, Write};

    use shardcore_protocol::FrameKind;

    let cluster = TestCluster::start("shardctl-bad", 3);
    assert_eq!(query(&cluster, LATEST).num, 0);
    let addr = cluster.configs[0].client_addr;
    let hello = shardcore::wire::Hello {
        cluster_id: shardcore::node::server::cluster_hash(&cluster.configs[0].cluster_id),
        node_id: 0,
        role: shardcore::wire::HelloRole::Client,
        core_count: 0,
    };
    let mut encoder = shardcore::wire::Encoder::new();
    let mut hello_frame = bytes::BytesMut::new();
    let hello_body = encoder.hello_body(&hello).expect("hello");
    shardcore_protocol::encode(FrameKind::Hello, hello_body, &mut hello_frame)
        .expect("encode hello");
    for (kind, body, what) in [
        (
            FrameKind::ControllerRequest,
            &b"not flatbuffers"[..],
            "garbage body",
        ),
        (
            FrameKind::ControllerReply,
            &b"\0\0\0\0"[..],
            "a reply sent by a client",
        ),
    ] {
        let mut bytes = hello_frame.clone();
        shardcore_protocol::encode(kind, body, &mut bytes).expect("encode");
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .expect("timeout");
        stream.write_all(&bytes).expect("write");
        let mut buf = [0u8; 64];
        match stream.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("{what}: the connection was not closed: {other:?}"),
        }
    }
    let (code, _, err) = cluster.ctl_cli(&["join", "5"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(query(&cluster, LATEST).num, 1);
    let log = std::fs::read_to_string(cluster.log_file(1)).unwrap_or_default();
    assert!(
        log.contains("bad controller request frame"),
        "the node did not log why it closed the connection:\n{}",
        cluster.log_tail(1)
    );
}
