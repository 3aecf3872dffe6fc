//! The command-line faces of the node: `shardcore server`, `shardcore kv`, `shardcore ctl` and
//! `shardcore cluster local`, as clap arguments and the functions that run them. `main.rs` only
//! parses and dispatches. `--sharded` is chosen, never detected: `server --sharded` (or
//! `sharded = true`) runs shard groups, `kv --sharded` and `workload --sharded` route by the
//! controller's configuration, `cluster local --sharded` does both and joins the groups.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::config::{NodeConfig, PeerConfig};
use crate::client::cli::{Endpoints, KvCommand};
use crate::client::ctl_cli::CtlCommand;

/// `shardcore server`: run one node.
#[derive(Args, Debug)]
pub struct ServerArgs {
    /// A TOML configuration file (see `shardcore::node::config`); flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// This node's id (1..).
    #[arg(long)]
    pub node_id: Option<u64>,
    /// The cluster's name; members and clients must agree.
    #[arg(long)]
    pub cluster_id: Option<String>,
    /// Where clients connect.
    #[arg(long)]
    pub client_addr: Option<SocketAddr>,
    /// Where peers connect (core k listens on this port + k).
    #[arg(long)]
    pub peer_addr: Option<SocketAddr>,
    /// Another member, as `ID=PEER_ADDR/CLIENT_ADDR`; repeat for each.
    #[arg(long = "peer", value_parser = parse_peer)]
    pub peers: Vec<PeerConfig>,
    /// Where the node keeps its logs and snapshots.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Cores to run on (0: all).
    #[arg(long)]
    pub cores: Option<usize>,
    /// KV groups in the cluster (the same on every node, never changed).
    #[arg(long)]
    pub groups: Option<u64>,
    /// Shards of the shard controller's configurations, 1..=4096 (the same on every node,
    /// never changed).
    #[arg(long)]
    pub shards: Option<usize>,
    /// Run groups 1..=groups as shard groups of the sharded KV (the same on every node, never
    /// changed; the data directory remembers it).
    #[arg(long)]
    pub sharded: bool,
    /// Do not bind cores to CPUs (for several nodes on one machine).
    #[arg(long)]
    pub no_pin: bool,
    /// Every linearizable read takes a heartbeat round (ReadIndex) instead of being answered
    /// from the leader's lease (`raft.lease_reads = false`).
    #[arg(long)]
    pub read_index: bool,
    /// The node that should lead every group (`raft.preferred_leader`; 0: none).
    #[arg(long)]
    pub preferred_leader: Option<u64>,
    /// error, warn, info, debug or trace.
    #[arg(long)]
    pub log_level: Option<String>,
}

fn parse_peer(text: &str) -> Result<PeerConfig, String> {
    let err = || format!("--peer {text:?}: expected ID=PEER_ADDR/CLIENT_ADDR");
    let (id, addrs) = text.split_once('=').ok_or_else(err)?;
    let (peer, client) = addrs.split_once('/').ok_or_else(err)?;
    Ok(PeerConfig {
        id: id.parse().map_err(|_| err())?,
        peer_addr: peer.parse().map_err(|_| err())?,
        client_addr: client.parse().map_err(|_| err())?,
    })
}

impl ServerArgs {
    /// The configuration: defaults, then the file, then the flags.
    pub fn to_config(&self) -> Result<NodeConfig, String> {
        let mut config = match &self.config {
            None => NodeConfig::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("reading {}: {e}", path.display()))?;
                NodeConfig::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))?
            }
        };
        if let Some(v) = self.node_id {
            config.node_id = v;
            if self.data_dir.is_none() && self.config.is_none() {
                config.data_dir = PathBuf::from(format!("shardcore-data/node-{v}"));
            }
        }
        if let Some(v) = &self.cluster_id {
            config.cluster_id = v.clone();
        }
        if let Some(v) = self.client_addr {
            config.client_addr = v;
        }
        if let Some(v) = self.peer_addr {
            config.peer_addr = v;
        }
        if !self.peers.is_empty() {
            config.peers = self.peers.clone();
        }
        if let Some(v) = &self.data_dir {
            config.data_dir = v.clone();
        }
        if let Some(v) = self.cores {
            config.cores = v;
        }
        if let Some(v) = self.groups {
            config.groups = v;
        }
        if let Some(v) = self.shards {
            config.shards = v;
        }
        if self.sharded {
            config.sharded = true;
        }
        if self.no_pin {
            config.pin = false;
        }
        if self.read_index {
            config.raft.lease_reads = false;
        }
        if let Some(v) = self.preferred_leader {
            config.raft.preferred_leader = v;
        }
        if let Some(v) = &self.log_level {
            config.log_level = v.clone();
        }
        config.validate()?;
        Ok(config)
    }
}

/// Runs `shardcore server`.
pub fn server(args: &ServerArgs) -> ExitCode {
    let config = match args.to_config() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config.log_level);
    tracing::info!(
        node = config.node_id,
        client = %config.client_addr,
        peer = %config.peer_addr,
        data = %config.data_dir.display(),
        peers = config.peers.len(),
        "starting"
    );
    match super::server::run(config) {
        Ok(()) => {
            tracing::info!("exiting");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// Structured logs to stderr at `level`.
pub fn init_logging(level: &str) {
    let level = match level {
        "error" => tracing::Level::ERROR,
        "warn" => tracing::Level::WARN,
        "debug" => tracing::Level::DEBUG,
        "trace" => tracing::Level::TRACE,
        _ => tracing::Level::INFO,
    };
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

/// `shardcore kv`: one operation against a cluster.
#[derive(Args, Debug)]
pub struct KvArgs {
    /// Where the cluster is.
    #[command(flatten)]
    pub cluster: Endpoints,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 10)]
    pub timeout_secs: u64,
    /// The operation.
    #[command(subcommand)]
    pub op: KvCommand,
}

/// Runs `shardcore kv`.
pub fn kv(args: KvArgs) -> ExitCode {
    let timeout = Duration::from_secs(args.timeout_secs.max(1));
    let (text, code) = crate::client::cli::run(args.cluster, timeout, args.op);
    if code == 2 {
        eprintln!("{text}");
    } else {
        println!("{text}");
    }
    ExitCode::from(code)
}

/// `shardcore ctl`: one shard controller operation against a cluster.
#[derive(Args, Debug)]
pub struct CtlArgs {
    /// Where the cluster is.
    #[command(flatten)]
    pub cluster: Endpoints,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 10)]
    pub timeout_secs: u64,
    /// The operation.
    #[command(subcommand)]
    pub op: CtlCommand,
}

/// Runs `shardcore ctl`: the result on stdout (exit 0), anything else on stderr (exit 1
/// refused, 2 usage, 3 no answer; see `client::ctl_cli`).
pub fn ctl(args: CtlArgs) -> ExitCode {
    let timeout = Duration::from_secs(args.timeout_secs.max(1));
    let (text, code) = crate::client::ctl_cli::run(args.cluster, timeout, args.op);
    if code == 0 {
        println!("{text}");
    } else {
        eprintln!("{text}");
    }
    ExitCode::from(code)
}

/// `shardcore cluster local`: a local cluster of server processes.
#[derive(Args, Debug)]
pub struct LocalArgs {
    /// Nodes.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=15))]
    pub nodes: u64,
    /// Node 1's client port; node i uses this + i - 1, peers this + 100 and up.
    #[arg(long, default_value_t = 7001)]
    pub base_port: u16,
    /// Where the nodes' data and logs go.
    #[arg(long, default_value = "shardcore-data")]
    pub data_dir: PathBuf,
    /// Cores per node (0: the machine's CPUs shared out among the nodes, at least 1 each).
    #[arg(long, default_value_t = 0)]
    pub cores: usize,
    /// KV groups (with --sharded: shard groups, all joined through the controller).
    #[arg(long, default_value_t = 8)]
    pub groups: u64,
    /// Run the sharded KV: the controller plus `--groups` shard groups on every node, the
    /// groups joined at start-up so the shards spread over them.
    #[arg(long)]
    pub sharded: bool,
    /// Shards of the controller's configurations (1..=4096).
    #[arg(long, default_value_t = crate::shardctl::DEFAULT_SHARDS)]
    pub shards: usize,
    /// Serve this many seconds, then stop (default: until ctrl-c).
    #[arg(long)]
    pub seconds: Option<u64>,
    /// The servers' log level.
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// Reads take a heartbeat round (ReadIndex, etcd's default) instead of the leader's lease.
    #[arg(long)]
    pub read_index: bool,
    /// The node that leads every group once it is up and caught up (0: leaders fall where
    /// elections put them). The nodes share this machine's CPUs, so spreading leaders over
    /// them buys no CPU, and one leader node (etcd's shape) halved the server CPU per put.
    #[arg(long, default_value_t = 1)]
    pub preferred_leader: u64,
}

/// `shardcore cluster ...`.
#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Start a cluster of server processes on 127.0.0.1 and serve until ctrl-c.
    Local(LocalArgs),
}

/// Runs `shardcore cluster local`.
pub fn cluster(command: ClusterCommand) -> ExitCode {
    match command {
        ClusterCommand::Local(args) => {
            let cluster = super::local::LocalCluster {
                nodes: args.nodes,
                base_port: args.base_port,
                data_dir: args.data_dir,
                cores: args.cores,
                groups: args.groups,
                sharded: args.sharded,
                shards: args.shards,
                seconds: args.seconds,
                log_level: args.log_level,
                read_index: args.read_index,
                preferred_leader: args.preferred_leader,
            };
            ExitCode::from(super::local::run(cluster))
        }
    }
}

/// `shardcore workload`: a checking workload against a running cluster (used by
/// `scripts/crash-restart.sh`).
#[derive(Args, Debug)]
pub struct WorkloadArgs {
    /// Where the cluster is.
    #[command(flatten)]
    pub cluster: Endpoints,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// Keys (half append-only, for the lost-write count).
    #[arg(long, default_value_t = 8)]
    pub keys: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Seeds the operation mix.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Prefix for every key (use a fresh one per run against the same cluster).
    #[arg(long, default_value = "")]
    pub key_prefix: String,
    /// Write the history (JSON lines) here.
    #[arg(long)]
    pub history: Option<PathBuf>,
}

/// Runs `shardcore workload`: prints one `RESULT` line; exit 0 when no acknowledged write was
/// lost and the history is linearizable, 1 otherwise, 2 when it could not run.
pub fn workload(args: WorkloadArgs) -> ExitCode {
    use crate::client::workload::{run, WorkloadConfig};
    use crate::linearizability::{check_history, Verdict};
    let config = WorkloadConfig {
        endpoints: args.cluster.addrs,
        cluster_id: args.cluster.cluster_id,
        groups: args.cluster.groups,
        clients: args.clients.max(1),
        keys: args.keys.max(2),
        duration: Duration::from_secs(args.seconds),
        seed: args.seed,
        op_timeout: Duration::from_secs(10),
        key_prefix: args.key_prefix,
        sharded: args.cluster.sharded,
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let report = match run(config, stop) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(path) = &args.history {
        let written = std::fs::File::create(path).and_then(|mut f| {
            crate::history::write_all(&mut f, &report.history)?;
            std::io::Write::flush(&mut f)
        });
        if let Err(e) = written {
            eprintln!("error: writing {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    let verdict = check_history(&report.history);
    let linearizable = matches!(verdict.verdict, Verdict::Linearizable);
    println!(
        "RESULT ops={} acknowledged_writes={} timeouts={} refused={} lost_writes={} linearizable={} final_read={}",
        report.completed,
        report.acknowledged_writes,
        report.timeouts,
        report.refused,
        report.lost_writes,
        linearizable,
        if report.final_read_failed.is_none() { "ok" } else { "failed" }
    );
    for example in &report.lost_examples {
        println!("lost: {example}");
    }
    if !linearizable {
        println!("checker: {verdict}");
    }
    if let Some(why) = &report.final_read_failed {
        println!("final read: {why}");
    }
    if report.lost_writes == 0 && linearizable && report.final_read_failed.is_none() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
