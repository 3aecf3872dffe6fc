//! The sharded KV in the deterministic simulator: one test per row of TEST-PARITY.md's "Sharded
//! KV" table (the MIT 6.5840 lab's shardkv tests), in the lab's setting: three shard groups of
//! three nodes each plus the controller on three more (`sim::shardkv_lab`). Clients run the real
//! sharded clerk (`shardkv::ShardClerk`) against the real replicas (`shardkv::ShardKvServer`)
//! on Raft over the simulated network; shard groups pull shards from each other with inquiries
//! over that network; the simulator checks Raft's invariants after every event. Every test
//! checks what the lab checks (values, completions, sizes), that every live replica serves only
//! shards its configuration gives its group, and finally that the whole history of client
//! operations is linearizable.
//!
//! Differences from the lab: virtual time, so the lab's sleeps cost nothing real, but some are
//! shorter (Concurrent3 loops for 6 s, not 12) to keep the file fast; group ids are 2, 3 and 4
//! (the lab's 100, 101, 102); the lab's `ShutdownServer(i, g)` is a crash of that node.
//! `SEED=`, `SEEDS=`, `KEEP_GOING=1` and `TRACE=1` work as in the other simulation tests.

mod support;

use shardcore::raft::GroupId;
use shardcore::shardctl::ShardId;
use shardcore::shardkv::{key_to_shard, ShardState};
use shardcore::sim::shardkv_lab::{
    lab_config, rand_string, AppendWorkload, ShardLab, GROUPS, NODES_PER_GROUP, SHARDS,
};
use support::{run_seeds, sim_config};

/// Seeds per scenario when neither SEED nor SEEDS is set (the issue asks for at least 10; all
/// fourteen scenarios of one seed take under a second).
const SEEDS: u64 = 20;
/// The lab's groups 0, 1, 2.
const G0: GroupId = GROUPS[0];
const G1: GroupId = GROUPS[1];
const G2: GroupId = GROUPS[2];

fn lab(seed: u64, unreliable: bool, max_raft_state: Option<usize>) -> ShardLab {
    ShardLab::new(lab_config(sim_config(seed, 1), unreliable, max_raft_state))
}

/// The lab's keys "0".."n-1".
fn keys(n: usize) -> Vec<String> {
    (0..n).map(|i| i.to_string()).collect()
}

fn shard_of(key: &str) -> ShardId {
    key_to_shard(key.as_bytes(), SHARDS)
}

/// Puts a random value of `len` letters at every key through the checker client.
fn put_all(lab: &mut ShardLab, keys: &[String], len: usize) -> Vec<String> {
    let ck = lab.ck;
    keys.iter()
        .map(|k| {
            let v = rand_string(&mut lab.rng, len);
            lab.put(ck, k, &v);
            v
        })
        .collect()
}

fn check_all(lab: &mut ShardLab, keys: &[String], values: &[String]) {
    for (k, v) in keys.iter().zip(values) {
        lab.check(k, v);
    }
}

/// Checks and appends to every key (the lab's loop body in JoinLeave, MissChange, ...).
fn check_and_append(lab: &mut ShardLab, keys: &[String], values: &mut [String], len: usize) {
    let ck = lab.ck;
    for (k, v) in keys.iter().zip(values.iter_mut()) {
        lab.check(k, v);
        let x = rand_string(&mut lab.rng, len);
        lab.append(ck, k, &x);
        v.push_str(&x);
    }
}

/// Rejection's invariant: every live replica serves only shards its configuration gives its
/// group, and holds data only for shards it serves, pulls into or must hand over.
fn check_serving(lab: &ShardLab) {
    for &g in &GROUPS {
        for node in lab.c.config().members(g) {
            let Some(store) = lab.c.shard_store(node, g) else {
                continue;
            };
            let config = store.config();
            for shard in 0..SHARDS as ShardId {
                let state = store.shard_state(shard);
                let owner = config.group_of(shard);
                let fine = match state {
                    ShardState::Serving | ShardState::Pulling { .. } => owner == g,
                    ShardState::BePulled { to } => owner == to && owner != g,
                    ShardState::Absent => owner != g && store.shard(shard).data_bytes() == 0,
                };
                if !fine {
                    lab.fail(&format!(
                        "n{node} of group {g} has shard {shard} {state:?} in config {} (owner {owner})",
                        config.num
                    ));
                }
            }
        }
    }
}

/// What every test ends with: the serving invariant and a linearizable history.
fn finish(lab: &ShardLab) {
    check_serving(lab);
    lab.check_linearizable();
}

/// StaticShards: with one group down, exactly the other group's shards are served; once it is
/// back, everything is.
#[test]
fn static_shards() {
    run_seeds("static_shards", SEEDS, |seed| {
        let mut lab = lab(seed, false, None);
        lab.join(&[G0]);
        lab.join(&[G1]);
        let ka = keys(10);
        let va = put_all(&mut lab, &ka, 20);
        check_all(&mut lab, &ka, &va);
        let config = lab.latest();
        lab.c.crash_group(G1);
        let readers: Vec<usize> = ka.iter().map(|_| lab.c.shard_client()).collect();
        for (k, &r) in ka.iter().zip(&readers) {
            lab.c.shard_start(
                r,
                shardcore::kv::Op::Get {
                    key: shardcore::sim::shardkv_lab::b(k),
                },
            );
        }
        lab.c.run_for(2_000);
        for (k, &r) in ka.iter().zip(&readers) {
            let served = config.group_of(shard_of(k)) == G0;
            if lab.c.shard_idle(r) != served {
                lab.fail(&format!(
                    "key {k} (group {}) idle={} with group {G1} down",
                    config.group_of(shard_of(k)),
                    lab.c.shard_idle(r)
                ));
            }
        }
        if !ka.iter().any(|k| config.group_of(shard_of(k)) == G1) {
            lab.fail("no key on the dead group: the test checks nothing");
        }
        lab.c.restart_group(G1);
        check_all(&mut lab, &ka, &va);
        let readers_done = lab.c.run_until(
            |c| readers.iter().all(|&r| c.shard_idle(r)),
            shardcore::sim::shardkv_lab::OP_TIMEOUT_MS,
        );
        assert!(
            readers_done,
            "SEED={seed}: readers finish once the group is back"
        );
        finish(&lab);
    });
}

/// Rejection: a group never serves a shard its configuration does not give it. A client whose
/// cached configuration is stale sends to the old owner, is refused, refreshes and reads the
/// new owner's value (a stale read would also break linearizability); every replica's shard
/// states match its configuration throughout.
#[test]
fn rejection() {
    run_seeds("rejection", SEEDS, |seed| {
        let mut lab = lab(seed, false, None);
        lab.join(&[G0]);
        let ka = keys(10);
        let mut va = put_all(&mut lab, &ka, 5);
        // A second client caches the one-group configuration.
        let stale = lab.c.shard_client();
        for (k, v) in ka.iter().zip(&va) {
            let got = lab.get(stale, k);
            if got.as_deref() != Some(v.as_bytes()) {
                lab.fail(&format!("get({k}) = {got:?}, want {v}"));
            }
        }
        lab.join(&[G1, G2]);
        lab.leave(&[G0]);
        let moved = lab.latest();
        // The checker client moves every key on; the stale client must not read old values.
        check_and_append(&mut lab, &ka, &mut va, 5);
        check_serving(&lab);
        for (k, v) in ka.iter().zip(&va) {
            let got = lab.get(stale, k);
            if got.as_deref() != Some(v.as_bytes()) {
                lab.fail(&format!(
                    "stale client read {got:?} at {k} (owner now {}), want {v}",
                    moved.group_of(shard_of(k))
                ));
            }
            check_serving(&lab);
        }
        // Once the new owners have installed everything, the group that left deletes it all.
        lab.c.run_for(2_000);
        for &g in &GROUPS {
            for node in lab.c.config().members(g) {
                if let Some(store) = lab.c.shard_store(node, g) {
                    if g == G0 && store.data_bytes() != 0 {
                        lab.fail(&format!("n{node} of the group that left still holds data"));
                    }
                }
            }
        }
        finish(&lab);
    });
}

/// JoinLeave: keys stay readable and appendable while groups join and leave, and the first
/// group can be shut down once it has left.
#[test]
fn join_leave() {
    run_seeds("join_leave", SEEDS, |seed| {
        let mut lab = lab(seed, false, None);
        lab.join(&[G0]);
        let ka = keys(10);
        let mut va = put_all(&mut lab, &ka, 5);
        check_all(&mut lab, &ka, &va);
        lab.join(&[G1]);
        check_and_append(&mut lab, &ka, &mut va, 5);
        lab.leave(&[G0]);
        check_and_append(&mut lab, &ka, &mut va, 5);
        // Allow time for shards to transfer.
        lab.c.run_for(1_000);
        lab.c.crash_group(G0);
        check_all(&mut lab, &ka, &va);
        finish(&lab);
    });
}

/// Snapshot: joins and leaves with snapshots at 1000 bytes of Raft state, then every group
/// restarts from its durable state and still holds everything.
#[test]
fn snapshot() {
    run_seeds("snapshot", SEEDS, |seed| {
        let mut lab = lab(seed, false, Some(1_000));
        lab.join(&[G0]);
        let ka = keys(30);
        let mut va = put_all(&mut lab, &ka, 20);
        check_all(&mut lab, &ka, &va);
        lab.join(&[G1]);
        lab.join(&[G2]);
        lab.leave(&[G0]);
        check_and_append(&mut lab, &ka, &mut va, 20);
        lab.leave(&[G1]);
        lab.join(&[G0]);
        check_and_append(&mut lab, &ka, &mut va, 20);
        lab.c.run_for(1_000);
        check_all(&mut lab, &ka, &va);
        lab.c.run_for(1_000);
        let snapshots: usize = GROUPS
            .iter()
            .flat_map(|&g| lab.c.config().members(g).into_iter().map(move |n| (n, g)))
            .filter(|&(n, g)| lab.c.snapshot_bytes(n, g) > 0)
            .count();
        if snapshots == 0 {
            lab.fail("no shard group replica took a snapshot");
        }
        for &g in &GROUPS {
            lab.c.crash_group(g);
        }
        for &g in &GROUPS {
            lab.c.restart_group(g);
        }
        check_all(&mut lab, &ka, &va);
        finish(&lab);
    });
}

/// MissChange: one node of every group is down while configurations change; it catches up
/// (through the log or a snapshot) once restarted, and the service works throughout.
#[test]
fn miss_change() {
    run_seeds("miss_change", SEEDS, |seed| {
        let mut lab = lab(seed, false, Some(1_000));
        let first = |g: GroupId| lab_node(g, 0);
        let second = |g: GroupId| lab_node(g, 1);
        lab.join(&[G0]);
        let ka = keys(10);
        let mut va = put_all(&mut lab, &ka, 20);
        check_all(&mut lab, &ka, &va);
        lab.join(&[G1]);
        for &g in &GROUPS {
            lab.c.crash(first(g));
        }
        lab.join(&[G2]);
        lab.leave(&[G1]);
        lab.leave(&[G0]);
        check_and_append(&mut lab, &ka, &mut va, 20);
        lab.join(&[G1]);
        check_and_append(&mut lab, &ka, &mut va, 20);
        for &g in &GROUPS {
            lab.c.restart(first(g));
        }
        check_and_append(&mut lab, &ka, &mut va, 20);
        lab.c.run_for(2_000);
        for &g in &GROUPS {
            lab.c.crash(second(g));
        }
        lab.join(&[G0]);
        lab.leave(&[G2]);
        check_and_append(&mut lab, &ka, &mut va, 20);
        for &g in &GROUPS {
            lab.c.restart(second(g));
        }
        check_all(&mut lab, &ka, &va);
        // The restarted nodes caught up with their groups' configuration.
        lab.c.run_for(2_000);
        let latest = lab.latest().num;
        for &g in &GROUPS {
            for node in [first(g), second(g)] {
                let num = lab.c.shard_store(node, g).map(|s| s.config().num);
                if num != Some(latest) {
                    lab.fail(&format!(
                        "n{node} of group {g} is at config {num:?}, not {latest}"
                    ));
                }
            }
        }
        finish(&lab);
    });
}

/// Node `i` (0-based) of group `g` in the lab's setting.
fn lab_node(g: GroupId, i: u64) -> u64 {
    (g - 1) * NODES_PER_GROUP + 1 + i
}

/// Concurrent1: clients append to their keys while groups join and leave and whole groups are
/// shut down and restarted; snapshots at 100 bytes.
#[test]
fn concurrent1() {
    run_seeds("concurrent1", SEEDS, |seed| {
        let mut lab = lab(seed, false, Some(100));
        lab.join(&[G0]);
        let ka = keys(10);
        let va = put_all(&mut lab, &ka, 5);
        let mut w = AppendWorkload::new(&mut lab, &ka, &va, 5).pause(10);
        w.run(&mut lab, 150, false);
        lab.join(&[G1]);
        w.run(&mut lab, 500, false);
        lab.join(&[G2]);
        w.run(&mut lab, 500, false);
        lab.leave(&[G0]);
        lab.c.crash_group(G0);
        w.run(&mut lab, 100, false);
        lab.c.crash_group(G1);
        w.run(&mut lab, 100, false);
        lab.c.crash_group(G2);
        lab.leave(&[G2]);
        w.run(&mut lab, 100, false);
        for &g in &GROUPS {
            lab.c.restart_group(g);
        }
        w.run(&mut lab, 100, false);
        lab.join(&[G0]);
        lab.leave(&[G1]);
        w.run(&mut lab, 500, false);
        lab.join(&[G1]);
        w.run(&mut lab, 1_000, false);
        w.finish(&mut lab);
        w.check(&mut lab);
        finish(&lab);
    });
}

/// Concurrent2: the various sources a restarting group fetches shards from: groups leave and
/// rejoin in turn under concurrent appends, then two groups restart at once.
#[test]
fn concurrent2() {
    run_seeds("concurrent2", SEEDS, |seed| {
        let mut lab = lab(seed, false, None);
        lab.join(&[G1]);
        lab.join(&[G0]);
        lab.join(&[G2]);
        let ka = keys(10);
        let va = put_all(&mut lab, &ka, 1);
        let mut w = AppendWorkload::new(&mut lab, &ka, &va, 1).pause(50);
        w.run(&mut lab, 0, false);
        lab.leave(&[G0]);
        lab.leave(&[G2]);
        w.run(&mut lab, 3_000, false);
        lab.join(&[G0]);
        lab.join(&[G2]);
        lab.leave(&[G1]);
        w.run(&mut lab, 3_000, false);
        lab.join(&[G1]);
        lab.leave(&[G0]);
        lab.leave(&[G2]);
        w.run(&mut lab, 3_000, false);
        lab.c.crash_group(G1);
        lab.c.crash_group(G2);
        w.run(&mut lab, 1_000, false);
        lab.c.restart_group(G1);
        lab.c.restart_group(G2);
        w.run(&mut lab, 2_000, false);
        w.finish(&mut lab);
        w.check(&mut lab);
        finish(&lab);
    });
}

/// Concurrent3: configuration changes and restarts of every group, over and over, under
/// concurrent appends; snapshots at 300 bytes.
#[test]
fn concurrent3() {
    run_seeds("concurrent3", SEEDS, |seed| {
        let mut lab = lab(seed, false, Some(300));
        lab.join(&[G0]);
        let ka = keys(10);
        let va = put_all(&mut lab, &ka, 1);
        let mut w = AppendWorkload::new(&mut lab, &ka, &va, 1);
        let start_ms = lab.c.now_ms();
        while lab.c.now_ms() < start_ms + 6_000 {
            lab.join(&[G2]);
            lab.join(&[G1]);
            let pause = lab.rng.range(0, 900);
            w.run(&mut lab, pause, false);
            for &g in &GROUPS {
                lab.c.crash_group(g);
            }
            for &g in &GROUPS {
                lab.c.restart_group(g);
            }
            let pause = lab.rng.range(0, 900);
            w.run(&mut lab, pause, false);
            lab.leave(&[G1]);
            lab.leave(&[G2]);
            let pause = lab.rng.range(0, 900);
            w.run(&mut lab, pause, false);
        }
        w.run(&mut lab, 2_000, false);
        w.finish(&mut lab);
        w.check(&mut lab);
        finish(&lab);
    });
}

/// Unreliable1: the unreliable network, joins and leaves between rounds of checks and appends.
#[test]
fn unreliable1() {
    run_seeds("unreliable1", SEEDS, |seed| {
        let mut lab = lab(seed, true, Some(100));
        lab.join(&[G0]);
        let ka = keys(10);
        let mut va = put_all(&mut lab, &ka, 5);
        lab.join(&[G1]);
        lab.join(&[G2]);
        lab.leave(&[G0]);
        let ck = lab.ck;
        for ii in 0..ka.len() * 2 {
            let i = ii % ka.len();
            lab.check(&ka[i], &va[i]);
            let x = rand_string(&mut lab.rng, 5);
            lab.append(ck, &ka[i], &x);
            va[i].push_str(&x);
        }
        lab.join(&[G0]);
        lab.leave(&[G1]);
        for ii in 0..ka.len() * 2 {
            let i = ii % ka.len();
            lab.check(&ka[i], &va[i]);
        }
        finish(&lab);
    });
}

/// The join/leave schedule of the lab's Unreliable2 and Unreliable3 under a running workload.
fn unreliable_schedule(lab: &mut ShardLab, w: &mut AppendWorkload) {
    w.run(lab, 150, false);
    lab.join(&[G1]);
    w.run(lab, 500, false);
    lab.join(&[G2]);
    w.run(lab, 500, false);
    lab.leave(&[G0]);
    w.run(lab, 500, false);
    lab.leave(&[G1]);
    w.run(lab, 500, false);
    lab.join(&[G1]);
    lab.join(&[G0]);
    w.run(lab, 2_000, false);
    lab.c.set_unreliable(false);
    w.finish(lab);
}

/// Unreliable2: concurrent appends on the unreliable network while groups join and leave.
#[test]
fn unreliable2() {
    run_seeds("unreliable2", SEEDS, |seed| {
        let mut lab = lab(seed, true, Some(100));
        lab.join(&[G0]);
        let ka = keys(10);
        let va = put_all(&mut lab, &ka, 5);
        let mut w = AppendWorkload::new(&mut lab, &ka, &va, 5);
        unreliable_schedule(&mut lab, &mut w);
        w.check(&mut lab);
        finish(&lab);
    });
}

/// Unreliable3: random gets, puts and appends on random keys on the unreliable network while
/// groups join and leave; only linearizability judges the values.
#[test]
fn unreliable3() {
    run_seeds("unreliable3", SEEDS, |seed| {
        let mut lab = lab(seed, true, Some(100));
        lab.join(&[G0]);
        let ka = keys(10);
        put_all(&mut lab, &ka, 5);
        let mut w = AppendWorkload::new(&mut lab, &ka, &[], 5).mixed();
        unreliable_schedule(&mut lab, &mut w);
        let ops = lab.c.shard_history().len();
        if ops < 100 {
            lab.fail(&format!("only {ops} operations: the history checks little"));
        }
        finish(&lab);
    });
}

/// Challenge1Delete: shards that moved are deleted. With a snapshot after every entry, after
/// joins and leaves that move 30 values of 1000 bytes around twice, the shard groups' total
/// persisted state (Raft state and snapshots of all nine nodes) stays within the lab's bound:
/// 27 keys stored once, 3 also in sessions, everything on 3 replicas, plus slop.
#[test]
fn challenge1_delete() {
    run_seeds("challenge1_delete", SEEDS, |seed| {
        let mut lab = lab(seed, false, Some(1));
        lab.join(&[G0]);
        let ka = keys(30);
        let va = put_all(&mut lab, &ka, 1_000);
        check_all(&mut lab, &ka[..3], &va[..3]);
        for _ in 0..2 {
            lab.join(&[G1]);
            lab.leave(&[G0]);
            lab.join(&[G2]);
            lab.c.run_for(3_000);
            check_all(&mut lab, &ka[..3], &va[..3]);
            lab.leave(&[G1]);
            lab.join(&[G0]);
            lab.leave(&[G2]);
            lab.c.run_for(3_000);
            check_all(&mut lab, &ka[..3], &va[..3]);
        }
        lab.join(&[G1]);
        lab.join(&[G2]);
        for _ in 0..3 {
            lab.c.run_for(1_000);
            check_all(&mut lab, &ka[..3], &va[..3]);
        }
        let n = ka.len();
        let expected = 3 * (((n - 3) * 1000) + 2 * 3 * 1000 + 6000);
        let total = lab.total_persisted_bytes();
        println!("total persisted {total} B (bound {expected} B)");
        if total > expected {
            lab.fail(&format!(
                "snapshots + persisted Raft state are too big: {total} > {expected}"
            ));
        }
        check_all(&mut lab, &ka, &va);
        finish(&lab);
    });
}

/// Challenge2Unaffected: shards that do not move keep being served while a group is dead and
/// its shards cannot be pulled.
#[test]
fn challenge2_unaffected() {
    run_seeds("challenge2_unaffected", SEEDS, |seed| {
        let mut lab = lab(seed, true, Some(100));
        lab.join(&[G0]);
        let ka = keys(10);
        let ck = lab.ck;
        let mut va: Vec<String> = ka.iter().map(|_| "100".to_string()).collect();
        for k in &ka {
            lab.put(ck, k, "100");
        }
        lab.join(&[G1]);
        let config = lab.latest();
        let owned = |k: &str| config.group_of(shard_of(k)) == G1;
        lab.c.run_for(1_000);
        for (k, v) in ka.iter().zip(va.iter_mut()) {
            if owned(k) {
                *v = "101".to_string();
                lab.put(ck, k, v);
            }
        }
        lab.c.crash_group(G0);
        lab.leave(&[G0]);
        lab.c.run_for(1_000);
        let mut checked = 0;
        for (k, v) in ka.iter().zip(&va) {
            if owned(k) {
                lab.check(k, v);
                let new = format!("{v}-1");
                lab.put(ck, k, &new);
                lab.check(k, &new);
                checked += 1;
            }
        }
        if checked == 0 {
            lab.fail("no key on the surviving group: the test checks nothing");
        }
        finish(&lab);
    });
}

/// Challenge2Partial: shards that already arrived are served before the rest of the migration
/// finishes: with one old owner dead and another alive, the survivor serves the shards it
/// could pull while the others stay pulling.
#[test]
fn challenge2_partial() {
    run_seeds("challenge2_partial", SEEDS, |seed| {
        let mut lab = lab(seed, true, Some(100));
        lab.join(&[G0, G1, G2]);
        lab.c.run_for(1_000);
        let ka = keys(10);
        let ck = lab.ck;
        for k in &ka {
            lab.put(ck, k, "100");
        }
        let config = lab.latest();
        let owned = |k: &str| config.group_of(shard_of(k)) == G2;
        lab.c.crash_group(G0);
        lab.leave(&[G0, G2]);
        lab.c.run_for(1_000);
        let mut checked = 0;
        for k in &ka {
            if owned(k) {
                lab.check(k, "100");
                lab.put(ck, k, "100-2");
                lab.check(k, "100-2");
                checked += 1;
            }
        }
        if checked == 0 {
            lab.fail("no key moved from the live group: the test checks nothing");
        }
        // The migration is indeed partial: the dead group's shards are still being pulled.
        let pulling = lab.c.config().members(G1).into_iter().any(|n| {
            lab.c.shard_store(n, G1).is_some_and(|s| {
                (0..SHARDS as ShardId).any(
                    |sh| matches!(s.shard_state(sh), ShardState::Pulling { from } if from == G0),
                )
            })
        });
        if !pulling {
            lab.fail("the dead group's shards are not pulling: the migration was not partial");
        }
        finish(&lab);
    });
}

/// A transfer in progress: a shard the leader of `group` pulls from `from` and has installed
/// some parts of, but not all.
struct MidTransfer {
    group: GroupId,
    leader: u64,
    shard: ShardId,
    from: GroupId,
    config: u64,
}

fn mid_transfer(lab: &ShardLab) -> Option<MidTransfer> {
    for &group in &GROUPS {
        let Some(leader) = lab.c.leader(group) else {
            continue;
        };
        let Some(store) = lab.c.shard_store(leader, group) else {
            continue;
        };
        for shard in 0..SHARDS as ShardId {
            if let ShardState::Pulling { from } = store.shard_state(shard) {
                if store.shard(shard).progress().is_some() {
                    return Some(MidTransfer {
                        group,
                        leader,
                        shard,
                        from,
                        config: store.config().num,
                    });
                }
            }
        }
    }
    None
}

/// Runs the workload until some shard is part-way through its transfer (at most `limit_ms`).
fn run_until_mid_transfer(
    lab: &mut ShardLab,
    w: &mut AppendWorkload,
    limit_ms: u64,
) -> Option<MidTransfer> {
    for _ in 0..limit_ms {
        if let Some(found) = mid_transfer(lab) {
            return Some(found);
        }
        w.run(lab, 1, false);
    }
    None
}

/// ChallengeLargeShardParts (not in the lab): shards many times larger than a part (60 keys
/// of 300 bytes over 10 shards: about six pairs a shard, each pair a part of its own, so a
/// move takes about seven parts), moved by joins and leaves while clients append, with a fault
/// aimed at the middle of a transfer after every change: as soon as a group's leader has
/// installed some of a shard's parts but not all, the seed picks one of: crash that leader (a
/// new leader goes on from the applied progress), crash the whole gaining group (every replica
/// restarts from its snapshot and log; snapshots at 1000 bytes of Raft state fall mid-transfer,
/// so restored progress is exercised), or crash the old owner's leader (another replica answers
/// the next parts). Then: every appended value applied exactly once, every other value intact,
/// the old owners hold nothing of what moved, and the history is linearizable.
#[test]
fn challenge_large_shard_parts() {
    run_seeds("challenge_large_shard_parts", SEEDS, |seed| {
        let mut lab = lab(seed, false, Some(1_000));
        lab.join(&[G0]);
        let ka = keys(60);
        let va = put_all(&mut lab, &ka, 300);
        let mut w = AppendWorkload::new(&mut lab, &ka[..10], &va[..10], 5).pause(20);
        let (mut faults, mut restored_mid_transfer) = (0, 0);
        let changes: [(bool, GroupId); 6] = [
            (true, G1),
            (true, G2),
            (false, G0),
            (true, G0),
            (false, G1),
            (false, G2),
        ];
        for (join, group) in changes {
            if join {
                lab.join(&[group]);
            } else {
                lab.leave(&[group]);
            }
            let Some(mid) = run_until_mid_transfer(&mut lab, &mut w, 3_000) else {
                continue;
            };
            faults += 1;
            let victims = match lab.rng.range(0, 3) {
                0 => vec![mid.leader],
                1 => lab.c.config().members(mid.group),
                _ => lab.c.leader(mid.from).into_iter().collect(),
            };
            for &node in &victims {
                lab.c.crash(node);
            }
            let down_ms = lab.rng.range(50, 500);
            w.run(&mut lab, down_ms, false);
            for &node in &victims {
                lab.c.restart(node);
                // Restored from a snapshot taken part-way through a pull?
                let store = lab.c.shard_store(node, mid.group);
                if store.is_some_and(|s| s.shard(mid.shard).progress().is_some()) {
                    restored_mid_transfer += 1;
                }
            }
            // The interrupted transfer completes: the group's leader serves the shard.
            let done = lab.c.run_until(
                |c| {
                    let leader = c.leader(mid.group);
                    leader
                        .and_then(|n| c.shard_store(n, mid.group))
                        .is_some_and(|s| {
                            s.config().num > mid.config
                                || s.shard_state(mid.shard) == ShardState::Serving
                        })
                },
                shardcore::sim::shardkv_lab::OP_TIMEOUT_MS,
            );
            if !done {
                lab.fail(&format!(
                    "group {}'s pull of shard {} never finished after the fault",
                    mid.group, mid.shard
                ));
            }
            w.run(&mut lab, 300, false);
        }
        println!(
            "{faults} faults in the middle of a transfer; {restored_mid_transfer} replicas \
             restarted from a snapshot taken part-way through a pull"
        );
        if faults == 0 {
            lab.fail("no fault landed in the middle of a transfer: the test checks nothing");
        }
        w.run(&mut lab, 1_000, false);
        w.finish(&mut lab);
        w.check(&mut lab);
        check_all(&mut lab, &ka[10..], &va[10..]);
        // Let the old owners learn that their shards were installed, and delete them.
        lab.c.run_for(2_000);
        finish(&lab);
    });
}

/// One seed, one run: the same scenario from the same seed makes the same history, event for
/// event (what makes a failing seed replay), and a different seed a different one.
#[test]
fn same_seed_same_run() {
    let run = |seed: u64| {
        let mut lab = lab(seed, true, Some(100));
        lab.join(&[G0]);
        let ka = keys(10);
        let va = put_all(&mut lab, &ka, 5);
        let mut w = AppendWorkload::new(&mut lab, &ka, &va, 5);
        unreliable_schedule(&mut lab, &mut w);
        (lab.c.shard_history().to_vec(), lab.c.stats().events)
    };
    run_seeds("same_seed_same_run", 3, |seed| {
        let first = run(seed);
        assert_eq!(first, run(seed), "SEED={seed}: two runs differ");
        assert_ne!(
            first,
            run(seed + 1000),
            "SEED={seed}: the seed changes nothing"
        );
    });
}
