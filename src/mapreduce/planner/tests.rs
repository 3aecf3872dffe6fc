//! The planner's rules, driven by hand with explicit times: splits, phases, leases, first
//! completion wins, backups, bounded retries, worker loss, and a restore from durable state.
//! Plus a seeded random schedule (`SEED=` printed per seed) checking that the job always ends
//! done with every task accepted exactly once, whatever the interleaving of requests, losses,
//! expiries and duplicate completions.

use super::*;
use crate::rng::Rng;

fn job(shared: bool) -> JobSpec {
    JobSpec {
        id: 1,
        app: "wc".into(),
        app_args: vec![],
        map_count: 0,
        reduce_count: 2,
        work_dir: "/w".into(),
        output_dir: "/o".into(),
        shared_intermediate: shared,
    }
}

fn files() -> Vec<InputFile> {
    vec![
        InputFile {
            path: "a".into(),
            bytes: 25,
        },
        InputFile {
            path: "b".into(),
            bytes: 0,
        },
    ]
}

fn planner(config: PlannerConfig) -> Planner {
    Planner::new(job(true), files(), 10, config).unwrap()
}

fn no_backups() -> PlannerConfig {
    PlannerConfig {
        backups: Backups::Off,
        ..PlannerConfig::default()
    }
}

fn task_of(worker: u64, a: &TaskAssignment) -> TaskRef {
    let (kind, task, attempt) = match &a.assignment {
        Assignment::Map(m) => (TaskKind::Map, m.task, m.attempt),
        Assignment::Reduce(r) => (TaskKind::Reduce, r.task, r.attempt),
        other => panic!("not a task: {other:?}"),
    };
    TaskRef {
        worker,
        job: 1,
        kind,
        task,
        attempt,
    }
}

fn done(p: &mut Planner, t: &TaskRef, now: u64) -> Completed {
    p.done(t, Counters::default(), "127.0.0.1:1", now)
}

#[test]
fn splits_cover_every_byte_and_every_file() {
    assert_eq!(
        splits(&files(), 10),
        vec![(0, 0, 10), (0, 10, 10), (0, 20, 5), (1, 0, 0)]
    );
    assert_eq!(planner(no_backups()).job().map_count, 4);
}

#[test]
fn reduces_wait_for_every_map_and_the_job_ends_done() {
    let mut p = planner(no_backups());
    let maps: Vec<TaskRef> = (0..4).map(|w| task_of(w, &p.request(w, 0))).collect();
    // Every map is running: nothing else to hand out, reduces wait.
    assert_eq!(
        p.request(9, 0).assignment,
        Assignment::Wait { retry_ms: 50 }
    );
    for t in &maps[..3] {
        assert_eq!(done(&mut p, t, 5), Completed::Accepted);
    }
    assert!(matches!(
        p.request(9, 5).assignment,
        Assignment::Wait { .. }
    ));
    done(&mut p, &maps[3], 6);
    let r0 = p.request(9, 7);
    let Assignment::Reduce(spec) = &r0.assignment else {
        panic!("a reduce")
    };
    assert_eq!(spec.inputs.len(), 4);
    let r1 = task_of(8, &p.request(8, 7));
    done(&mut p, &task_of(9, &r0), 8);
    done(&mut p, &r1, 9);
    assert_eq!(*p.status(), JobStatus::Done);
    assert_eq!(
        p.request(9, 10).assignment,
        Assignment::Exit { job_failed: false }
    );
}

#[test]
fn a_task_is_not_reissued_within_its_lease_and_is_after_it() {
    let mut p = planner(no_backups());
    let all: Vec<TaskRef> = (1..5).map(|w| task_of(w, &p.request(w, 0))).collect();
    let first = all[0];
    // Heartbeats keep the lease: no re-issue however long the task runs.
    for now in (1_000..40_000).step_by(1_000) {
        for t in &all {
            p.heartbeat(t, 0, now);
        }
        p.tick(now);
        assert!(matches!(
            p.request(7, now).assignment,
            Assignment::Wait { .. }
        ));
    }
    // Silence past the lease: the task is idle again with a new attempt.
    p.tick(39_000 + 10_001);
    let again = task_of(7, &p.request(7, 49_002));
    assert_eq!((again.task, again.attempt), (first.task, first.attempt + 1));
    // The late original still counts if it finishes first.
    assert_eq!(done(&mut p, &first, 49_003), Completed::Accepted);
    assert_eq!(done(&mut p, &again, 49_004), Completed::Duplicate);
}

#[test]
fn a_closed_connection_releases_its_tasks_at_once() {
    let mut p = planner(no_backups());
    let t = task_of(1, &p.request(1, 0));
    p.worker_lost(1);
    assert_eq!(task_of(2, &p.request(2, 1)).task, t.task);
}

#[test]
fn local_map_outputs_of_a_lost_worker_run_again() {
    let mut p = Planner::new(job(false), files(), 10, no_backups()).unwrap();
    let maps: Vec<TaskRef> = (0..4).map(|w| task_of(w, &p.request(w, 0))).collect();
    for t in &maps {
        done(&mut p, t, 1);
    }
    p.worker_lost(2);
    let again = task_of(5, &p.request(5, 2));
    assert_eq!((again.kind, again.task), (TaskKind::Map, maps[2].task));
    // A reducer's report of a lost output does the same.
    done(&mut p, &again, 3);
    let reduce = task_of(6, &p.request(6, 4));
    p.failed(&reduce, &FailureKind::MapOutputLost { map: 0 }, "gone");
    let rerun = task_of(6, &p.request(6, 5));
    assert_eq!((rerun.kind, rerun.task), (TaskKind::Map, 0));
}

#[test]
fn failures_are_retried_a_bounded_number_of_times_then_fail_the_job() {
    let mut p = planner(no_backups());
    for attempt in 0..3 {
        let t = task_of(1, &p.request(1, attempt));
        assert_eq!((t.task, t.attempt), (0, attempt as u32));
        assert_eq!(*p.status(), JobStatus::Running);
        p.failed(&t, &FailureKind::TaskError, "cannot read input a");
    }
    let JobStatus::Failed(error) = p.status() else {
        panic!("the job fails")
    };
    assert_eq!(
        (error.kind, error.task, error.attempts),
        (TaskKind::Map, 0, 3)
    );
    assert!(error.to_string().contains("cannot read input a"), "{error}");
    assert_eq!(
        p.request(1, 9).assignment,
        Assignment::Exit { job_failed: true }
    );
}

#[test]
fn stalls_are_bounded_too() {
    let config = PlannerConfig {
        lease_ms: 10,
        max_worker_losses: 3,
        ..no_backups()
    };
    let mut p = planner(config);
    let mut now = 0;
    for _ in 0..3 {
        p.request(1, now);
        now += 11;
        p.tick(now);
    }
    assert!(matches!(p.status(), JobStatus::Failed(_)));
}

#[test]
fn a_straggler_gets_one_backup_near_the_end_and_the_first_completion_wins() {
    let config = PlannerConfig {
        backups: Backups::On {
            min_running_ms: 100,
            slowdown_factor: 2,
        },
        lease_ms: 1_000_000,
        ..PlannerConfig::default()
    };
    let mut p = planner(config);
    let maps: Vec<TaskRef> = (0..4).map(|w| task_of(w, &p.request(w, 0))).collect();
    for t in &maps[1..] {
        done(&mut p, t, 50);
    }
    // Not slow enough yet (median 50 ms, threshold max(100, 2 x 50)).
    assert!(matches!(
        p.request(1, 99).assignment,
        Assignment::Wait { .. }
    ));
    // The straggler's own worker gets no backup of it.
    assert!(matches!(
        p.request(0, 150).assignment,
        Assignment::Wait { .. }
    ));
    let backup = task_of(1, &p.request(1, 150));
    assert_eq!((backup.task, backup.attempt), (maps[0].task, 1));
    // One backup at a time per task.
    assert!(matches!(
        p.request(2, 151).assignment,
        Assignment::Wait { .. }
    ));
    assert_eq!(done(&mut p, &backup, 160), Completed::Accepted);
    assert_eq!(done(&mut p, &maps[0], 170), Completed::Duplicate);
    assert_eq!(p.stats().backups, 1);
}

#[test]
fn restore_keeps_completions_and_skips_attempt_numbers() {
    let mut p = planner(no_backups());
    let a = task_of(1, &p.request(1, 0));
    let b = task_of(2, &p.request(2, 0));
    done(&mut p, &a, 1);
    let mut q = Planner::restore(&p.durable_state()).unwrap();
    assert_eq!(q.progress(TaskKind::Map).done, 1);
    // The running task is idle after the restart, with an attempt number never used before.
    let again = task_of(3, &q.request(3, 0));
    assert_eq!(again.task, b.task);
    assert_eq!(again.attempt, b.attempt + 1 + ATTEMPT_GAP_ON_RESTORE);
    // The pre-restart copy may still finish first: accepted.
    assert_eq!(done(&mut q, &b, 2), Completed::Accepted);
    assert_eq!(q.stats().restores, 1);
    assert!(Planner::restore(b"{").is_err());
}

#[test]
fn messages_about_another_job_are_ignored() {
    let mut p = planner(no_backups());
    let mut t = task_of(1, &p.request(1, 0));
    t.job = 2;
    assert_eq!(done(&mut p, &t, 1), Completed::Unknown);
    t.job = 1;
    t.task = 99;
    assert_eq!(done(&mut p, &t, 1), Completed::Unknown);
}

/// Random schedules of requests, completions (sometimes twice), losses, stalls and restores:
/// the job always ends done, each task accepted once.
#[test]
fn random_schedules_always_finish() {
    for seed in 0..300u64 {
        let result = std::panic::catch_unwind(|| random_schedule(seed));
        if result.is_err() {
            panic!("SEED={seed} failed");
        }
    }
}

fn random_schedule(seed: u64) {
    let mut rng = Rng::stream(seed, "planner-schedule");
    let config = PlannerConfig {
        lease_ms: 100,
        max_worker_losses: 1_000,
        backups: if rng.chance(1, 2) {
            Backups::On {
                min_running_ms: 20,
                slowdown_factor: 2,
            }
        } else {
            Backups::Off
        },
        ..PlannerConfig::default()
    };
    let mut p = planner(config);
    let mut running: Vec<TaskRef> = Vec::new();
    let mut now = 0;
    let mut accepted = 0;
    for _ in 0..5_000 {
        now += rng.range(0, 30);
        match rng.range(0, 10) {
            0..=3 => {
                let worker = rng.range(0, 6);
                let a = p.request(worker, now);
                if matches!(a.assignment, Assignment::Map(_) | Assignment::Reduce(_)) {
                    running.push(task_of(worker, &a));
                }
            }
            4..=6 if !running.is_empty() => {
                let t = running.swap_remove(rng.index(running.len()));
                if done(&mut p, &t, now) == Completed::Accepted {
                    accepted += 1;
                }
            }
            7 => p.worker_lost(rng.range(0, 6)),
            8 => p.tick(now),
            _ if rng.chance(1, 20) => {
                p = Planner::restore(&p.durable_state()).unwrap();
            }
            _ => {
                for t in &running {
                    p.heartbeat(t, 1, now);
                }
            }
        }
        if *p.status() == JobStatus::Done {
            break;
        }
    }
    assert_eq!(*p.status(), JobStatus::Done, "the job finishes");
    // 4 maps + 2 reduces; no local-output losses in a shared job, so each accepted once.
    assert_eq!(accepted, 6);
}
