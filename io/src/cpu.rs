//! This process's CPU time, for benchmarks: work per operation in CPU time, not only wall time,
//! tells a busy-polling runtime from an efficient one.

use std::io;
use std::time::Duration;

/// CPU time spent by every thread of this process so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuTime {
    /// In user mode.
    pub user: Duration,
    /// In the kernel on the process's behalf (system calls, page faults).
    pub system: Duration,
}

impl CpuTime {
    /// User plus system time.
    pub fn total(&self) -> Duration {
        self.user + self.system
    }
}

/// This process's CPU time so far (`getrusage(RUSAGE_SELF)`). Take it before and after a
/// measurement and subtract.
pub fn process_cpu_time() -> io::Result<CpuTime> {
    // SAFETY: rusage is plain data; all zeroes is a valid value for getrusage to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes one `rusage` through a valid pointer.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(CpuTime {
        user: timeval(usage.ru_utime),
        system: timeval(usage.ru_stime),
    })
}

fn timeval(time: libc::timeval) -> Duration {
    let micros = u64::try_from(time.tv_usec).expect("getrusage gives non-negative times");
    Duration::from_secs(u64::try_from(time.tv_sec).expect("getrusage gives non-negative times"))
        + Duration::from_micros(micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CPU time never goes backwards, and spinning for a while adds some.
    #[test]
    fn cpu_time_grows_with_work() {
        let before = process_cpu_time().unwrap();
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let after = process_cpu_time().unwrap();
        assert!(after.total() > before.total(), "{before:?} -> {after:?}");
        assert!(after.user >= before.user && after.system >= before.system);
    }
}
