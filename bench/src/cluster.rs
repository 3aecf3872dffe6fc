//! `--cluster local`: three `shardcore server` processes on 127.0.0.1 for the length of one run,
//! configured as `shardcore cluster local` configures its nodes (`shardcore::node::local`), so
//! their pids are known exactly for the CPU report. They are stopped (SIGTERM, then SIGKILL
//! after 10 s) when the run ends, and die with the bench if it is killed (PR_SET_PDEATHSIG).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Child;
use std::time::Duration;

use shardcore::node::local::{
    join_shard_groups, node_config, spawn_server, stop_child, wait_listening, LocalCluster,
};

use crate::cli::Args;

/// Nodes a local cluster has. Why 3: the smallest cluster that survives a failure, and the
/// size of the etcd cluster it is compared with.
pub const LOCAL_NODES: u64 = 3;

/// How long a node may take to listen. Why 20 s: WAL recovery and segment preallocation on a
/// busy shared disk; a healthy start takes well under a second.
const LISTEN_LIMIT: Duration = Duration::from_secs(20);

/// Running local servers; dropping this stops them.
pub struct LocalServers {
    children: Vec<Child>,
    /// Their client addresses, node 1 first.
    pub addrs: Vec<SocketAddr>,
    /// Where their data and logs are.
    pub data_dir: PathBuf,
    remove_data: bool,
}

impl LocalServers {
    /// Starts the nodes and waits until each listens.
    pub fn start(args: &Args) -> Result<LocalServers, String> {
        let exe = match &args.shardcore_bin {
            Some(path) => path.clone(),
            None => std::env::current_exe()
                .map_err(|e| format!("cannot find this program's path: {e}"))?
                .with_file_name("shardcore"),
        };
        if !exe.exists() {
            return Err(format!(
                "{} not found; build it (cargo build --release -p shardcore) or pass --shardcore-bin",
                exe.display()
            ));
        }
        let (data_dir, remove_data) = match &args.data_dir {
            Some(dir) => (dir.clone(), false),
            None => (
                std::env::temp_dir().join(format!("shardcore-bench-{}", std::process::id())),
                !args.keep_data,
            ),
        };
        std::fs::create_dir_all(&data_dir)
            .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
        let cluster = LocalCluster {
            nodes: LOCAL_NODES,
            base_port: args.base_port,
            data_dir: data_dir.clone(),
            cores: args.server_cores,
            groups: args.groups,
            sharded: args.sharded,
            shards: args.shards,
            seconds: None,
            log_level: "warn".to_string(),
            // `cluster local`'s defaults: reads from the leader's lease, node 1 leads.
            read_index: false,
            preferred_leader: 1,
        };
        let mut servers = LocalServers {
            children: Vec::new(),
            addrs: Vec::new(),
            data_dir,
            remove_data,
        };
        let mut configs = Vec::new();
        for id in 1..=LOCAL_NODES {
            let mut config = node_config(&cluster, id);
            config.cluster_id.clone_from(&args.cluster_id);
            let log = servers.data_dir.join(format!("node-{id}.log"));
            let child = spawn_server(&exe, &config, &log)
                .map_err(|e| format!("starting node {id}: {e}"))?;
            servers.children.push(child);
            servers.addrs.push(config.client_addr);
            configs.push(config);
        }
        for (i, addr) in servers.addrs.iter().enumerate() {
            if !wait_listening(*addr, LISTEN_LIMIT) {
                return Err(format!(
                    "node {} is not listening on {addr} after {} s; see {}",
                    i + 1,
                    LISTEN_LIMIT.as_secs(),
                    servers
                        .data_dir
                        .join(format!("node-{}.log", i + 1))
                        .display()
                ));
            }
        }
        if args.sharded {
            let joined = join_shard_groups(&configs, &cluster)?;
            eprintln!("shardcore-bench: shard groups {joined}");
        }
        Ok(servers)
    }

    /// The servers' pids, node 1 first.
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    /// An error naming the first node that has exited.
    pub fn check_alive(&mut self) -> Result<(), String> {
        for (i, child) in self.children.iter_mut().enumerate() {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("node {} exited ({status})", i + 1));
            }
        }
        Ok(())
    }
}

impl Drop for LocalServers {
    fn drop(&mut self) {
        for child in &mut self.children {
            stop_child(child, Duration::from_secs(10));
        }
        if self.remove_data {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}
