//! Starting the runtime: every allowed CPU by default, pinned; and a locked-memory limit that is
//! too low and may not be raised, which must be a clear error rather than a panic in an executor
//! thread. That case runs in a child process (this test binary again), because lowering a hard
//! limit cannot be undone.

use std::process::Command;

use shardcore_io::memlock::{memlock_limit, GLOMMIO_MIN_MEMLOCK_BYTES};
use shardcore_io::{run, CoreId, IoError, RuntimeConfig};

/// `cores: 0` runs one pinned core per CPU this process may use, each on its own CPU.
#[test]
fn default_config_runs_one_pinned_core_per_cpu() {
    let results = run(
        RuntimeConfig::default(),
        |core: shardcore_io::Core<()>| async move { (core.id(), core.count(), core.cpu()) },
    )
    .unwrap();
    assert!(!results.is_empty());
    for (index, (id, count, cpu)) in results.iter().enumerate() {
        assert_eq!((*id, *count), (CoreId(index), results.len()));
        assert!(cpu.is_some(), "core {index} is pinned");
    }
    let mut cpus: Vec<_> = results.iter().map(|r| r.2).collect();
    cpus.dedup();
    assert_eq!(cpus.len(), results.len(), "one CPU per core");
}

/// The child's marker: set, the test lowers its limits and tries to start.
const CHILD_ENV: &str = "SHARDCORE_IO_MEMLOCK_CHILD";

/// With the limit at 64 KiB and no right to raise it, `run` returns `MemlockTooLow` naming the
/// limits and how to raise them. The child drops `CAP_SYS_RESOURCE` first, since root could
/// otherwise simply raise the limit (which `run` would do).
#[test]
fn a_low_memlock_limit_is_a_clear_error() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return low_memlock_child();
    }
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_low_memlock_limit_is_a_clear_error",
            "--nocapture",
        ])
        .env(CHILD_ENV, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("memlock error: "), "{stdout}");
}

fn low_memlock_child() {
    drop_cap_sys_resource();
    let low = 64 << 10;
    let limit = libc::rlimit {
        rlim_cur: low,
        rlim_max: low,
    };
    // SAFETY: setrlimit reads one rlimit through a valid pointer.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) }, 0);
    let error = run(
        RuntimeConfig::default(),
        |_core: shardcore_io::Core<()>| async {},
    )
    .unwrap_err();
    match &error {
        IoError::MemlockTooLow {
            soft_bytes,
            hard_bytes,
            required_bytes,
        } => {
            assert_eq!((*soft_bytes, *hard_bytes), (low, low));
            assert_eq!(*required_bytes, GLOMMIO_MIN_MEMLOCK_BYTES);
        }
        other => panic!("expected MemlockTooLow, got {other}"),
    }
    let text = error.to_string();
    assert!(text.contains("ulimit -l"), "{text}");
    assert_eq!(
        memlock_limit().unwrap().soft_bytes,
        low,
        "the limit was not raised"
    );
    println!("memlock error: {text}");
}

/// Removes CAP_SYS_RESOURCE from this process's effective and permitted sets, so that it may no
/// longer raise a hard limit (a no-op for a process without it).
fn drop_cap_sys_resource() {
    const CAP_SYS_RESOURCE: u32 = 24;
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut header = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capget and capset with a version-3 header and two data words, as the ABI says.
    unsafe {
        assert_eq!(
            libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()),
            0
        );
        data[0].effective &= !(1 << CAP_SYS_RESOURCE);
        data[0].permitted &= !(1 << CAP_SYS_RESOURCE);
        assert_eq!(
            libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()),
            0
        );
    }
}
