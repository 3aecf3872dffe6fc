//! One replica of a shard group: the generic [`ReplicaServer`] around [`ShardStore`] for client
//! requests (writes proposed and answered when applied, reads through ReadIndex and served only
//! for a shard the group serves), plus the migration driver.
//!
//! The driver runs on the leader only. Every [`ShardKvServerConfig::poll_ticks`] it emits
//! inquiries: the next configuration (when every shard is settled), for each `Pulling` shard
//! the part after the last key installed, and for each `BePulled` shard whether the new owner
//! has installed it. An answer that makes progress possible becomes a proposal: the
//! configuration, a part, a delete. The poll is the retry path: since apply ignores any
//! migration command out of turn, a lost inquiry or answer costs one poll, and a stale or
//! duplicate proposal is harmless (this is why a deposed leader need not be stopped from
//! proposing).
//!
//! The driver does not wait for the poll when a step it can take next is known at once: when
//! an applied entry took a migration step ([`ShardStore::migration_steps`] moved), it asks for
//! what that step made possible right away: the next part after an installed one, everything a
//! new configuration needs, the next configuration once settled. It remembers, per pulling
//! shard, the part it asked for or proposed last, so a part is asked for once per step and
//! proposed once while its entry is on its way (a proposal not applied after
//! [`PROPOSED_PART_PATIENCE_POLLS`] polls is taken as lost and the part asked for again).
//!
//! A host drives one replica like this (the simulator does exactly this):
//! - the Raft Ready loop as for [`crate::kv::KvServer`]: [`ShardKvServer::on_soft_state`],
//!   [`ShardKvServer::on_committed`], [`ShardKvServer::on_read_states`],
//!   [`ShardKvServer::on_snapshot`], and [`ShardKvServer::snapshot`] when
//!   [`ShardKvServer::wants_snapshot`];
//! - client requests in through [`ShardKvServer::on_request`], responses out through
//!   [`ShardKvServer::take_responses`];
//! - [`ShardKvServer::tick`] every tick, then [`ShardKvServer::take_outbound`] (also after
//!   applying entries: a step may ask at once): carry each [`Outbound`] to some replica of its
//!   target, which answers with [`ShardKvServer::answer_inquiry`] (a shard group) or
//!   [`super::answer_config_inquiry`] (the controller), and hand the answer back through
//!   [`ShardKvServer::on_answer`].

use std::collections::BTreeMap;

use bytes::Bytes;

use super::command::ShardCommand;
use super::inquiry::{Answer, Inquiry, Outbound, PullAnswer, Target};
use super::shard::ShardState;
use super::store::{ShardKvSettings, ShardStore};
use crate::kv::command::DecodeError;
use crate::kv::server::ReplyTo;
use crate::kv::service::ResponseOf;
use crate::kv::{ReplicaServer, ServerConfig, ServiceRequest};
use crate::raft::{Entry, GroupId, Index, RawNode, ReadState, Role, SoftState};
use crate::shardctl::ShardId;

/// The payload a pulled shard's part carries at most, by default (one key and value larger
/// than this still move, alone). Why 256 KiB: each part is built, replicated, logged and
/// applied by cores that also serve the other shards' requests, and those requests wait behind
/// it; measured with `scripts/shard-migration-bench.sh` (100 MB under 2,000 req/s on other
/// shards, 3 nodes on 2 CPUs): 1 MiB parts moved it in 1.3 s with the other shards' p50/p99
/// during the move at 9.3/121 ms, 256 KiB parts in 1.6 s at 1.6/64 ms, 128 KiB in 2.2 s at
/// 1.2/106 ms (the p99 tail there is the new owner's snapshot, not the parts). A part's fixed
/// costs (an inquiry round trip, one log entry, one commit) stay small beside 256 KiB.
pub const DEFAULT_PART_BYTES: usize = 256 << 10;

/// Polls a proposed part may take to be applied before the leader takes it as lost and asks
/// for it again. Why 5: a healthy group commits an entry within a heartbeat round trip or two,
/// far under half a second; a proposal a leader keeps is only lost with the leadership (and a
/// role change forgets every proposal anyway), so this is a safety net that costs one duplicate
/// entry, which apply ignores.
pub const PROPOSED_PART_PATIENCE_POLLS: u64 = 5;

/// A shard group replica's bounds and policies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardKvServerConfig {
    /// The generic replica's bounds (pending requests, timeouts, snapshot threshold); its
    /// session limits bound each shard's session table.
    pub server: ServerConfig,
    /// The leader polls the controller and the other groups every this many ticks.
    pub poll_ticks: u64,
    /// The payload bytes the leader asks each part of a pulled shard to take at most. A host
    /// sets it so that a part's entry ([`super::command::MAX_PART_OVERHEAD_BYTES`] more) fits
    /// one log entry.
    pub part_bytes: usize,
}

impl Default for ShardKvServerConfig {
    /// Polls every 100 ms (10 ticks of 10 ms), as the lab's groups do: a configuration change
    /// is noticed within a tenth of a second, at the cost of one small inquiry per poll.
    /// Parts of [`DEFAULT_PART_BYTES`].
    fn default() -> ShardKvServerConfig {
        ShardKvServerConfig {
            server: ServerConfig::default(),
            poll_ticks: 10,
            part_bytes: DEFAULT_PART_BYTES,
        }
    }
}

/// The part of a pulling shard the leader asked for or proposed last.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PartRequest {
    /// The configuration the shard is pulled in.
    config: u64,
    /// The key the part continues after.
    after: Option<Bytes>,
    /// When its install was proposed (in ticks); `None`: asked for, not proposed.
    proposed_tick: Option<u64>,
}

/// Why the driver asks now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Asking {
    /// The periodic poll: ask for everything still needed (the retry path).
    Poll,
    /// A migration step was just applied: ask only for what it made newly possible.
    Step,
}

/// One shard group replica.
pub struct ShardKvServer {
    config: ShardKvServerConfig,
    inner: ReplicaServer<ShardStore>,
    role: Role,
    ticks: u64,
    outbound: Vec<Outbound>,
    /// Per pulling shard, the part last asked for or proposed (leader only; at most one entry
    /// per shard, forgotten on every role change and once the shard stops pulling).
    parts: BTreeMap<ShardId, PartRequest>,
    /// The store's migration step count and configuration when last looked at.
    seen_steps: u64,
    seen_config: u64,
    /// Proposals Raft refused (leadership lost meanwhile, an entry too large).
    refused_proposals: u64,
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
        let (seen_steps, seen_config) =
            (inner.store().migration_steps(), inner.store().config().num);
        ShardKvServer {
            config,
            inner,
            role: Role::Follower,
            ticks: 0,
            outbound: Vec::new(),
            parts: BTreeMap::new(),
            seen_steps,
            seen_config,
            refused_proposals: 0,
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

    /// Migration proposals Raft refused so far (each is retried by the next poll).
    pub fn refused_proposals(&self) -> u64 {
        self.refused_proposals
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

    /// Applies committed entries; on the leader, asks at once for what a migration step they
    /// took makes possible.
    pub fn on_committed(&mut self, entries: &[Entry]) {
        self.inner.on_committed(entries);
        self.after_apply();
    }

    /// Replaces the state with a snapshot installed from the leader.
    pub fn on_snapshot(&mut self, index: Index, data: &Bytes) -> Result<(), DecodeError> {
        self.inner.on_snapshot(index, data)?;
        self.after_apply();
        Ok(())
    }

    /// Read indexes from Raft.
    pub fn on_read_states(&mut self, read_states: &[ReadState]) {
        self.inner.on_read_states(read_states);
    }

    /// A role or term change. A new leader polls at its next tick rather than waiting a period;
    /// what an earlier leadership asked for or proposed is forgotten.
    pub fn on_soft_state(&mut self, soft: SoftState) {
        if soft.role == Role::Leader && self.role != Role::Leader {
            self.ticks = self.config.poll_ticks - 1;
        }
        if soft.role != self.role {
            self.parts.clear();
        }
        self.role = soft.role;
        self.inner.on_soft_state(soft);
    }

    /// One tick: request timeouts, and on the leader a poll every `poll_ticks`.
    pub fn tick(&mut self) {
        self.inner.tick();
        self.ticks += 1;
        if self.role == Role::Leader && self.ticks % self.config.poll_ticks == 0 {
            self.ask(Asking::Poll);
        }
    }

    /// After entries or a snapshot were applied: when a migration step was taken, the leader
    /// asks for what it made possible without waiting for the poll.
    fn after_apply(&mut self) {
        let store = self.inner.store();
        let steps = store.migration_steps();
        if steps == self.seen_steps {
            return;
        }
        self.seen_steps = steps;
        let config = store.config().num;
        let new_config = config != self.seen_config;
        self.seen_config = config;
        if self.role != Role::Leader {
            return;
        }
        // A new configuration needs everything asked; a part or a delete only what follows it.
        self.ask(if new_config {
            Asking::Poll
        } else {
            Asking::Step
        });
    }

    /// The inquiries the state calls for (module docs).
    fn ask(&mut self, asking: Asking) {
        let store = self.inner.store();
        let from = store.group();
        let config = store.config().num;
        let migrating: Vec<(ShardId, ShardState)> = store.migrating().collect();
        if migrating.is_empty() {
            self.outbound.push(Outbound {
                from,
                to: Target::Controller,
                inquiry: Inquiry::Config { num: config + 1 },
            });
        }
        self.parts.retain(|shard, part| {
            part.config == config
                && migrating
                    .iter()
                    .any(|&(s, state)| s == *shard && matches!(state, ShardState::Pulling { .. }))
        });
        for (shard, state) in migrating {
            match state {
                ShardState::Pulling { from: owner } => self.ask_part(shard, owner, asking),
                ShardState::BePulled { to } if asking == Asking::Poll => {
                    self.outbound.push(Outbound {
                        from,
                        to: Target::Group(to),
                        inquiry: Inquiry::Installed { shard, config },
                    });
                }
                ShardState::BePulled { .. } | ShardState::Absent | ShardState::Serving => {}
            }
        }
    }

    /// Asks `owner` for the part of `shard` after the last key installed, unless that part was
    /// asked for already (`Asking::Step`) or proposed within the patience (`Asking::Poll`).
    fn ask_part(&mut self, shard: ShardId, owner: GroupId, asking: Asking) {
        let store = self.inner.store();
        let config = store.config().num;
        let after = store.shard(shard).progress().cloned();
        let patience_ticks = PROPOSED_PART_PATIENCE_POLLS * self.config.poll_ticks;
        if let Some(last) = self.parts.get(&shard) {
            let same = last.config == config && last.after == after;
            let waiting = last
                .proposed_tick
                .is_some_and(|tick| self.ticks < tick + patience_ticks);
            if same && (asking == Asking::Step || waiting) {
                return;
            }
        }
        self.parts.insert(
            shard,
            PartRequest {
                config,
                after: after.clone(),
                proposed_tick: None,
            },
        );
        self.outbound.push(Outbound {
            from: store.group(),
            to: Target::Group(owner),
            inquiry: Inquiry::PullShard {
                shard,
                config,
                after,
                max_part_bytes: self.config.part_bytes,
            },
        });
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
                answer:
                    PullAnswer::Part {
                        after,
                        last,
                        payload,
                    },
            } if config == num
                && pulling(store, shard)
                && store.shard(shard).progress() == after.as_ref() =>
            {
                let proposed = self.parts.get(&shard).is_some_and(|p| {
                    p.config == config && p.after == after && p.proposed_tick.is_some()
                });
                if proposed {
                    return; // a duplicate answer: the part's entry is on its way
                }
                let part = PartRequest {
                    config,
                    after: after.clone(),
                    proposed_tick: Some(self.ticks),
                };
                let command = ShardCommand::InstallPart {
                    config,
                    shard,
                    after,
                    last,
                    payload,
                };
                if self.propose(raw, command) {
                    self.parts.insert(shard, part);
                }
                return;
            }
            Answer::Installed {
                shard,
                config,
                installed: true,
            } if config == num && be_pulled(store, shard) => ShardCommand::Delete { config, shard },
            _ => return,
        };
        self.propose(raw, command);
    }

    /// Proposes a migration command; a refusal (leadership just lost, an entry too large) is
    /// counted, and the next poll, by whoever leads then, asks again.
    fn propose(&mut self, raw: &mut RawNode, command: ShardCommand) -> bool {
        let proposed = raw.propose(vec![command.encode()]).is_ok();
        if !proposed {
            self.refused_proposals += 1;
        }
        proposed
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
    use crate::kv::command::Command;
    use crate::kv::{Op, SessionLimits};
    use crate::raft::{Config as RaftConfig, Restore};
    use crate::shardctl::{Config, Replica};
    use crate::shardkv::command::Last;
    use crate::shardkv::key_to_shard;

    /// Parts of at most this many payload bytes: a pair of the tests' keys and values each.
    const PART_BYTES: usize = 40;

    /// A single-member group that has elected itself, with its replica; Readies are handled as
    /// a host would (persist at once, apply, feed soft state).
    fn leader(group: u64) -> (RawNode, ShardKvServer) {
        let mut raw =
            RawNode::new(RaftConfig::new(1, 1, vec![1], 9), Restore::default()).expect("valid");
        let settings = ShardKvSettings { group, shards: 2 };
        let config = ShardKvServerConfig {
            part_bytes: PART_BYTES,
            ..ShardKvServerConfig::default()
        };
        let mut server = ShardKvServer::new(config, settings);
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

    /// Group 1's store in configuration 2, having given shard 1 (holding `keys` keys of 20
    /// bytes with their 10-byte values) to group 2.
    fn old_owner(keys: usize) -> ShardStore {
        let settings = ShardKvSettings {
            group: 1,
            shards: 2,
        };
        let mut store = ShardStore::new(SessionLimits::default(), settings);
        store.apply(1, &ShardCommand::Config(config(1, vec![1, 1])).encode());
        let of_shard_one = (0..)
            .map(|i| Bytes::from(format!("key-{i:016}")))
            .filter(|k| key_to_shard(k, 2) == 1);
        for (seq, key) in of_shard_one.take(keys).enumerate() {
            let op = Op::Put {
                key,
                value: Bytes::from_static(b"0123456789"),
            };
            let seq = seq as u64 + 1;
            let command = Command {
                client: 7,
                seq,
                stamp_ms: 1,
                op,
            };
            store.apply(1 + seq, &ShardCommand::Client(command).encode());
        }
        store.apply(100, &ShardCommand::Config(config(2, vec![1, 2])).encode());
        store
    }

    fn answer(c: Config) -> Answer {
        Answer::Config {
            num: c.num,
            config: Some(c),
        }
    }

    /// The leader's driver: a poll asks the controller for the next configuration; the answer
    /// is proposed and applied; a gained shard is pulled part by part from its previous owner,
    /// each part asked for as soon as the one before it is applied (no poll in between); once
    /// the last part is applied the shard is served and, every shard settled, the next
    /// configuration is asked for at once. A stale answer proposes nothing.
    #[test]
    fn the_leader_pulls_part_after_part() {
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
        server.on_answer(&mut raw, answer(config(1, vec![1, 1])));
        drain(&mut raw, &mut server);
        assert_eq!(server.store().config().num, 1);
        // Settled in the configuration just applied: the next one is asked for at once.
        assert_eq!(
            server.take_outbound(),
            vec![Outbound {
                from: 2,
                to: Target::Controller,
                inquiry: Inquiry::Config { num: 2 }
            }]
        );
        server.on_answer(&mut raw, answer(config(2, vec![1, 2])));
        drain(&mut raw, &mut server);
        assert_eq!(
            server.store().shard_state(1),
            ShardState::Pulling { from: 1 }
        );
        // Applying the configuration asked for the first part at once.
        let mut asked = server.take_outbound();
        let pull = |after: Option<Bytes>| Inquiry::PullShard {
            shard: 1,
            config: 2,
            after,
            max_part_bytes: PART_BYTES,
        };
        assert_eq!(
            asked,
            vec![Outbound {
                from: 2,
                to: Target::Group(1),
                inquiry: pull(None)
            }]
        );
        let last = raw.last_index();
        let stale = Answer::Shard {
            shard: 1,
            config: 1,
            answer: PullAnswer::Part {
                after: None,
                last: Last::Yes,
                payload: Bytes::new(),
            },
        };
        server.on_answer(&mut raw, stale);
        assert_eq!(
            raw.last_index(),
            last,
            "an answer about another configuration"
        );
        let old = old_owner(5);
        let mut parts = 0;
        while server.store().shard_state(1) != ShardState::Serving {
            assert_eq!(asked.len(), 1, "one inquiry at a time: {asked:?}");
            let inquiry = asked.pop().expect("asked").inquiry;
            server.on_answer(&mut raw, old.answer(&inquiry).expect("a shard inquiry"));
            drain(&mut raw, &mut server);
            parts += 1;
            asked = server.take_outbound();
            assert!(parts <= 10, "the pull goes on forever");
        }
        assert!(parts > 5, "five pairs and the sessions in {parts} parts");
        let mut moved = old.shard(1).clone();
        moved.state = ShardState::Serving;
        assert_eq!(
            server.store().shard(1),
            &moved,
            "every pair and the sessions"
        );
        assert_eq!(
            asked,
            vec![Outbound {
                from: 2,
                to: Target::Controller,
                inquiry: Inquiry::Config { num: 3 }
            }],
            "settled: the next configuration is asked for at once"
        );
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

    /// A part is proposed once while its entry is on its way: a duplicate answer (a poll asked
    /// again meanwhile) proposes nothing, and a poll does not ask for the proposed part again.
    #[test]
    fn a_part_is_proposed_once() {
        let (mut raw, mut server) = leader(2);
        server.on_answer(&mut raw, answer(config(1, vec![1, 1])));
        drain(&mut raw, &mut server);
        let _ = server.take_outbound();
        server.on_answer(&mut raw, answer(config(2, vec![1, 2])));
        drain(&mut raw, &mut server);
        let asked = server.take_outbound();
        let old = old_owner(3);
        let reply = old.answer(&asked[0].inquiry).expect("a shard inquiry");
        let before = raw.last_index();
        server.on_answer(&mut raw, reply.clone());
        server.on_answer(&mut raw, reply.clone());
        assert_eq!(raw.last_index(), before + 1, "proposed once");
        // Not applied yet (nothing drained): the poll leaves the proposed part alone.
        for _ in 0..server.config.poll_ticks {
            server.tick();
        }
        let polled = server.take_outbound();
        assert!(
            polled
                .iter()
                .all(|o| !matches!(o.inquiry, Inquiry::PullShard { .. })),
            "{polled:?}"
        );
        drain(&mut raw, &mut server);
        let progress = server.store().shard(1).progress().cloned();
        assert!(progress.is_some(), "the first part is installed");
        // Its answer again, now out of turn: nothing proposed.
        let last = raw.last_index();
        server.on_answer(&mut raw, reply);
        assert_eq!(raw.last_index(), last);
        assert_eq!(server.refused_proposals(), 0);
    }
}
