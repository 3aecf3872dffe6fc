//! Unit tests of the shard group state machine: configurations in order, stale migration
//! commands ignored, a shard's move with its sessions, deletion, snapshots.

use std::collections::BTreeMap;

use super::*;
use crate::shardctl::Replica;

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

/// A shard moves with its sessions: a write applied at the old owner, retried at the new
/// owner after the move, is answered from the moved session and not applied again. The old
/// owner answers the pull only once it has applied the configuration, deletes its frozen copy
/// once the new owner says it installed it, and ignores stale installs and deletes.
#[test]
fn a_shard_moves_with_its_sessions_and_is_deleted() {
    let (mut a, mut b_group) = (Group::new(1), Group::new(2));
    let c1 = config(1, [1, 1, 1, 1]);
    a.config(c1.clone());
    b_group.config(c1);
    assert_eq!(a.write(9, 1, append(3, "once")), Ok(Reply::Done));
    let pull = Inquiry::PullShard {
        shard: 3,
        config: 2,
    };
    assert_eq!(
        a.store.answer(&pull),
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
    let Some(Answer::Shard {
        answer: PullAnswer::Frozen(payload),
        ..
    }) = a.store.answer(&pull)
    else {
        panic!("the old owner hands over the frozen shard");
    };
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
    // An install for another configuration is stale: ignored.
    let stale = ShardCommand::Install {
        config: 1,
        shard: 3,
        payload: payload.clone(),
    };
    assert_eq!(b_group.apply(stale), None);
    assert_eq!(
        b_group.store.shard_state(3),
        ShardState::Pulling { from: 1 }
    );
    let install = ShardCommand::Install {
        config: 2,
        shard: 3,
        payload,
    };
    assert_eq!(b_group.apply(install.clone()), None);
    assert_eq!(b_group.store.shard_state(3), ShardState::Serving);
    assert_eq!(b_group.store.get(&key_of(3)), Ok(Some(b("once"))));
    // The retry of seq 1 reaches the new owner: answered from the moved session.
    assert_eq!(b_group.write(9, 1, append(3, "once")), Ok(Reply::Done));
    assert_eq!(b_group.store.get(&key_of(3)), Ok(Some(b("once"))));
    assert_eq!(b_group.write(9, 2, append(3, "+two")), Ok(Reply::Done));
    assert_eq!(b_group.store.get(&key_of(3)), Ok(Some(b("once+two"))));
    // A duplicate install does not roll the shard back.
    assert_eq!(b_group.apply(install), None);
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
        a.store.answer(&pull),
        Some(Answer::Shard {
            shard: 3,
            config: 2,
            answer: PullAnswer::Gone
        })
    );
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
