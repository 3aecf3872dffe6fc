//! One run, start to finish: start the cluster (`--cluster local`) or find the servers' pids,
//! wait until every group answers, prefill, run the load with a progress line, take the CPU
//! window, and write the reports and the history.

use std::collections::BTreeSet;
use std::future::Future;
use std::io::{IsTerminal, Write as _};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use shardcore::client::Client;
use shardcore::kv::Consistency;
use shardcore::node::placement::group_for_key;
use shardcore_io::runtime::Pinning;
use shardcore_io::RuntimeConfig;

use crate::cli::{Args, KeyDist, Prefill};
use crate::cluster::LocalServers;
use crate::engine::{self, CoreResult, KeyOrder, Load, Phases, Plan, Progress, Target};
use crate::keys::{KeyChooser, Zipf};
use crate::recorder::{BenchOp, Recorder};
use crate::report::{RunFacts, Summary};
use crate::{hgrm, procfs, svg};

/// How long the cluster may take to answer at all (leader elections after a start). Why 30 s:
/// several election rounds on a loaded shared machine.
const READY_LIMIT: Duration = Duration::from_secs(30);

/// Outstanding requests of the prefill. Why 256: the most the table uses; enough to
/// fill 100,000 keys in seconds without overrunning any server bound.
const PREFILL_CONCURRENCY: u64 = 256;

/// The longest prefill. Why 10 minutes: 100,000 keys at the slowest write rate seen (1,000/s at
/// one client) take under two.
const PREFILL_LIMIT: Duration = Duration::from_secs(600);

/// Timeline interval of the measured phase.
const INTERVAL: Duration = Duration::from_millis(100);

/// Where the cluster is and whose CPU counts as the servers'.
struct Cluster {
    addrs: Vec<SocketAddr>,
    server_pids: Option<(String, Vec<u32>)>,
    local: Option<LocalServers>,
}

/// Runs the load `args` describes; returns the process exit code (0 ran, 1 no successful
/// operation, 2 could not run).
pub fn run(args: &Args) -> u8 {
    match run_inner(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("shardcore-bench: error: {e}");
            2
        }
    }
}

fn run_inner(args: &Args) -> Result<u8, String> {
    let mut cluster = connect(args)?;
    eprintln!("shardcore-bench: {}", args.summary());
    match &cluster.server_pids {
        Some((source, pids)) => {
            eprintln!("shardcore-bench: server CPU from pids {pids:?} ({source})")
        }
        None => eprintln!("shardcore-bench: server CPU not measured (no server pids)"),
    }
    let target = Target {
        addrs: cluster.addrs.clone(),
        cluster_id: args.cluster_id.clone(),
        groups: args.groups,
        attempt_timeout: Duration::from_millis(args.attempt_timeout_ms),
        op_timeout: Duration::from_millis(args.op_timeout_ms),
        sharded: args.sharded,
    };
    let epoch = Instant::now();
    let marker = wait_ready(args, &target)?;
    if let Some(local) = cluster.local.as_mut() {
        local.check_alive()?;
    }
    let history_base = args.history.clone();
    let mut history_parts = Vec::new();
    let marker_value = format!("{}x{}", args.keys, args.value_bytes);
    let prefill = match args.prefill {
        Prefill::Yes => true,
        Prefill::No => false,
        Prefill::Auto => args.reads() && marker.as_deref() != Some(marker_value.as_bytes()),
    };
    if prefill {
        history_parts.extend(run_prefill(args, &target, epoch, history_base.as_deref())?);
        let key = marker_key(args);
        let value = Bytes::from(marker_value);
        with_client(&target, move |client| {
            let (key, value) = (key.clone(), value.clone());
            async move { client.put(key, value).await.map_err(|e| e.to_string()) }
        })??;
    }
    let (summary, recorder, parts) =
        run_main(args, &target, &cluster, epoch, history_base.as_deref())?;
    history_parts.extend(parts);
    if let Some(local) = cluster.local.as_mut() {
        local.check_alive()?;
    }
    println!("{}", summary.text());
    println!("{}", summary.result_line());
    if let Some(dir) = &args.out {
        write_reports(dir, &summary, &recorder)?;
        eprintln!("shardcore-bench: reports in {}", dir.display());
    }
    if let Some(path) = &args.history {
        let ops = join_history(path, &history_parts)?;
        eprintln!(
            "shardcore-bench: {ops} operations in {} (check: shardcore check-history {})",
            path.display(),
            path.display()
        );
    }
    Ok(if summary.ops > 0 { 0 } else { 1 })
}

fn connect(args: &Args) -> Result<Cluster, String> {
    if args.cluster.is_some() {
        let local = LocalServers::start(args)?;
        eprintln!(
            "shardcore-bench: started 3 local nodes (pids {:?}), data in {}",
            local.pids(),
            local.data_dir.display()
        );
        return Ok(Cluster {
            addrs: local.addrs.clone(),
            server_pids: Some(("started by --cluster local".to_string(), local.pids())),
            local: Some(local),
        });
    }
    let addrs = args
        .servers
        .iter()
        .map(|s| {
            s.to_socket_addrs()
                .map_err(|e| format!("--servers {s}: {e}"))?
                .next()
                .ok_or_else(|| format!("--servers {s}: no address"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let server_pids = match args.server_pids.as_str() {
        "none" => None,
        "auto" => {
            let pids = procfs::find_servers(&addrs);
            (!pids.is_empty()).then(|| {
                let how = "auto: `shardcore server` processes whose --client-addr is in --servers";
                (how.to_string(), pids)
            })
        }
        list => {
            let pids = list
                .split(',')
                .map(|p| {
                    p.trim()
                        .parse::<u32>()
                        .map_err(|_| format!("--server-pids: bad pid {p:?}"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Some(("--server-pids".to_string(), pids))
        }
    };
    Ok(Cluster {
        addrs,
        server_pids,
        local: None,
    })
}

fn marker_key(args: &Args) -> Bytes {
    Bytes::from(format!("{}.prefilled", args.key_prefix))
}

/// Runs `f` with a client on a one-core runtime of its own.
fn with_client<T, F, Fut>(target: &Target, f: F) -> Result<T, String>
where
    T: Send + 'static,
    F: Fn(Client) -> Fut + Send + Clone + 'static,
    Fut: Future<Output = T> + 'static,
{
    let config = RuntimeConfig {
        cores: 1,
        pinning: Pinning::Unpinned,
        name: "bench-setup".to_string(),
        ..RuntimeConfig::default()
    };
    let target = target.clone();
    let mut results = shardcore_io::run(config, move |_core: shardcore_io::Core<()>| {
        let (f, target) = (f.clone(), target.clone());
        async move { f(target.client()).await }
    })
    .map_err(|e| format!("cannot start a client runtime: {e}"))?;
    results
        .pop()
        .ok_or_else(|| "no result from the client runtime".to_string())
}

/// Waits until every group accepts a write (one key per group), then reads the prefill marker.
fn wait_ready(args: &Args, target: &Target) -> Result<Option<Bytes>, String> {
    if args.sharded {
        return wait_ready_sharded(args, target);
    }
    let mut keys = Vec::new();
    let mut groups = BTreeSet::new();
    for i in 0.. {
        if groups.len() as u64 == args.groups || i > 100_000 {
            break;
        }
        let key = format!("{}.ready.{i}", args.key_prefix);
        if groups.insert(group_for_key(key.as_bytes(), args.groups)) {
            keys.push(Bytes::from(key));
        }
    }
    let started = Instant::now();
    let mut patient = target.clone();
    patient.op_timeout = READY_LIMIT;
    let marker = marker_key(args);
    let result = with_client(&patient, move |client| {
        let (keys, marker) = (keys.clone(), marker.clone());
        async move {
            for key in keys {
                client
                    .put(key.clone(), Bytes::from_static(b"ready"))
                    .await
                    .map_err(|e| format!("the cluster did not accept a write to {key:?}: {e}"))?;
            }
            client
                .get_with(marker, Consistency::Linearizable)
                .await
                .map_err(|e| format!("reading the prefill marker: {e}"))
        }
    })??;
    eprintln!(
        "shardcore-bench: every group answered in {} ms",
        started.elapsed().as_millis()
    );
    Ok(result)
}

/// [`wait_ready`] for a sharded cluster: a first write fetches the controller's configuration,
/// then one key of a shard of each group in it is written.
fn wait_ready_sharded(args: &Args, target: &Target) -> Result<Option<Bytes>, String> {
    let started = Instant::now();
    let mut patient = target.clone();
    patient.op_timeout = READY_LIMIT;
    let marker = marker_key(args);
    let prefix = args.key_prefix.clone();
    let result = with_client(&patient, move |client| {
        let (marker, prefix) = (marker.clone(), prefix.clone());
        async move {
            let put = |key: String| {
                let client = &client;
                async move {
                    client
                        .put(Bytes::from(key.clone()), Bytes::from_static(b"ready"))
                        .await
                        .map_err(|e| format!("the cluster did not accept a write to {key:?}: {e}"))
                }
            };
            put(format!("{prefix}.ready")).await?;
            let config = client
                .shard_config()
                .ok_or_else(|| "no shard configuration after a write".to_string())?;
            if config.groups.is_empty() {
                return Err(format!(
                    "the controller's configuration {} has no groups: join some first",
                    config.num
                ));
            }
            let mut waiting: BTreeSet<u64> = config.groups.keys().copied().collect();
            for i in 0..100_000 {
                if waiting.is_empty() {
                    break;
                }
                let key = format!("{prefix}.ready.{i}");
                let shard = shardcore::shardkv::key_to_shard(key.as_bytes(), config.shard_count());
                if waiting.remove(&config.group_of(shard)) {
                    put(key).await?;
                }
            }
            client
                .get_with(marker, Consistency::Linearizable)
                .await
                .map_err(|e| format!("reading the prefill marker: {e}"))
        }
    })??;
    eprintln!(
        "shardcore-bench: every shard group answered in {} ms",
        started.elapsed().as_millis()
    );
    Ok(result)
}

fn base_load(args: &Args, target: &Target, plan: Plan, keys: KeyOrder) -> Result<Load, String> {
    let key_numbers = match args.shard_filter() {
        None => None,
        Some(filter) => Some(Arc::new(crate::keys::filtered_key_numbers(
            &args.key_prefix,
            args.key_bytes as usize,
            args.keys,
            args.shards,
            filter,
        )?)),
    };
    Ok(Load {
        target: target.clone(),
        plan,
        mix: args.mix(),
        keys,
        key_prefix: args.key_prefix.clone(),
        key_numbers,
        key_bytes: args.key_bytes as usize,
        value_bytes: args.value_bytes as usize,
        consistency: if args.serializable {
            Consistency::Serializable
        } else {
            Consistency::Linearizable
        },
        mode: args.mode,
        arrival: args.arrival,
        seed: args.seed,
        first_client_id: 1,
        history_parts: None,
        interval: INTERVAL,
    })
}

/// `path` with `suffix` appended to its last component.
fn with_suffix(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

fn generator_cores(args: &Args) -> usize {
    if args.cores > 0 {
        return args.cores;
    }
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Writes every key once; returns the history parts written.
fn run_prefill(
    args: &Args,
    target: &Target,
    epoch: Instant,
    history: Option<&Path>,
) -> Result<Vec<(std::path::PathBuf, u64)>, String> {
    let concurrency = PREFILL_CONCURRENCY.min(args.keys);
    let plan = Plan::new(generator_cores(args), concurrency, 0, None, None);
    let mut load = base_load(args, target, plan, KeyOrder::EachOnce { keys: args.keys })?;
    load.mode = crate::cli::LoopMode::Closed;
    // Client ids after the main load's, which starts at 1.
    load.first_client_id = 1 + args.concurrency;
    load.history_parts = history.map(|p| with_suffix(p, ".prefill"));
    let now = Instant::now();
    let phases = Phases {
        epoch,
        load_start: now,
        measure_start: now,
        end: now + PREFILL_LIMIT,
    };
    let progress = Arc::new(
        (0..load.plan.cores())
            .map(|_| Progress::default())
            .collect(),
    );
    eprintln!("shardcore-bench: prefilling {} keys", args.keys);
    let results = engine::run(Arc::new(load), phases, progress)?;
    let (recorder, parts) = merge(&results)?;
    let secs = now.elapsed().as_secs_f64();
    eprintln!(
        "shardcore-bench: prefilled in {secs:.1} s ({:.0} puts/s, errors {}, timeouts {})",
        recorder.ops as f64 / secs,
        recorder.errors,
        recorder.timeouts
    );
    Ok(parts)
}

type Parts = Vec<(std::path::PathBuf, u64)>;

fn merge(results: &[CoreResult]) -> Result<(Recorder, Parts), String> {
    let mut recorder = Recorder::new(INTERVAL.as_nanos() as u64);
    let mut parts = Vec::new();
    for result in results {
        if let Some(error) = &result.error {
            return Err(error.clone());
        }
        recorder.merge(&result.recorder);
        parts.extend(result.history.clone());
    }
    Ok((recorder, parts))
}

/// The measured load; returns its summary, its merged recorder and its history parts.
fn run_main(
    args: &Args,
    target: &Target,
    cluster: &Cluster,
    epoch: Instant,
    history: Option<&Path>,
) -> Result<(Summary, Recorder, Parts), String> {
    let plan = Plan::new(
        generator_cores(args),
        args.concurrency,
        args.connections,
        args.ops,
        args.rate,
    );
    let cores = plan.cores();
    let chooser = match args.key_dist {
        KeyDist::Uniform => KeyChooser::Uniform { keys: args.keys },
        KeyDist::Zipfian => KeyChooser::Zipfian(Zipf::new(args.keys, args.zipf_theta)),
    };
    let mut load = base_load(args, target, plan, KeyOrder::Random(chooser))?;
    load.history_parts = history.map(|p| with_suffix(p, ".main"));
    // A moment for the runtime's threads to start, so the schedule does not begin in the past.
    let load_start = Instant::now() + Duration::from_millis(100);
    let measure_start = load_start + Duration::from_secs(args.warmup_secs);
    let phases = Phases {
        epoch,
        load_start,
        measure_start,
        end: measure_start + Duration::from_secs(args.duration_limit_secs()),
    };
    let progress: Arc<Vec<Progress>> = Arc::new((0..cores).map(|_| Progress::default()).collect());
    let load_average = procfs::load_average();
    let server_pids = cluster
        .server_pids
        .as_ref()
        .map(|(_, p)| p.clone())
        .unwrap_or_default();
    let finished = Arc::new(AtomicBool::new(false));
    let monitor = {
        let (progress, finished) = (progress.clone(), finished.clone());
        let quiet = args.quiet;
        let duration = args.duration_limit_secs();
        std::thread::Builder::new()
            .name("bench-monitor".to_string())
            .spawn(move || monitor(phases, &progress, &finished, &server_pids, quiet, duration))
            .map_err(|e| format!("cannot start the monitor thread: {e}"))?
    };
    let results = engine::run(Arc::new(load), phases, progress);
    finished.store(true, Ordering::Relaxed);
    let window = monitor
        .join()
        .map_err(|_| "the monitor thread panicked".to_string())?;
    let results = results?;
    let (recorder, parts) = merge(&results)?;
    let measured_secs = if args.ops.is_some() && Instant::now() < phases.end {
        recorder.last_done_ns as f64 / 1e9
    } else {
        (phases.end - phases.measure_start).as_secs_f64()
    };
    let started_unix_secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .saturating_sub(phases.measure_start.elapsed().as_secs());
    let facts = RunFacts {
        recorder: &recorder,
        measured_secs,
        started_unix_secs,
        client_cpu_secs: window.client_cpu_secs,
        server_cpu: cluster
            .server_pids
            .as_ref()
            .map(|(source, pids)| (source.clone(), pids.clone(), window.server_cpu_secs)),
        generator_cores: cores as u64,
        load_average_at_start: load_average,
    };
    let summary = Summary::new(args, target.addrs.len() as u64, &facts);
    let mut stats = shardcore::client::ClientStats::default();
    for r in &results {
        stats.attempts += r.stats.attempts;
        stats.retries += r.stats.retries;
        stats.sessions_opened += r.stats.sessions_opened;
        stats.connects += r.stats.connects;
        stats.wrong_shard += r.stats.wrong_shard;
        stats.router_refreshes += r.stats.router_refreshes;
    }
    let sharded = if args.sharded {
        format!(
            ", {} wrong-shard answers, {} configurations fetched",
            stats.wrong_shard, stats.router_refreshes
        )
    } else {
        String::new()
    };
    eprintln!(
        "shardcore-bench: client: {} attempts, {} retries, {} sessions opened, {} connections{sharded}",
        stats.attempts, stats.retries, stats.sessions_opened, stats.connects
    );
    Ok((summary, recorder, parts))
}

/// CPU seconds over the measured phase.
struct CpuWindow {
    client_cpu_secs: f64,
    server_cpu_secs: f64,
}

fn cpu_now(server_pids: &[u32]) -> (f64, f64) {
    let client = shardcore_io::process_cpu_time().map_or(0.0, |t| t.total().as_secs_f64());
    (client, procfs::total_cpu_secs(server_pids))
}

/// Prints the progress line and takes CPU readings at the start and end of the measured phase
/// (or when every core has finished, for a run bounded by `--ops`).
fn monitor(
    phases: Phases,
    progress: &[Progress],
    finished: &AtomicBool,
    server_pids: &[u32],
    quiet: bool,
    duration_secs: u64,
) -> CpuWindow {
    let tty = std::io::stderr().is_terminal();
    let print_every = if tty {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(5)
    };
    let mut start_cpu = None;
    let mut end_cpu = None;
    let mut next_print = phases.load_start + print_every;
    let mut last = (Instant::now(), 0u64);
    loop {
        let now = Instant::now();
        let all_done = progress
            .iter()
            .all(|p| p.finished.load(Ordering::Relaxed) == 1);
        if start_cpu.is_none() && (now >= phases.measure_start || all_done) {
            start_cpu = Some(cpu_now(server_pids));
        }
        if start_cpu.is_some() && end_cpu.is_none() && (now >= phases.end || all_done) {
            end_cpu = Some(cpu_now(server_pids));
        }
        if finished.load(Ordering::Relaxed) {
            break;
        }
        if !quiet && now >= next_print {
            let done: u64 = progress
                .iter()
                .map(|p| p.done.load(Ordering::Relaxed))
                .sum();
            let failed: u64 = progress
                .iter()
                .map(|p| p.failed.load(Ordering::Relaxed))
                .sum();
            let rate = (done - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
            last = (now, done);
            let phase = if now < phases.measure_start {
                format!(
                    "warm-up {:>3.0} s",
                    (phases.measure_start - now).as_secs_f64()
                )
            } else {
                let secs = now.duration_since(phases.measure_start).as_secs_f64();
                format!("measure {secs:>3.0}/{duration_secs} s")
            };
            let line = format!("[{phase}] {rate:>9.0} ops/s  failed {failed}");
            let mut err = std::io::stderr();
            let _ = if tty {
                write!(err, "\r{line}\x1b[K")
            } else {
                writeln!(err, "{line}")
            };
            next_print += print_every;
        }
        // Wake for whichever comes first: a print, a CPU reading, or a check on the cores.
        let mut wake = now + Duration::from_millis(20);
        if start_cpu.is_none() {
            wake = wake.min(phases.measure_start.max(now));
        } else if end_cpu.is_none() {
            wake = wake.min(phases.end.max(now));
        }
        std::thread::sleep(wake.saturating_duration_since(Instant::now()));
    }
    if tty && !quiet {
        eprintln!();
    }
    let start = start_cpu.unwrap_or_else(|| cpu_now(server_pids));
    let end = end_cpu.unwrap_or_else(|| cpu_now(server_pids));
    CpuWindow {
        client_cpu_secs: end.0 - start.0,
        server_cpu_secs: end.1 - start.1,
    }
}

/// summary.json, latency.hgrm and one per kind, latency.svg, throughput.svg.
fn write_reports(dir: &Path, summary: &Summary, recorder: &Recorder) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))
    };
    let json = serde_json::to_string_pretty(summary).map_err(|e| e.to_string())?;
    write("summary.json", &(json + "\n"))?;
    write(
        "latency.hgrm",
        &hgrm::percentile_distribution(&recorder.all, 1000.0),
    )?;
    let mut series = vec![("all".to_string(), &recorder.all)];
    for op in BenchOp::ALL {
        let histogram = recorder.of(op);
        if !histogram.is_empty() {
            write(
                &format!("latency-{}.hgrm", op.name()),
                &hgrm::percentile_distribution(histogram, 1000.0),
            )?;
            series.push((op.name().to_string(), histogram));
        }
    }
    if series.len() == 2 {
        // One kind only: its curve is the same as "all".
        series.truncate(1);
    }
    let title = format!("{}: latency by percentile", summary.label);
    write("latency.svg", &svg::latency_plot(&title, &series))?;
    let title = format!(
        "{}: throughput ({:.0} ops/s)",
        summary.label, summary.ops_per_sec
    );
    write(
        "throughput.svg",
        &svg::throughput_plot(&title, &summary.timeline),
    )?;
    Ok(())
}

/// Concatenates the cores' history parts into `path` and deletes them; returns the lines.
fn join_history(path: &Path, parts: &[(std::path::PathBuf, u64)]) -> Result<u64, String> {
    let mut out = std::fs::File::create(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    let mut lines = 0;
    for (part, ops) in parts {
        let mut input =
            std::fs::File::open(part).map_err(|e| format!("reading {}: {e}", part.display()))?;
        std::io::copy(&mut input, &mut out)
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        let _ = std::fs::remove_file(part);
        lines += ops;
    }
    out.sync_all()
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    Ok(lines)
}
