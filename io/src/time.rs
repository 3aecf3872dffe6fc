//! Time on a core: [`sleep`], [`sleep_until`], [`timeout`], and the [`Ticker`] that drives Raft's
//! ticks.
//!
//! Timers live in the core's io_uring (glommio's timer wheel), so a sleeping core wakes for its
//! next deadline with no thread of its own. As in [`crate::task`], these must run on a core.

use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

/// Waits for `duration`.
pub async fn sleep(duration: Duration) {
    glommio::timer::sleep(duration).await;
}

/// Waits until `deadline`; returns at once if it has passed.
pub async fn sleep_until(deadline: Instant) {
    let left = deadline.saturating_duration_since(Instant::now());
    if !left.is_zero() {
        sleep(left).await;
    }
}

/// `future` did not finish within its time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Elapsed {
    /// The time it was given.
    pub after: Duration,
}

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "timed out after {:?}", self.after)
    }
}

impl std::error::Error for Elapsed {}

/// Runs `future` for at most `duration`. If it has not finished by then it is dropped (cancelled)
/// and the result is [`Elapsed`]; a future that is ready at the same moment as the deadline wins.
pub async fn timeout<F: Future>(duration: Duration, future: F) -> Result<F::Output, Elapsed> {
    let work = async { Ok(future.await) };
    let deadline = async {
        sleep(duration).await;
        Err(Elapsed { after: duration })
    };
    // `or` polls the work first, so completion beats the deadline on a tie.
    futures_lite::future::or(work, deadline).await
}

/// A periodic tick on fixed deadlines: the `n`-th tick is due at `start + n * period`, so a
/// late wakeup does not push the following ticks later (no drift).
///
/// [`Ticker::tick`] says how many periods passed since the previous tick returned: 1 normally,
/// more when the core was busy past a deadline. Raft's caller ticks its groups that many times
/// so that its timeouts keep meaning wall-clock time. [`Ticker::take_due`] asks the same without
/// waiting, so an input can deliver the ticks that fell due before it is handled.
#[derive(Debug)]
pub struct Ticker {
    period: Duration,
    next: Instant,
}

impl Ticker {
    /// A ticker whose first tick is due one `period` from now. Panics on a zero period.
    pub fn new(period: Duration) -> Ticker {
        assert!(!period.is_zero(), "a ticker needs a period above zero");
        Ticker {
            period,
            next: Instant::now() + period,
        }
    }

    /// The period.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// When the next tick is due.
    pub fn next_deadline(&self) -> Instant {
        self.next
    }

    /// Waits for the next deadline and returns how many periods have passed since the last
    /// tick (at least 1). Ticks already taken by [`Ticker::take_due`] are not counted again.
    pub async fn tick(&mut self) -> u64 {
        loop {
            sleep_until(self.next).await;
            let periods = self.take_due();
            if periods > 0 {
                return periods;
            }
        }
    }

    /// How many periods have passed since the last tick, without waiting: 0 before the next
    /// deadline. Counts them as taken, as [`Ticker::tick`] does.
    pub fn take_due(&mut self) -> u64 {
        let now = Instant::now();
        if now < self.next {
            return 0;
        }
        let periods = 1 + now.duration_since(self.next).as_nanos() / self.period.as_nanos();
        self.next = match u32::try_from(periods) {
            Ok(whole) => self.next + self.period * whole,
            // Billions of periods late (a suspended machine): start over from now.
            Err(_) => now + self.period,
        };
        u64::try_from(periods).unwrap_or(u64::MAX)
    }
}
