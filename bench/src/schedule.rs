//! The open loop's arrival schedule: when each operation is *meant* to be sent.
//!
//! Latency in the open loop counts from this intended time, not from when a worker got round to
//! sending (as wrk2 does): when the server stalls, every operation that should have gone out
//! during the stall is charged the wait, instead of the stall silently slowing the arrivals down
//! (coordinated omission, Gil Tene, "How NOT to measure latency").
//!
//! Times are offsets in nanoseconds from the start of the load, so the schedule is pure and
//! testable; the engine adds them to an `Instant`.

use shardcore::rng::Rng;

use crate::keys::unit_f64;

/// How arrivals are spaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arrival {
    /// Evenly spaced at the rate (wrk2's model).
    Uniform,
    /// A Poisson process at the rate: exponential gaps, seeded.
    Poisson,
}

/// One core's arrivals: a stream at `rate_per_sec`, starting `offset_ns` after the load starts.
#[derive(Clone, Debug)]
pub struct Schedule {
    arrival: Arrival,
    interval_ns: f64,
    offset_ns: f64,
    issued: u64,
    next_ns: f64,
    rng: Rng,
}

impl Schedule {
    /// `rate_per_sec` arrivals a second (above zero); `offset_ns` shifts the whole stream, so
    /// that several cores' uniform streams interleave instead of arriving together.
    pub fn new(arrival: Arrival, rate_per_sec: f64, offset_ns: u64, rng: Rng) -> Schedule {
        assert!(rate_per_sec > 0.0, "rate {rate_per_sec}");
        Schedule {
            arrival,
            interval_ns: 1e9 / rate_per_sec,
            offset_ns: offset_ns as f64,
            issued: 0,
            next_ns: offset_ns as f64,
            rng,
        }
    }

    /// The intended send time of the next operation, in nanoseconds from the start of the load.
    /// Never decreases.
    pub fn next_ns(&mut self) -> u64 {
        let at = match self.arrival {
            // Computed from the index, not by adding intervals, so rounding does not drift.
            Arrival::Uniform => self.offset_ns + self.issued as f64 * self.interval_ns,
            Arrival::Poisson => {
                let at = self.next_ns;
                // Inverse transform of the exponential; 1 - u is in (0, 1], so ln is finite.
                let gap = -(1.0 - unit_f64(&mut self.rng)).ln() * self.interval_ns;
                self.next_ns += gap;
                at
            }
        };
        self.issued += 1;
        at as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A uniform schedule is exactly `offset + i / rate`.
    #[test]
    fn uniform_is_evenly_spaced() {
        let mut schedule = Schedule::new(Arrival::Uniform, 1000.0, 250_000, Rng::new(1));
        let times: Vec<u64> = (0..5).map(|_| schedule.next_ns()).collect();
        assert_eq!(times, [250_000, 1_250_000, 2_250_000, 3_250_000, 4_250_000]);
        // Far out, no drift from adding up rounded intervals: 3 per second for a million.
        let mut thirds = Schedule::new(Arrival::Uniform, 3.0, 0, Rng::new(1));
        let last = (0..=3_000_000).map(|_| thirds.next_ns()).last().unwrap();
        assert_eq!(last, 1_000_000_000_000_000);
    }

    /// A Poisson schedule never goes back, starts at its offset, and its mean gap is 1/rate
    /// (within 2% over 100,000 seeded arrivals); the same seed gives the same times.
    #[test]
    fn poisson_has_the_right_mean_and_replays() {
        let make = || Schedule::new(Arrival::Poisson, 10_000.0, 5, Rng::stream(9, "arrivals"));
        let mut schedule = make();
        let times: Vec<u64> = (0..100_001).map(|_| schedule.next_ns()).collect();
        assert_eq!(times[0], 5);
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
        let mean_gap = (times[100_000] - times[0]) as f64 / 100_000.0;
        assert!(
            (mean_gap - 100_000.0).abs() < 2_000.0,
            "mean gap {mean_gap} ns"
        );
        let mut again = make();
        assert!(times.iter().take(100).all(|&t| t == again.next_ns()));
    }
}
