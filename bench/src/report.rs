//! A run's results: the [`Summary`] (written as `summary.json`, read back by `compare`), the
//! text summary, and the one-line `RESULT` form that etcd-bench also prints, so that one script
//! and `../shared/peers/summarize.py` read both tools alike.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::recorder::{BenchOp, Recorder};

/// The `format` field of a summary this version writes.
pub const FORMAT: &str = "shardcore-bench/1";

/// An open-loop send lag past this many milliseconds is reported as overload. Why 100 ms: far
/// above a scheduling hiccup of the generator, far below what a backlog builds in seconds.
pub const OVERLOAD_LAG_MS: f64 = 100.0;

/// Latency figures of one histogram, in microseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Latency {
    /// Operations measured.
    pub count: u64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// The slowest.
    pub max_us: u64,
    /// The fastest.
    pub min_us: u64,
    /// The mean.
    pub mean_us: f64,
}

impl Latency {
    /// The figures of `histogram`.
    pub fn of(histogram: &Histogram<u64>) -> Latency {
        if histogram.is_empty() {
            return Latency::default();
        }
        let at = |q: f64| histogram.value_at_quantile(q);
        Latency {
            count: histogram.len(),
            p50_us: at(0.5),
            p90_us: at(0.9),
            p99_us: at(0.99),
            p999_us: at(0.999),
            max_us: histogram.max(),
            min_us: histogram.min(),
            mean_us: histogram.mean(),
        }
    }
}

/// CPU time of some processes over the measured phase.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CpuUse {
    /// Whose: `bench` (this process), or how the server pids were found.
    pub source: String,
    /// The processes measured.
    pub pids: Vec<u32>,
    /// CPU seconds (user + system) used during the measured phase.
    pub cpu_secs: f64,
    /// CPU microseconds per successful operation.
    pub us_per_op: f64,
    /// CPU seconds per wall second (1.0 = one core busy).
    pub cores_busy: f64,
}

/// Completions over the measured phase.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Timeline {
    /// Width of each interval.
    pub interval_ms: u64,
    /// Successful operations per interval.
    pub ops: Vec<u64>,
    /// Failed operations (timeouts included) per interval.
    pub errors: Vec<u64>,
}

/// Everything a run reports; `compare` reads these back.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Summary {
    /// [`FORMAT`].
    pub format: String,
    /// What was measured: `shardcore` (or `etcd` for a summary read from etcd-bench).
    pub target: String,
    /// The run's name.
    pub label: String,
    /// The settings line.
    pub settings: String,
    /// `put`, `get`, `append`, `cas` or `mixed`.
    pub workload: String,
    /// Fraction of operations that were gets.
    pub read_fraction: f64,
    /// `linearizable` or `serializable`.
    pub reads: String,
    /// `closed` or `open`.
    pub mode: String,
    /// The open loop's rate.
    pub rate: Option<u64>,
    /// Outstanding requests.
    pub concurrency: u64,
    /// Connections per node (0: one per generator core).
    pub connections: u64,
    /// Server endpoints.
    pub endpoints: u64,
    /// Generator cores.
    pub generator_cores: u64,
    /// Keys in the key space.
    pub keys: u64,
    /// `uniform` or `zipfian(θ=…)`.
    pub key_dist: String,
    /// Bytes per key.
    pub key_bytes: u64,
    /// Bytes per value.
    pub value_bytes: u64,
    /// The seed.
    pub seed: u64,
    /// Start of the measured phase, seconds since the Unix epoch.
    pub started_unix_secs: u64,
    /// Length of the measured phase.
    pub measured_secs: f64,
    /// Successful operations.
    pub ops: u64,
    /// Failed operations other than timeouts.
    pub errors: u64,
    /// Timed-out operations.
    pub timeouts: u64,
    /// Compare-and-swaps that found another value.
    pub cas_mismatches: u64,
    /// The first error seen.
    pub first_error: Option<String>,
    /// Open loop: the most a measured operation was sent after its intended time, in ms.
    pub open_loop_max_lag_ms: Option<f64>,
    /// Successful operations per second.
    pub ops_per_sec: f64,
    /// All operations' latency.
    pub latency: Latency,
    /// Latency per operation kind (only kinds that ran).
    pub by_op: BTreeMap<String, Latency>,
    /// Throughput over time.
    pub timeline: Timeline,
    /// The bench's own CPU.
    pub client_cpu: Option<CpuUse>,
    /// The servers' CPU, when their processes were found.
    pub server_cpu: Option<CpuUse>,
    /// CPUs of the machine.
    pub machine_cpus: u64,
    /// The machine's 1-minute load average when the run started.
    pub load_average_at_start: f64,
}

/// The measurements and context the engine hands over.
pub struct RunFacts<'a> {
    /// The merged recorder.
    pub recorder: &'a Recorder,
    /// The measured phase's length.
    pub measured_secs: f64,
    /// When it started.
    pub started_unix_secs: u64,
    /// The bench's CPU seconds in it.
    pub client_cpu_secs: f64,
    /// The servers' CPU seconds in it, with how they were found and their pids.
    pub server_cpu: Option<(String, Vec<u32>, f64)>,
    /// Generator cores used.
    pub generator_cores: u64,
    /// The 1-minute load average at the start.
    pub load_average_at_start: f64,
}

impl Summary {
    /// The summary of a finished run of `args`.
    pub fn new(args: &crate::cli::Args, endpoints: u64, facts: &RunFacts<'_>) -> Summary {
        let recorder = facts.recorder;
        let secs = facts.measured_secs.max(1e-9);
        let ops = recorder.ops;
        let per_op = |cpu: f64| {
            if ops == 0 {
                0.0
            } else {
                cpu * 1e6 / ops as f64
            }
        };
        let mix = args.mix();
        let by_op = BenchOp::ALL
            .iter()
            .filter(|op| !recorder.of(**op).is_empty())
            .map(|op| (op.name().to_string(), Latency::of(recorder.of(*op))))
            .collect();
        Summary {
            format: FORMAT.to_string(),
            target: "shardcore".to_string(),
            label: args.label(),
            settings: args.summary(),
            workload: crate::cli::value_name(args.workload),
            read_fraction: f64::from(mix.get_ppm) / f64::from(crate::cli::PPM),
            reads: if args.serializable {
                "serializable"
            } else {
                "linearizable"
            }
            .to_string(),
            mode: crate::cli::value_name(args.mode),
            rate: args.rate,
            concurrency: args.concurrency,
            connections: args.connections,
            endpoints,
            generator_cores: facts.generator_cores,
            keys: args.keys,
            key_dist: match args.key_dist {
                crate::cli::KeyDist::Uniform => "uniform".to_string(),
                crate::cli::KeyDist::Zipfian => format!("zipfian(θ={})", args.zipf_theta),
            },
            key_bytes: args.key_bytes,
            value_bytes: args.value_bytes,
            seed: args.seed,
            started_unix_secs: facts.started_unix_secs,
            measured_secs: facts.measured_secs,
            ops,
            errors: recorder.errors,
            timeouts: recorder.timeouts,
            cas_mismatches: recorder.cas_mismatches,
            first_error: recorder.first_error.clone(),
            open_loop_max_lag_ms: (args.mode == crate::cli::LoopMode::Open)
                .then(|| recorder.max_send_lag_ns as f64 / 1e6),
            ops_per_sec: ops as f64 / secs,
            latency: Latency::of(&recorder.all),
            by_op,
            timeline: Timeline {
                interval_ms: recorder.interval_ns / 1_000_000,
                ops: recorder.timeline_ops.clone(),
                errors: recorder.timeline_errors.clone(),
            },
            client_cpu: Some(CpuUse {
                source: "bench".to_string(),
                pids: vec![std::process::id()],
                cpu_secs: facts.client_cpu_secs,
                us_per_op: per_op(facts.client_cpu_secs),
                cores_busy: facts.client_cpu_secs / secs,
            }),
            server_cpu: facts.server_cpu.as_ref().map(|(source, pids, cpu)| CpuUse {
                source: source.clone(),
                pids: pids.clone(),
                cpu_secs: *cpu,
                us_per_op: per_op(*cpu),
                cores_busy: cpu / secs,
            }),
            machine_cpus: std::thread::available_parallelism().map_or(0, |n| n.get() as u64),
            load_average_at_start: facts.load_average_at_start,
        }
    }

    /// The fraction of operations that wrote.
    pub fn write_fraction(&self) -> f64 {
        1.0 - self.read_fraction
    }

    /// The text report.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let ms = |us: u64| format!("{:.3} ms", us as f64 / 1000.0);
        let _ = writeln!(out, "{} — {}", self.target, self.label);
        let _ = writeln!(out, "  {}", self.settings);
        let _ = writeln!(
            out,
            "  {:.0} ops/s  ({} ops in {:.2} s; errors {}, timeouts {}{})",
            self.ops_per_sec,
            self.ops,
            self.measured_secs,
            self.errors,
            self.timeouts,
            if self.cas_mismatches > 0 {
                format!(", cas mismatches {}", self.cas_mismatches)
            } else {
                String::new()
            }
        );
        let lat = &self.latency;
        let _ = writeln!(
            out,
            "  latency  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  mean {:.3} ms",
            ms(lat.p50_us),
            ms(lat.p90_us),
            ms(lat.p99_us),
            ms(lat.p999_us),
            ms(lat.max_us),
            lat.mean_us / 1000.0
        );
        for (name, lat) in &self.by_op {
            let _ = writeln!(
                out,
                "  {name:<7}  p50 {}  p99 {}  p99.9 {}  max {}  ({} ops)",
                ms(lat.p50_us),
                ms(lat.p99_us),
                ms(lat.p999_us),
                ms(lat.max_us),
                lat.count
            );
        }
        if let Some(cpu) = &self.client_cpu {
            let _ = writeln!(
                out,
                "  bench CPU   {:.1} µs/op, {:.2} cores busy of {} generator cores{}",
                cpu.us_per_op,
                cpu.cores_busy,
                self.generator_cores,
                if cpu.cores_busy > 0.9 * self.generator_cores as f64 {
                    "  (the generator may be the bottleneck)"
                } else {
                    ""
                }
            );
        }
        match &self.server_cpu {
            Some(cpu) => {
                let _ = writeln!(
                    out,
                    "  server CPU  {:.1} µs/op, {:.2} cores busy ({}, pids {:?})",
                    cpu.us_per_op, cpu.cores_busy, cpu.source, cpu.pids
                );
            }
            None => {
                let _ = writeln!(out, "  server CPU  not measured (no server pids)");
            }
        }
        if let Some(lag_ms) = self.open_loop_max_lag_ms {
            let _ = write!(
                out,
                "  open loop: sends lagged their schedule by up to {lag_ms:.1} ms"
            );
            let _ = writeln!(
                out,
                "{}",
                if lag_ms > OVERLOAD_LAG_MS {
                    " — the rate is above what the cluster sustains (latency grows with the run)"
                } else {
                    ""
                }
            );
        }
        if let Some(error) = &self.first_error {
            let _ = writeln!(out, "  first error: {error}");
        }
        out
    }

    /// The one-line form: etcd-bench's RESULT fields first (same names and units), then ours.
    pub fn result_line(&self) -> String {
        let lat = &self.latency;
        let write_kind = self.write_kind();
        let mut line = format!(
            "RESULT target={} clients={} conns={} endpoints={} put_frac={:.2} reads={} \
             key_size={} value_size={} keyspace={} secs={:.2} ops={} errors={} ops_per_s={:.0} \
             p50_us={} p90_us={} p99_us={} p999_us={} max_us={} mean_us={:.0}",
            self.target,
            self.concurrency,
            self.connections,
            self.endpoints,
            self.write_fraction(),
            self.reads,
            self.key_bytes,
            self.value_bytes,
            self.keys,
            self.measured_secs,
            self.ops,
            self.errors + self.timeouts,
            self.ops_per_sec,
            lat.p50_us,
            lat.p90_us,
            lat.p99_us,
            lat.p999_us,
            lat.max_us,
            lat.mean_us,
        );
        for name in ["put", "get", "append", "cas"] {
            let lat = self.by_op.get(name).cloned().unwrap_or_default();
            let _ = write!(
                line,
                " {name}_ops={} {name}_p50_us={} {name}_p99_us={} {name}_p999_us={} {name}_max_us={}",
                lat.count, lat.p50_us, lat.p99_us, lat.p999_us, lat.max_us
            );
        }
        if write_kind != "put" {
            // summarize.py groups by this when present; only non-put workloads need it.
            let _ = write!(line, " workload={}", self.workload);
        }
        let cpu = |c: &Option<CpuUse>| {
            c.as_ref()
                .map_or("NA".to_string(), |c| format!("{:.1}", c.us_per_op))
        };
        let _ = write!(
            line,
            " timeouts={} mode={} gen_cores={} client_cpu_us_per_op={} server_cpu_us_per_op={}",
            self.timeouts,
            self.mode,
            self.generator_cores,
            cpu(&self.client_cpu),
            cpu(&self.server_cpu)
        );
        line
    }

    fn write_kind(&self) -> &str {
        match self.workload.as_str() {
            "get" | "" => "put",
            other => other,
        }
    }

    /// A summary from a `RESULT` line (etcd-bench's or ours): the fields both print. `None`
    /// when `line` is not one.
    pub fn from_result_line(line: &str) -> Option<Summary> {
        let rest = line.trim().strip_prefix("RESULT ")?;
        let fields: BTreeMap<&str, &str> = rest
            .split_whitespace()
            .filter_map(|token| token.split_once('='))
            .collect();
        let num = |name: &str| fields.get(name).and_then(|v| v.parse::<f64>().ok());
        let int = |name: &str| num(name).map_or(0, |v| v as u64);
        let latency = |prefix: &str, count: u64| Latency {
            count,
            p50_us: int(&format!("{prefix}p50_us")),
            p90_us: int(&format!("{prefix}p90_us")),
            p99_us: int(&format!("{prefix}p99_us")),
            p999_us: int(&format!("{prefix}p999_us")),
            max_us: int(&format!("{prefix}max_us")),
            min_us: 0,
            mean_us: num(&format!("{prefix}mean_us")).unwrap_or(0.0),
        };
        let by_op = ["put", "get", "append", "cas"]
            .iter()
            .filter(|name| int(&format!("{name}_ops")) > 0)
            .map(|name| {
                let count = int(&format!("{name}_ops"));
                (name.to_string(), latency(&format!("{name}_"), count))
            })
            .collect();
        let cpu = |name: &str, source: &str| {
            num(name).map(|us_per_op| CpuUse {
                source: source.to_string(),
                us_per_op,
                ..CpuUse::default()
            })
        };
        let ops = int("ops");
        let timeouts = int("timeouts");
        let write_fraction = num("put_frac").unwrap_or(1.0);
        let target = fields.get("target").copied().unwrap_or("?").to_string();
        let clients = int("clients");
        Some(Summary {
            format: "RESULT line".to_string(),
            label: format!("{target}, {clients} clients"),
            workload: fields.get("workload").copied().unwrap_or("put").to_string(),
            read_fraction: 1.0 - write_fraction,
            reads: fields
                .get("reads")
                .copied()
                .unwrap_or("linearizable")
                .to_string(),
            mode: fields.get("mode").copied().unwrap_or("closed").to_string(),
            concurrency: clients,
            connections: int("conns"),
            endpoints: int("endpoints"),
            generator_cores: int("gen_cores"),
            keys: int("keyspace"),
            key_bytes: int("key_size"),
            value_bytes: int("value_size"),
            measured_secs: num("secs").unwrap_or(0.0),
            ops,
            errors: int("errors").saturating_sub(timeouts),
            timeouts,
            ops_per_sec: num("ops_per_s").unwrap_or(0.0),
            latency: latency("", ops),
            by_op,
            client_cpu: cpu("client_cpu_us_per_op", "RESULT line"),
            server_cpu: cpu("server_cpu_us_per_op", "RESULT line"),
            target,
            ..Summary::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recorder::Outcome;

    fn sample() -> Summary {
        let args = crate::cli::Args {
            label: None,
            ..<crate::cli::Args as clap::Parser>::try_parse_from([
                "shardcore-bench",
                "--servers=127.0.0.1:7001",
                "--read-fraction=0.9",
                "--clients=64",
            ])
            .unwrap()
        };
        let mut recorder = Recorder::new(100_000_000);
        for i in 0..1000u64 {
            let op = if i % 10 == 0 {
                BenchOp::Put
            } else {
                BenchOp::Get
            };
            recorder.record(op, &Outcome::Done, 200_000 + i * 1000, i * 1_000_000);
        }
        recorder.record(BenchOp::Put, &Outcome::Timeout, 5_000_000_000, 999_000_000);
        let facts = RunFacts {
            recorder: &recorder,
            measured_secs: 1.0,
            started_unix_secs: 1_800_000_000,
            client_cpu_secs: 0.25,
            server_cpu: Some(("auto".to_string(), vec![11, 12, 13], 0.5)),
            generator_cores: 2,
            load_average_at_start: 0.5,
        };
        Summary::new(&args, 1, &facts)
    }

    /// A summary written as JSON reads back equal.
    #[test]
    fn json_round_trip() {
        let summary = sample();
        let text = serde_json::to_string_pretty(&summary).unwrap();
        let back: Summary = serde_json::from_str(&text).unwrap();
        assert_eq!(back, summary);
        assert_eq!(back.ops, 1000);
        assert_eq!(back.by_op["put"].count, 100);
        assert_eq!(back.server_cpu.unwrap().us_per_op, 500.0);
        assert_eq!(back.client_cpu.unwrap().us_per_op, 250.0);
    }

    /// The RESULT line carries etcd-bench's fields, and reads back into the same figures.
    #[test]
    fn result_line_round_trip() {
        let summary = sample();
        let line = summary.result_line();
        assert!(
            line.starts_with(
                "RESULT target=shardcore clients=64 conns=0 endpoints=1 put_frac=0.10 \
             reads=linearizable key_size=16 value_size=128 keyspace=100000 secs=1.00 ops=1000 \
             errors=1 ops_per_s=1000 p50_us="
            ),
            "{line}"
        );
        let back = Summary::from_result_line(&line).unwrap();
        assert_eq!(back.ops, 1000);
        assert_eq!((back.errors, back.timeouts), (0, 1));
        assert_eq!(back.latency.p99_us, summary.latency.p99_us);
        assert_eq!(back.by_op["get"].p50_us, summary.by_op["get"].p50_us);
        assert!((back.read_fraction - 0.9).abs() < 1e-9);
        assert_eq!(back.server_cpu.unwrap().us_per_op, 500.0);
    }

    /// etcd-bench's RESULT line (from ../shared/peers/README.md) reads as a summary.
    #[test]
    fn reads_etcd_bench_result_line() {
        let line = "RESULT target=etcd clients=64 conns=64 endpoints=3 put_frac=1.00 \
            reads=linearizable key_size=16 value_size=128 keyspace=100000 secs=12.01 ops=76010 \
            errors=0 ops_per_s=6329 p50_us=9223 p90_us=15439 p99_us=25135 p999_us=36799 \
            max_us=52607 mean_us=10104 put_ops=76010 put_p50_us=9223 put_p99_us=25135 \
            put_p999_us=36799 put_max_us=52607 get_ops=0 get_p50_us=0 get_p99_us=0 \
            get_p999_us=0 get_max_us=0 rep=1 foreign_cpu_pct=3 attempts=1";
        let summary = Summary::from_result_line(line).unwrap();
        assert_eq!(summary.target, "etcd");
        assert_eq!((summary.concurrency, summary.ops), (64, 76010));
        assert_eq!(summary.ops_per_sec, 6329.0);
        assert_eq!(summary.latency.p50_us, 9223);
        assert_eq!(summary.by_op.keys().collect::<Vec<_>>(), ["put"]);
        assert!(summary.server_cpu.is_none());
        assert!(Summary::from_result_line("not a result").is_none());
    }
}
