//! Other processes' CPU time, from `/proc/<pid>/stat`, and finding the `shardcore server`
//! processes of a cluster, so that the bench can report the servers' CPU microseconds per
//! operation: the figure noise on a shared machine moves least.

use std::net::SocketAddr;
use std::path::Path;

/// CPU seconds (user + system, every thread, exited threads included) of `pid` so far;
/// `None` when the process is gone or its stat cannot be read. Resolution: one clock tick
/// (10 ms on Linux's usual 100 Hz), fine over runs of seconds.
pub fn process_cpu_secs(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ticks = stat_cpu_ticks(&text)?;
    Some(ticks as f64 / clock_ticks_per_sec())
}

/// The sum of CPU seconds of `pids` (those still alive).
pub fn total_cpu_secs(pids: &[u32]) -> f64 {
    pids.iter().filter_map(|pid| process_cpu_secs(*pid)).sum()
}

/// utime + stime, in clock ticks, from the text of `/proc/<pid>/stat`. The command name (field
/// 2) is in parentheses and may hold spaces or parentheses, so fields are counted from the last
/// `)`: utime and stime are fields 14 and 15, i.e. the 12th and 13th after it.
pub fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf reads a constant of the system.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// The machine's 1-minute load average, or 0 when unknown.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Whether a command line (argv) is a `shardcore server` serving clients on one of `addrs`;
/// a server started without `--client-addr` (from a config file) is not recognised.
pub fn is_server_of(argv: &[String], addrs: &[SocketAddr]) -> bool {
    let is_shardcore = argv
        .first()
        .and_then(|exe| Path::new(exe).file_name())
        .is_some_and(|name| name == "shardcore");
    if !is_shardcore || argv.get(1).map(String::as_str) != Some("server") {
        return false;
    }
    let mut client_addr = None;
    for (i, arg) in argv.iter().enumerate() {
        if let Some(value) = arg.strip_prefix("--client-addr=") {
            client_addr = Some(value.to_string());
        } else if arg == "--client-addr" {
            client_addr = argv.get(i + 1).cloned();
        }
    }
    client_addr
        .and_then(|a| a.parse::<SocketAddr>().ok())
        .is_some_and(|a| addrs.contains(&a))
}

/// The pids of `shardcore server` processes serving clients on one of `addrs`, found through
/// `/proc/*/cmdline`.
pub fn find_servers(addrs: &[SocketAddr]) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|bytes| {
                let argv: Vec<String> = bytes
                    .split(|b| *b == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect();
                is_server_of(&argv, addrs)
            })
        })
        .collect();
    pids.sort_unstable();
    pids
}

#[cfg(test)]
mod tests {
    use super::*;

    /// utime and stime are read after the command name, even one with spaces and parentheses.
    #[test]
    fn parses_stat() {
        let stat = "4242 (shard core) (x)) S 1 4242 4242 0 -1 4194560 1 0 0 0 \
                    250 75 0 0 20 0 9 0 100 0 0";
        assert_eq!(stat_cpu_ticks(stat), Some(325));
        assert_eq!(stat_cpu_ticks("garbage"), None);
        // This process has a readable stat.
        assert!(process_cpu_secs(std::process::id()).is_some());
    }

    /// Servers are recognised by program name, the `server` subcommand and their client
    /// address, in either flag form.
    #[test]
    fn recognises_servers() {
        let addrs: Vec<SocketAddr> = vec!["127.0.0.1:7001".parse().unwrap()];
        let argv = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        assert!(is_server_of(
            &argv("/x/target/release/shardcore server --node-id 1 --client-addr 127.0.0.1:7001"),
            &addrs
        ));
        assert!(is_server_of(
            &argv("shardcore server --client-addr=127.0.0.1:7001"),
            &addrs
        ));
        assert!(!is_server_of(
            &argv("shardcore server --client-addr 127.0.0.1:7002"),
            &addrs
        ));
        assert!(!is_server_of(
            &argv("shardcore kv --client-addr 127.0.0.1:7001"),
            &addrs
        ));
        assert!(!is_server_of(
            &argv("shardcore-bench server --client-addr 127.0.0.1:7001"),
            &addrs
        ));
        assert!(!is_server_of(
            &argv("shardcore server --config c.toml"),
            &addrs
        ));
    }
}
