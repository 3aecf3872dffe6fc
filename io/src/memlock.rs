//! The locked-memory limit an io_uring executor needs, checked and raised before any core starts.
//!
//! glommio refuses to create an executor when the soft `RLIMIT_MEMLOCK` is below 512 KiB, and
//! registers its I/O buffers only when the limit leaves room for them. So before starting, the
//! runtime raises the soft limit to the hard limit (any process may), and if that is still too
//! low tries to raise both (a process with `CAP_SYS_RESOURCE`, such as root, may). If neither
//! works, [`crate::run`] fails with [`IoError::MemlockTooLow`], which says how to raise the limit,
//! instead of a panic inside an executor thread.
//!
//! The decision is a pure function of the limits (`plan`), tested as a table; only
//! `ensure_memlock` touches the process.

use std::io;

use crate::error::IoError;

/// The least locked memory glommio accepts for one executor (its own check, in
/// `Reactor::new`).
pub const GLOMMIO_MIN_MEMLOCK_BYTES: u64 = 512 << 10;

/// A locked-memory limit pair, in bytes; `u64::MAX` is unlimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemlockLimit {
    /// The soft limit: what is enforced.
    pub soft_bytes: u64,
    /// The hard limit: how far the soft limit may be raised without privilege.
    pub hard_bytes: u64,
}

/// What to do about a limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Nothing: the soft limit is already the hard limit.
    Keep,
    /// Raise the soft limit to the hard one (always allowed). More locked memory lets glommio
    /// register its buffers, so this is done even when the soft limit is already enough.
    RaiseSoft,
    /// The hard limit itself is too low: try to raise both to `required`, which needs privilege.
    RaiseBoth,
}

/// What to do, given the current limit and what is required.
pub(crate) fn plan(limit: MemlockLimit, required_bytes: u64) -> Plan {
    if limit.hard_bytes < required_bytes {
        Plan::RaiseBoth
    } else if limit.soft_bytes < limit.hard_bytes {
        Plan::RaiseSoft
    } else {
        Plan::Keep
    }
}

/// This process's locked-memory limit.
pub fn memlock_limit() -> io::Result<MemlockLimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` through a valid pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(MemlockLimit {
        soft_bytes: limit.rlim_cur,
        hard_bytes: limit.rlim_max,
    })
}

fn set_memlock_limit(limit: MemlockLimit) -> io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: limit.soft_bytes,
        rlim_max: limit.hard_bytes,
    };
    // SAFETY: setrlimit reads one `rlimit` through a valid pointer.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes sure the soft limit is at least `required_bytes`, raising it as far as this process
/// may. Returns the limit in force afterwards.
pub(crate) fn ensure_memlock(required_bytes: u64) -> Result<MemlockLimit, IoError> {
    let read = || {
        memlock_limit().map_err(|error| IoError::Config {
            reason: format!("cannot read RLIMIT_MEMLOCK: {error}"),
        })
    };
    let limit = read()?;
    let wanted = match plan(limit, required_bytes) {
        Plan::Keep => None,
        Plan::RaiseSoft => Some(MemlockLimit {
            soft_bytes: limit.hard_bytes,
            ..limit
        }),
        Plan::RaiseBoth => Some(MemlockLimit {
            soft_bytes: required_bytes,
            hard_bytes: required_bytes,
        }),
    };
    // A refusal is not an error yet: what counts is whether the limit now suffices.
    if let Some(wanted) = wanted {
        let _ = set_memlock_limit(wanted);
    }
    let limit = read()?;
    if limit.soft_bytes < required_bytes {
        return Err(IoError::MemlockTooLow {
            soft_bytes: limit.soft_bytes,
            hard_bytes: limit.hard_bytes,
            required_bytes,
        });
    }
    Ok(limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: u64 = 1024;

    /// The plan for each kind of limit: enough, raisable without privilege, and too low.
    #[test]
    fn plan_table() {
        let required = GLOMMIO_MIN_MEMLOCK_BYTES;
        let cases = [
            // (soft, hard, plan)
            (8192 * KIB, 8192 * KIB, Plan::Keep),
            (u64::MAX, u64::MAX, Plan::Keep),
            (64 * KIB, 8192 * KIB, Plan::RaiseSoft),
            (8192 * KIB, u64::MAX, Plan::RaiseSoft),
            (64 * KIB, 64 * KIB, Plan::RaiseBoth),
            (64 * KIB, 511 * KIB, Plan::RaiseBoth),
            (512 * KIB, 512 * KIB, Plan::Keep),
        ];
        for (soft_bytes, hard_bytes, expected) in cases {
            let limit = MemlockLimit {
                soft_bytes,
                hard_bytes,
            };
            assert_eq!(plan(limit, required), expected, "{limit:?}");
        }
    }

    /// The error says what the limits are and how to raise them.
    #[test]
    fn error_says_what_to_do() {
        let text = IoError::MemlockTooLow {
            soft_bytes: 65536,
            hard_bytes: 65536,
            required_bytes: GLOMMIO_MIN_MEMLOCK_BYTES,
        }
        .to_string();
        for needle in ["65536", "524288", "ulimit -l", "LimitMEMLOCK", "memlock"] {
            assert!(text.contains(needle), "{needle} missing from: {text}");
        }
    }
}
