//! The sharded clerk, sans-I/O like [`crate::kv::client`]: it caches a configuration, routes
//! each operation key → shard ([`super::key_to_shard`]) → group → a replica of that group,
//! follows "wrong leader" within the group, and on "wrong group" asks the controller for the
//! latest configuration (through a [`CtlClerk`] of its own) and tries again after a short wait.
//!
//! Exactly-once: the clerk's session id is drawn once from its seed (64 random bits, never 0)
//! and used at every group; sequence numbers count the clerk's operations, one in flight at a
//! time, and a retry — to another replica or another group — repeats the sequence. Sessions
//! live per shard on the servers and move with the shard, so whichever group applies the
//! operation applies it once. Client-chosen ids need no registration round at each of the
//! groups a client will ever talk to; with 64 random bits two clients collide with probability
//! about n²/2⁶⁵ (n = 10⁶ clients: 3·10⁻⁸). The clerk stops retrying one operation after
//! [`ShardClerkConfig::give_up_ticks`] (outcome unknown), well inside a session's lifetime on
//! the servers, so an expired session can never see a retry.

use std::collections::BTreeMap;

use super::command::{ShardKvError, ShardResponse};
use super::key_to_shard;
use crate::kv::client::{ServiceOutcome, ServiceOutgoing};
use crate::kv::{ClerkConfig, ClientId, Consistency, Op, Reply, Request};
use crate::raft::{GroupId, NodeId};
use crate::rng::Rng;
use crate::shardctl::{Config, CtlClerk, CtlOp, CtlOutcome, CtlReply, CtlResponse, NO_GROUP};

/// How a sharded operation ended.
pub type ShardOutcome = ServiceOutcome<Reply, ShardKvError>;

/// Retry policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardClerkConfig {
    /// A request unanswered for this many ticks is sent again, to the group's next replica.
    pub request_timeout_ticks: u64,
    /// After every replica of a group refused in a row, wait at most this long (doubling from
    /// one tick, jittered).
    pub max_backoff_ticks: u64,
    /// After "wrong group", wait this long (while the configuration is refreshed) before
    /// sending again, so a group that is still pulling the shard is not asked in a tight loop.
    pub wrong_group_wait_ticks: u64,
    /// Give up on an operation after this many ticks: its outcome is unknown.
    pub give_up_ticks: u64,
    /// The controller clerk's policy.
    pub controller: ClerkConfig,
}

impl Default for ShardClerkConfig {
    /// With 10 ms ticks: resend after 500 ms of silence, back off at most 200 ms, wait 100 ms
    /// after "wrong group" (the lab's clerk sleeps 100 ms), give up after 10 minutes — a sixth
    /// of the servers' one-hour session lifetime.
    fn default() -> ShardClerkConfig {
        ShardClerkConfig {
            request_timeout_ticks: 50,
            max_backoff_ticks: 20,
            wrong_group_wait_ticks: 10,
            give_up_ticks: 60_000,
            controller: ClerkConfig::default(),
        }
    }
}

/// A request to send now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShardOutgoing {
    /// To a replica of the controller.
    Controller(ServiceOutgoing<CtlOp>),
    /// To replica `to` of shard group `group`.
    Group {
        /// The group.
        group: GroupId,
        /// The replica's node.
        to: NodeId,
        /// The request.
        request: Request,
    },
}

#[derive(Clone, Debug)]
struct InFlight {
    op: Op,
    consistency: Consistency,
    seq: u64,
    /// Where the request went, while its answer is awaited.
    sent: Option<(GroupId, NodeId)>,
    ticks_waiting: u64,
    ticks_total: u64,
    refusals: usize,
    backoff_left: u64,
    backoff_next: u64,
}

/// One sharded client: its session, its configuration cache, its one operation in flight.
pub struct ShardClerk {
    id: ClientId,
    seq: u64,
    policy: ShardClerkConfig,
    rng: Rng,
    config: Option<Config>,
    ctl: CtlClerk,
    /// A configuration query is in flight at the controller clerk.
    querying: bool,
    /// Per group, the index of the replica believed to lead.
    leaders: BTreeMap<GroupId, usize>,
    current: Option<InFlight>,
    outgoing: Vec<ShardOutgoing>,
}

impl ShardClerk {
    /// A clerk that asks `controllers` (the controller's replicas) for configurations.
    pub fn new(controllers: Vec<NodeId>, policy: ShardClerkConfig, seed: u64) -> ShardClerk {
        let mut rng = Rng::stream(seed, "shard clerk");
        let id = rng.next_u64().max(1);
        let ctl_seed = rng.next_u64();
        ShardClerk {
            id,
            seq: 0,
            policy,
            rng,
            config: None,
            ctl: CtlClerk::new(controllers, policy.controller, ctl_seed),
            querying: false,
            leaders: BTreeMap::new(),
            current: None,
            outgoing: Vec::new(),
        }
    }

    /// The session id used at every group.
    pub fn id(&self) -> ClientId {
        self.id
    }

    /// The cached configuration.
    pub fn config(&self) -> Option<&Config> {
        self.config.as_ref()
    }

    /// A one-line account of the clerk's state, for failure reports.
    pub fn describe(&self) -> String {
        format!(
            "id {} seq {} config {:?} querying {} leaders {:?} current {:?}",
            self.id,
            self.seq,
            self.config.as_ref().map(|c| c.num),
            self.querying,
            self.leaders,
            self.current
        )
    }

    /// True when no operation is in flight.
    pub fn is_idle(&self) -> bool {
        self.current.is_none()
    }

    /// Starts an operation; what to send is in [`ShardClerk::take_outgoing`].
    pub fn start(&mut self, op: Op, consistency: Consistency) {
        assert!(self.current.is_none(), "one operation at a time per clerk");
        self.seq += 1;
        self.current = Some(InFlight {
            op,
            consistency,
            seq: self.seq,
            sent: None,
            ticks_waiting: 0,
            ticks_total: 0,
            refusals: 0,
            backoff_left: 0,
            backoff_next: 1,
        });
        self.send_current();
    }

    /// Requests to send now.
    pub fn take_outgoing(&mut self) -> Vec<ShardOutgoing> {
        let ctl = self.ctl.take_outgoing().into_iter();
        self.outgoing.extend(ctl.map(ShardOutgoing::Controller));
        std::mem::take(&mut self.outgoing)
    }

    /// Sends the operation to the group its key's shard belongs to, or asks for a
    /// configuration when there is none to route by.
    fn send_current(&mut self) {
        let Some(current) = self.current.as_mut() else {
            return;
        };
        let Some(config) = self.config.as_ref() else {
            self.refresh();
            return;
        };
        let shard = key_to_shard(current.op.key(), config.shard_count());
        let group = config.group_of(shard);
        let servers = config.groups.get(&group).filter(|s| !s.is_empty());
        let Some(servers) = servers.filter(|_| group != NO_GROUP) else {
            // No group serves the shard in this configuration: wait for a newer one.
            current.backoff_left = self.policy.wrong_group_wait_ticks.max(1);
            self.refresh();
            return;
        };
        let n = servers.len();
        let rng = &mut self.rng;
        let index = *self.leaders.entry(group).or_insert_with(|| rng.index(n)) % n;
        let to = servers[index].node;
        current.sent = Some((group, to));
        current.ticks_waiting = 0;
        let request = Request {
            client: self.id,
            seq: current.seq,
            op: current.op.clone(),
            consistency: current.consistency,
        };
        self.outgoing
            .push(ShardOutgoing::Group { group, to, request });
    }

    /// Asks the controller for the latest configuration, unless a query is already out.
    fn refresh(&mut self) {
        if !self.querying && self.ctl.is_idle() {
            self.ctl.start(CtlOp::latest(), Consistency::Linearizable);
            self.querying = true;
        }
    }

    /// A controller replica's response to the configuration query.
    pub fn on_controller_response(&mut self, from: NodeId, response: CtlResponse) {
        let Some(outcome) = self.ctl.on_response(from, response) else {
            return;
        };
        self.querying = false;
        let mut newer = false;
        if let CtlOutcome::Completed(Ok(CtlReply::Config(config))) = outcome {
            newer = self.config.as_ref().is_none_or(|c| config.num > c.num);
            if newer {
                self.config = Some(config);
            }
        }
        // An operation that waited only for a first configuration goes now; one waiting on a
        // group goes again at once if the shard may have moved (same sequence: applied once).
        let resend = self.current.as_ref().is_some_and(|c| match c.sent {
            None => c.backoff_left == 0,
            Some(_) => newer,
        });
        if resend {
            self.send_current();
        }
    }

    /// A shard group replica's response; returns the operation's outcome when it is over.
    pub fn on_response(
        &mut self,
        from: NodeId,
        group: GroupId,
        response: ShardResponse,
    ) -> Option<ShardOutcome> {
        let current = self.current.as_ref()?;
        if (response.client, response.seq) != (self.id, current.seq) {
            return None; // a late answer to an earlier operation
        }
        match response.result {
            Err(ShardKvError::WrongLeader { leader }) => {
                self.redirect(from, group, leader);
                None
            }
            Err(ShardKvError::Timeout | ShardKvError::Busy) => {
                self.redirect(from, group, 0);
                None
            }
            Err(ShardKvError::WrongGroup { .. } | ShardKvError::TooManySessions) => {
                let wait = self.policy.wrong_group_wait_ticks.max(1);
                let current = self.current.as_mut().expect("checked");
                current.sent = None;
                current.backoff_left = wait;
                self.refresh();
                None
            }
            Err(ShardKvError::SessionExpired) => {
                self.current = None;
                Some(ServiceOutcome::Unknown)
            }
            result => {
                self.current = None;
                Some(ServiceOutcome::Completed(result))
            }
        }
    }

    /// Replica `from` of `group` could not take the request: go to the hinted leader or the
    /// group's next replica; after a whole round of refusals, back off.
    fn redirect(&mut self, from: NodeId, group: GroupId, hint: NodeId) {
        let servers: Vec<NodeId> = (self.config.as_ref())
            .and_then(|c| c.groups.get(&group))
            .map(|s| s.iter().map(|r| r.node).collect())
            .unwrap_or_default();
        let n = servers.len().max(1);
        let guess = self.leaders.entry(group).or_insert(0);
        if let Some(i) = servers.iter().position(|&s| s == hint && s != from) {
            *guess = i;
        } else if servers.get(*guess % n) == Some(&from) {
            *guess = (*guess + 1) % n;
        }
        let max_backoff = self.policy.max_backoff_ticks.max(1);
        let current = self.current.as_mut().expect("in flight");
        current.refusals += 1;
        current.sent = None;
        if current.refusals >= n {
            // No replica of the group could take it: the group may no longer own the shard
            // (or be down for good), so look for a newer configuration while backing off.
            current.refusals = 0;
            let jitter = self.rng.range(0, current.backoff_next + 1);
            current.backoff_left = (current.backoff_next / 2 + jitter).max(1);
            current.backoff_next = (current.backoff_next * 2).min(max_backoff);
            self.refresh();
        } else {
            self.send_current();
        }
    }

    /// One tick: the controller clerk's, then a backoff's end or a resend after silence (to
    /// the group's next replica). Returns `Unknown` when the operation is given up.
    pub fn tick(&mut self) -> Option<ShardOutcome> {
        self.ctl.tick();
        let timeout = self.policy.request_timeout_ticks;
        let give_up = self.policy.give_up_ticks;
        let current = self.current.as_mut()?;
        current.ticks_total += 1;
        if current.ticks_total >= give_up {
            self.current = None;
            return Some(ServiceOutcome::Unknown);
        }
        match current.sent {
            None => {
                current.backoff_left = current.backoff_left.saturating_sub(1);
                if current.backoff_left == 0 {
                    self.send_current();
                }
            }
            Some((group, _)) => {
                current.ticks_waiting += 1;
                if current.ticks_waiting < timeout {
                    return None;
                }
                current.refusals += 1;
                let refusals = current.refusals;
                *self.leaders.entry(group).or_insert(0) += 1;
                let replicas = (self.config.as_ref())
                    .and_then(|c| c.groups.get(&group))
                    .map_or(1, Vec::len);
                if refusals >= replicas {
                    // A whole round of silence: the group may be gone; look for a newer
                    // configuration (the resend below goes out meanwhile).
                    if let Some(current) = self.current.as_mut() {
                        current.refusals = 0;
                    }
                    self.refresh();
                }
                self.send_current();
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bytes::Bytes;

    use super::*;
    use crate::shardctl::Replica;

    fn config(num: u64, owner: GroupId) -> Config {
        Config {
            num,
            shards: vec![owner; 4],
            groups: BTreeMap::from([
                (1, vec![Replica::on(11), Replica::on(12)]),
                (2, vec![Replica::on(21), Replica::on(22)]),
            ]),
        }
    }

    /// Answers the clerk's outstanding controller traffic (registration, then the query) with
    /// `config`.
    fn feed_config(clerk: &mut ShardClerk, config: &Config) -> Vec<ShardOutgoing> {
        for _ in 0..4 {
            let out = clerk.take_outgoing();
            let mut rest = Vec::new();
            let mut answered = false;
            for o in out {
                match o {
                    ShardOutgoing::Controller(c) => {
                        let result = if c.request.op == CtlOp::Register {
                            Ok(CtlReply::Registered { client: 5 })
                        } else {
                            Ok(CtlReply::Config(config.clone()))
                        };
                        let response = CtlResponse {
                            client: c.request.client,
                            seq: c.request.seq,
                            result,
                            consistency: Consistency::Linearizable,
                        };
                        clerk.on_controller_response(c.to, response);
                        answered = true;
                    }
                    other => rest.push(other),
                }
            }
            if !answered {
                return rest;
            }
            if !rest.is_empty() {
                rest.extend(clerk.take_outgoing());
                return rest;
            }
        }
        clerk.take_outgoing()
    }

    fn request_of(out: &[ShardOutgoing]) -> (GroupId, NodeId, Request) {
        match out {
            [ShardOutgoing::Group { group, to, request }] => (*group, *to, request.clone()),
            other => panic!("expected one group request, got {other:?}"),
        }
    }

    /// The clerk fetches a configuration, routes to the key's group, and after "wrong group"
    /// refreshes and resends the same sequence with the same id to the new owner.
    #[test]
    fn routes_and_keeps_its_sequence_across_groups() {
        let mut clerk = ShardClerk::new(vec![1, 2, 3], ShardClerkConfig::default(), 9);
        let put = Op::Put {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(b"v"),
        };
        clerk.start(put.clone(), Consistency::Linearizable);
        let out = feed_config(&mut clerk, &config(1, 1));
        let (group, to, first) = request_of(&out);
        assert_eq!(group, 1);
        assert!(to == 11 || to == 12);
        assert_eq!((first.client, first.seq, &first.op), (clerk.id(), 1, &put));
        let wrong = ShardResponse {
            client: first.client,
            seq: 1,
            result: Err(ShardKvError::WrongGroup { config: 2 }),
            consistency: Consistency::Linearizable,
        };
        assert_eq!(clerk.on_response(to, 1, wrong), None);
        let mut out = feed_config(&mut clerk, &config(2, 2));
        for _ in 0..ShardClerkConfig::default().wrong_group_wait_ticks {
            assert_eq!(clerk.tick(), None);
            out.extend(clerk.take_outgoing());
        }
        let (group, to, again) = request_of(&out);
        assert_eq!(group, 2);
        assert_eq!((again.client, again.seq), (first.client, 1));
        let done = ShardResponse {
            client: again.client,
            seq: 1,
            result: Ok(Reply::Done),
            consistency: Consistency::Linearizable,
        };
        assert_eq!(
            clerk.on_response(to, 2, done),
            Some(ServiceOutcome::Completed(Ok(Reply::Done)))
        );
        assert!(clerk.is_idle());
    }
}
