//! Real-process cluster harness for `tests/cluster_*.rs`: starts `shardcore server` processes
//! on 127.0.0.1 with free ports and short Raft timeouts, kills (-9), pauses (SIGSTOP/SIGCONT)
//! and restarts them, runs the checking workload against them, and removes every process and
//! directory it made when dropped.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shardcore::client::workload::{self, WorkloadConfig, WorkloadReport};
use shardcore::client::{Client, ClientConfig, ClientError};
use shardcore::linearizability::{check_history, Verdict};
use shardcore::node::config::{NodeConfig, PeerConfig};
use shardcore::node::local::{stop_child, wait_listening};
use shardcore::node::placement::CONTROLLER_GROUP;
use shardcore::raft::NodeId;
use shardcore::shardctl::{CtlOp, CtlReply};

/// Groups in test clusters: several per core, so group commit and routing are exercised.
pub const GROUPS: u64 = 4;

/// A free port pair range: `count` consecutive free ports (best effort: bound, then released).
fn free_ports(count: u16) -> u16 {
    for _ in 0..200 {
        let probe = TcpListener::bind("127.0.0.1:0").expect("bind a probe port");
        let base = probe.local_addr().expect("probe addr").port();
        drop(probe);
        if base > 65000 - count {
            continue;
        }
        let all_free = (0..count).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no {count} consecutive free ports on 127.0.0.1");
}

pub struct TestCluster {
    pub name: String,
    pub dir: PathBuf,
    pub configs: Vec<NodeConfig>,
    pub children: Vec<Option<Child>>,
    exe: PathBuf,
    /// While `run_with` runs a workload: its completed operations so far.
    progress: Option<Arc<AtomicU64>>,
}

impl TestCluster {
    /// Starts `nodes` servers (1 core each) and waits until each listens.
    pub fn start(name: &str, nodes: u64) -> TestCluster {
        TestCluster::start_with_cores(name, nodes, 1)
    }

    /// Starts `nodes` servers of `cores` cores each and waits until each listens.
    pub fn start_with_cores(name: &str, nodes: u64, cores: usize) -> TestCluster {
        TestCluster::start_with(name, nodes, cores, |_| {})
    }

    /// Starts `nodes` sharded servers (1 core each, `GROUPS` shard groups, `shards` shards in
    /// the controller's configurations) and waits until each listens. No group is joined yet.
    pub fn start_sharded(name: &str, nodes: u64, shards: usize) -> TestCluster {
        TestCluster::start_with(name, nodes, 1, |config| {
            config.sharded = true;
            config.shards = shards;
        })
    }

    /// Starts `nodes` servers of `cores` cores each, with `adjust` applied to every node's
    /// configuration, and waits until each listens.
    pub fn start_with(
        name: &str,
        nodes: u64,
        cores: usize,
        adjust: impl Fn(&mut NodeConfig),
    ) -> TestCluster {
        let dir = std::env::temp_dir().join(format!(
            "shardcore-{name}-{}-{}",
            std::process::id(),
            free_ports(1)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("test dir");
        // Per node: its client port, then one peer port per core.
        let stride = 1 + cores as u16;
        let base = free_ports(nodes as u16 * stride);
        let client = |i: u64| SocketAddr::from(([127, 0, 0, 1], base + (i as u16 - 1) * stride));
        let peer = |i: u64| SocketAddr::from(([127, 0, 0, 1], base + (i as u16 - 1) * stride + 1));
        let configs: Vec<NodeConfig> = (1..=nodes)
            .map(|id| {
                let mut config = NodeConfig {
                    node_id: id,
                    client_addr: client(id),
                    peer_addr: peer(id),
                    data_dir: dir.join(format!("node-{id}")),
                    cores,
                    pin: false,
                    groups: GROUPS,
                    log_level: "info".to_string(),
                    // A cluster id of its own: tests run side by side and pick free ports,
                    // so a port this cluster's killed node let go may be bound by another
                    // test's node a moment later; a client reconnecting to it must be refused
                    // by the hello, not served another cluster's data.
                    cluster_id: format!("{name}-{}-{base}", std::process::id()),
                    peers: (1..=nodes)
                        .filter(|&i| i != id)
                        .map(|i| PeerConfig {
                            id: i,
                            peer_addr: peer(i),
                            client_addr: client(i),
                        })
                        .collect(),
                    ..NodeConfig::default()
                };
                // Faster elections than production (300-600 ms), so tests spend their time on
                // faults rather than waiting.
                config.raft.election_ticks = 30;
                config.raft.heartbeat_ticks = 5;
                config.kv.max_raft_state_bytes = 256 << 10;
                config.wal.segment_bytes = 1 << 20;
                config.wal.max_segments = 8;
                adjust(&mut config);
                config
            })
            .collect();
        let mut cluster = TestCluster {
            name: name.to_string(),
            dir,
            configs,
            children: Vec::new(),
            exe: PathBuf::from(env!("CARGO_BIN_EXE_shardcore")),
            progress: None,
        };
        for id in 1..=nodes {
            cluster.children.push(None);
            cluster.spawn(id);
        }
        for id in 1..=nodes {
            cluster.wait_up(id);
        }
        cluster
    }

    fn config_file(&self, id: u64) -> PathBuf {
        self.dir.join(format!("node-{id}.toml"))
    }

    pub fn log_file(&self, id: u64) -> PathBuf {
        self.dir.join(format!("node-{id}.log"))
    }

    /// Starts node `id` (again).
    pub fn spawn(&mut self, id: u64) {
        let config = &self.configs[id as usize - 1];
        let toml = to_toml(config);
        std::fs::write(self.config_file(id), toml).expect("write config");
        let child = std::process::Command::new(&self.exe)
            .args(["server", "--config"])
            .arg(self.config_file(id))
            .stdin(std::process::Stdio::null())
            .stdout(
                std::fs::File::options()
                    .create(true)
                    .append(true)
                    .open(self.log_file(id))
                    .expect("log"),
            )
            .stderr(
                std::fs::File::options()
                    .create(true)
                    .append(true)
                    .open(self.log_file(id))
                    .expect("log"),
            )
            .spawn()
            .expect("spawn shardcore server");
        self.children[id as usize - 1] = Some(child);
    }

    pub fn wait_up(&self, id: u64) {
        let addr = self.configs[id as usize - 1].client_addr;
        assert!(
            wait_listening(addr, Duration::from_secs(60)),
            "node {id} not listening on {addr}; log:\n{}",
            self.log_tail(id)
        );
    }

    pub fn log_tail(&self, id: u64) -> String {
        let text = std::fs::read_to_string(self.log_file(id)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// kill -9.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.children[id as usize - 1].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self, id: u64) {
        self.kill(id);
        self.spawn(id);
        self.wait_up(id);
    }

    pub fn signal(&self, id: u64, signal: i32) {
        if let Some(child) = &self.children[id as usize - 1] {
            // SAFETY: kill(2) on our own child.
            unsafe {
                libc::kill(child.id() as libc::pid_t, signal);
            }
        }
    }

    pub fn pause(&self, id: u64) {
        self.signal(id, libc::SIGSTOP);
    }

    pub fn resume(&self, id: u64) {
        self.signal(id, libc::SIGCONT);
    }

    /// SIGTERM and wait: true if it exited 0.
    pub fn stop_gracefully(&mut self, id: u64) -> bool {
        match self.children[id as usize - 1].take() {
            Some(mut child) => {
                stop_child(&mut child, Duration::from_secs(15)).is_some_and(|s| s.success())
            }
            None => false,
        }
    }

    pub fn endpoints(&self) -> Vec<SocketAddr> {
        self.configs.iter().map(|c| c.client_addr).collect()
    }

    /// A client configuration for this cluster, patient enough for a leader election or two.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new(
            self.endpoints()
                .into_iter()
                .enumerate()
                .map(|(i, addr)| (i as u64 + 1, addr))
                .collect(),
        );
        config.cluster_id = self.configs[0].cluster_id.clone();
        config.groups = GROUPS;
        config.op_timeout = Duration::from_secs(20);
        config.sharded = self.configs[0].sharded;
        config
    }

    /// One shard controller operation through the client library (a fresh client on a
    /// one-core runtime); also returns the node the client found leading the controller.
    pub fn ctl(&self, op: CtlOp) -> (Result<CtlReply, ClientError>, Option<NodeId>) {
        ctl_with(self.client_config(), op)
    }

    /// The `shardcore` binary with `args` after `ctl --endpoints ...`: (exit code, stdout,
    /// stderr).
    pub fn ctl_cli(&self, args: &[&str]) -> (i32, String, String) {
        let endpoints: Vec<String> = self.endpoints().iter().map(|a| a.to_string()).collect();
        let out = std::process::Command::new(&self.exe)
            .args(["ctl", "--timeout-secs", "20", "--endpoints"])
            .arg(endpoints.join(","))
            .args(["--cluster-id", &self.configs[0].cluster_id])
            .args(args)
            .output()
            .expect("run shardcore ctl");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The `shardcore` binary with `args` after `kv --endpoints ...` (and `--sharded` for a
    /// sharded cluster): (exit code, stdout, stderr).
    pub fn kv_cli(&self, args: &[&str]) -> (i32, String, String) {
        let endpoints: Vec<String> = self.endpoints().iter().map(|a| a.to_string()).collect();
        let mut command = std::process::Command::new(&self.exe);
        command.args(["kv", "--timeout-secs", "20", "--endpoints"]);
        command.arg(endpoints.join(","));
        command.args(["--cluster-id", &self.configs[0].cluster_id]);
        if self.configs[0].sharded {
            command.arg("--sharded");
        }
        let out = command.args(args).output().expect("run shardcore kv");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn workload_config(&self, clients: usize, seconds: u64, seed: u64) -> WorkloadConfig {
        WorkloadConfig {
            endpoints: self.endpoints(),
            cluster_id: self.configs[0].cluster_id.clone(),
            groups: GROUPS,
            clients,
            keys: 6,
            duration: Duration::from_secs(seconds),
            seed,
            op_timeout: Duration::from_secs(8),
            key_prefix: String::new(),
            sharded: self.configs[0].sharded,
        }
    }

    /// Runs the workload on a thread while `faults` runs here, for the workload's whole
    /// duration; returns the report.
    pub fn run_with<F: FnOnce(&mut TestCluster)>(
        &mut self,
        config: WorkloadConfig,
        faults: F,
    ) -> WorkloadReport {
        self.run_workload(config, faults, false)
    }

    /// Runs the workload on a thread while `faults` runs here, paced by
    /// [`TestCluster::await_progress`], and stops it once `faults` returns (its duration is
    /// only an upper bound); returns the report.
    pub fn run_paced<F: FnOnce(&mut TestCluster)>(
        &mut self,
        config: WorkloadConfig,
        faults: F,
    ) -> WorkloadReport {
        self.run_workload(config, faults, true)
    }

    fn run_workload<F: FnOnce(&mut TestCluster)>(
        &mut self,
        config: WorkloadConfig,
        faults: F,
        stop_after_faults: bool,
    ) -> WorkloadReport {
        let stop = Arc::new(AtomicBool::new(false));
        let completed = Arc::new(AtomicU64::new(0));
        let worker = {
            let (stop, completed) = (stop.clone(), completed.clone());
            std::thread::spawn(move || workload::run_observed(config, stop, completed))
        };
        self.progress = Some(completed);
        faults(self);
        self.progress = None;
        if stop_after_faults {
            stop.store(true, Ordering::Relaxed);
        }
        worker
            .join()
            .expect("workload thread")
            .expect("workload runs")
    }
}

impl TestCluster {
    /// Inside `run_with`'s faults: waits until the workload has completed `ops` more operations
    /// (the cluster served through whatever the last fault did), at most [`PROGRESS_LIMIT`].
    /// Faults paced this way land at the same point of the work on a fast or a loaded machine.
    pub fn await_progress(&self, ops: u64) {
        let progress = self
            .progress
            .as_ref()
            .expect("await_progress inside run_with");
        let target = progress.load(Ordering::Relaxed) + ops;
        let deadline = Instant::now() + PROGRESS_LIMIT;
        while progress.load(Ordering::Relaxed) < target {
            assert!(
                Instant::now() < deadline,
                "the workload completed fewer than {ops} operations in {PROGRESS_LIMIT:?}\n{}",
                self.log_tail(1)
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// The longest [`TestCluster::await_progress`] waits. Why 30 s: a healthy cluster completes
/// thousands of operations a second; one that completes a few hundred in 30 s is stuck.
pub const PROGRESS_LIMIT: Duration = Duration::from_secs(30);

/// One controller operation with a fresh client on a one-core runtime (callable from any
/// thread): the result and the controller leader the client found.
pub fn ctl_with(
    config: ClientConfig,
    op: CtlOp,
) -> (Result<CtlReply, ClientError>, Option<NodeId>) {
    with_client(config, move |client| {
        let op = op.clone();
        async move {
            let result = client.ctl_execute(op).await;
            (result, client.leader_hint(CONTROLLER_GROUP))
        }
    })
}

/// Runs `f` with a fresh client on a one-core runtime (callable from any thread); its output.
pub fn with_client<T, F, Fut>(config: ClientConfig, f: F) -> T
where
    T: Send + 'static,
    F: Fn(Client) -> Fut + Send + Clone + 'static,
    Fut: std::future::Future<Output = T> + 'static,
{
    let runtime = shardcore_io::RuntimeConfig {
        cores: 1,
        pinning: shardcore_io::runtime::Pinning::Unpinned,
        name: "test-client".to_string(),
        ..shardcore_io::RuntimeConfig::default()
    };
    let mut outputs = shardcore_io::run(runtime, move |_core: shardcore_io::Core<()>| {
        f(Client::new(config.clone()).expect("client config"))
    })
    .expect("client runtime");
    outputs.pop().expect("one core's output")
}

/// Asserts the report is clean: no lost acknowledged write, a linearizable history, and some
/// progress; prints the numbers.
pub fn assert_clean(cluster: &TestCluster, seed: u64, report: &WorkloadReport) {
    eprintln!(
        "{}: seed {seed}: {} completed, {} acknowledged writes, {} timeouts, {} refused, {} lost, {} history ops",
        cluster.name,
        report.completed,
        report.acknowledged_writes,
        report.timeouts,
        report.refused,
        report.lost_writes,
        report.history.len()
    );
    let logs = || {
        (1..=cluster.configs.len() as u64)
            .map(|id| format!("--- node {id} ---\n{}", cluster.log_tail(id)))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        report.final_read_failed.is_none(),
        "SEED={seed} {}: {:?}\n{}",
        cluster.name,
        report.final_read_failed,
        logs()
    );
    assert_eq!(
        report.lost_writes, 0,
        "SEED={seed} {}: acknowledged writes lost: {:?}",
        cluster.name, report.lost_examples
    );
    assert!(
        report.completed >= 20,
        "SEED={seed} {}: too little progress ({} ops)\n{}",
        cluster.name,
        report.completed,
        logs()
    );
    let verdict = check_history(&report.history);
    match &verdict.verdict {
        Verdict::Linearizable => {}
        other => {
            let path = std::env::temp_dir().join(format!("{}-seed{seed}.jsonl", cluster.name));
            let mut file = std::fs::File::create(&path).expect("history file");
            shardcore::history::write_all(&mut file, &report.history).expect("write history");
            panic!(
                "SEED={seed} {}: history not linearizable ({other:?}); saved to {}",
                cluster.name,
                path.display()
            );
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for id in 1..=self.children.len() as u64 {
            self.resume(id);
            self.kill(id);
        }
        if std::env::var_os("KEEP_CLUSTER_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn to_toml(c: &NodeConfig) -> String {
    let mut s = format!(
        "node_id = {}\ncluster_id = {:?}\nclient_addr = \"{}\"\npeer_addr = \"{}\"\n\
         data_dir = {:?}\ncores = {}\npin = {}\ngroups = {}\nshards = {}\nsharded = {}\n\
         log_level = {:?}\n",
        c.node_id,
        c.cluster_id,
        c.client_addr,
        c.peer_addr,
        c.data_dir.display().to_string(),
        c.cores,
        c.pin,
        c.groups,
        c.shards,
        c.sharded,
        c.log_level
    );
    for p in &c.peers {
        s.push_str(&format!(
            "[[peers]]\nid = {}\npeer_addr = \"{}\"\nclient_addr = \"{}\"\n",
            p.id, p.peer_addr, p.client_addr
        ));
    }
    s.push_str(&format!(
        "[raft]\ntick_ms = {}\nelection_ticks = {}\nheartbeat_ticks = {}\nlease_reads = {}\n\
         preferred_leader = {}\n",
        c.raft.tick_ms,
        c.raft.election_ticks,
        c.raft.heartbeat_ticks,
        c.raft.lease_reads,
        c.raft.preferred_leader
    ));
    s.push_str(&format!(
        "[kv]\nmax_raft_state_bytes = {}\nrequest_timeout_ms = {}\nmax_pending_requests = {}\n",
        c.kv.max_raft_state_bytes, c.kv.request_timeout_ms, c.kv.max_pending_requests
    ));
    s.push_str(&format!(
        "[wal]\nsegment_bytes = {}\nmax_segments = {}\n",
        c.wal.segment_bytes, c.wal.max_segments
    ));
    s
}
