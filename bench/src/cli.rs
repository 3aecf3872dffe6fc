//! The command line of `shardcore-bench`, its bounds, and what each workload sends.

use std::fmt;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// The most concurrent clients one bench process runs. Why 10,000: each client holds a
/// connection and its buffers, and one process's open-file limit and memory stop being
/// realistic past that; run several processes for more.
pub const MAX_CONCURRENCY: u64 = 10_000;

/// The longest run. Why a day: long enough for any soak run, and a bound that catches a duration
/// typed in milliseconds by mistake.
pub const MAX_DURATION_SECS: u64 = 86_400;

/// The largest generated key. Why 1 KiB: real keys are short; larger ones measure the copy, not
/// the system.
pub const MAX_KEY_BYTES: u64 = 1 << 10;

/// The largest generated value. Why 1 MiB: it keeps one request well under the protocol's frame
/// limit, and one Raft entry under the core's default entry bound.
pub const MAX_VALUE_BYTES: u64 = 1 << 20;

/// Drive a shardcore cluster with a workload and report throughput and latency.
#[derive(Clone, Debug, PartialEq, Eq, Parser)]
#[command(name = "shardcore-bench", version)]
pub struct Args {
    /// Addresses of the cluster's nodes (host:port), comma-separated or repeated.
    #[arg(long, required = true, value_delimiter = ',')]
    pub servers: Vec<String>,

    /// What the clients send.
    #[arg(long, value_enum, default_value_t = Workload::Mixed)]
    pub workload: Workload,

    /// Closed loop (each client waits for its answer) or open loop (a fixed arrival rate).
    #[arg(long, value_enum, default_value_t = LoopMode::Closed)]
    pub mode: LoopMode,

    /// Operations per second across all clients; required with `--mode open`, refused without.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub rate: Option<u64>,

    /// How long to measure, in seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=MAX_DURATION_SECS))]
    pub duration_secs: u64,

    /// Concurrent clients (each with its own connection).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=MAX_CONCURRENCY))]
    pub concurrency: u64,

    /// Distinct keys the workload draws from.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub keys: u64,

    /// Bytes per key (keys are `k` and a zero-padded number, padded to this length).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=MAX_KEY_BYTES))]
    pub key_bytes: u64,

    /// Bytes per written value.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=MAX_VALUE_BYTES))]
    pub value_bytes: u64,

    /// Write every operation to this file as JSON lines, for the linearizability checker.
    #[arg(long)]
    pub history: Option<PathBuf>,

    /// Seeds the key choice, the operation mix and the open-loop schedule.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// What the clients send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// The MIT 6.5840 KV tests' mix: half appends, 5% puts, the rest gets.
    Mixed,
    /// A cache-like mix: 95% gets, 5% puts.
    ReadHeavy,
    /// Only puts: write throughput and replication latency.
    WriteOnly,
}

/// How arrivals are paced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LoopMode {
    /// Each client sends its next operation when the previous one returns.
    Closed,
    /// Operations arrive at `--rate` per second whatever the latency; latency counts from the
    /// scheduled arrival (no coordinated omission).
    Open,
}

/// The share of each operation in a workload, in percent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpMix {
    /// Reads.
    pub get_percent: u32,
    /// Overwrites.
    pub put_percent: u32,
    /// Appends to the current value.
    pub append_percent: u32,
}

impl Workload {
    /// The operation mix the workload sends.
    pub fn mix(self) -> OpMix {
        let (get_percent, put_percent, append_percent) = match self {
            Workload::Mixed => (45, 5, 50),
            Workload::ReadHeavy => (95, 5, 0),
            Workload::WriteOnly => (0, 100, 0),
        };
        OpMix {
            get_percent,
            put_percent,
            append_percent,
        }
    }
}

/// Why a command line that parsed is still refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArgsError {
    /// `--mode open` without `--rate`.
    OpenLoopNeedsRate,
    /// `--rate` without `--mode open`: a closed loop has no rate, and ignoring the flag would
    /// hide a mistake.
    RateWithoutOpenLoop,
    /// `--key-bytes` cannot hold a distinct key for every one of `--keys`.
    KeysDoNotFit {
        /// The bytes a key needs: `k` and the largest key number.
        needed_bytes: u64,
        /// The `--key-bytes` given.
        key_bytes: u64,
    },
}

impl Args {
    /// Checks what clap cannot check flag by flag: the flags' agreement with each other.
    pub fn validate(&self) -> Result<(), ArgsError> {
        match (self.mode, self.rate) {
            (LoopMode::Open, None) => return Err(ArgsError::OpenLoopNeedsRate),
            (LoopMode::Closed, Some(_)) => return Err(ArgsError::RateWithoutOpenLoop),
            _ => {}
        }
        let needed_bytes = 1 + decimal_digits(self.keys - 1);
        if needed_bytes > self.key_bytes {
            return Err(ArgsError::KeysDoNotFit {
                needed_bytes,
                key_bytes: self.key_bytes,
            });
        }
        Ok(())
    }

    /// The settings on one line, for the top of a report.
    pub fn summary(&self) -> String {
        let rate = self
            .rate
            .map(|r| format!(" rate={r}/s"))
            .unwrap_or_default();
        format!(
            "workload={} mode={}{rate} duration={}s concurrency={} keys={} key_bytes={} \
             value_bytes={} seed={} servers={}",
            value_name(self.workload),
            value_name(self.mode),
            self.duration_secs,
            self.concurrency,
            self.keys,
            self.key_bytes,
            self.value_bytes,
            self.seed,
            self.servers.join(","),
        )
    }
}

/// The flag value that names `value` (`read-heavy`, not `ReadHeavy`).
fn value_name(value: impl ValueEnum) -> String {
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
            (Workload::Mixed, LoopMode::Closed, None)
        );
        assert_eq!(
            (args.duration_secs, args.concurrency, args.keys),
            (10, 16, 10_000)
        );
        assert_eq!((args.key_bytes, args.value_bytes, args.seed), (16, 128, 1));
        assert_eq!(args.validate(), Ok(()));
    }

    /// Every flag parses, kebab-case enum values included.
    #[test]
    fn every_flag_parses() {
        let args = parse(&[
            "--servers=a:1",
            "--workload=read-heavy",
            "--mode=open",
            "--rate=5000",
            "--duration-secs=60",
            "--concurrency=64",
            "--keys=100",
            "--key-bytes=8",
            "--value-bytes=1024",
            "--history=h.jsonl",
            "--seed=7",
        ])
        .unwrap();
        assert_eq!(
            (args.workload, args.mode, args.rate),
            (Workload::ReadHeavy, LoopMode::Open, Some(5000))
        );
        assert_eq!(args.history, Some(PathBuf::from("h.jsonl")));
        assert_eq!(args.validate(), Ok(()));
        let summary = args.summary();
        assert!(
            summary.contains("workload=read-heavy mode=open rate=5000/s"),
            "{summary}"
        );
    }

    /// Flags outside their bounds are refused by the parser, and a missing server list too.
    #[test]
    fn out_of_bound_flags_are_refused() {
        for bad in [
            &["--servers=a:1", "--concurrency=0"][..],
            &["--servers=a:1", "--concurrency=10001"],
            &["--servers=a:1", "--duration-secs=0"],
            &["--servers=a:1", "--key-bytes=1025"],
            &["--servers=a:1", "--value-bytes=0"],
            &["--servers=a:1", "--workload=scan"],
            &["--workload=mixed"],
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
    }

    /// Each workload's mix adds up to 100%.
    #[test]
    fn mixes_add_up() {
        for workload in Workload::value_variants() {
            let mix = workload.mix();
            assert_eq!(
                mix.get_percent + mix.put_percent + mix.append_percent,
                100,
                "{workload:?}"
            );
        }
    }
}
