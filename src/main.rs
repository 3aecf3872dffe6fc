//! The `shardcore` binary. `shardcore server` runs a node, `shardcore kv get|put|append|delete|cas`
//! is the command-line client, `shardcore ctl join|leave|move|query` the shard controller's,
//! and `shardcore cluster local --nodes 3` starts a local cluster of server processes (their
//! code lives in `shardcore::node::cli`). With `--sharded` (`server`, `kv`, `workload`,
//! `cluster local`) the groups are the sharded KV's shard groups, routed by the controller's
//! configuration; `cluster local --sharded` joins them at start. `shardcore sim` runs a simulated cluster from
//! one seed under a steady proposal load (and, with `--faults`, random partitions, disconnects,
//! crashes and restarts), prints its trace and a summary, and exits non-zero with `SEED=<n>`
//! when a safety invariant or the final liveness check fails. The same seed prints the same
//! run, line for line.
//!
//! `shardcore sim kv --scenario <name> --seed <n> [--history out.jsonl]` runs one of the lab's
//! KV scenarios (clients, faults, crashes, snapshots) on the simulated KV service, writes its
//! history, checks it for linearizability, and exits non-zero with `SEED=<n>` if any check fails.
//!
//! `shardcore check-history FILE [--max-steps N]` checks a history file (JSON lines, see
//! `shardcore::history`) for linearizability and exits 0 if it is linearizable, 1 if it is not,
//! 2 if it is undecided within the step budget or the file cannot be read.

use std::collections::BTreeMap;
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::ExitCode;
use std::time::Instant;

use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use shardcore::raft::{GroupId, Index, Role};
use shardcore::sim::{
    Chaos, ChaosConfig, ChaosCounts, Cluster, SimConfig, TraceEvent, TraceKind, TraceMode,
};

/// jemalloc (as TiKV uses) instead of glibc's malloc. A node frees its Raft log's entries by
/// the hundred thousand when a group snapshots; glibc's bins were then left so fragmented that
/// its `malloc` walked them (`unlink_chunk`) for half of the leader's CPU: 256-client puts fell
/// from ~125,000 to 5,000-30,000 per second for two seconds, then ran ~20% slower for good.
/// mimalloc, tried too, stalled more often (~100,000 puts/s over the same run).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Commits closer together than this print as one line, so the trace stays readable.
const COMMIT_COALESCE_US: u64 = 100_000;
/// Mean time between fault actions with `--faults`.
const FAULT_INTERVAL_MS: u64 = 500;
/// Mean time between client proposals, per group.
const PROPOSAL_INTERVAL_MS: u64 = 10;
/// After the run, how long the healed cluster has to agree (the lab's bound for one command).
const CONVERGE_TIMEOUT_MS: u64 = 10_000;

#[derive(Parser)]
#[command(
    name = "shardcore",
    version,
    about = "A thread-per-core replicated sharded KV server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the deterministic cluster simulator from one seed (`sim kv` for the KV service).
    Sim(SimCommand),
    /// Check a history file (one JSON operation per line) for linearizability: exit 0 if it is
    /// linearizable, 1 if not, 2 if undecided or the file is bad.
    CheckHistory(CheckHistoryArgs),
    /// Run a node (every setting has a default: alone, it is a single-node cluster).
    Server(shardcore::node::cli::ServerArgs),
    /// One KV operation against a cluster (exit 0 done, 1 not found / not swapped, 2 failed).
    Kv(shardcore::node::cli::KvArgs),
    /// One shard controller operation: `ctl join|leave|move|query` (exit 0 done, 1 refused,
    /// 2 usage, 3 no answer).
    Ctl(shardcore::node::cli::CtlArgs),
    /// Local clusters: `cluster local --nodes 3` starts one on 127.0.0.1.
    #[command(subcommand)]
    Cluster(shardcore::node::cli::ClusterCommand),
    /// A checking workload against a running cluster: concurrent clients, a history checked
    /// for linearizability, and a count of acknowledged writes lost (exit 0 when clean).
    Workload(shardcore::node::cli::WorkloadArgs),
    /// MapReduce: `mr run --app wc --input 'data/*.txt'`, or `mr coordinator` and `mr worker`.
    #[command(subcommand)]
    Mr(shardcore::mapreduce::cli::MrCommand),
}

#[derive(Args)]
struct CheckHistoryArgs {
    /// The history: one completed operation per line, as `shardcore::history` documents.
    file: std::path::PathBuf,
    /// Search steps allowed per key before the verdict is "undecided" (which fails).
    #[arg(long, default_value_t = shardcore::linearizability::DEFAULT_MAX_STEPS)]
    max_steps: u64,
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct SimCommand {
    #[command(subcommand)]
    kind: Option<SimKind>,
    #[command(flatten)]
    raft: SimArgs,
}

#[derive(Subcommand)]
enum SimKind {
    /// Run one of the lab's KV scenarios on the simulated KV service, write its history and
    /// check it for linearizability.
    Kv(KvSimArgs),
}

#[derive(Args)]
struct KvSimArgs {
    /// The scenario: a row of TEST-PARITY.md's KV table in snake case (basic, concurrent,
    /// unreliable, persist_partition_unreliable_linearizable, ...) or `swarm` (a random mix
    /// drawn from the seed). An unknown name lists them all.
    #[arg(long, default_value = "basic")]
    scenario: String,
    /// The seed; the same seed replays the same run.
    #[arg(long)]
    seed: u64,
    /// Write the history (JSON lines, see `shardcore::history`) to this file.
    #[arg(long)]
    history: Option<std::path::PathBuf>,
}

#[derive(Args)]
struct SimArgs {
    /// The seed; the same seed replays the same run.
    #[arg(long, required = true)]
    seed: Option<u64>,
    /// Nodes in the cluster.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=15))]
    nodes: u64,
    /// Raft groups; every node is a voter of every group.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    groups: u64,
    /// Virtual seconds of load (and faults).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    seconds: u64,
    /// Use the lab's unreliable network (delays up to 26 ms, 10% loss).
    #[arg(long)]
    unreliable: bool,
    /// Inject random partitions, disconnects, crashes, restarts and reliability switches.
    #[arg(long)]
    faults: bool,
    /// Snapshot (and compact) every this many applied entries.
    #[arg(long)]
    snapshot_every: Option<u64>,
    /// Also print every message sent (very verbose).
    #[arg(long)]
    messages: bool,
}

/// Prints one line to stdout. When stdout is gone (say, piped into `head`), stops quietly, as
/// command-line tools do, instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {
        if writeln!(std::io::stdout().lock(), $($arg)*).is_err() {
            std::process::exit(0);
        }
    };
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Sim(SimCommand {
            kind: Some(SimKind::Kv(args)),
            ..
        }) => sim_kv(&args),
        Command::Sim(SimCommand { raft, .. }) => sim(&raft),
        Command::CheckHistory(args) => check_history(&args),
        Command::Server(args) => shardcore::node::cli::server(&args),
        Command::Kv(args) => shardcore::node::cli::kv(args),
        Command::Ctl(args) => shardcore::node::cli::ctl(args),
        Command::Cluster(command) => shardcore::node::cli::cluster(command),
        Command::Workload(args) => shardcore::node::cli::workload(args),
        Command::Mr(command) => command.run(),
    }
}

fn sim(args: &SimArgs) -> ExitCode {
    let seed = args
        .seed
        .expect("clap requires --seed without a subcommand");
    say!("SEED={seed}");
    let wall = Instant::now();
    let outcome = catch_unwind(AssertUnwindSafe(|| run(args)));
    let wall_s = wall.elapsed().as_secs_f64();
    match outcome {
        Ok(summary) => {
            summary.print(wall_s);
            ExitCode::SUCCESS
        }
        Err(_) => {
            // The panic message (printed above by the panic hook) says what and where.
            eprintln!("FAILED SEED={seed}");
            ExitCode::FAILURE
        }
    }
}

fn sim_kv(args: &KvSimArgs) -> ExitCode {
    use shardcore::sim::kv_lab::{self, KvScenario, SCENARIOS};
    say!("SEED={}", args.seed);
    let Some(scenario) = KvScenario::named(&args.scenario, args.seed) else {
        let names: Vec<&str> = SCENARIOS.iter().map(|(name, _)| *name).collect();
        eprintln!(
            "unknown scenario {:?}; one of: {}, swarm",
            args.scenario,
            names.join(", ")
        );
        return ExitCode::from(2);
    };
    say!("scenario {} {scenario:?}", args.scenario);
    let wall = Instant::now();
    let cfg = SimConfig::new(args.seed, scenario.nodes);
    let outcome = catch_unwind(AssertUnwindSafe(|| kv_lab::run(cfg, scenario)));
    let cluster = match outcome {
        Ok(Ok(cluster)) => cluster,
        Ok(Err(problem)) => {
            eprintln!("{problem}\nFAILED SEED={}", args.seed);
            return ExitCode::FAILURE;
        }
        Err(_) => {
            eprintln!("FAILED SEED={}", args.seed);
            return ExitCode::FAILURE;
        }
    };
    let history = kv_lab::history(&cluster);
    let run_s = wall.elapsed().as_secs_f64();
    say!(
        "{} operations by {} clients in {:.3} simulated s ({:.3} wall s); {} requests sent",
        history.len(),
        scenario.clients,
        cluster.now_ms() as f64 / 1000.0,
        run_s,
        cluster.stats().kv_requests
    );
    if let Some(path) = &args.history {
        let written = std::fs::File::create(path).and_then(|file| {
            let mut out = std::io::BufWriter::new(file);
            shardcore::history::write_all(&mut out, &history)?;
            out.flush()
        });
        if let Err(e) = written {
            eprintln!("cannot write {}: {e}", path.display());
            return ExitCode::from(2);
        }
        say!("history written to {}", path.display());
    }
    let checked = Instant::now();
    let report = shardcore::linearizability::check_history(&history);
    say!(
        "{} ({:.3} s to check)",
        report.verdict,
        checked.elapsed().as_secs_f64()
    );
    if report.verdict.is_linearizable() {
        ExitCode::SUCCESS
    } else {
        eprintln!("FAILED SEED={}", args.seed);
        ExitCode::FAILURE
    }
}

struct Summary {
    nodes: u64,
    groups: u64,
    elections: u64,
    committed: Index,
    messages: u64,
    bytes: u64,
    delivered: u64,
    dropped: u64,
    disk_writes: u64,
    events: u64,
    simulated_s: f64,
    chaos: ChaosCounts,
}

impl Summary {
    fn print(&self, wall_s: f64) {
        say!("---- summary");
        say!("nodes {} groups {}", self.nodes, self.groups);
        say!("elections won       {}", self.elections);
        say!("entries committed   {}", self.committed);
        let c = &self.chaos;
        say!(
            "proposals           {} made, {} accepted, {} seen committed, {} lost to leader changes",
            c.proposed, c.accepted, c.acknowledged, c.lost
        );
        say!(
            "reads               {} asked, {} answered (all linearizable)",
            c.reads_asked,
            c.reads_answered
        );
        say!("fault actions       {}", c.faults);
        say!(
            "messages sent       {} ({} bytes)",
            self.messages,
            self.bytes
        );
        say!(
            "messages delivered  {} (dropped {})",
            self.delivered,
            self.dropped
        );
        say!("disk writes         {}", self.disk_writes);
        say!("events              {}", self.events);
        say!("simulated seconds   {:.3}", self.simulated_s);
        say!("wall seconds        {wall_s:.3}");
        say!(
            "simulated s per wall s {:.1}",
            self.simulated_s / wall_s.max(1e-9)
        );
    }
}

fn run(args: &SimArgs) -> Summary {
    let seed = args
        .seed
        .expect("clap requires --seed without a subcommand");
    let mut cfg = SimConfig::new(seed, args.nodes as usize);
    cfg.groups = args.groups as usize;
    cfg.unreliable = args.unreliable;
    cfg.snapshot_every = args.snapshot_every;
    cfg.trace = TraceMode::Full;
    cfg.trace_messages = args.messages;
    let chaos_cfg = ChaosConfig {
        proposal_interval_ms: PROPOSAL_INTERVAL_MS,
        fault_interval_ms: if args.faults { FAULT_INTERVAL_MS } else { 0 },
        ..ChaosConfig::default()
    };
    say!("{cfg:?}");
    say!("{chaos_cfg:?}");
    let mut cluster = Cluster::new(cfg);
    let mut chaos = Chaos::new(seed, chaos_cfg);
    let mut printer = TracePrinter::default();
    for _ in 0..args.seconds * 1000 / shardcore::sim::chaos::CHAOS_STEP_MS {
        chaos.step(&mut cluster);
        printer.print(cluster.take_trace());
    }
    chaos.heal(&mut cluster);
    for group in 1..=args.groups as GroupId {
        let command = Bytes::from(format!("final g{group}"));
        cluster.one(group, command, args.nodes as usize, true);
        cluster.check_agreement(group, CONVERGE_TIMEOUT_MS);
    }
    chaos.check_acknowledged(&cluster);
    printer.print(cluster.take_trace());
    printer.flush();
    let stats = cluster.stats();
    Summary {
        nodes: args.nodes,
        groups: args.groups,
        elections: printer.elections,
        committed: (1..=args.groups).map(|g| cluster.max_committed(g)).sum(),
        messages: stats.total_messages(),
        bytes: stats.total_bytes(),
        delivered: stats.delivered,
        dropped: stats.dropped,
        disk_writes: stats.disk_writes,
        events: stats.events,
        simulated_s: cluster.now_us() as f64 / 1e6,
        chaos: chaos.counts(),
    }
}

/// Prints trace events, folding the commits of each 100 ms bucket into one line per group.
#[derive(Default)]
struct TracePrinter {
    /// Start of the open bucket of commits.
    bucket_start_us: u64,
    /// group → (first index, last index) committed in the open bucket.
    commits: BTreeMap<GroupId, (Index, Index)>,
    elections: u64,
}

impl TracePrinter {
    fn print(&mut self, events: Vec<TraceEvent>) {
        for event in events {
            if event.at_us >= self.bucket_start_us + COMMIT_COALESCE_US {
                self.flush();
            }
            match event.kind {
                TraceKind::Commit { group, index, .. } => {
                    if self.commits.is_empty() {
                        self.bucket_start_us = event.at_us;
                    }
                    self.commits.entry(group).or_insert((index, index)).1 = index;
                }
                _ => {
                    if let TraceKind::Role {
                        role: Role::Leader, ..
                    } = event.kind
                    {
                        self.elections += 1;
                    }
                    // Keep the output in time order: commits so far go out first.
                    self.flush();
                    say!("{event}");
                }
            }
        }
    }

    fn flush(&mut self) {
        let at_s = self.bucket_start_us as f64 / 1e6;
        for (group, (first, last)) in std::mem::take(&mut self.commits) {
            if first == last {
                say!("[{at_s:>8.3}s] g{group} commit {last}");
            } else {
                say!("[{at_s:>8.3}s] g{group} commit {first}..={last}");
            }
        }
    }
}

/// `shardcore check-history`: reads the file, prints a summary and the verdict (for a violation,
/// the key and the operations involved), and exits 0 (linearizable), 1 (not) or 2 (undecided,
/// or a bad file).
fn check_history(args: &CheckHistoryArgs) -> ExitCode {
    use shardcore::linearizability::{check_history_with, CheckOptions, Verdict};
    let history = match shardcore::history::read_file(&args.file) {
        Ok(history) => history,
        Err(error) if error.line().is_some() => {
            eprintln!("shardcore check-history: {}: {error}", args.file.display());
            return ExitCode::from(2);
        }
        Err(error) => {
            eprintln!("shardcore check-history: {error}");
            return ExitCode::from(2);
        }
    };
    let clients: std::collections::BTreeSet<u64> = history.iter().map(|op| op.client).collect();
    let keys: std::collections::BTreeSet<&Bytes> = history.iter().map(|op| &op.key).collect();
    say!("history   {}", args.file.display());
    say!(
        "{} operations, {} clients, {} keys",
        history.len(),
        clients.len(),
        keys.len()
    );
    let wall = Instant::now();
    let options = CheckOptions {
        max_steps: args.max_steps,
    };
    let report = check_history_with(&history, &options);
    say!("{report}");
    say!("checked in {:.3} s", wall.elapsed().as_secs_f64());
    match report.verdict {
        Verdict::Linearizable => ExitCode::SUCCESS,
        Verdict::NotLinearizable(_) => ExitCode::from(1),
        Verdict::Undecided(_) => ExitCode::from(2),
    }
}
