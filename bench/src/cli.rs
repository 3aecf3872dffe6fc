//! The command line of `shardcore-bench`, its bounds, and what each workload sends.
//!
//! `shardcore-bench [run flags]` runs a load; `shardcore-bench compare A.json B.json ...` prints
//! runs side by side. The workload flags also answer to etcd-bench's names (`--clients`,
//! `--conns`, `--keyspace`, `--key-size`, `--value-size`, `--duration`, `--warmup`), so the
//! side-by-side script passes both tools the same words; etcd-bench's `--mix` (the *write*
//! fraction) is deliberately not an alias of `--read-fraction`.

use std::fmt;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use serde::Serialize;

use crate::keys::{ShardFilter, MAX_ZIPF_KEYS};
use crate::schedule::Arrival;

/// The most concurrent requests one bench process keeps outstanding. Why 10,000: each is a task
/// with its buffers, and past that one process's memory and the server's per-connection
/// windows stop being realistic; run several processes for more.
pub const MAX_CONCURRENCY: u64 = 10_000;

/// The most client connections per node one bench process opens. Why 1,024: well under the
/// default open-file limit with three nodes; connections beyond that measure the kernel.
pub const MAX_CONNECTIONS: u64 = 1_024;

/// The longest run. Why a day: long enough for any soak run, and a bound that catches a duration
/// typed in milliseconds by mistake.
pub const MAX_DURATION_SECS: u64 = 86_400;

/// The longest measured phase of a run bounded by `--ops` alone. Why 600 s: etcd-bench's
/// `--max-duration` default; an op count the cluster cannot reach still ends.
pub const DEFAULT_MAX_DURATION_SECS: u64 = 600;

/// The largest generated key. Why 1 KiB: real keys are short; larger ones measure the copy, not
/// the system.
pub const MAX_KEY_BYTES: u64 = 1 << 10;

/// The largest generated value. Why 1 MiB: it keeps one request well under the protocol's frame
/// limit, and one Raft entry under the core's default entry bound.
pub const MAX_VALUE_BYTES: u64 = 1 << 20;

/// Drive a shardcore cluster with a workload and report throughput, latency (HdrHistogram) and
/// CPU per operation; or `compare` runs. Without a subcommand the flags below are one run.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "shardcore-bench",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    /// `compare`; none: run a load with the flags below.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The run's flags.
    #[command(flatten)]
    pub run: Args,
}

/// The subcommands.
#[derive(Clone, Debug, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Print runs side by side with ratios to the first (JSON summaries written by `--out`,
    /// or any file whose last `RESULT ` line is etcd-bench's or ours).
    Compare(CompareArgs),
}

/// `shardcore-bench compare`.
#[derive(Clone, Debug, PartialEq, Eq, clap::Args)]
pub struct CompareArgs {
    /// The runs; ratios are to the first.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

/// Drive a shardcore cluster with a workload and report throughput and latency.
#[derive(Clone, Debug, PartialEq, Parser)]
#[command(name = "shardcore-bench", version)]
pub struct Args {
    /// Addresses of the cluster's nodes (host:port, node 1 first), comma-separated or repeated.
    #[arg(long, value_delimiter = ',')]
    pub servers: Vec<String>,

    /// Start the cluster too: `local` runs 3 `shardcore server` processes on 127.0.0.1 (as
    /// `shardcore cluster local` does) for this run and stops them after.
    #[arg(long, value_enum)]
    pub cluster: Option<ClusterMode>,

    /// The `shardcore` binary for `--cluster local` (default: next to this one).
    #[arg(long)]
    pub shardcore_bin: Option<PathBuf>,

    /// `--cluster local`: node i serves clients on this port + i - 1 (peers on + 100).
    #[arg(long, default_value_t = 7201)]
    pub base_port: u16,

    /// `--cluster local`: cores per node (0: the CPUs shared out among the nodes, at least 1).
    #[arg(long, default_value_t = 0)]
    pub server_cores: usize,

    /// `--cluster local`: the nodes' data and logs (default: a fresh directory under /tmp,
    /// deleted after the run unless `--keep-data`).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,

    /// `--cluster local`: keep the data directory.
    #[arg(long)]
    pub keep_data: bool,

    /// The cluster's name (the nodes' `cluster_id`).
    #[arg(long, default_value = "local")]
    pub cluster_id: String,

    /// The cluster's KV group count (the nodes' `groups`).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..))]
    pub groups: u64,

    /// The cluster runs the sharded KV (nodes with `sharded = true`): keys are routed by the
    /// shard controller's configuration. With `--cluster local` the nodes are started sharded
    /// and groups 1..=`--groups` are joined before the load, so `shardcore ctl move|join|leave`
    /// can migrate shards while it runs.
    #[arg(long)]
    pub sharded: bool,

    /// `--cluster local --sharded`: shards of the controller's configurations. With
    /// `--only-shard` or `--skip-shard` against `--servers`: the cluster's shard count.
    #[arg(long, default_value_t = shardcore::shardctl::DEFAULT_SHARDS)]
    pub shards: usize,

    /// With `--sharded`: use only keys of this shard (key i is the i-th key name of the
    /// shard), e.g. to fill one shard with `--prefill yes` before moving it.
    #[arg(long, conflicts_with = "skip_shard")]
    pub only_shard: Option<u32>,

    /// With `--sharded`: use no key of this shard, e.g. to measure the other shards while it
    /// moves.
    #[arg(long)]
    pub skip_shard: Option<u32>,

    /// What the clients send: one write kind (mixed with gets by `--read-fraction`), gets only,
    /// or the MIT 6.5840 lab's mix.
    #[arg(long, value_enum, default_value_t = Workload::Put)]
    pub workload: Workload,

    /// The fraction of operations that are gets, with `--workload put|append|cas`
    /// (0.9: 90% gets, 10% writes).
    #[arg(long)]
    pub read_fraction: Option<f64>,

    /// Gets are served by any replica without a ReadIndex round (may be stale); default:
    /// linearizable.
    #[arg(long)]
    pub serializable: bool,

    /// How keys are drawn.
    #[arg(long, value_enum, default_value_t = KeyDist::Uniform)]
    pub key_dist: KeyDist,

    /// The zipfian exponent θ, in (0, 1).
    #[arg(long, default_value_t = 0.99)]
    pub zipf_theta: f64,

    /// Closed loop (each outstanding slot waits for its answer) or open loop (a fixed rate).
    #[arg(long, value_enum, default_value_t = LoopMode::Closed)]
    pub mode: LoopMode,

    /// Operations per second across all cores; required with `--mode open`, refused without.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub rate: Option<u64>,

    /// The open loop's arrivals.
    #[arg(long, value_enum, default_value_t = Arrival::Uniform)]
    pub arrival: Arrival,

    /// How long to measure, in seconds (default 10, or 600 as a cap with `--ops`).
    #[arg(long, alias = "duration", value_parser = clap::value_parser!(u64).range(1..=MAX_DURATION_SECS))]
    pub duration_secs: Option<u64>,

    /// Measured operations to run; the first of this and the duration ends the run.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub ops: Option<u64>,

    /// Seconds of load before measuring (connections, sessions, leader caches, caches warm).
    #[arg(long, alias = "warmup", default_value_t = 1, value_parser = clap::value_parser!(u64).range(0..=MAX_DURATION_SECS))]
    pub warmup_secs: u64,

    /// Outstanding requests at once, across all cores (each a client with one request in
    /// flight in the closed loop).
    #[arg(long, alias = "clients", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=MAX_CONCURRENCY))]
    pub concurrency: u64,

    /// Client connections per node, across all cores (0: one per core). Requests on one
    /// connection are pipelined.
    #[arg(long, alias = "conns", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=MAX_CONNECTIONS))]
    pub connections: u64,

    /// Generator cores: one executor each (0: every CPU this process may use). One core drives
    /// well over 100,000 operations a second here (3-6 µs of CPU each); more cores only pay
    /// when the report says the generator may be the bottleneck. Where the servers share the
    /// machine, every extra core costs them CPU: on 2 CPUs with a local cluster, 2 generator
    /// cores did 25-30% fewer puts at 64 clients than 1 (each core pays its own wake-ups, and
    /// twice the connections carry half-size frames).
    #[arg(long, default_value_t = 1)]
    pub cores: usize,

    /// Distinct keys the workload draws from.
    #[arg(long, alias = "keyspace", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub keys: u64,

    /// Bytes per key (the prefix and a zero-padded number).
    #[arg(long, alias = "key-size", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=MAX_KEY_BYTES))]
    pub key_bytes: u64,

    /// The start of every key; use a fresh one per run to give `--history` fresh keys.
    #[arg(long, default_value = "k")]
    pub key_prefix: String,

    /// Bytes per written value.
    #[arg(long, alias = "value-size", default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=MAX_VALUE_BYTES))]
    pub value_bytes: u64,

    /// Write every key once before the run: `auto` does when the mix reads and a marker key
    /// says this key space was not filled yet.
    #[arg(long, value_enum, default_value_t = Prefill::Auto)]
    pub prefill: Prefill,

    /// One operation's deadline (then it counts as a timeout).
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..))]
    pub op_timeout_ms: u64,

    /// One attempt's deadline before the client tries the next node.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub attempt_timeout_ms: u64,

    /// Write every operation (warm-up and prefill included) to this file as JSON lines, for
    /// `shardcore check-history`.
    #[arg(long)]
    pub history: Option<PathBuf>,

    /// Write the reports here: summary.json, latency.hgrm (and one per operation kind),
    /// latency.svg, throughput.svg.
    #[arg(long)]
    pub out: Option<PathBuf>,

    /// Whose CPU time is the servers': `auto` finds `shardcore server` processes whose
    /// `--client-addr` is one of `--servers`; `none`; or a comma-separated list of pids.
    #[arg(long, default_value = "auto")]
    pub server_pids: String,

    /// A name for this run in reports (default: the workload and concurrency).
    #[arg(long)]
    pub label: Option<String>,

    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,

    /// Seeds the key choice, the operation mix, the values and the open-loop schedule.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Which cluster `--cluster` starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ClusterMode {
    /// Three `shardcore server` processes on 127.0.0.1.
    Local,
}

/// What the clients send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// Overwrites (with gets by `--read-fraction`).
    Put,
    /// Reads only.
    Get,
    /// Appends to the current value (with gets by `--read-fraction`). Values grow: keep runs
    /// short or the key space large.
    Append,
    /// Compare-and-swap from the value this core last saw for the key (with gets by
    /// `--read-fraction`); a swap that finds another value counts as done, not as an error.
    Cas,
    /// The MIT 6.5840 KV lab's mix: 45% gets, 5% puts, 50% appends.
    Mixed,
}

/// How arrivals are paced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LoopMode {
    /// Each outstanding slot sends its next operation when the previous one returns.
    Closed,
    /// Operations arrive at `--rate` per second whatever the latency; latency counts from the
    /// scheduled arrival (no coordinated omission).
    Open,
}

/// How keys are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyDist {
    /// Every key equally likely.
    Uniform,
    /// Key i with probability proportional to 1/(i+1)^θ (`--zipf-theta`).
    Zipfian,
}

/// Whether to write the key space before the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Prefill {
    /// When the mix reads and the key space is not marked as filled.
    Auto,
    /// Always.
    Yes,
    /// Never.
    No,
}

/// The share of each operation in a workload, in parts per million (exact for any fraction
/// given with up to six decimals).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct OpMix {
    /// Reads.
    pub get_ppm: u32,
    /// Overwrites.
    pub put_ppm: u32,
    /// Appends.
    pub append_ppm: u32,
    /// Compare-and-swaps.
    pub cas_ppm: u32,
}

/// Parts per million in a whole.
pub const PPM: u32 = 1_000_000;

impl OpMix {
    /// The fraction of operations that write.
    pub fn write_fraction(&self) -> f64 {
        f64::from(PPM - self.get_ppm) / f64::from(PPM)
    }
}

impl Workload {
    /// The operation mix the workload sends, given `--read-fraction` (already validated).
    pub fn mix(self, read_fraction: Option<f64>) -> OpMix {
        let reads = (read_fraction.unwrap_or(0.0) * f64::from(PPM)).round() as u32;
        let writes = PPM - reads;
        let zero = OpMix {
            get_ppm: reads,
            put_ppm: 0,
            append_ppm: 0,
            cas_ppm: 0,
        };
        match self {
            Workload::Put => OpMix {
                put_ppm: writes,
                ..zero
            },
            Workload::Append => OpMix {
                append_ppm: writes,
                ..zero
            },
            Workload::Cas => OpMix {
                cas_ppm: writes,
                ..zero
            },
            Workload::Get => OpMix {
                get_ppm: PPM,
                ..zero
            },
            Workload::Mixed => OpMix {
                get_ppm: 450_000,
                put_ppm: 50_000,
                append_ppm: 500_000,
                cas_ppm: 0,
            },
        }
    }
}

/// Why a command line that parsed is still refused.
#[derive(Clone, Debug, PartialEq)]
pub enum ArgsError {
    /// `--mode open` without `--rate`.
    OpenLoopNeedsRate,
    /// `--rate` without `--mode open`: a closed loop has no rate, and ignoring the flag would
    /// hide a mistake.
    RateWithoutOpenLoop,
    /// `--key-bytes` cannot hold a distinct key for every one of `--keys`.
    KeysDoNotFit {
        /// The bytes a key needs: the prefix and the largest key number.
        needed_bytes: u64,
        /// The `--key-bytes` given.
        key_bytes: u64,
    },
    /// `--read-fraction` outside [0, 1], or with a workload that fixes its own mix.
    BadReadFraction(String),
    /// `--zipf-theta` outside (0, 1), or the key space too large for the zipfian set-up.
    BadZipf(String),
    /// Neither `--servers` nor `--cluster local`, or both.
    WhichCluster,
    /// More connections than outstanding requests could use.
    TooManyConnections,
    /// `--only-shard` or `--skip-shard` without `--sharded`, or naming no shard of
    /// `--shards`.
    BadShardFilter(String),
}

impl Args {
    /// Checks what clap cannot check flag by flag: the flags' agreement with each other.
    pub fn validate(&self) -> Result<(), ArgsError> {
        match (self.mode, self.rate) {
            (LoopMode::Open, None) => return Err(ArgsError::OpenLoopNeedsRate),
            (LoopMode::Closed, Some(_)) => return Err(ArgsError::RateWithoutOpenLoop),
            _ => {}
        }
        if self.servers.is_empty() == self.cluster.is_none() {
            return Err(ArgsError::WhichCluster);
        }
        if let Some(filter) = self.shard_filter() {
            let (ShardFilter::Only(shard) | ShardFilter::Skip(shard)) = filter;
            if !self.sharded {
                return Err(ArgsError::BadShardFilter("needs --sharded".to_string()));
            }
            if shard as usize >= self.shards {
                return Err(ArgsError::BadShardFilter(format!(
                    "shard {shard} is not one of --shards {}",
                    self.shards
                )));
            }
        }
        let needed_bytes = self.key_prefix.len() as u64 + decimal_digits(self.keys - 1);
        // A shard filter skips key numbers, so its names may be longer (see `keys`).
        if needed_bytes > self.key_bytes && self.shard_filter().is_none() {
            return Err(ArgsError::KeysDoNotFit {
                needed_bytes,
                key_bytes: self.key_bytes,
            });
        }
        if let Some(fraction) = self.read_fraction {
            if !(0.0..=1.0).contains(&fraction) {
                return Err(ArgsError::BadReadFraction(format!(
                    "{fraction} is outside [0, 1]"
                )));
            }
            if matches!(self.workload, Workload::Get | Workload::Mixed) {
                return Err(ArgsError::BadReadFraction(
                    "--workload get and mixed fix their own mix".to_string(),
                ));
            }
        }
        if self.key_dist == KeyDist::Zipfian {
            if !(self.zipf_theta > 0.0 && self.zipf_theta < 1.0) {
                return Err(ArgsError::BadZipf(format!(
                    "--zipf-theta {} is outside (0, 1)",
                    self.zipf_theta
                )));
            }
            if self.keys > MAX_ZIPF_KEYS {
                return Err(ArgsError::BadZipf(format!(
                    "zipfian keys are limited to {MAX_ZIPF_KEYS}"
                )));
            }
        }
        if self.connections > self.concurrency {
            return Err(ArgsError::TooManyConnections);
        }
        Ok(())
    }

    /// The run's shard filter, if any.
    pub fn shard_filter(&self) -> Option<ShardFilter> {
        match (self.only_shard, self.skip_shard) {
            (Some(shard), _) => Some(ShardFilter::Only(shard)),
            (None, Some(shard)) => Some(ShardFilter::Skip(shard)),
            (None, None) => None,
        }
    }

    /// The operation mix of this run.
    pub fn mix(&self) -> OpMix {
        self.workload.mix(self.read_fraction)
    }

    /// Whether this run's mix reads at all.
    pub fn reads(&self) -> bool {
        self.mix().get_ppm > 0
    }

    /// The measured phase's limit in seconds (see `--duration-secs`).
    pub fn duration_limit_secs(&self) -> u64 {
        match (self.duration_secs, self.ops) {
            (Some(secs), _) => secs,
            (None, None) => 10,
            (None, Some(_)) => DEFAULT_MAX_DURATION_SECS,
        }
    }

    /// The run's name in reports.
    pub fn label(&self) -> String {
        if let Some(label) = &self.label {
            return label.clone();
        }
        let mix = self.mix();
        let workload = match self.workload {
            Workload::Get => "get 100%".to_string(),
            Workload::Mixed => "lab mix".to_string(),
            write if mix.get_ppm == 0 => format!("{} 100%", value_name(write)),
            write => format!(
                "get {}% / {} {}%",
                percent(mix.get_ppm),
                value_name(write),
                percent(PPM - mix.get_ppm)
            ),
        };
        format!("{workload}, {} clients", self.concurrency)
    }

    /// The settings on one line, for the top of a report.
    pub fn summary(&self) -> String {
        let rate = self
            .rate
            .map(|r| format!(" rate={r}/s arrival={}", value_name(self.arrival)))
            .unwrap_or_default();
        let ops = self.ops.map(|n| format!(" ops={n}")).unwrap_or_default();
        let keys = match self.key_dist {
            KeyDist::Uniform => "uniform".to_string(),
            KeyDist::Zipfian => format!("zipfian(θ={})", self.zipf_theta),
        };
        let mut target = match self.cluster {
            Some(ClusterMode::Local) => "cluster=local".to_string(),
            None => format!("servers={}", self.servers.join(",")),
        };
        if self.sharded {
            target.push_str(" sharded");
        }
        match self.shard_filter() {
            Some(ShardFilter::Only(shard)) => target.push_str(&format!(" only_shard={shard}")),
            Some(ShardFilter::Skip(shard)) => target.push_str(&format!(" skip_shard={shard}")),
            None => {}
        }
        format!(
            "workload={} read_fraction={:.3} reads={} mode={}{rate} duration={}s{ops} warmup={}s \
             concurrency={} connections={} keys={} dist={keys} key_bytes={} value_bytes={} \
             seed={} {target}",
            value_name(self.workload),
            f64::from(self.mix().get_ppm) / f64::from(PPM),
            if self.serializable {
                "serializable"
            } else {
                "linearizable"
            },
            value_name(self.mode),
            self.duration_limit_secs(),
            self.warmup_secs,
            self.concurrency,
            if self.connections == 0 {
                "per-core".to_string()
            } else {
                self.connections.to_string()
            },
            self.keys,
            self.key_bytes,
            self.value_bytes,
            self.seed,
        )
    }
}

fn percent(ppm: u32) -> String {
    let p = f64::from(ppm) / 10_000.0;
    if p.fract() == 0.0 {
        format!("{p:.0}")
    } else {
        format!("{p}")
    }
}

/// The flag value that names `value` (`read-heavy`, not `ReadHeavy`).
pub fn value_name(value: impl ValueEnum) -> String {
    value
        .to_possible_value()
        .map(|v| v.get_name().to_owned())
        .unwrap_or_default()
}

fn decimal_digits(n: u64) -> u64 {
    n.checked_ilog10().map_or(1, |log| u64::from(log) + 1)
}

impl fmt::Display for ArgsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgsError::OpenLoopNeedsRate => write!(f, "--mode open needs --rate"),
            ArgsError::RateWithoutOpenLoop => {
                write!(
                    f,
                    "--rate applies to --mode open only; a closed loop has no rate"
                )
            }
            ArgsError::KeysDoNotFit {
                needed_bytes,
                key_bytes,
            } => write!(
                f,
                "--key-bytes {key_bytes} cannot hold every key: the largest needs {needed_bytes}"
            ),
            ArgsError::BadReadFraction(why) => write!(f, "--read-fraction: {why}"),
            ArgsError::BadZipf(why) => write!(f, "{why}"),
            ArgsError::WhichCluster => {
                write!(f, "give either --servers or --cluster local (exactly one)")
            }
            ArgsError::TooManyConnections => {
                write!(f, "--connections cannot exceed --concurrency")
            }
            ArgsError::BadShardFilter(why) => write!(f, "--only-shard/--skip-shard: {why}"),
        }
    }
}

impl std::error::Error for ArgsError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(flags: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(["shardcore-bench"].iter().chain(flags))
    }

    /// The defaults, and a list of servers split on commas.
    #[test]
    fn defaults_and_server_list() {
        let args = parse(&["--servers", "127.0.0.1:1,127.0.0.1:2"]).unwrap();
        assert_eq!(args.servers, ["127.0.0.1:1", "127.0.0.1:2"]);
        assert_eq!(
            (args.workload, args.mode, args.rate),
            (Workload::Put, LoopMode::Closed, None)
        );
        assert_eq!(
            (args.duration_limit_secs(), args.concurrency, args.keys),
            (10, 16, 100_000)
        );
        assert_eq!((args.key_bytes, args.value_bytes, args.seed), (16, 128, 1));
        assert_eq!(args.validate(), Ok(()));
        assert_eq!(args.label(), "put 100%, 16 clients");
    }

    /// Every flag parses, kebab-case enum values and etcd-bench's names included.
    #[test]
    fn every_flag_parses() {
        let args = parse(&[
            "--servers=a:1",
            "--workload=cas",
            "--read-fraction=0.9",
            "--mode=open",
            "--rate=5000",
            "--arrival=poisson",
            "--duration=60",
            "--ops=1000",
            "--warmup=2",
            "--clients=64",
            "--conns=4",
            "--keyspace=100",
            "--key-size=8",
            "--value-size=1024",
            "--key-dist=zipfian",
            "--zipf-theta=0.8",
            "--history=h.jsonl",
            "--out=reports",
            "--server-pids=1,2",
            "--seed=7",
        ])
        .unwrap();
        assert_eq!(
            (args.workload, args.mode, args.rate),
            (Workload::Cas, LoopMode::Open, Some(5000))
        );
        assert_eq!(
            (args.concurrency, args.connections, args.keys),
            (64, 4, 100)
        );
        assert_eq!((args.duration_secs, args.warmup_secs), (Some(60), 2));
        assert_eq!(args.history, Some(PathBuf::from("h.jsonl")));
        assert_eq!(args.validate(), Ok(()));
        let summary = args.summary();
        assert!(
            summary.contains(
                "workload=cas read_fraction=0.900 reads=linearizable mode=open rate=5000/s"
            ),
            "{summary}"
        );
        assert_eq!(args.label(), "get 90% / cas 10%, 64 clients");
    }

    /// `compare` is a subcommand; without one the flags are a run.
    #[test]
    fn compare_is_a_subcommand() {
        let cli = Cli::try_parse_from(["shardcore-bench", "compare", "a.json", "b.json"]).unwrap();
        assert_eq!(
            cli.command,
            Some(Command::Compare(CompareArgs {
                files: vec!["a.json".into(), "b.json".into()]
            }))
        );
        let cli = Cli::try_parse_from(["shardcore-bench", "--servers=a:1"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.run.servers, ["a:1"]);
        assert!(Cli::try_parse_from(["shardcore-bench", "compare"]).is_err());
    }

    /// Flags outside their bounds are refused by the parser.
    #[test]
    fn out_of_bound_flags_are_refused() {
        for bad in [
            &["--servers=a:1", "--concurrency=0"][..],
            &["--servers=a:1", "--concurrency=10001"],
            &["--servers=a:1", "--duration-secs=0"],
            &["--servers=a:1", "--key-bytes=1025"],
            &["--servers=a:1", "--value-bytes=0"],
            &["--servers=a:1", "--workload=scan"],
            &["--servers=a:1", "--groups=0"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    /// Flags that parse one by one but disagree are refused by `validate`.
    #[test]
    fn disagreeing_flags_are_refused() {
        let check = |flags: &[&str]| parse(flags).unwrap().validate();
        assert_eq!(
            check(&["--servers=a:1", "--mode=open"]),
            Err(ArgsError::OpenLoopNeedsRate)
        );
        assert_eq!(
            check(&["--servers=a:1", "--rate=10"]),
            Err(ArgsError::RateWithoutOpenLoop)
        );
        assert_eq!(check(&[]), Err(ArgsError::WhichCluster));
        assert_eq!(
            check(&["--servers=a:1", "--cluster=local"]),
            Err(ArgsError::WhichCluster)
        );
        assert_eq!(check(&["--cluster=local"]), Ok(()));
        assert!(matches!(
            check(&["--servers=a:1", "--only-shard=3"]),
            Err(ArgsError::BadShardFilter(_))
        ));
        assert!(matches!(
            check(&["--servers=a:1", "--sharded", "--shards=4", "--skip-shard=4"]),
            Err(ArgsError::BadShardFilter(_))
        ));
        assert_eq!(
            check(&["--servers=a:1", "--sharded", "--shards=4", "--skip-shard=3"]),
            Ok(())
        );
        assert!(parse(&["--servers=a:1", "--only-shard=1", "--skip-shard=2"]).is_err());
        // 1000 keys are k0..k999: four bytes at most.
        assert_eq!(
            check(&["--servers=a:1", "--keys=1000", "--key-bytes=4"]),
            Ok(())
        );
        assert_eq!(
            check(&["--servers=a:1", "--keys=1001", "--key-bytes=4"]),
            Err(ArgsError::KeysDoNotFit {
                needed_bytes: 5,
                key_bytes: 4
            })
        );
        for bad in [
            &["--servers=a:1", "--read-fraction=1.5"][..],
            &["--servers=a:1", "--workload=get", "--read-fraction=0.5"],
            &["--servers=a:1", "--workload=mixed", "--read-fraction=0.5"],
        ] {
            assert!(
                matches!(check(bad), Err(ArgsError::BadReadFraction(_))),
                "{bad:?}"
            );
        }
        let zipf = check(&["--servers=a:1", "--key-dist=zipfian", "--zipf-theta=1"]);
        assert!(matches!(zipf, Err(ArgsError::BadZipf(_))));
        assert_eq!(
            check(&["--servers=a:1", "--concurrency=2", "--connections=3"]),
            Err(ArgsError::TooManyConnections)
        );
    }

    /// Each workload's mix adds up to the whole, and the read fraction splits it.
    #[test]
    fn mixes_add_up() {
        for workload in Workload::value_variants() {
            for fraction in [None, Some(0.0), Some(0.9), Some(1.0)] {
                let mix = workload.mix(fraction);
                assert_eq!(
                    mix.get_ppm + mix.put_ppm + mix.append_ppm + mix.cas_ppm,
                    PPM,
                    "{workload:?} {fraction:?}"
                );
            }
        }
        let mix = Workload::Put.mix(Some(0.9));
        assert_eq!((mix.get_ppm, mix.put_ppm), (900_000, 100_000));
        assert!((mix.write_fraction() - 0.1).abs() < 1e-12);
    }
}
