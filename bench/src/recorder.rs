//! What one generator core records while it runs: latency histograms (all operations and one
//! per kind), counts of successes, errors and timeouts, and completions over time. Each core
//! owns its recorder outright; the engine merges them once the run is over.

use hdrhistogram::Histogram;

/// The operations the bench sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BenchOp {
    /// A read.
    Get,
    /// An overwrite.
    Put,
    /// An append.
    Append,
    /// A compare-and-swap.
    Cas,
}

impl BenchOp {
    /// Every kind, in report order.
    pub const ALL: [BenchOp; 4] = [BenchOp::Get, BenchOp::Put, BenchOp::Append, BenchOp::Cas];

    /// The name in reports and in the RESULT line (`get_p50_us`, ...).
    pub fn name(self) -> &'static str {
        match self {
            BenchOp::Get => "get",
            BenchOp::Put => "put",
            BenchOp::Append => "append",
            BenchOp::Cas => "cas",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The highest latency a histogram holds, in microseconds. Why an hour: far past any operation
/// deadline the bench allows in practice; a longer one is clamped to it, not lost.
pub const MAX_LATENCY_US: u64 = 3_600_000_000;

/// Significant digits of every histogram: 0.1% resolution, HdrHistogram's usual choice and
/// etcd-bench's.
pub const SIGNIFICANT_DIGITS: u8 = 3;

/// A new latency histogram in microseconds.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, SIGNIFICANT_DIGITS)
        .expect("constant bounds are valid")
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Answered (a get that found nothing and a cas that found another value included).
    Done,
    /// No answer before the deadline.
    Timeout,
    /// Refused or failed otherwise; the reason.
    Error(String),
}

/// One core's measurements of the measured phase.
#[derive(Clone, Debug)]
pub struct Recorder {
    /// Every successful operation's latency, in microseconds.
    pub all: Histogram<u64>,
    /// The same, one histogram per [`BenchOp`] in [`BenchOp::ALL`] order.
    pub by_op: Vec<Histogram<u64>>,
    /// Successful operations.
    pub ops: u64,
    /// Failed operations other than timeouts.
    pub errors: u64,
    /// Operations that timed out.
    pub timeouts: u64,
    /// Compare-and-swaps that found another value (counted in `ops` too).
    pub cas_mismatches: u64,
    /// The first error's reason, for the report.
    pub first_error: Option<String>,
    /// Successful operations per interval of the measured phase.
    pub timeline_ops: Vec<u64>,
    /// Failed operations (timeouts included) per interval.
    pub timeline_errors: Vec<u64>,
    /// The timeline's interval in nanoseconds.
    pub interval_ns: u64,
    /// When the last operation completed, in nanoseconds from the start of the measured phase.
    pub last_done_ns: u64,
    /// Open loop: the most any measured operation was sent after its intended time. A lag
    /// that keeps growing means the rate is above what the system sustains.
    pub max_send_lag_ns: u64,
}

impl Recorder {
    /// An empty recorder whose timeline has `interval_ns` buckets.
    pub fn new(interval_ns: u64) -> Recorder {
        assert!(interval_ns > 0);
        Recorder {
            all: latency_histogram(),
            by_op: BenchOp::ALL.iter().map(|_| latency_histogram()).collect(),
            ops: 0,
            errors: 0,
            timeouts: 0,
            cas_mismatches: 0,
            first_error: None,
            timeline_ops: Vec::new(),
            timeline_errors: Vec::new(),
            interval_ns,
            last_done_ns: 0,
            max_send_lag_ns: 0,
        }
    }

    /// Records one operation that completed `done_ns` after the measured phase began and took
    /// `latency_ns` (from its intended send time in the open loop).
    pub fn record(&mut self, op: BenchOp, outcome: &Outcome, latency_ns: u64, done_ns: u64) {
        let bucket = (done_ns / self.interval_ns) as usize;
        if self.timeline_ops.len() <= bucket {
            self.timeline_ops.resize(bucket + 1, 0);
            self.timeline_errors.resize(bucket + 1, 0);
        }
        self.last_done_ns = self.last_done_ns.max(done_ns);
        match outcome {
            Outcome::Done => {
                // Rounded up, so a sub-microsecond answer still counts as 1 µs, never 0.
                let micros = latency_ns.div_ceil(1000).max(1);
                self.all.saturating_record(micros);
                self.by_op[op.index()].saturating_record(micros);
                self.ops += 1;
                self.timeline_ops[bucket] += 1;
            }
            Outcome::Timeout => {
                self.timeouts += 1;
                self.timeline_errors[bucket] += 1;
            }
            Outcome::Error(why) => {
                self.errors += 1;
                self.timeline_errors[bucket] += 1;
                if self.first_error.is_none() {
                    self.first_error = Some(format!("{}: {why}", op.name()));
                }
            }
        }
    }

    /// The latency histogram of one kind.
    pub fn of(&self, op: BenchOp) -> &Histogram<u64> {
        &self.by_op[op.index()]
    }

    /// Adds `other` (another core's recorder with the same interval) into this one.
    pub fn merge(&mut self, other: &Recorder) {
        assert_eq!(self.interval_ns, other.interval_ns);
        self.all.add(&other.all).expect("same bounds");
        for (mine, theirs) in self.by_op.iter_mut().zip(&other.by_op) {
            mine.add(theirs).expect("same bounds");
        }
        self.ops += other.ops;
        self.errors += other.errors;
        self.timeouts += other.timeouts;
        self.cas_mismatches += other.cas_mismatches;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
        let len = self.timeline_ops.len().max(other.timeline_ops.len());
        self.timeline_ops.resize(len, 0);
        self.timeline_errors.resize(len, 0);
        for (i, n) in other.timeline_ops.iter().enumerate() {
            self.timeline_ops[i] += n;
        }
        for (i, n) in other.timeline_errors.iter().enumerate() {
            self.timeline_errors[i] += n;
        }
        self.last_done_ns = self.last_done_ns.max(other.last_done_ns);
        self.max_send_lag_ns = self.max_send_lag_ns.max(other.max_send_lag_ns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Recording fills the right histograms, counters and timeline buckets, and merging two
    /// cores adds them up.
    #[test]
    fn record_and_merge() {
        let mut a = Recorder::new(100_000_000);
        a.record(BenchOp::Put, &Outcome::Done, 1_500_000, 50_000_000);
        a.record(BenchOp::Get, &Outcome::Done, 400, 150_000_000);
        a.record(BenchOp::Put, &Outcome::Timeout, 5_000_000_000, 250_000_000);
        let mut b = Recorder::new(100_000_000);
        b.record(BenchOp::Cas, &Outcome::Error("Refused".into()), 10, 10);
        b.record(BenchOp::Put, &Outcome::Done, 2_000_000, 20);
        b.max_send_lag_ns = 7;
        a.merge(&b);
        assert_eq!((a.ops, a.errors, a.timeouts), (3, 1, 1));
        assert_eq!(a.all.len(), 3);
        assert_eq!(a.of(BenchOp::Put).len(), 2);
        assert_eq!(a.of(BenchOp::Get).max(), 1, "400 ns rounds up to 1 µs");
        assert_eq!(a.timeline_ops, [2, 1, 0]);
        assert_eq!(a.timeline_errors, [1, 0, 1]);
        assert_eq!(a.first_error.as_deref(), Some("cas: Refused"));
        assert_eq!(a.last_done_ns, 250_000_000);
        assert_eq!(a.max_send_lag_ns, 7);
    }
}
