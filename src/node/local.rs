//! `shardcore cluster local`: a cluster of real server processes on 127.0.0.1 with embedded
//! defaults, for trying shardcore out and for scripts.
//!
//! Node `i` (from 1) serves clients on `base_port + i - 1` and peers on
//! `base_port + 100 + 32 * (i - 1) + core` (room for 32 cores a node); its data lives in
//! `<data_dir>/node-<i>` and its log in `<data_dir>/node-<i>.log`. Every node hosts the KV
//! groups and the shard controller's group, so `shardcore ctl` works against the cluster. The
//! command waits until every node answers, runs a smoke check through the client library (a
//! put, a linearizable get and a shard controller query), prints how to reach the cluster, and
//! serves until ctrl-c / SIGTERM (or `--seconds`), then stops the nodes with SIGTERM (each
//! drains and exits) and exits.
//!
//! With `--sharded` the nodes run the sharded KV: groups `1..=groups` are shard groups, and
//! before the smoke check the command joins them all through the controller (each with a
//! replica on every node), unless the controller already has groups (a restart on the same
//! data directory), and prints the resulting configuration. The smoke check then goes through
//! the sharded path (`shardcore kv --sharded`).

use std::fs::{self, File};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::config::{NodeConfig, PeerConfig, RaftSection};

/// What `cluster local` starts.
#[derive(Clone, Debug)]
pub struct LocalCluster {
    /// Nodes (1..=15).
    pub nodes: u64,
    /// The first client port.
    pub base_port: u16,
    /// Where every node's data and log go.
    pub data_dir: PathBuf,
    /// Cores per node; 0: this machine's CPUs shared out among the nodes (at least 1 each).
    pub cores: usize,
    /// KV groups (shard groups when `sharded`).
    pub groups: u64,
    /// Run the sharded KV and join its groups at start.
    pub sharded: bool,
    /// Shards of the controller's configurations.
    pub shards: usize,
    /// Serve this long, then stop (None: until a signal).
    pub seconds: Option<u64>,
    /// The servers' log level.
    pub log_level: String,
    /// Reads take a heartbeat round instead of the leader's lease.
    pub read_index: bool,
    /// The node that should lead every group (0: none).
    pub preferred_leader: u64,
}

/// The configuration of node `id` of a local cluster.
pub fn node_config(cluster: &LocalCluster, id: u64) -> NodeConfig {
    let client = |i: u64| SocketAddr::from(([127, 0, 0, 1], cluster.base_port + i as u16 - 1));
    let peer = |i: u64| {
        SocketAddr::from((
            [127, 0, 0, 1],
            cluster.base_port + 100 + 32 * (i as u16 - 1),
        ))
    };
    NodeConfig {
        node_id: id,
        client_addr: client(id),
        peer_addr: peer(id),
        data_dir: cluster.data_dir.join(format!("node-{id}")),
        cores: cores_per_node(cluster.cores, cluster.nodes),
        // Several nodes share this machine's CPUs: pinning would stack every node's core 0 on
        // CPU 0.
        pin: false,
        groups: cluster.groups,
        shards: cluster.shards,
        sharded: cluster.sharded,
        log_level: cluster.log_level.clone(),
        raft: RaftSection {
            lease_reads: !cluster.read_index,
            preferred_leader: cluster.preferred_leader,
            ..Default::default()
        },
        peers: (1..=cluster.nodes)
            .filter(|&i| i != id)
            .map(|i| PeerConfig {
                id: i,
                peer_addr: peer(i),
                client_addr: client(i),
            })
            .collect(),
        ..NodeConfig::default()
    }
}

/// Cores per node for `nodes` nodes sharing this machine: `requested`, or with 0 the CPUs
/// this process may use divided among the nodes (at least 1). Measured on a 2-CPU machine with
/// 3 nodes and 64 clients: 1 core a node needed about half the server CPU per operation of 2
/// (52-54 us against 101-102 us, measured with log threads), since every extra core added a
/// writer thread and cross-core hops that only contend for the same two CPUs.
pub fn cores_per_node(requested: usize, nodes: u64) -> usize {
    if requested > 0 {
        return requested;
    }
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    (cpus / nodes.max(1) as usize).max(1)
}

/// The `shardcore server` flags that express `config` (every field the local cluster sets).
pub fn server_args(config: &NodeConfig) -> Vec<String> {
    let mut args = vec![
        "server".to_string(),
        "--node-id".to_string(),
        config.node_id.to_string(),
        "--client-addr".to_string(),
        config.client_addr.to_string(),
        "--peer-addr".to_string(),
        config.peer_addr.to_string(),
        "--data-dir".to_string(),
        config.data_dir.display().to_string(),
        "--cores".to_string(),
        config.cores.to_string(),
        "--groups".to_string(),
        config.groups.to_string(),
        "--shards".to_string(),
        config.shards.to_string(),
        "--log-level".to_string(),
        config.log_level.clone(),
    ];
    if !config.pin {
        args.push("--no-pin".to_string());
    }
    if config.sharded {
        args.push("--sharded".to_string());
    }
    if !config.raft.lease_reads {
        args.push("--read-index".to_string());
    }
    args.push("--preferred-leader".to_string());
    args.push(config.raft.preferred_leader.to_string());
    for peer in &config.peers {
        args.push("--peer".to_string());
        args.push(format!(
            "{}={}/{}",
            peer.id, peer.peer_addr, peer.client_addr
        ));
    }
    args
}

/// Starts `shardcore server` for `config` with `exe`, its output appended to `log`. The child
/// gets SIGKILL if this process dies, so no server outlives its parent.
pub fn spawn_server(exe: &Path, config: &NodeConfig, log: &Path) -> std::io::Result<Child> {
    let out = File::options().create(true).append(true).open(log)?;
    let err = out.try_clone()?;
    let mut command = Command::new(exe);
    command
        .args(server_args(config))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        use std::os::unix::process::CommandExt;
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn()
}

/// Waits until `addr` accepts TCP connections, or `limit` passes.
pub fn wait_listening(addr: SocketAddr, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Sends SIGTERM to `child` and waits up to `limit` for it to exit, then SIGKILLs it.
pub fn stop_child(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait().ok()
}

/// Runs the local cluster (see the module docs); returns the process exit code.
pub fn run(cluster: LocalCluster) -> u8 {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("error: cannot find this program's path: {e}");
            return 2;
        }
    };
    if let Err(e) = fs::create_dir_all(&cluster.data_dir) {
        eprintln!("error: cannot create {}: {e}", cluster.data_dir.display());
        return 2;
    }
    if let Err(e) = shardcore_io::signal::install_shutdown_handler() {
        eprintln!("error: cannot install signal handlers: {e}");
        return 2;
    }
    let configs: Vec<NodeConfig> = (1..=cluster.nodes)
        .map(|id| node_config(&cluster, id))
        .collect();
    let mut children = Vec::new();
    for config in &configs {
        let log = cluster
            .data_dir
            .join(format!("node-{}.log", config.node_id));
        match spawn_server(&exe, config, &log) {
            Ok(child) => children.push(child),
            Err(e) => {
                eprintln!("error: starting node {}: {e}", config.node_id);
                stop_all(&mut children);
                return 2;
            }
        }
    }
    for config in &configs {
        if !wait_listening(config.client_addr, Duration::from_secs(10)) {
            eprintln!(
                "error: node {} is not listening on {} after 10 s; see {}",
                config.node_id,
                config.client_addr,
                cluster
                    .data_dir
                    .join(format!("node-{}.log", config.node_id))
                    .display()
            );
            stop_all(&mut children);
            return 2;
        }
    }
    let endpoints: Vec<String> = configs.iter().map(|c| c.client_addr.to_string()).collect();
    let endpoints = endpoints.join(",");
    println!(
        "shardcore: {} nodes on 127.0.0.1, data and logs in {}",
        cluster.nodes,
        cluster.data_dir.display()
    );
    for config in &configs {
        println!(
            "  node {}: clients {}  peers {}  pid {}",
            config.node_id,
            config.client_addr,
            config.peer_addr,
            children[config.node_id as usize - 1].id()
        );
    }
    let joined = if cluster.sharded {
        let joined = join_shard_groups(&configs, &cluster);
        match &joined {
            Ok(text) => println!("shard groups: {text}"),
            Err(e) => println!("joining the shard groups FAILED: {e}"),
        }
        joined.map(drop)
    } else {
        Ok(())
    };
    let smoke = joined.and_then(|()| smoke_check(&configs, &cluster));
    match &smoke {
        Ok(line) => println!("smoke check: {line}"),
        Err(e) => println!("smoke check FAILED: {e}"),
    }
    println!("try it:");
    let exe = exe.display();
    let kv = if cluster.sharded {
        "kv --sharded"
    } else {
        "kv"
    };
    println!("  {exe} {kv} --endpoints {endpoints} put greeting hello");
    println!("  {exe} {kv} --endpoints {endpoints} get greeting");
    println!("  {exe} ctl --endpoints {endpoints} query");
    if cluster.sharded {
        println!("  {exe} ctl --endpoints {endpoints} move 0 2");
    }
    match cluster.seconds {
        Some(s) => println!("serving for {s} s (then stopping the nodes)"),
        None => println!("serving until ctrl-c"),
    }
    let deadline = cluster
        .seconds
        .map(|s| Instant::now() + Duration::from_secs(s));
    loop {
        if shardcore_io::signal::shutdown_requested() {
            break;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        for (i, child) in children.iter_mut().enumerate() {
            if let Ok(Some(status)) = child.try_wait() {
                eprintln!("error: node {} exited unexpectedly ({status})", i + 1);
                stop_all(&mut children);
                return 2;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("stopping the nodes");
    let clean = stop_all(&mut children);
    println!("stopped");
    if smoke.is_err() || !clean {
        return 2;
    }
    0
}

/// Stops every child with SIGTERM; true if all exited cleanly.
fn stop_all(children: &mut [Child]) -> bool {
    let mut clean = true;
    for child in children.iter_mut() {
        match stop_child(child, Duration::from_secs(10)) {
            Some(status) if status.success() => {}
            _ => clean = false,
        }
    }
    clean
}

/// Joins shard groups `1..=groups` (a replica on every node; each node places a group on a
/// core by its own rule) unless the controller already has groups; returns the latest
/// configuration as `shardcore ctl query` prints it.
pub fn join_shard_groups(configs: &[NodeConfig], cluster: &LocalCluster) -> Result<String, String> {
    use crate::client::ctl_cli::{format_config, join_replicas};
    let mut client_config = crate::client::ClientConfig::new(
        configs.iter().map(|c| (c.node_id, c.client_addr)).collect(),
    );
    client_config.cluster_id = configs[0].cluster_id.clone();
    // Several leader elections fit: the nodes have just started.
    client_config.op_timeout = Duration::from_secs(15);
    let groups = cluster.groups;
    let nodes = configs.len();
    let runtime = shardcore_io::RuntimeConfig {
        cores: 1,
        pinning: shardcore_io::runtime::Pinning::Unpinned,
        name: "shardcore-local-join".to_string(),
        ..shardcore_io::RuntimeConfig::default()
    };
    let mut outputs = shardcore_io::run(runtime, move |_core: shardcore_io::Core<()>| {
        let client_config = client_config.clone();
        async move {
            let client = crate::client::Client::new(client_config).map_err(|e| e.to_string())?;
            let latest = client
                .ctl_query(crate::shardctl::LATEST)
                .await
                .map_err(|e| format!("querying the controller: {e}"))?;
            if !latest.groups.is_empty() {
                let text = format_config(&latest);
                return Ok(format!("already joined (a restart)\n{text}"));
            }
            let joining = (1..=groups)
                .map(|g| (g, join_replicas(g, &[], nodes, None)))
                .collect();
            let num = client
                .ctl_join(joining)
                .await
                .map_err(|e| format!("joining groups 1..={groups}: {e}"))?;
            let config = client
                .ctl_query(num)
                .await
                .map_err(|e| format!("querying config {num}: {e}"))?;
            Ok(format!("joined 1..={groups}\n{}", format_config(&config)))
        }
    })
    .map_err(|e| format!("cannot start the client runtime: {e}"))?;
    outputs
        .pop()
        .unwrap_or_else(|| Err("no result".to_string()))
}

fn smoke_check(configs: &[NodeConfig], cluster: &LocalCluster) -> Result<String, String> {
    let endpoints = crate::client::cli::Endpoints {
        addrs: configs.iter().map(|c| c.client_addr).collect(),
        cluster_id: configs[0].cluster_id.clone(),
        groups: cluster.groups,
        sharded: cluster.sharded,
    };
    let timeout = Duration::from_secs(15);
    let started = Instant::now();
    let put = crate::client::cli::KvCommand::Put {
        key: "shardcore-smoke".to_string(),
        value: "ok".to_string(),
    };
    let (text, code) = crate::client::cli::run(endpoints.clone(), timeout, put);
    if code != 0 {
        return Err(format!("put: {text}"));
    }
    let get = crate::client::cli::KvCommand::Get {
        key: "shardcore-smoke".to_string(),
        serializable: false,
    };
    let (text, code) = crate::client::cli::run(endpoints.clone(), timeout, get);
    if code != 0 || text != "ok" {
        return Err(format!("get returned {text:?} (exit {code})"));
    }
    let query = crate::client::ctl_cli::CtlCommand::Query { num: None };
    let (text, code) = crate::client::ctl_cli::run(endpoints, timeout, query);
    if code != 0 {
        return Err(format!("shard controller query: {text}"));
    }
    let config = text.split(':').next().unwrap_or_default();
    let path = if cluster.sharded {
        "put and linearizable get through the sharded path"
    } else {
        "put, linearizable get"
    };
    Ok(format!(
        "{path} and shard controller query ({config}) answered in {} ms (includes leader \
         elections)",
        started.elapsed().as_millis()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(read_index: bool) -> LocalCluster {
        LocalCluster {
            nodes: 3,
            base_port: 7001,
            data_dir: PathBuf::from("/tmp/unused"),
            cores: 1,
            groups: 8,
            sharded: false,
            shards: 64,
            seconds: None,
            log_level: "warn".to_string(),
            read_index,
            preferred_leader: 1,
        }
    }

    /// `--read-index` reaches every node as `raft.lease_reads = false` and as the server's flag;
    /// by default the nodes read from leases and are started without it.
    #[test]
    fn read_index_reaches_the_servers() {
        for read_index in [false, true] {
            let config = node_config(&cluster(read_index), 2);
            assert_eq!(config.raft.lease_reads, !read_index);
            assert_eq!(
                config.raft.election_ticks,
                RaftSection::default().election_ticks
            );
            let args = server_args(&config);
            assert_eq!(args.iter().any(|a| a == "--read-index"), read_index);
            assert_eq!(config.raft.preferred_leader, 1);
            let at = args.iter().position(|a| a == "--preferred-leader");
            assert_eq!(at.map(|i| args[i + 1].as_str()), Some("1"));
        }
    }
}
