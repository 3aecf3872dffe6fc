//! One replica of a shard group: the generic [`ReplicaServer`] around [`ShardStore`] for client
//! requests (writes proposed and answered when applied, reads through ReadIndex and served only
//! for a shard the group serves), plus the migration driver.
//!
//! The driver runs on the leader only. Every [`ShardKvServerConfig::poll_ticks`] it emits
//! inquiries: the next configuration (when every shard is settled), each `Pulling` shard from
//! its previous owner, and for each `BePulled` shard whether the new owner has installed it. An
//! answer that makes progress possible becomes a proposal: the configuration, an install, a
//! delete. Nothing is remembered between polls, so a lost inquiry or answer costs one poll; and
//! since apply ignores any migration command out of turn, a stale or duplicate proposal is
//! harmless (this is why a deposed leader need not be stopped from proposing).
//!
//! A host drives one replica like this (the simulator does exactly this):
//! - the Raft Ready loop as for [`crate::kv::KvServer`]: [`ShardKvServer::on_soft_state`],
//!   [`ShardKvServer::on_committed`], [`ShardKvServer::on_read_states`],
//!   [`ShardKvServer::on_snapshot`], and [`ShardKvServer::snapshot`] when
//!   [`ShardKvServer::wants_snapshot`];
//! - client requests in through [`ShardKvServer::on_request`], responses out through
//!   [`ShardKvServer::take_responses`];
//! - [`ShardKvServer::tick`] every tick, then [`ShardKvServer::take_outbound`]: carry each
//!   [`Outbound`] to some replica of its target, which answers with
//!   [`ShardKvServer::answer_inquiry`] (a shard group) or
//!   [`super::answer_config_inquiry`] (the controller), and hand the answer back through
//!   [`ShardKvServer::on_answer`].

use bytes::Bytes;

use super::command::ShardCommand;
use super::inquiry::{Answer, Inquiry, Outbound, PullAnswer, Target};
use super::shard::ShardState;
use super::store::{ShardKvSettings, ShardStore};
use crate::kv::command::DecodeError;
use crate::kv::server::ReplyTo;
use crate::kv::service::ResponseOf;
use crate::kv::{ReplicaServer, ServerConfig, ServiceRequest};
use crate::raft::{Entry, Index, RawNode, ReadState, Role, SoftState};

/// A shard group replica's bounds and policies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardKvServerConfig {
    /// The generic replica's bounds (pending requests, timeouts, snapshot threshold); its
    /// session limits bound each shard's session table.
    pub server: ServerConfig,
    /// The leader polls the controller and the other groups every this many ticks.
    pub poll_ticks: u64,
}

impl Default for ShardKvServerConfig {
    /// Polls every 100 ms (10 ticks of 10 ms), as the lab's groups do: a configuration change
    /// is noticed within a tenth of a second, at the cost of one small inquiry per poll.
    fn default() -> ShardKvServerConfig {
        ShardKvServerConfig {
            server: ServerConfig::default(),
            poll_ticks: 10,
        }
    }
}

/// One shard group replica.
pub struct ShardKvServer {
    config: ShardKvServerConfig,
    inner: ReplicaServer<ShardStore>,
    role: Role,
    ticks: u64,
    outbound: Vec<Outbound>,
}

impl ShardKvServer {
    /// A replica of an empty group.
    pub fn new(config: ShardKvServerConfig, settings: ShardKvSettings) -> ShardKvServer {
        ShardKvServer::around(
            config,
            ReplicaServer::with_settings(config.server, settings),
        )
    }

    /// A replica restarting from a snapshot taken at `index`.
    pub fn restore(
        config: ShardKvServerConfig,
        index: Index,
        snapshot: &Bytes,
    ) -> Result<ShardKvServer, DecodeError> {
        let inner = ReplicaServer::restore(config.server, index, snapshot)?;
        Ok(ShardKvServer::around(config, inner))
    }

    fn around(config: ShardKvServerConfig, inner: ReplicaServer<ShardStore>) -> ShardKvServer {
        assert!(config.poll_ticks >= 1, "a poll period of at least one tick");
        ShardKvServer {
            config,
            inner,
            role: Role::Follower,
            ticks: 0,
            outbound: Vec::new(),
        }
    }

    /// The state machine.
    pub fn store(&self) -> &ShardStore {
        self.inner.store()
    }

    /// The index of the last entry applied.
    pub fn applied_index(&self) -> Index {
        self.inner.applied_index()
    }

    /// Handles a client request (see [`ReplicaServer::on_request`]).
    pub fn on_request(
        &mut self,
        raw: &mut RawNode,
        now_ms: u64,
        reply_to: ReplyTo,
        request: ServiceRequest<crate::kv::Op>,
    ) {
        self.inner.on_request(raw, now_ms, reply_to, request);
    }

    /// Applies committed entries.
    pub fn on_committed(&mut self, entries: &[Entry]) {
        self.inner.on_committed(entries);
    }

    /// Replaces the state with a snapshot installed from the leader.
    pub fn on_snapshot(&mut self, index: Index, data: &Bytes) -> Result<(), DecodeError> {
        self.inner.on_snapshot(index, data)
    }

    /// Read indexes from Raft.
    pub fn on_read_states(&mut self, read_states: &[ReadState]) {
        self.inner.on_read_states(read_states);
    }

    /// A role or term change. A new leader polls at its next tick rather than waiting a period.
    pub fn on_soft_state(&mut self, soft: SoftState) {
        if soft.role == Role::Leader && self.role != Role::Leader {
            self.ticks = self.config.poll_ticks - 1;
        }
        self.role = soft.role;
        self.inner.on_soft_state(soft);
    }

    /// One tick: request timeouts, and on the leader a poll every `poll_ticks`.
    pub fn tick(&mut self) {
        self.inner.tick();
        self.ticks += 1;
        if self.role == Role::Leader && self.ticks % self.config.poll_ticks == 0 {
            self.poll();
        }
    }

    /// The inquiries one poll makes (module docs).
    fn poll(&mut self) {
        let store = self.inner.store();
        let from = store.group();
        let config = store.config().num;
        if store.is_settled() {
            let inquiry = Inquiry::Config { num: config + 1 };
            self.outbound.push(Outbound {
                from,
                to: Target::Controller,
                inquiry,
            });
        }
        for (shard, state) in store.migrating() {
            let (to, inquiry) = match state {
                ShardState::Pulling { from } => (from, Inquiry::PullShard { shard, config }),
                ShardState::BePulled { to } => (to, Inquiry::Installed { shard, config }),
                ShardState::Absent | ShardState::Serving => continue,
            };
            self.outbound.push(Outbound {
                from,
                to: Target::Group(to),
                inquiry,
            });
        }
    }

    /// Inquiries to carry to other groups.
    pub fn take_outbound(&mut self) -> Vec<Outbound> {
        std::mem::take(&mut self.outbound)
    }

    /// This replica's answer to another group's inquiry (`None` for the controller's kind).
    pub fn answer_inquiry(&self, inquiry: &Inquiry) -> Option<Answer> {
        self.inner.store().answer(inquiry)
    }

    /// An answer to one of this group's inquiries: on the leader, a proposal when it lets the
    /// migration move on; otherwise nothing (the answer may be stale: apply decides).
    pub fn on_answer(&mut self, raw: &mut RawNode, answer: Answer) {
        if !raw.is_leader() {
            return;
        }
        let store = self.inner.store();
        let num = store.config().num;
        let command = match answer {
            Answer::Config {
                config: Some(config),
                ..
            } if config.num == num + 1 && store.is_settled() => ShardCommand::Config(config),
            Answer::Shard {
                shard,
                config,
                answer: PullAnswer::Frozen(payload),
            } if config == num && pulling(store, shard) => ShardCommand::Install {
                config,
                shard,
                payload,
            },
            Answer::Installed {
                shard,
                config,
                installed: true,
            } if config == num && be_pulled(store, shard) => ShardCommand::Delete { config, shard },
            _ => return,
        };
        // A refused proposal (leadership just lost, entry too large) is retried at the next
        // poll by whoever leads then.
        let _ = raw.propose(vec![command.encode()]);
    }

    /// True when the durable Raft state has outgrown the snapshot threshold.
    pub fn wants_snapshot(&self, raft_state_bytes: usize) -> bool {
        self.inner.wants_snapshot(raft_state_bytes)
    }

    /// The state's snapshot bytes, as of [`ShardKvServer::applied_index`].
    pub fn snapshot(&self) -> Bytes {
        self.inner.snapshot()
    }

    /// Responses ready to go out, with who they go to.
    pub fn take_responses(&mut self) -> Vec<(ReplyTo, ResponseOf<ShardStore>)> {
        self.inner.take_responses()
    }

    /// Requests waiting for an answer.
    pub fn pending_requests(&self) -> usize {
        self.inner.pending_requests()
    }
}

fn pulling(store: &ShardStore, shard: u32) -> bool {
    (shard as usize) < store.config().shards.len()
        && matches!(store.shard_state(shard), ShardState::Pulling { .. })
}

fn be_pulled(store: &ShardStore, shard: u32) -> bool {
    (shard as usize) < store.config().shards.len()
        && matches!(store.shard_state(shard), ShardState::BePulled { .. })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::raft::{Config as RaftConfig, Restore};
    use crate::shardctl::{Config, Replica};

    /// A single-member group that has elected itself, with its replica; Readies are handled as
    /// a host would (persist at once, apply, feed soft state).
    fn leader(group: u64) -> (RawNode, ShardKvServer) {
        let mut raw =
            RawNode::new(RaftConfig::new(1, 1, vec![1], 9), Restore::default()).expect("valid");
        let settings = ShardKvSettings { group, shards: 2 };
        let mut server = ShardKvServer::new(ShardKvServerConfig::default(), settings);
        for _ in 0..500 {
            raw.tick();
            drain(&mut raw, &mut server);
            if raw.is_leader() && raw.applied_index() >= 1 {
                return (raw, server);
            }
        }
        panic!("a single member elects itself");
    }

    fn drain(raw: &mut RawNode, server: &mut ShardKvServer) {
        while raw.has_ready() {
            let rd = raw.ready();
            if let Some(soft) = rd.soft_state {
                server.on_soft_state(soft);
            }
            if let Some(last) = rd.entries.last() {
                raw.persisted(last.index, last.term);
            }
            server.on_committed(&rd.committed_entries);
            server.on_read_states(&rd.read_states);
            raw.advance();
        }
    }

    fn poll(raw: &mut RawNode, server: &mut ShardKvServer) -> Vec<Outbound> {
        for _ in 0..ShardKvServerConfig::default().poll_ticks {
            server.tick();
            drain(raw, server);
        }
        server.take_outbound()
    }

    fn config(num: u64, shards: Vec<u64>) -> Config {
        Config {
            num,
            shards,
            groups: BTreeMap::from([(1, vec![Replica::on(1)]), (2, vec![Replica::on(2)])]),
        }
    }

    /// The leader's driver: a poll asks the controller for the next configuration; the answer
    /// is proposed and applied; a gained shard is pulled from its previous owner and, once the
    /// frozen copy arrives, installed; a stale answer proposes nothing.
    #[test]
    fn the_leader_polls_pulls_and_installs() {
        let (mut raw, mut server) = leader(2);
        let first = poll(&mut raw, &mut server);
        assert_eq!(
            first,
            vec![Outbound {
                from: 2,
                to: Target::Controller,
                inquiry: Inquiry::Config { num: 1 }
            }]
        );
        let answer = |c: Config| Answer::Config {
            num: c.num,
            config: Some(c),
        };
        server.on_answer(&mut raw, answer(config(1, vec![1, 1])));
        drain(&mut raw, &mut server);
        assert_eq!(server.store().config().num, 1);
        server.on_answer(&mut raw, answer(config(2, vec![1, 2])));
        drain(&mut raw, &mut server);
        assert_eq!(
            server.store().shard_state(1),
            ShardState::Pulling { from: 1 }
        );
        let second = poll(&mut raw, &mut server);
        let pull = Inquiry::PullShard {
            shard: 1,
            config: 2,
        };
        assert_eq!(
            second,
            vec![Outbound {
                from: 2,
                to: Target::Group(1),
                inquiry: pull
            }]
        );
        let last = raw.last_index();
        // An answer about another configuration changes nothing and proposes nothing.
        let stale = Answer::Shard {
            shard: 1,
            config: 1,
            answer: PullAnswer::Frozen(Bytes::new()),
        };
        server.on_answer(&mut raw, stale);
        assert_eq!(raw.last_index(), last);
        let mut old_owner = ShardStore::new(
            crate::kv::SessionLimits::default(),
            ShardKvSettings {
                group: 1,
                shards: 2,
            },
        );
        for (index, c) in [config(1, vec![1, 1]), config(2, vec![1, 2])]
            .into_iter()
            .enumerate()
        {
            old_owner.apply(index as u64 + 1, &ShardCommand::Config(c).encode());
        }
        let frozen = old_owner.answer(&pull).expect("a shard inquiry");
        server.on_answer(&mut raw, frozen);
        drain(&mut raw, &mut server);
        assert_eq!(server.store().shard_state(1), ShardState::Serving);
        assert_eq!(
            server.answer_inquiry(&Inquiry::Installed {
                shard: 1,
                config: 2
            }),
            Some(Answer::Installed {
                shard: 1,
                config: 2,
                installed: true
            })
        );
    }
}
