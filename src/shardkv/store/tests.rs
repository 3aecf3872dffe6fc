//! Unit tests of the shard group state machine: configurations in order, stale migration
//! commands ignored, a shard's move with its sessions, deletion, snapshots.

use std::collections::BTreeMap;

use super::*;
use crate::shardctl::Replica;
use crate::shardkv::command::Last;

const SHARDS: usize = 4;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// A group's store with its own log index.
struct Group {
    store: ShardStore,
    index: Index,
}

impl Group {
    fn new(group: GroupId) -> Group {
        let settings = ShardKvSettings {
            group,
            shards: SHARDS,
        };
        Group {
            store: ShardStore::new(SessionLimits::default(), settings),
            index: 0,
        }
    }

    fn apply(&mut self, command: ShardCommand) -> Option<ShardApplied> {
        self.index += 1;
        self.store.apply(self.index, &command.encode())
    }

    fn write(&mut self, client: ClientId, seq: u64, op: Op) -> Outcome {
        let command = Command {
            client,
            seq,
            stamp_ms: 1,
            op,
        };
        self.apply(ShardCommand::Client(command))
            .expect("a client write has a result")
            .result
    }

    fn config(&mut self, config: Config) {
        assert_eq!(self.apply(ShardCommand::Config(config)), None);
    }
}

/// Configuration `num` giving shard `s` to `owners[s]`; groups 1 and 2 exist.
fn config(num: u64, owners: [GroupId; SHARDS]) -> Config {
    Config {
        num,
        shards: owners.to_vec(),
        groups: BTreeMap::from([(1, vec![Replica::on(1)]), (2, vec![Replica::on(2)])]),
    }
}

/// A key of shard `shard`.
fn key_of(shard: ShardId) -> Bytes {
    (0..1000)
        .map(|i| b(&format!("k{i}")))
        .find(|k| key_to_shard(k, SHARDS) == shard)
        .expect("some key of every shard")
}

fn append(shard: ShardId, value: &str) -> Op {
    Op::Append {
        key: key_of(shard),
        value: b(value),
    }
}

/// Configurations apply only in order: a future one is ignored, config 1's shards from group 0
/// start empty and served at once, and config 2 waits while a shard is still being pulled.
#[test]
fn configurations_apply_in_order() {
    let mut g = Group::new(2);
    g.config(config(2, [2, 2, 2, 2]));
    assert_eq!(
        g.store.config().num,
        0,
        "config 2 before config 1 is ignored"
    );
    g.config(config(1, [1, 1, 2, 2]));
    assert_eq!(g.store.config().num, 1);
    assert_eq!(g.store.shard_state(2), ShardState::Serving);
    assert_eq!(g.store.shard_state(0), ShardState::Absent);
    g.config(config(2, [2, 1, 2, 2]));
    assert_eq!(g.store.shard_state(0), ShardState::Pulling { from: 1 });
    assert!(!g.store.is_settled());
    g.config(config(3, [2, 2, 2, 2]));
    assert_eq!(g.store.config().num, 2, "config 3 waits for the pull");
    assert_eq!(g.store.ignored_commands(), 2);
}

/// Writes to a shard the group does not serve (not its own, or still pulling) are refused with
/// the group's config number and change nothing; reads likewise.
#[test]
fn unserved_shards_are_refused() {
    let mut g = Group::new(2);
    g.config(config(1, [1, 1, 2, 2]));
    assert_eq!(
        g.write(7, 1, append(0, "x")),
        Err(ShardKvError::WrongGroup { config: 1 })
    );
    assert_eq!(g.write(7, 1, append(2, "x")), Ok(Reply::Done));
    assert_eq!(
        g.store.get(&key_of(1)),
        Err(ShardKvError::WrongGroup { config: 1 })
    );
    assert_eq!(g.store.get(&key_of(2)), Ok(Some(b("x"))));
    g.config(config(2, [2, 1, 2, 2]));
    assert_eq!(
        g.write(7, 2, append(0, "y")),
        Err(ShardKvError::WrongGroup { config: 2 }),
        "a shard being pulled is not served"
    );
}

/// A pull of shard `shard` in configuration `config` with parts of `budget` bytes.
fn pull(shard: ShardId, config: u64, after: Option<Bytes>, budget: usize) -> Inquiry {
    Inquiry::PullShard {
        shard,
        config,
        after,
        max_part_bytes: budget,
    }
}

/// The old owner's part of `shard` after `after`, as the command that installs it.
fn part_command(
    old: &ShardStore,
    shard: ShardId,
    config: u64,
    after: Option<Bytes>,
    budget: usize,
) -> ShardCommand {
    match old.answer(&pull(shard, config, after, budget)) {
        Some(Answer::Shard {
            answer:
                PullAnswer::Part {
                    after,
                    last,
                    payload,
                },
            ..
        }) => ShardCommand::InstallPart {
            config,
            shard,
            after,
            last,
            payload,
        },
        other => panic!("the old owner hands over a part: {other:?}"),
    }
}

/// Pulls `shard` from `old` into `new` part by part, as the leader's driver would; returns the
/// number of parts.
fn pull_all(old: &ShardStore, new: &mut Group, shard: ShardId, budget: usize) -> usize {
    let config = new.store.config().num;
    for parts in 1..=100 {
        let after = new.store.shard(shard).progress().cloned();
        new.apply(part_command(old, shard, config, after, budget));
        if new.store.shard_state(shard) == ShardState::Serving {
            return parts;
        }
    }
    panic!("shard {shard} is still pulling after 100 parts");
}

/// Two groups in config 1 (group 1 owns everything), `writes` appends to shard 3 through
/// group 1, then config 2 giving shard 3 to group 2.
fn moving_shard_three(writes: &[(ClientId, u64, &str)]) -> (Group, Group) {
    let (mut a, mut b_group) = (Group::new(1), Group::new(2));
    let c1 = config(1, [1, 1, 1, 1]);
    a.config(c1.clone());
    b_group.config(c1);
    for (i, &(client, seq, value)) in writes.iter().enumerate() {
        let op = Op::Put {
            key: b(&format!("{}-{i}", String::from_utf8_lossy(&key_of(3)))),
            value: b(value),
        };
        let key = match &op {
            Op::Put { key, .. } => key.clone(),
            _ => unreachable!(),
        };
        // Only keys of shard 3 go in; others are skipped.
        if key_to_shard(&key, SHARDS) == 3 {
            assert_eq!(a.write(client, seq, op), Ok(Reply::Done));
        }
    }
    let c2 = config(2, [1, 1, 1, 2]);
    a.config(c2.clone());
    b_group.config(c2);
    (a, b_group)
}

/// A shard moves part by part with its sessions: a write applied at the old owner, retried at
/// the new owner after the move, is answered from the moved session and not applied again.
/// The old owner answers the pull only once it has applied the configuration, deletes its
/// frozen copy once the new owner says it installed it, and ignores stale parts and deletes.
#[test]
fn a_shard_moves_with_its_sessions_and_is_deleted() {
    let (mut a, mut b_group) = (Group::new(1), Group::new(2));
    let c1 = config(1, [1, 1, 1, 1]);
    a.config(c1.clone());
    b_group.config(c1);
    assert_eq!(a.write(9, 1, append(3, "once")), Ok(Reply::Done));
    for (i, extra) in ["a", "b", "c"].into_iter().enumerate() {
        let key = (0..1000)
            .map(|j| b(&format!("x{j}")))
            .filter(|k| key_to_shard(k, SHARDS) == 3)
            .nth(i)
            .expect("keys of shard 3");
        let op = Op::Put {
            key,
            value: b(extra),
        };
        assert_eq!(a.write(10, i as u64 + 1, op), Ok(Reply::Done));
    }
    assert_eq!(
        a.store.answer(&pull(3, 2, None, 16)),
        Some(Answer::Shard {
            shard: 3,
            config: 2,
            answer: PullAnswer::NotYet
        })
    );
    let c2 = config(2, [1, 1, 1, 2]);
    a.config(c2.clone());
    b_group.config(c2);
    assert_eq!(a.store.shard_state(3), ShardState::BePulled { to: 2 });
    assert_eq!(
        a.write(9, 2, append(3, "late")),
        Err(ShardKvError::WrongGroup { config: 2 }),
        "a frozen shard takes no writes"
    );
    let installed = Inquiry::Installed {
        shard: 3,
        config: 2,
    };
    let not_yet = Some(Answer::Installed {
        shard: 3,
        config: 2,
        installed: false,
    });
    assert_eq!(b_group.store.answer(&installed), not_yet);
    // A part for another configuration is stale: ignored.
    let ignored = b_group.store.ignored_commands();
    let ShardCommand::InstallPart {
        shard,
        after,
        last,
        payload,
        ..
    } = part_command(&a.store, 3, 2, None, 16)
    else {
        unreachable!()
    };
    let stale = ShardCommand::InstallPart {
        config: 1,
        shard,
        after,
        last,
        payload,
    };
    assert_eq!(b_group.apply(stale), None);
    assert_eq!(b_group.store.ignored_commands(), ignored + 1);
    assert_eq!(
        b_group.store.shard_state(3),
        ShardState::Pulling { from: 1 }
    );
    let parts = pull_all(&a.store, &mut b_group, 3, 16);
    assert!(parts >= 5, "four pairs and the sessions in {parts} parts");
    assert_eq!(b_group.store.shard_state(3), ShardState::Serving);
    assert_eq!(b_group.store.get(&key_of(3)), Ok(Some(b("once"))));
    assert_eq!(b_group.store.shard(3).session_count(), 2);
    // The retry of seq 1 reaches the new owner: answered from the moved session.
    assert_eq!(b_group.write(9, 1, append(3, "once")), Ok(Reply::Done));
    assert_eq!(b_group.store.get(&key_of(3)), Ok(Some(b("once"))));
    assert_eq!(b_group.write(9, 2, append(3, "+two")), Ok(Reply::Done));
    assert_eq!(b_group.store.get(&key_of(3)), Ok(Some(b("once+two"))));
    // A duplicate first part does not roll the shard back.
    let first = part_command(&a.store, 3, 2, None, 16);
    assert_eq!(b_group.apply(first), None);
    assert_eq!(b_group.store.get(&key_of(3)), Ok(Some(b("once+two"))));
    assert_eq!(
        b_group.store.answer(&installed),
        Some(Answer::Installed {
            shard: 3,
            config: 2,
            installed: true
        })
    );
    // A delete for a shard the group serves, or for another configuration, is ignored.
    let wrong = ShardCommand::Delete {
        config: 2,
        shard: 0,
    };
    a.apply(wrong);
    assert_eq!(a.store.shard_state(0), ShardState::Serving);
    assert!(!a.store.is_settled());
    a.apply(ShardCommand::Delete {
        config: 2,
        shard: 3,
    });
    assert_eq!(a.store.shard_state(3), ShardState::Absent);
    assert_eq!(a.store.shard(3).data_bytes(), 0);
    assert_eq!(a.store.shard(3).session_count(), 0);
    assert!(a.store.is_settled());
    assert_eq!(
        a.store.answer(&pull(3, 2, None, 16)),
        Some(Answer::Shard {
            shard: 3,
            config: 2,
            answer: PullAnswer::Gone
        })
    );
}

/// Parts apply only in turn: a part out of order (the second before the first), a duplicate,
/// a part for a shard that is not pulling and a stale configuration's part are ignored and
/// change nothing; parts whose keys are of another shard or out of order, or that do not
/// decode, are skipped as undecodable and change nothing; the in-order parts then complete
/// the shard.
#[test]
fn parts_out_of_turn_change_nothing() {
    let values = ["v0", "v1", "v2", "v3", "v4", "v5", "v6", "v7"];
    let writes: Vec<(ClientId, u64, &str)> = values
        .iter()
        .enumerate()
        .map(|(i, v)| (3, i as u64 + 1, *v))
        .collect();
    let (a, mut b_group) = moving_shard_three(&writes);
    let keys = a.store.shard(3).len();
    assert!(keys >= 2, "shard 3 holds {keys} keys");
    let first = part_command(&a.store, 3, 2, None, 1);
    let ShardCommand::InstallPart { payload, .. } = &first else {
        unreachable!()
    };
    let first_key = {
        let part = crate::shardkv::shard::decode_part(payload, Last::No, SessionLimits::default())
            .expect("decodes");
        part.pairs[0].0.clone()
    };
    let second = part_command(&a.store, 3, 2, Some(first_key.clone()), 1);
    let before = b_group.store.clone();
    assert_eq!(b_group.apply(second.clone()), None);
    assert_eq!(
        b_group.store.ignored_commands(),
        before.ignored_commands() + 1
    );
    let wrong_shard = match first.clone() {
        ShardCommand::InstallPart {
            config,
            after,
            last,
            payload,
            ..
        } => ShardCommand::InstallPart {
            config,
            shard: 2,
            after,
            last,
            payload,
        },
        _ => unreachable!(),
    };
    b_group.apply(wrong_shard);
    assert_eq!(
        b_group.store.ignored_commands(),
        before.ignored_commands() + 2
    );
    // The first part's pairs claimed for shard 1 (pulling would be needed: it is not) and a
    // part whose key is of another shard: forge one in config 2 for shard 3.
    let foreign = {
        let mut forged = bytes::BytesMut::new();
        forged.put_u64_le(1);
        crate::kv::command::put_bytes(&mut forged, &key_of(0));
        crate::kv::command::put_bytes(&mut forged, b"x");
        ShardCommand::InstallPart {
            config: 2,
            shard: 3,
            after: None,
            last: Last::No,
            payload: forged.freeze(),
        }
    };
    b_group.apply(foreign);
    let garbage = ShardCommand::InstallPart {
        config: 2,
        shard: 3,
        after: None,
        last: Last::No,
        payload: b("not a part"),
    };
    b_group.apply(garbage);
    assert_eq!(b_group.store.undecodable_entries(), 2);
    let counters = |s: &ShardStore| (s.ignored_commands(), s.undecodable_entries());
    let mut unchanged = before.clone();
    unchanged.ignored += 2;
    unchanged.undecodable += 2;
    assert_eq!(b_group.store, unchanged, "nothing but the counters changed");
    assert_eq!(b_group.apply(first.clone()), None);
    assert_eq!(b_group.store.shard(3).progress(), Some(&first_key));
    let after_first = b_group.store.clone();
    assert_eq!(b_group.apply(first), None, "a duplicate");
    assert_eq!(
        counters(&b_group.store),
        (after_first.ignored_commands() + 1, 2)
    );
    b_group.apply(second);
    assert_ne!(b_group.store.shard(3).progress(), Some(&first_key));
    pull_all(&a.store, &mut b_group, 3, 1);
    let mut expected = a.store.shard(3).clone();
    expected.state = ShardState::Serving;
    assert_eq!(b_group.store.shard(3), &expected);
}

/// A replica restored from a snapshot taken mid-transfer holds the install progress and goes
/// on with the right part: the pull completes with every pair exactly once, as without the
/// snapshot. Every truncation of that snapshot is an error.
#[test]
fn a_snapshot_mid_transfer_keeps_the_progress() {
    let writes: Vec<(ClientId, u64, &str)> = (0..12u64).map(|i| (5, i + 1, "value")).collect();
    let (a, mut b_group) = moving_shard_three(&writes);
    for _ in 0..2 {
        let after = b_group.store.shard(3).progress().cloned();
        b_group.apply(part_command(&a.store, 3, 2, after, 1));
    }
    let progress = b_group.store.shard(3).progress().cloned();
    assert!(progress.is_some(), "two parts installed");
    let bytes = b_group.store.snapshot();
    let restored = ShardStore::restore(SessionLimits::default(), &bytes).expect("decodes");
    assert_eq!(restored, b_group.store);
    assert_eq!(restored.shard(3).progress(), progress.as_ref());
    let mut again = Group {
        store: restored,
        index: b_group.index,
    };
    pull_all(&a.store, &mut again, 3, 1);
    pull_all(&a.store, &mut b_group, 3, 1);
    assert_eq!(again.store, b_group.store);
    let mut expected = a.store.shard(3).clone();
    expected.state = ShardState::Serving;
    assert_eq!(again.store.shard(3), &expected);
    for len in 0..bytes.len() {
        assert!(ShardStore::restore(SessionLimits::default(), &bytes.slice(..len)).is_err());
    }
}

/// A whole-shard `Install` entry, as logs written before chunked transfers hold, still
/// installs a pulling shard when replayed (and only in turn).
#[test]
fn an_old_whole_shard_install_still_applies() {
    let (a, mut b_group) = moving_shard_three(&[(4, 1, "old"), (4, 2, "format")]);
    let payload = a.store.shard(3).encode_transfer();
    let stale = ShardCommand::Install {
        config: 1,
        shard: 3,
        payload: payload.clone(),
    };
    b_group.apply(stale);
    assert_eq!(
        b_group.store.shard_state(3),
        ShardState::Pulling { from: 1 }
    );
    b_group.apply(ShardCommand::Install {
        config: 2,
        shard: 3,
        payload,
    });
    let mut expected = a.store.shard(3).clone();
    expected.state = ShardState::Serving;
    assert_eq!(b_group.store.shard(3), &expected);
}

/// A snapshot in the format before chunked transfers (version 1: no step count, no install
/// progress) restores, its pulling shards starting from the first part.
#[test]
fn version_one_snapshots_restore() {
    let (_, b_group) = moving_shard_three(&[(4, 1, "x")]);
    let store = &b_group.store;
    let mut v1 = BytesMut::new();
    v1.put_u8(SNAPSHOT_V1);
    v1.put_u64_le(store.group);
    v1.put_u64_le(store.undecodable);
    v1.put_u64_le(store.ignored);
    put_config(&mut v1, &store.config);
    v1.put_u32_le(store.shards.len() as u32);
    for shard in &store.shards {
        match shard.state {
            ShardState::Absent => v1.put_u8(0),
            ShardState::Serving => v1.put_u8(1),
            ShardState::Pulling { from } => {
                v1.put_u8(2);
                v1.put_u64_le(from);
            }
            ShardState::BePulled { to } => {
                v1.put_u8(3);
                v1.put_u64_le(to);
            }
        }
        shard.put_transfer(&mut v1);
    }
    let restored =
        ShardStore::restore(SessionLimits::default(), &v1.freeze()).expect("a V1 snapshot");
    assert_eq!(restored.shard_state(3), ShardState::Pulling { from: 1 });
    assert_eq!(restored.shard(3).progress(), None);
    assert_eq!(restored.config(), store.config());
    assert_eq!(restored.migration_steps(), 0);
}

/// A snapshot holds the configuration, every shard's state, data and sessions: the restored
/// store equals the original and still de-duplicates.
#[test]
fn snapshots_round_trip() {
    let mut g = Group::new(1);
    g.config(config(1, [1, 1, 1, 1]));
    assert_eq!(g.write(4, 1, append(0, "a")), Ok(Reply::Done));
    assert_eq!(g.write(5, 1, append(1, "b")), Ok(Reply::Done));
    g.config(config(2, [1, 2, 1, 1]));
    let bytes = g.store.snapshot();
    let restored = ShardStore::restore(SessionLimits::default(), &bytes).expect("decodes");
    assert_eq!(restored, g.store);
    assert_eq!(restored.shard_state(1), ShardState::BePulled { to: 2 });
    let mut again = Group {
        store: restored,
        index: g.index,
    };
    assert_eq!(again.write(4, 1, append(0, "a")), Ok(Reply::Done));
    assert_eq!(again.store.get(&key_of(0)), Ok(Some(b("a"))));
    for len in 0..bytes.len() {
        assert!(ShardStore::restore(SessionLimits::default(), &bytes.slice(..len)).is_err());
    }
}

/// Each shard's session table is bounded: a full table admits no new client (nothing is
/// applied) but keeps serving the clients it holds.
#[test]
fn session_tables_are_bounded_per_shard() {
    let limits = SessionLimits {
        max_sessions: 2,
        session_ttl_ms: 60_000,
    };
    let settings = ShardKvSettings {
        group: 1,
        shards: SHARDS,
    };
    let mut g = Group {
        store: ShardStore::new(limits, settings),
        index: 0,
    };
    g.config(config(1, [1, 1, 1, 1]));
    assert_eq!(g.write(1, 1, append(0, "a")), Ok(Reply::Done));
    assert_eq!(g.write(2, 1, append(0, "b")), Ok(Reply::Done));
    assert_eq!(
        g.write(3, 1, append(0, "c")),
        Err(ShardKvError::TooManySessions)
    );
    assert_eq!(g.write(3, 1, append(1, "c")), Ok(Reply::Done), "per shard");
    assert_eq!(g.write(1, 2, append(0, "d")), Ok(Reply::Done));
    assert_eq!(g.store.get(&key_of(0)), Ok(Some(b("abd"))));
}
