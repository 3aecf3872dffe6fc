//! The MIT 6.5840 MapReduce lab's tests (TEST-PARITY.md, "MapReduce"), against real processes:
//! `shardcore mr coordinator` and `shardcore mr worker` on 127.0.0.1, 8 text inputs, 10
//! reduces, outputs compared with the sequential reference. Plus what the lab does not test:
//! straggler backups, and map outputs lost with a worker when the work folder is not shared.
//! Randomized tests print `SEED=` first; `SEED=<n>` replays the same fault schedule.

mod mapreduce_support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use mapreduce_support::{read_lines, seed, signal, wait_for, MrJob};
use shardcore::rng::Rng;

/// Every job in these tests ends well within this; more means a hang.
const JOB_LIMIT: Duration = Duration::from_secs(45);

/// wc equals the sequential run (lab: wc).
#[test]
fn wc_matches_sequential() {
    let mut job = MrJob::new("wc", seed(1), 128);
    job.start_coordinator(&["--app", "wc", "--reduces", "10", "--split-kib", "64"], 0);
    job.start_worker(2, &[]);
    job.start_worker(2, &[]);
    assert_eq!(job.wait_coordinator(JOB_LIMIT), 0);
    let expected = job.sequential_lines("wc", &[]);
    assert!(expected.len() > 1000);
    assert_eq!(job.output_lines(), expected);
}

/// indexer equals the sequential run (lab: indexer), with a work folder that is not shared:
/// reducers fetch every map output over TCP from the worker core that wrote it.
#[test]
fn indexer_matches_sequential_fetching_over_tcp() {
    let mut job = MrJob::new("indexer", seed(2), 64);
    job.start_coordinator(
        &[
            "--app",
            "indexer",
            "--reduces",
            "10",
            "--local-intermediate",
        ],
        0,
    );
    job.start_worker(2, &[]);
    job.start_worker(2, &[]);
    assert_eq!(job.wait_coordinator(JOB_LIMIT), 0);
    assert_eq!(job.output_lines(), job.sequential_lines("indexer", &[]));
}

/// One run of a task as the timing scripts log it.
#[derive(Debug)]
struct Run {
    worker: String,
    start: f64,
    end: f64,
}

fn runs(path: &std::path::Path) -> Vec<Run> {
    read_lines(path)
        .iter()
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            Run {
                worker: f[0].to_string(),
                start: f[1].parse().expect("start"),
                end: f[2].parse().expect("end"),
            }
        })
        .collect()
}

/// Whether two runs on different worker processes overlapped in time.
fn overlapped_across_processes(runs: &[Run]) -> bool {
    // A worker core's id is its process's id shifted left by 8 bits plus the core.
    let process = |w: &str| u64::from_str_radix(w, 16).expect("hex id") >> 8;
    runs.iter().any(|a| {
        runs.iter()
            .any(|b| process(&a.worker) != process(&b.worker) && a.start < b.end && b.start < a.end)
    })
}

/// Map parallelism and reduce parallelism (lab: mtiming, rtiming): tasks of one phase run at
/// the same time on different worker processes and cores. The exec app's scripts log each
/// run's worker core and its start and end times.
#[test]
fn map_and_reduce_run_in_parallel() {
    let mut job = MrJob::new("parallel", seed(3), 4);
    let log = job.dir.join("log");
    std::fs::create_dir_all(&log).unwrap();
    let body = |kind: &str| {
        format!(
            "start=$(date +%s.%N)\ncat > /dev/null\nsleep 0.5\n\
             echo \"$SHARDCORE_MR_WORKER $start $(date +%s.%N)\" >> {}/{kind}\n\
             printf 'k%s\\t1\\n' \"$SHARDCORE_MR_TASK\"",
            log.display()
        )
    };
    let map = job.script("map.sh", &body("map"));
    let reduce = job.script("reduce.sh", &body("reduce"));
    job.start_coordinator(
        &[
            "--app",
            "exec",
            "--app-arg",
            &map,
            "--app-arg",
            &reduce,
            "--reduces",
            "4",
        ],
        0,
    );
    // One slot per core: with fewer, one worker could keep every slot to itself.
    job.start_worker(2, &["--slots", "4"]);
    job.start_worker(2, &["--slots", "4"]);
    assert_eq!(job.wait_coordinator(JOB_LIMIT), 0);
    let maps = runs(&log.join("map"));
    let reduces = runs(&log.join("reduce"));
    assert_eq!(maps.len(), 8, "{maps:?}");
    assert_eq!(reduces.len(), 4, "{reduces:?}");
    let cores: BTreeSet<&str> = maps.iter().map(|r| r.worker.as_str()).collect();
    assert!(cores.len() >= 3, "maps ran on {cores:?}");
    assert!(overlapped_across_processes(&maps), "maps: {maps:?}");
    assert!(
        overlapped_across_processes(&reduces),
        "reduces: {reduces:?}"
    );
}

/// Job count (lab: jobcount): no task runs again while its worker is alive and within its
/// lease. Each map takes a second (the lease is 10 s) and logs every execution; backups are
/// off (they are the deliberate exception, tested below).
#[test]
fn no_task_runs_twice_while_its_worker_lives() {
    let mut job = MrJob::new("jobcount", seed(4), 4);
    let count = job.dir.join("count");
    let map = job.script(
        "map.sh",
        &format!(
            "cat > /dev/null\nsleep 1\necho \"$SHARDCORE_MR_TASK\" >> {}\nprintf 'a\\t1\\n'",
            count.display()
        ),
    );
    let reduce = job.script("reduce.sh", "cat");
    job.start_coordinator(
        &[
            "--app",
            "exec",
            "--app-arg",
            &map,
            "--app-arg",
            &reduce,
            "--reduces",
            "2",
            "--no-backups",
        ],
        0,
    );
    job.start_worker(2, &[]);
    job.start_worker(2, &[]);
    assert_eq!(job.wait_coordinator(JOB_LIMIT), 0);
    let mut executions = read_lines(&count);
    executions.sort();
    assert_eq!(executions, ["0", "1", "2", "3", "4", "5", "6", "7"]);
    assert_eq!(job.report()["stats"]["assignments"], 10);
}

/// Early exit (lab: early exit): when the first process of the job exits, the output is
/// complete and final; it is the same after every process has exited.
#[test]
fn output_is_final_when_the_first_process_exits() {
    let mut job = MrJob::new("early-exit", seed(5), 64);
    job.start_coordinator(&["--app", "wc", "--reduces", "10", "--split-kib", "32"], 0);
    for _ in 0..3 {
        job.start_worker(1, &[]);
    }
    let deadline = Instant::now() + JOB_LIMIT;
    let first_exit = loop {
        assert!(Instant::now() < deadline, "no process exited");
        let coordinator = job.coordinator.as_mut().unwrap();
        if coordinator.try_wait().unwrap().is_some() {
            break job.output_lines();
        }
        if job
            .workers
            .iter_mut()
            .any(|w| w.try_wait().unwrap().is_some())
        {
            break job.output_lines();
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let expected = job.sequential_lines("wc", &[]);
    assert_eq!(first_exit, expected);
    assert_eq!(job.wait_coordinator(JOB_LIMIT), 0);
    for worker in &mut job.workers {
        assert!(
            wait_for(worker, JOB_LIMIT).is_some(),
            "a worker did not exit"
        );
    }
    assert_eq!(job.output_lines(), expected);
}

/// Crash (lab: crash, and more): workers killed (-9) or stalled (SIGSTOP, past their lease)
/// at random, replacements started, and the coordinator killed and restarted mid-job on the
/// same port: the output still equals the sequential run. The app is `exec` with shell tools
/// and random sleeps so tasks last long enough to be hit.
#[test]
fn crashes_stalls_and_a_coordinator_restart_keep_the_output_right() {
    let seed = seed(6);
    let mut rng = Rng::stream(seed, "mr-crash-schedule");
    let mut job = MrJob::new("crash", seed, 96);
    let map = job.script(
        "map.sh",
        "sleep $(awk -v s=$$ 'BEGIN { srand(s); print 0.2 + rand() * 0.4 }')\ntr -cs 'A-Za-z' '\\n' | awk 'NF { print $0 \"\\t1\" }'",
    );
    let reduce = job.script(
        "reduce.sh",
        "sleep $(awk -v s=$$ 'BEGIN { srand(s); print 0.1 + rand() * 0.3 }')\n\
         awk -F '\\t' '{ c[$1] += $2 } END { for (k in c) print k, c[k] }'",
    );
    let args = [
        "--app",
        "exec",
        "--app-arg",
        &map,
        "--app-arg",
        &reduce,
        "--reduces",
        "10",
        "--split-kib",
        "32",
        "--lease-ms",
        "1000",
        "--heartbeat-ms",
        "200",
    ];
    let addr = job.start_coordinator(&args, 0);
    for _ in 0..3 {
        job.start_worker(2, &[]);
    }
    let started = Instant::now();
    let mut stalled: Vec<(usize, Instant)> = Vec::new();
    let mut restarted = false;
    let mut actions = 0;
    let code = loop {
        assert!(
            started.elapsed() < JOB_LIMIT,
            "SEED={seed}: the job did not finish"
        );
        if let Some(status) = job.coordinator.as_mut().unwrap().try_wait().unwrap() {
            break status.code().unwrap_or(-1);
        }
        std::thread::sleep(Duration::from_millis(rng.range(150, 400)));
        stalled.retain(|&(worker, until)| {
            if Instant::now() >= until {
                signal(&job.workers[worker], libc::SIGCONT);
                false
            } else {
                true
            }
        });
        if actions >= 12 {
            continue;
        }
        actions += 1;
        let victim = rng.index(job.workers.len());
        // The first action always restarts the coordinator (every task sleeps at least 0.2 s,
        // so the job is still running); the others kill or stall workers.
        let action = if actions == 1 { 6 } else { rng.range(0, 6) };
        match action {
            0..=3 => {
                let _ = job.workers[victim].kill();
                let _ = job.workers[victim].wait();
                stalled.retain(|&(w, _)| w != victim);
                job.start_worker(2, &[]);
            }
            4..=5 if !stalled.iter().any(|&(w, _)| w == victim) => {
                signal(&job.workers[victim], libc::SIGSTOP);
                let pause = Duration::from_millis(rng.range(1_500, 2_500));
                stalled.push((victim, Instant::now() + pause));
            }
            6 => {
                restarted = true;
                let coordinator = job.coordinator.as_mut().unwrap();
                let _ = coordinator.kill();
                let _ = coordinator.wait();
                std::thread::sleep(Duration::from_millis(300));
                job.start_coordinator(&[], addr.port());
            }
            _ => {}
        }
    };
    for (worker, _) in stalled {
        signal(&job.workers[worker], libc::SIGCONT);
    }
    assert_eq!(code, 0, "SEED={seed}: the job failed: {}", job.report());
    let expected = job.sequential_lines("exec", &[map.clone(), reduce.clone()]);
    assert_eq!(job.output_lines(), expected, "SEED={seed}");
    let report = job.report();
    println!("report: {report}");
    assert!(
        restarted,
        "SEED={seed}: the job ended before the coordinator restart"
    );
    assert_eq!(report["resumed"], true, "SEED={seed}");
}

/// A straggler gets a backup copy near the end of the phase (the paper's §3.6) and the job
/// finishes long before the straggler would, with a lease far too long to help.
#[test]
fn a_straggler_is_overtaken_by_its_backup() {
    let mut job = MrJob::new("straggler", seed(7), 4);
    let map = job.script(
        "map.sh",
        "cat > /dev/null\n\
         if [ \"$SHARDCORE_MR_TASK\" = 0 ] && [ \"$SHARDCORE_MR_ATTEMPT\" = 0 ]; then sleep 20; fi\n\
         printf 'k%s\\t1\\n' \"$SHARDCORE_MR_TASK\"",
    );
    let reduce = job.script("reduce.sh", "cat");
    job.start_coordinator(
        &[
            "--app",
            "exec",
            "--app-arg",
            &map,
            "--app-arg",
            &reduce,
            "--reduces",
            "2",
            "--lease-ms",
            "60000",
        ],
        0,
    );
    job.start_worker(2, &[]);
    job.start_worker(2, &[]);
    let started = Instant::now();
    assert_eq!(job.wait_coordinator(JOB_LIMIT), 0);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    let report = job.report();
    assert!(
        report["stats"]["backups"].as_u64().unwrap() >= 1,
        "{report}"
    );
    let lines = job.output_lines();
    assert_eq!(lines.len(), 8, "{lines:?}");
}

/// Without a shared work folder, a worker killed after its maps took their outputs with it:
/// the coordinator runs those maps again and the job still equals the sequential run.
#[test]
fn map_outputs_lost_with_a_worker_are_recomputed() {
    let mut job = MrJob::new("lost-outputs", seed(8), 64);
    let reduce = job.script(
        "reduce.sh",
        "sleep 1\nawk -F '\\t' '{ c[$1] += $2 } END { for (k in c) print k, c[k] }'",
    );
    let map = job.script(
        "map.sh",
        "tr -cs 'A-Za-z' '\\n' | awk 'NF { print $0 \"\\t1\" }'",
    );
    job.start_coordinator(
        &[
            "--app",
            "exec",
            "--app-arg",
            &map,
            "--app-arg",
            &reduce,
            "--reduces",
            "4",
            "--local-intermediate",
        ],
        0,
    );
    // The first worker runs maps and holds their outputs; it dies once the coordinator has
    // recorded one of its maps as done (before the reduces, which sleep first, can end). A map
    // output file on disk is not enough: the worker may die before it reports the map, and
    // then the map was merely running, not lost.
    job.start_worker(2, &[]);
    let local = job.dir.join("local-0");
    let deadline = Instant::now() + JOB_LIMIT;
    while job.done_maps() == 0 {
        assert!(
            Instant::now() < deadline,
            "the coordinator recorded no done map (outputs on disk: {})",
            count_map_outputs(&local)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = job.workers[0].kill();
    let _ = job.workers[0].wait();
    job.start_worker(2, &[]);
    assert_eq!(job.wait_coordinator(JOB_LIMIT), 0);
    assert_eq!(
        job.output_lines(),
        job.sequential_lines("exec", &[map.clone(), reduce.clone()])
    );
    let report = job.report();
    assert!(
        report["stats"]["lost_map_outputs"].as_u64().unwrap() >= 1,
        "{report}"
    );
}

/// Map output files (renamed into place, so whole) under a worker's local folder.
fn count_map_outputs(local: &std::path::Path) -> usize {
    let Ok(jobs) = std::fs::read_dir(local) else {
        return 0;
    };
    jobs.flatten()
        .filter_map(|job| std::fs::read_dir(job.path()).ok())
        .flat_map(|files| files.flatten())
        .filter(|f| {
            let name = f.file_name();
            let name = name.to_string_lossy();
            name.starts_with("mr-") && name.contains("-a") && !name.ends_with(".tmp")
        })
        .count()
}
