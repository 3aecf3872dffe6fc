//! Rebalancing tests: a few worked examples, then properties over many random operation
//! sequences from a seeded generator (balance, minimal movement, determinism, every shard
//! assigned whenever a group exists, Move pinning until the next rebalance).

use std::collections::BTreeMap;

use super::*;
use crate::rng::Rng;

fn replicas(group: GroupId) -> Vec<Replica> {
    (0..3).map(|i| Replica::on(group * 10 + i)).collect()
}

fn joining(groups: &[GroupId]) -> BTreeMap<GroupId, Vec<Replica>> {
    groups.iter().map(|&g| (g, replicas(g))).collect()
}

/// Shards whose group differs between two configs.
fn moved(a: &Config, b: &Config) -> Vec<usize> {
    (0..a.shards.len())
        .filter(|&s| a.shards[s] != b.shards[s])
        .collect()
}

/// The fewest moves any balanced assignment of `next`'s groups allows from `prev`: every shard
/// that cannot stay where it is (its group left, or its group holds more than its best share).
fn fewest_moves(prev: &Config, next: &Config) -> usize {
    let n = next.groups.len();
    if n == 0 {
        return prev.shards.iter().filter(|&&g| g != NO_GROUP).count();
    }
    let s = next.shards.len();
    let mut held: Vec<usize> = next
        .groups
        .keys()
        .map(|g| prev.shards.iter().filter(|&x| x == g).count())
        .collect();
    held.sort_unstable_by(|a, b| b.cmp(a));
    let kept: usize = held
        .iter()
        .enumerate()
        .map(|(rank, &h)| h.min(s / n + usize::from(rank < s % n)))
        .sum();
    s - kept
}

/// Worked example with the lab's 10 shards: one group takes everything, a second takes half,
/// and leaving hands the leaver's shards back; servers are kept exactly as given.
#[test]
fn join_and_leave_by_hand() {
    let c0 = Config::initial(10);
    assert!(c0.is_balanced());
    let c1 = c0.join(&joining(&[1])).expect("valid");
    assert_eq!((c1.num, c1.shards.clone()), (1, vec![1; 10]));
    assert_eq!(c1.groups[&1], replicas(1));
    let c2 = c1.join(&joining(&[2])).expect("valid");
    assert_eq!(c2.shards, vec![1, 1, 1, 1, 1, 2, 2, 2, 2, 2]);
    let c3 = c2.leave(&[1]).expect("valid");
    assert_eq!(c3.shards, vec![2; 10]);
    assert_eq!(c3.groups.keys().copied().collect::<Vec<_>>(), vec![2]);
    let c4 = c3.leave(&[2]).expect("valid");
    assert_eq!((c4.num, c4.shards.clone()), (4, vec![NO_GROUP; 10]));
}

/// More groups than shards: every shard has a group, some groups none, still balanced.
#[test]
fn more_groups_than_shards() {
    let c = Config::initial(3)
        .join(&joining(&[1, 2, 3, 4, 5]))
        .expect("valid");
    assert!(c.is_balanced());
    assert_eq!(c.counts().values().filter(|&&n| n == 1).count(), 3);
    let c = c.leave(&[1, 2]).expect("valid");
    assert!(c.is_balanced());
    assert!(c.shards.iter().all(|g| c.groups.contains_key(g)));
}

/// Move pins a shard without rebalancing; the next join rebalances it away again.
#[test]
fn move_pins_until_next_rebalance() {
    let c = Config::initial(10).join(&joining(&[1, 2])).expect("valid");
    let mut m = c.clone();
    for shard in 0..10 {
        m = m.move_shard(shard, 1).expect("valid");
    }
    assert_eq!((m.num, m.shards.clone()), (c.num + 10, vec![1; 10]));
    assert!(!m.is_balanced(), "a move does not rebalance");
    let j = m.join(&joining(&[3])).expect("valid");
    assert!(j.is_balanced());
}

/// Refusals name what is wrong and change nothing.
#[test]
fn refusals() {
    let c = Config::initial(10).join(&joining(&[1])).expect("valid");
    assert_eq!(c.join(&joining(&[1])), Err(ConfigError::GroupExists(1)));
    assert_eq!(c.join(&joining(&[0])), Err(ConfigError::GroupZero));
    assert_eq!(c.join(&BTreeMap::new()), Err(ConfigError::NoGroups));
    let empty = BTreeMap::from([(5, vec![])]);
    assert_eq!(c.join(&empty), Err(ConfigError::BadReplicas(5)));
    let twice = BTreeMap::from([(5, vec![Replica::on(1), Replica::on(1)])]);
    assert_eq!(c.join(&twice), Err(ConfigError::BadReplicas(5)));
    let many = BTreeMap::from([(5, (0..17).map(Replica::on).collect())]);
    assert_eq!(c.join(&many), Err(ConfigError::TooManyReplicas(5)));
    assert_eq!(c.leave(&[2]), Err(ConfigError::UnknownGroup(2)));
    assert_eq!(c.leave(&[1, 1]), Err(ConfigError::DuplicateGroup(1)));
    assert_eq!(c.move_shard(10, 1), Err(ConfigError::ShardOutOfRange(10)));
    assert_eq!(c.move_shard(0, 2), Err(ConfigError::UnknownGroup(2)));
}

/// A random operation on `config`: mostly valid joins, leaves and moves, some refusals.
#[derive(Clone, Debug)]
enum RandomOp {
    Join(Vec<GroupId>),
    Leave(Vec<GroupId>),
    Move(ShardId, GroupId),
}

fn random_op(rng: &mut Rng, config: &Config) -> RandomOp {
    let present: Vec<GroupId> = config.groups.keys().copied().collect();
    match rng.range(0, 10) {
        0..=3 => {
            let count = rng.range(1, 4);
            let mut groups = Vec::new();
            for _ in 0..count {
                let g = rng.range(1, 41);
                if !groups.contains(&g) && (rng.chance(1, 20) || !present.contains(&g)) {
                    groups.push(g);
                }
            }
            RandomOp::Join(groups)
        }
        4..=7 if !present.is_empty() => {
            let count = rng.range(1, 3).min(present.len() as u64);
            let mut groups = Vec::new();
            for _ in 0..count {
                let g = if rng.chance(1, 20) {
                    rng.range(1, 41)
                } else {
                    present[rng.index(present.len())]
                };
                groups.push(g);
            }
            RandomOp::Leave(groups)
        }
        _ => {
            let shard = rng.range(0, config.shards.len() as u64 + 1) as ShardId;
            let group = if present.is_empty() || rng.chance(1, 10) {
                rng.range(1, 41)
            } else {
                present[rng.index(present.len())]
            };
            RandomOp::Move(shard, group)
        }
    }
}

fn apply(config: &Config, op: &RandomOp) -> Result<Config, ConfigError> {
    match op {
        RandomOp::Join(groups) => config.join(&joining(groups)),
        RandomOp::Leave(groups) => config.leave(groups),
        RandomOp::Move(shard, group) => config.move_shard(*shard, *group),
    }
}

/// Checks one step's properties; `rebalanced_before` says whether `prev` came from a join or
/// leave (or is config 0), i.e. no move has unbalanced it since.
fn check_step(prev: &Config, op: &RandomOp, next: &Config, rebalanced_before: bool) {
    assert_eq!(next.num, prev.num + 1, "{op:?}");
    assert_eq!(next.shards.len(), prev.shards.len());
    let assigned = next.shards.iter().all(|g| next.groups.contains_key(g));
    if next.groups.is_empty() {
        assert!(next.shards.iter().all(|&g| g == NO_GROUP), "{op:?}");
    } else {
        assert!(
            assigned,
            "every shard has a group whenever one exists: {op:?}"
        );
    }
    let moved = moved(prev, next);
    match op {
        RandomOp::Move(shard, group) => {
            assert_eq!(next.shards[*shard as usize], *group);
            assert!(moved.len() <= 1 && next.groups == prev.groups);
        }
        RandomOp::Join(groups) | RandomOp::Leave(groups) => {
            assert!(next.is_balanced(), "{op:?} left {:?}", next.counts());
            assert_eq!(moved.len(), fewest_moves(prev, next), "{op:?}: not minimal");
            if !rebalanced_before {
                return;
            }
            let n = next.groups.len().max(1);
            if groups.len() == 1 {
                let bound = next.shards.len() / n + 1;
                assert!(moved.len() <= bound, "{op:?} moved {}", moved.len());
            }
            for &s in &moved {
                let (from, to) = (prev.shards[s], next.shards[s]);
                let ok = match op {
                    RandomOp::Join(_) => groups.contains(&to) || from == NO_GROUP,
                    _ => groups.contains(&from),
                };
                assert!(ok, "{op:?}: shard {s} moved {from} -> {to} needlessly");
            }
        }
    }
}

/// Runs one random sequence of `steps` operations on `shards` shards; returns every config.
fn random_run(seed: u64, shards: usize, steps: usize) -> Vec<Config> {
    let mut rng = Rng::stream(seed, "shardctl rebalance");
    let mut configs = vec![Config::initial(shards)];
    let mut rebalanced = true;
    for _ in 0..steps {
        let prev = configs.last().expect("config 0").clone();
        let op = random_op(&mut rng, &prev);
        match apply(&prev, &op) {
            Err(_) => assert_eq!(apply(&prev, &op), apply(&prev, &op)),
            Ok(next) => {
                check_step(&prev, &op, &next, rebalanced);
                rebalanced = !matches!(op, RandomOp::Move(..));
                configs.push(next);
            }
        }
    }
    configs
}

/// Properties over 500 random sequences of 60 operations each, with shard counts from 1 to
/// 130 (fewer, as many and more shards than groups): balanced after every join and leave,
/// minimal moves, moves only to joiners / from leavers when balanced before, every shard
/// assigned while a group exists, and the same sequence always giving the same configs.
#[test]
fn random_sequences_keep_the_properties() {
    for seed in 1..=500u64 {
        let shards = match seed % 5 {
            0 => 1,
            1 => 10,
            2 => DEFAULT_SHARDS,
            3 => 7,
            _ => 130,
        };
        let configs = random_run(seed, shards, 60);
        assert_eq!(configs, random_run(seed, shards, 60), "SEED={seed}");
    }
}

/// The join map's insertion order does not matter: the outcome depends on contents only.
#[test]
fn join_is_independent_of_insertion_order() {
    let base = Config::initial(DEFAULT_SHARDS)
        .join(&joining(&[4, 9]))
        .expect("valid");
    let mut forward = BTreeMap::new();
    let mut backward = BTreeMap::new();
    for g in [3, 7, 12] {
        forward.insert(g, replicas(g));
    }
    for g in [12, 7, 3] {
        backward.insert(g, replicas(g));
    }
    assert_eq!(base.join(&forward), base.join(&backward));
}
