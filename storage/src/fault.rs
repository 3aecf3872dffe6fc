//! Named fault points: every durability step (write, fdatasync, fallocate, rotation, snapshot
//! write, fsync, rename, directory fsync) asks its point before it acts, so a test can make
//! exactly that step fail, once or every time, and check what the node does next.
//!
//! A [`FaultPoints`] is cheap to clone (an `Arc` inside) and thread-safe: the test keeps one
//! clone, the WAL or snapshot writer another, and arming it in the test reaches the writer. A
//! point that is not armed costs a lock and a map lookup, on paths that already pay for a
//! system call. Production code passes the default, which has nothing armed.
//!
//! ```
//! use shardcore_storage::fault::{FaultKind, FaultPoints, WAL_FDATASYNC};
//!
//! let faults = FaultPoints::default();
//! assert!(faults.check(WAL_FDATASYNC).is_ok());
//! faults.arm(WAL_FDATASYNC, FaultKind::Error(std::io::ErrorKind::Other));
//! assert!(faults.check(WAL_FDATASYNC).is_err()); // armed once: it fires ...
//! assert!(faults.check(WAL_FDATASYNC).is_ok()); // ... and then is spent
//! assert_eq!(faults.fired(WAL_FDATASYNC), 1);
//! ```
//!
//! Modelled on sled's `fail::is_active` points (`tests/test_tree_failpoints.rs`), without the
//! global registry: each WAL or snapshot writer has its own points, so parallel tests do not
//! reach into each other.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

/// Writing a batch into the open WAL segment.
pub const WAL_WRITE: &str = "wal.write";
/// The `fdatasync` that makes a WAL batch durable.
pub const WAL_FDATASYNC: &str = "wal.fdatasync";
/// Preallocating a new WAL segment file.
pub const WAL_FALLOCATE: &str = "wal.fallocate";
/// Rotating to a new WAL segment (creating or renaming its file into place).
pub const WAL_ROTATE: &str = "wal.rotate";
/// The directory `fsync` that makes a rotation's new segment name durable, linked ahead of
/// the first write into the segment.
pub const WAL_DIR_FSYNC: &str = "wal.dir_fsync";
/// Writing a snapshot file's bytes.
pub const SNAPSHOT_WRITE: &str = "snapshot.write";
/// The `fsync` of a snapshot file before it is renamed into place.
pub const SNAPSHOT_FSYNC: &str = "snapshot.fsync";
/// Renaming a snapshot file from its temporary name to its final name.
pub const SNAPSHOT_RENAME: &str = "snapshot.rename";
/// The `fsync` of the snapshot directory that makes the rename durable.
pub const SNAPSHOT_DIR_FSYNC: &str = "snapshot.dir_fsync";

/// Every point the storage crate asks, in the order a write meets them.
pub const ALL_POINTS: [&str; 9] = [
    WAL_WRITE,
    WAL_FDATASYNC,
    WAL_FALLOCATE,
    WAL_ROTATE,
    WAL_DIR_FSYNC,
    SNAPSHOT_WRITE,
    SNAPSHOT_FSYNC,
    SNAPSHOT_RENAME,
    SNAPSHOT_DIR_FSYNC,
];

/// How an armed point fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// The step fails with an I/O error of this kind (as an `EIO` would).
    Error(io::ErrorKind),
    /// The step fails with `ENOSPC`: the disk is full.
    DiskFull,
    /// A write puts only part of its bytes on disk and then fails. A writer that can model this
    /// asks [`FaultPoints::fire`] and writes a prefix; [`FaultPoints::check`] reports it as a
    /// `WriteZero` error for steps that are not writes.
    ShortWrite,
}

/// How often an armed point fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultRepeat {
    /// The next time the step runs, then the point disarms itself.
    Once,
    /// Every time the step runs, until [`FaultPoints::disarm`].
    Always,
}

#[derive(Debug, Default)]
struct Point {
    armed: Option<(FaultKind, FaultRepeat)>,
    fired: u64,
}

/// A set of named fault points; see the module docs. The default has none armed.
#[derive(Clone, Default)]
pub struct FaultPoints {
    points: Arc<Mutex<HashMap<String, Point>>>,
}

impl FaultPoints {
    /// Points with nothing armed (the same as `default()`).
    pub fn new() -> FaultPoints {
        FaultPoints::default()
    }

    /// Arms `name` to fail once with `kind`.
    ///
    /// # Panics
    /// When `name` is not one of [`ALL_POINTS`]: a misspelt point would never fire, and the test
    /// arming it would pass without testing anything.
    pub fn arm(&self, name: &str, kind: FaultKind) {
        self.arm_with(name, kind, FaultRepeat::Once);
    }

    /// Arms `name` to fail with `kind` every time until disarmed.
    ///
    /// # Panics
    /// As [`FaultPoints::arm`].
    pub fn arm_always(&self, name: &str, kind: FaultKind) {
        self.arm_with(name, kind, FaultRepeat::Always);
    }

    /// Arms `name` to fail with `kind`, once or always.
    ///
    /// # Panics
    /// As [`FaultPoints::arm`].
    pub fn arm_with(&self, name: &str, kind: FaultKind, repeat: FaultRepeat) {
        assert!(
            ALL_POINTS.contains(&name),
            "unknown fault point {name:?}; the known points are {ALL_POINTS:?}"
        );
        self.lock().entry(name.to_string()).or_default().armed = Some((kind, repeat));
    }

    /// Disarms `name`; a point that is not armed stays so.
    pub fn disarm(&self, name: &str) {
        if let Some(point) = self.lock().get_mut(name) {
            point.armed = None;
        }
    }

    /// Disarms every point.
    pub fn disarm_all(&self) {
        for point in self.lock().values_mut() {
            point.armed = None;
        }
    }

    /// Whether `name` would fire now, without firing it.
    pub fn is_armed(&self, name: &str) -> bool {
        self.lock().get(name).is_some_and(|p| p.armed.is_some())
    }

    /// How many times `name` has fired.
    pub fn fired(&self, name: &str) -> u64 {
        self.lock().get(name).map_or(0, |p| p.fired)
    }

    /// The step `name` is about to run: the fault to act out, if the point is armed. A point
    /// armed [`FaultRepeat::Once`] disarms itself here.
    pub fn fire(&self, name: &str) -> Option<FaultKind> {
        let mut points = self.lock();
        let point = points.get_mut(name)?;
        let (kind, repeat) = point.armed?;
        if repeat == FaultRepeat::Once {
            point.armed = None;
        }
        point.fired += 1;
        Some(kind)
    }

    /// The step `name` is about to run: `Err` with the injected error when the point is armed
    /// (see [`FaultPoints::fire`]), `Ok` otherwise.
    pub fn check(&self, name: &str) -> io::Result<()> {
        match self.fire(name) {
            None => Ok(()),
            Some(kind) => Err(injected_error(name, kind)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Point>> {
        // A test that panicked while holding the lock leaves the map as it was: still usable.
        self.points.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The error an armed point injects: `ENOSPC` for [`FaultKind::DiskFull`], so that it reads as
/// the real thing to code that checks `raw_os_error`.
pub fn injected_error(name: &str, kind: FaultKind) -> io::Error {
    match kind {
        FaultKind::Error(kind) => io::Error::new(kind, format!("injected fault at {name}")),
        FaultKind::DiskFull => io::Error::from_raw_os_error(libc::ENOSPC),
        FaultKind::ShortWrite => io::Error::new(
            io::ErrorKind::WriteZero,
            format!("injected short write at {name}"),
        ),
    }
}

impl fmt::Debug for FaultPoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let points = self.lock();
        let mut armed: Vec<_> = points
            .iter()
            .filter_map(|(name, p)| p.armed.map(|a| (name.as_str(), a)))
            .collect();
        armed.sort_by_key(|(name, _)| *name);
        f.debug_struct("FaultPoints")
            .field("armed", &armed)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A point armed once fires exactly once; armed always, until disarmed; clones share state.
    #[test]
    fn once_and_always() {
        let faults = FaultPoints::new();
        let clone = faults.clone();
        faults.arm(WAL_WRITE, FaultKind::ShortWrite);
        assert_eq!(clone.fire(WAL_WRITE), Some(FaultKind::ShortWrite));
        assert_eq!(clone.fire(WAL_WRITE), None);
        faults.arm_always(SNAPSHOT_RENAME, FaultKind::DiskFull);
        for _ in 0..3 {
            let err = clone.check(SNAPSHOT_RENAME).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
        }
        faults.disarm(SNAPSHOT_RENAME);
        assert!(clone.check(SNAPSHOT_RENAME).is_ok());
        assert_eq!(faults.fired(SNAPSHOT_RENAME), 3);
        assert_eq!(faults.fired(WAL_FDATASYNC), 0);
    }

    /// Arming a misspelt point is a test bug, caught at once.
    #[test]
    #[should_panic(expected = "unknown fault point")]
    fn unknown_points_are_refused() {
        FaultPoints::new().arm("wal.fsync", FaultKind::DiskFull);
    }
}
