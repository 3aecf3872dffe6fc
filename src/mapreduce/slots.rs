//! Machine-wide CPU slots for task threads: at most one running task per CPU, however many
//! worker processes share the machine.
//!
//! Measured on the 2-CPU development machine: two workers of 2 cores each (4 task threads on
//! 2 CPUs) spent 1.8x the CPU time of two task threads on the same word count (6.8 s against
//! 3.8 s, `perf stat`), so oversubscribing made the job slower than giving each worker fewer
//! cores. But fewer cores per worker means that when one worker dies, the survivor cannot use
//! the CPUs it leaves. Slots give both: every worker runs a core per CPU, a core asks for a task
//! only once it holds a slot, and the task thread runs pinned to that slot's CPU.
//!
//! A slot is an exclusive `flock` on `<dir>/slot-<i>` (i below the slot count). The kernel
//! drops a process's locks when it dies, so a killed worker's slots are free at once for the
//! workers that remain. A stopped (SIGSTOP) worker keeps its slots, as it keeps its tasks
//! until their leases end.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// A held slot; dropping it releases the lock.
#[derive(Debug)]
pub struct Slot {
    _file: File,
    /// The slot's number.
    pub index: usize,
    /// The CPU its task thread runs on.
    pub cpu: Option<usize>,
}

/// The slots of one machine.
#[derive(Clone, Debug)]
pub struct Slots {
    dir: PathBuf,
    count: usize,
    cpus: Vec<usize>,
}

impl Slots {
    /// `count` slots in `dir` (created if missing). Slot i runs on the i-th CPU this process may
    /// use (modulo their number).
    pub fn new(dir: &Path, count: usize) -> Result<Slots, String> {
        assert!(count > 0, "at least one slot");
        std::fs::create_dir_all(dir).map_err(|e| format!("slots folder {}: {e}", dir.display()))?;
        Ok(Slots {
            dir: dir.to_path_buf(),
            count,
            cpus: allowed_cpus(),
        })
    }

    /// A free slot, if any (never blocks).
    pub fn try_acquire(&self) -> Option<Slot> {
        for index in 0..self.count {
            let path = self.dir.join(format!("slot-{index}"));
            let Ok(file) = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
            else {
                continue;
            };
            // SAFETY: flock on a descriptor this function owns; LOCK_NB never blocks.
            let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if locked == 0 {
                let cpu = (!self.cpus.is_empty()).then(|| self.cpus[index % self.cpus.len()]);
                return Some(Slot {
                    _file: file,
                    index,
                    cpu,
                });
            }
        }
        None
    }
}

/// The CPUs this process may run on (its affinity mask), in order.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: sched_getaffinity writes at most `size_of::<cpu_set_t>()` bytes into `set`.
    let status =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if status != 0 {
        return Vec::new();
    }
    let max = 8 * std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: CPU_ISSET reads the set for a CPU number below its capacity.
    (0..max)
        .filter(|cpu| unsafe { libc::CPU_ISSET(*cpu, &set) })
        .collect()
}

/// Pins the calling thread to `cpu` (best effort: a failure leaves it unpinned).
pub fn pin_current_thread(cpu: usize) {
    // SAFETY: as above; CPU_SET writes a CPU number below the set's capacity.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if cpu < 8 * std::mem::size_of::<libc::cpu_set_t>() {
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        }
    }
}

/// Unpins the calling thread (every CPU the process may use).
pub fn unpin_current_thread(cpus: &[usize]) {
    // SAFETY: as above.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &cpu in cpus {
            if cpu < 8 * std::mem::size_of::<libc::cpu_set_t>() {
                libc::CPU_SET(cpu, &mut set);
            }
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

#[cfg(test)]
mod tests {
    //! Slots are exclusive while held and free again once dropped.
    use super::*;

    #[test]
    fn slots_are_exclusive() {
        let dir = std::env::temp_dir().join(format!("mr-slots-{}", std::process::id()));
        let slots = Slots::new(&dir, 2).unwrap();
        let a = slots.try_acquire().unwrap();
        let b = slots.try_acquire().unwrap();
        assert_ne!(a.index, b.index);
        assert!(slots.try_acquire().is_none());
        drop(a);
        assert!(slots.try_acquire().is_some());
        drop(b);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
