//! What shard groups ask other groups, and the answers, as plain values: the replica emits
//! [`Outbound`] inquiries, the host carries each to *some* replica of the target (over the
//! network in the simulator; to the local replica of that group in the real node), that replica
//! answers with a pure function of its applied state, and the host hands the [`Answer`] back to
//! the asking replica ([`super::ShardKvServer::on_answer`]).
//!
//! No Raft round is needed to answer: every fact asked about is immutable once it is true, and
//! an applied fact is a committed one. Configuration `n` never changes once made; a shard frozen
//! at configuration `n` by its old owner never changes until the new owner has installed it
//! (the old owner cannot move past `n` before), so the part after a given key is the same from
//! every replica at every ask; "installed in `n`" stays true. A replica that has not applied
//! far enough answers "not yet", and the asker asks again at its next poll.

use bytes::Bytes;

use super::command::Last;
use crate::raft::GroupId;
use crate::shardctl::{Config, CtlStore, ShardId};

/// Who an inquiry is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    /// Any replica of the shard controller's group.
    Controller,
    /// Any replica of this shard group.
    Group(GroupId),
}

/// A question one group's leader asks another group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inquiry {
    /// To the controller: configuration `num`. Answered by [`answer_config_inquiry`].
    Config {
        /// The configuration wanted (the asker's current one plus one).
        num: u64,
    },
    /// To the owner of `shard` in configuration `config - 1`: the part of the shard, as frozen
    /// when that group applied configuration `config`, that follows key `after`.
    PullShard {
        /// The shard.
        shard: ShardId,
        /// The configuration in which the asker gained it.
        config: u64,
        /// The last key the asker has installed (`None`: it wants the first part).
        after: Option<Bytes>,
        /// About how many bytes the part's payload may take (the asker's entry limit sets it;
        /// the answerer bounds it by [`super::command::MAX_SHARD_PART_BYTES`]). A single key
        /// and value larger than this still come, alone.
        max_part_bytes: usize,
    },
    /// To the owner of `shard` in configuration `config`: has it installed the shard it gained
    /// in `config`? Asked by the old owner, whose leader then deletes its frozen copy.
    Installed {
        /// The shard.
        shard: ShardId,
        /// The configuration in which the asked group gained it.
        config: u64,
    },
}

/// An inquiry with where it goes, as a replica emits it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outbound {
    /// The asking group.
    pub from: GroupId,
    /// Who must answer.
    pub to: Target,
    /// The question.
    pub inquiry: Inquiry,
}

/// What the old owner says about a frozen shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PullAnswer {
    /// This replica has not applied configuration `config` yet: ask again later.
    NotYet,
    /// The part of the frozen shard after `after` ([`super::shard::Shard::encode_part`]).
    Part {
        /// The key the part continues after, as asked.
        after: Option<Bytes>,
        /// Whether it is the shard's last part (its payload ends with the sessions).
        last: Last,
        /// The part's bytes.
        payload: Bytes,
    },
    /// Deleted already, or never held for that configuration: only a stale asker gets this.
    Gone,
}

/// An answer to an [`Inquiry`], for the asking group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Configuration `num`, or `None` when the answering controller replica has not applied
    /// it (it may not exist yet).
    Config {
        /// The number asked.
        num: u64,
        /// The configuration.
        config: Option<Config>,
    },
    /// The old owner's answer about a shard.
    Shard {
        /// The shard.
        shard: ShardId,
        /// The configuration asked about.
        config: u64,
        /// The answer.
        answer: PullAnswer,
    },
    /// The new owner's answer about an install.
    Installed {
        /// The shard.
        shard: ShardId,
        /// The configuration asked about.
        config: u64,
        /// True once the shard is installed (or the group has moved past `config`).
        installed: bool,
    },
}

/// A controller replica's answer to "configuration `num`", from its applied history (a pure
/// function: no log entry, no ReadIndex; configurations never change once made). Other
/// inquiries are not the controller's: `None`.
pub fn answer_config_inquiry(store: &CtlStore, inquiry: &Inquiry) -> Option<Answer> {
    let Inquiry::Config { num } = *inquiry else {
        return None;
    };
    let config = (store.latest().num >= num).then(|| store.query(num).clone());
    Some(Answer::Config { num, config })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::kv::SessionLimits;
    use crate::shardctl::{CtlSettings, Replica};

    /// A controller replica answers with the configuration it has, "not yet" for one it does
    /// not have, and leaves shard inquiries alone.
    #[test]
    fn controller_answers_configs_it_has() {
        let mut store = CtlStore::new(SessionLimits::default(), CtlSettings { shards: 4 });
        let entry = |client, seq, op| {
            let command = crate::shardctl::command::CtlCommand {
                client,
                seq,
                stamp_ms: 0,
                op,
            };
            command.encode()
        };
        // The session opened at index 1 has id 1.
        let _ = store.apply(1, &entry(0, 0, crate::shardctl::CtlOp::Register));
        let join = crate::shardctl::CtlOp::Join {
            groups: BTreeMap::from([(7, vec![Replica::on(1)])]),
        };
        let _ = store.apply(2, &entry(1, 1, join));
        let one = answer_config_inquiry(&store, &Inquiry::Config { num: 1 });
        match one {
            Some(Answer::Config {
                num: 1,
                config: Some(c),
            }) => assert_eq!(c.shards, vec![7; 4]),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            answer_config_inquiry(&store, &Inquiry::Config { num: 2 }),
            Some(Answer::Config {
                num: 2,
                config: None
            })
        );
        let pull = Inquiry::PullShard {
            shard: 0,
            config: 1,
            after: None,
            max_part_bytes: 1 << 20,
        };
        assert_eq!(answer_config_inquiry(&store, &pull), None);
    }
}
