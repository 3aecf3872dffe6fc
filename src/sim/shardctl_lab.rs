//! The MIT 6.5840 lab's shard controller tester (shardctrler's `check`, `check_same_config`)
//! as a library for `tests/sim_shardctl.rs`: a cluster running the controller, operations that
//! must succeed, and the checks on configurations and on whole histories.
//!
//! The history check is what makes the controller's service linearizable and exactly-once: the
//! replicas agree on one history of configurations; every query returned the configuration of
//! that history with its number; a query sees every change that finished before it started and
//! none that started after it ended; later queries never see older configurations than earlier
//! ones did; and every configuration past 0 was made by exactly one join, leave or move that
//! returned it (or whose outcome the client could not know), never by a retry.

use std::collections::{BTreeMap, BTreeSet};

use super::{Cluster, ControllerConfig, CtlCompletedOp, SimConfig};
use crate::kv::ServerConfig;
use crate::raft::GroupId;
use crate::shardctl::{Config, CtlOp, CtlOutcome, CtlReply, CtlSettings, Replica, LATEST};

/// The group the controller runs on.
pub const CTL_GROUP: GroupId = 1;
/// The lab's shard count (NShards).
pub const LAB_SHARDS: usize = 10;
/// Bound on one controller operation, faults healed or not (virtual time).
pub const OP_TIMEOUT_MS: u64 = 30_000;

/// A cluster of `cfg.nodes` nodes running the controller on group [`CTL_GROUP`] with `shards`
/// shards (`cfg`'s other groups run KV when `cfg.kv` is set); controller replicas snapshot once
/// their durable Raft state passes `max_raft_state_bytes` (the lab's maxraftstate: 1000 bytes
/// makes snapshots frequent, so restarts go through them).
pub fn ctl_cluster(
    mut cfg: SimConfig,
    shards: usize,
    unreliable: bool,
    max_raft_state_bytes: Option<usize>,
) -> Cluster {
    cfg.groups = cfg.groups.max(CTL_GROUP as usize);
    cfg.unreliable = unreliable;
    cfg.controller = Some(ControllerConfig {
        group: CTL_GROUP,
        server: ServerConfig {
            max_raft_state_bytes,
            ..ServerConfig::default()
        },
        settings: CtlSettings { shards },
    });
    Cluster::new(cfg)
}

/// Replicas for group `group` of a test: `count` made-up nodes, named after the group (the
/// lab's `"x", "y", "z"` server names).
pub fn replicas(group: GroupId, count: u64) -> Vec<Replica> {
    (0..count)
        .map(|i| Replica {
            node: group * 100 + i,
            core: (i % 2 == 1).then_some(i as u32),
        })
        .collect()
}

/// A join of `groups`, each with three replicas.
pub fn join_op(groups: &[GroupId]) -> CtlOp {
    CtlOp::Join {
        groups: groups.iter().map(|&g| (g, replicas(g, 3))).collect(),
    }
}

/// Runs `op` on `client` to its end and returns the reply; any other end is an error.
pub fn must(c: &mut Cluster, client: usize, op: CtlOp) -> Result<CtlReply, String> {
    match c.ctl_do(client, op.clone(), OP_TIMEOUT_MS) {
        Some(CtlOutcome::Completed(Ok(reply))) => Ok(reply),
        other => Err(format!("{op:?} ended with {other:?} (SEED={})", c.seed())),
    }
}

/// Queries configuration `num` ([`LATEST`] for the latest).
pub fn query(c: &mut Cluster, client: usize, num: u64) -> Result<Config, String> {
    match must(c, client, CtlOp::Query { num })? {
        CtlReply::Config(config) => Ok(config),
        other => Err(format!("a query answered {other:?}")),
    }
}

/// The lab's `check(groups)`: the latest config has exactly `groups` (with the replicas
/// [`join_op`] gives), every shard is on one of them when any exists, and it is balanced.
pub fn check_groups(c: &mut Cluster, client: usize, groups: &[GroupId]) -> Result<Config, String> {
    let config = query(c, client, LATEST)?;
    let want: BTreeSet<GroupId> = groups.iter().copied().collect();
    let have: BTreeSet<GroupId> = config.groups.keys().copied().collect();
    if have != want {
        return Err(format!(
            "wanted groups {want:?}, config {} has {have:?}",
            config.num
        ));
    }
    for (&g, list) in &config.groups {
        if *list != replicas(g, 3) {
            return Err(format!("group {g}'s replicas changed: {list:?}"));
        }
    }
    check_assignment(&config)?;
    Ok(config)
}

/// Every shard on a group of the config when one exists (none otherwise), and max - min ≤ 1.
pub fn check_assignment(config: &Config) -> Result<(), String> {
    if !config.is_balanced() {
        let counts = config.counts();
        return Err(format!(
            "config {} unbalanced or with unassigned shards: {counts:?} {:?}",
            config.num, config.shards
        ));
    }
    Ok(())
}

/// The history every live replica agrees on: the longest replica's, after checking that every
/// other live replica's is a prefix of it.
pub fn agreed_configs(c: &Cluster) -> Result<Vec<Config>, String> {
    let stores: Vec<_> = c
        .config()
        .node_ids()
        .filter_map(|n| c.ctl_store(n))
        .collect();
    let longest = stores
        .iter()
        .map(|s| s.configs())
        .max_by_key(|h| h.len())
        .ok_or("no live controller replica")?;
    for store in &stores {
        let history = store.configs();
        if history != &longest[..history.len()] {
            return Err("two replicas hold different configuration histories".to_string());
        }
    }
    Ok(longest.to_vec())
}

/// Checks a run's controller history against the configurations the replicas agree on (module
/// docs): linearizable queries, exactly-once changes.
pub fn check_history(c: &Cluster) -> Result<(), String> {
    let configs = agreed_configs(c)?;
    let ops = c.ctl_history();
    let mut made_by: BTreeMap<u64, &CtlCompletedOp> = BTreeMap::new();
    let mut unknown = 0;
    let mut queries = Vec::new();
    for done in ops {
        match (&done.op, &done.outcome) {
            (_, CtlOutcome::Unknown) => unknown += 1,
            (CtlOp::Query { num }, CtlOutcome::Completed(Ok(CtlReply::Config(config)))) => {
                let canonical = configs.get(config.num as usize);
                if canonical != Some(config) {
                    return Err(format!(
                        "a query returned a config {} not in the history",
                        config.num
                    ));
                }
                if *num != LATEST && *num < configs.len() as u64 && config.num != *num {
                    return Err(format!("Query({num}) returned config {}", config.num));
                }
                if *num == LATEST {
                    queries.push((done, config.num));
                }
            }
            (_, CtlOutcome::Completed(Ok(CtlReply::Changed { num }))) => {
                if let Some(first) = made_by.insert(*num, done) {
                    return Err(format!(
                        "config {num} returned to two changes: {first:?}, {done:?}"
                    ));
                }
                if *num as usize >= configs.len() {
                    return Err(format!("a change returned config {num}, past the history"));
                }
            }
            _ => {}
        }
    }
    let unexplained = (configs.len() - 1).saturating_sub(made_by.len());
    if unexplained > unknown {
        return Err(format!(
            "{unexplained} configs made by no acknowledged change, only {unknown} unknown outcomes: \
             a retry applied twice"
        ));
    }
    check_real_time(&queries, &made_by)
}

/// Real-time order: a query that starts after a change returned sees it; a query that returns
/// before a change started does not; queries in real-time order never go back.
fn check_real_time(
    queries: &[(&CtlCompletedOp, u64)],
    changes: &BTreeMap<u64, &CtlCompletedOp>,
) -> Result<(), String> {
    for &(q, seen) in queries {
        for (&num, w) in changes {
            if w.return_us < q.call_us && seen < num {
                return Err(format!(
                    "a query at {} saw config {seen}, but {num} was made by {}",
                    q.call_us, w.return_us
                ));
            }
            if q.return_us < w.call_us && seen >= num {
                return Err(format!(
                    "a query returned config {seen} before the change making it started"
                ));
            }
        }
        for &(later, seen_later) in queries {
            if q.return_us < later.call_us && seen_later < seen {
                return Err(format!(
                    "a later query saw config {seen_later} after an earlier one saw {seen}"
                ));
            }
        }
    }
    Ok(())
}
