//! The sharded KV in the simulator: every group but the controller's runs a shard group replica
//! ([`ShardKvServer`]); the replicas' inquiries travel over the simulated network to a replica of
//! the target group chosen at random, and the answers travel back, both subject to the
//! network's faults and to crashes like any message; sharded clients are endpoints with their
//! own clocks running the real [`ShardClerk`] (its configuration queries go to the controller's
//! replicas). Every client operation that ends is recorded with virtual call and return times.
//!
//! As for the other services, partitions cut servers from each other, not clients from servers.

use super::*;
use crate::kv::{Consistency, Op};
use crate::shardkv::{
    answer_config_inquiry, ShardClerk, ShardClerkConfig, ShardKvServerConfig, ShardKvSettings,
    ShardOutcome, ShardOutgoing, ShardStore, Target,
};

/// Marks a controller request's `reply_to` as a sharded client's (the controller replica's
/// own clients use small handles), so its answer is routed back to that client.
const SHARD_CLIENT_TAG: u64 = 1 << 62;

/// The sharded client a tagged `reply_to` names, if it is one.
pub(super) fn shard_client_of(reply_to: u64) -> Option<usize> {
    (reply_to & SHARD_CLIENT_TAG != 0).then_some((reply_to & !SHARD_CLIENT_TAG) as usize)
}

/// How the cluster runs the sharded KV.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardKvSimConfig {
    /// Each replica's bounds and poll period (its `max_raft_state_bytes` triggers snapshots).
    pub server: ShardKvServerConfig,
    /// Shards per configuration: must be the controller's.
    pub shards: usize,
}

/// One simulated sharded client.
pub(super) struct SimShardClient {
    clerk: ShardClerk,
    current: Option<(Op, u64)>,
}

/// One sharded KV operation that ended: what was asked, how it ended, and when (virtual time).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardCompletedOp {
    /// The client's handle.
    pub client: usize,
    /// The operation.
    pub op: Op,
    /// How it ended, as the client knows it.
    pub outcome: ShardOutcome,
    /// When the client started it.
    pub call_us: u64,
    /// When the client learned the outcome.
    pub return_us: u64,
}

impl Cluster {
    /// A fresh shard group replica for `group` of a booting node, or `None` when the cluster
    /// runs no sharded KV; from the durable snapshot's service bytes when there are any.
    pub(super) fn boot_shardkv(
        &self,
        node: NodeId,
        group: GroupId,
        snapshot: Option<(Index, &Bytes)>,
    ) -> Option<ShardKvServer> {
        let skv = self.cfg.shardkv?;
        Some(match snapshot {
            None => {
                let settings = ShardKvSettings {
                    group,
                    shards: skv.shards,
                };
                ShardKvServer::new(skv.server, settings)
            }
            Some((index, bytes)) => match ShardKvServer::restore(skv.server, index, bytes) {
                Ok(server) => server,
                Err(e) => self.fail(
                    Some(node),
                    Some(group),
                    &format!("durable sharded KV snapshot: {e}"),
                ),
            },
        })
    }

    fn ctl_group(&self) -> GroupId {
        self.controller_group()
            .expect("the sharded KV needs the shard controller")
    }

    /// The groups running the sharded KV.
    pub fn shardkv_groups(&self) -> Vec<GroupId> {
        if self.cfg.shardkv.is_none() {
            return Vec::new();
        }
        let controller = self.controller_group();
        self.cfg
            .group_ids()
            .filter(|&g| Some(g) != controller)
            .collect()
    }

    /// Adds a sharded client (it reaches every node); returns its handle.
    pub fn shard_client(&mut self) -> usize {
        assert!(
            self.cfg.shardkv.is_some(),
            "the cluster does not run the sharded KV"
        );
        let controller = self.ctl_group();
        let handle = self.shard_clients.len();
        let salt = format!("shard client {handle}");
        let seed = Rng::stream(self.cfg.seed, &salt).next_u64();
        let servers = self.cfg.members(controller);
        let clerk = ShardClerk::new(servers, ShardClerkConfig::default(), seed);
        self.shard_clients.push(SimShardClient {
            clerk,
            current: None,
        });
        let phase_us = self.tick_rng.range(0, self.cfg.tick_us);
        self.queue.push(
            self.now_us + phase_us,
            Event::ShardClientTick { client: handle },
        );
        handle
    }

    /// Starts an operation on an idle sharded client; it retries until it ends.
    pub fn shard_start(&mut self, client: usize, op: Op) {
        let c = &mut self.shard_clients[client];
        assert!(c.current.is_none(), "sharded client {client} is busy");
        c.current = Some((op.clone(), self.now_us));
        c.clerk.start(op, Consistency::Linearizable);
        self.send_shard_client_requests(client);
    }

    /// Sharded client `client`'s clerk (for failure reports).
    pub fn shard_clerk(&self, client: usize) -> &ShardClerk {
        &self.shard_clients[client].clerk
    }

    /// True when sharded client `client` has no operation in flight.
    pub fn shard_idle(&self, client: usize) -> bool {
        self.shard_clients[client].current.is_none()
    }

    /// Runs one operation to its end, for up to `timeout_ms` of virtual time. `None` if it did
    /// not end in time (it keeps retrying in the background).
    pub fn shard_do(&mut self, client: usize, op: Op, timeout_ms: u64) -> Option<ShardOutcome> {
        self.shard_start(client, op);
        if !self.run_until(|c| c.shard_idle(client), timeout_ms) {
            return None;
        }
        let last = self.shard_history.iter().rev().find(|d| d.client == client);
        last.map(|done| done.outcome.clone())
    }

    /// Every sharded operation that ended so far, in the order they ended.
    pub fn shard_history(&self) -> &[ShardCompletedOp] {
        &self.shard_history
    }

    /// The shard group state of `node`'s replica of `group` (None while down or not hosted).
    pub fn shard_store(&self, node: NodeId, group: GroupId) -> Option<&ShardStore> {
        let n = self.node(node);
        if !n.alive {
            return None;
        }
        let replica = n.replicas.get(group as usize - 1)?.as_ref()?;
        replica.skv.as_ref().map(|skv| skv.store())
    }

    /// Crashes every member of `group` (the lab's ShutdownGroup).
    pub fn crash_group(&mut self, group: GroupId) {
        for node in self.cfg.members(group) {
            self.crash(node);
        }
    }

    /// Restarts every member of `group` from its durable state (the lab's StartGroup).
    pub fn restart_group(&mut self, group: GroupId) {
        for node in self.cfg.members(group) {
            self.restart(node);
        }
    }

    /// Durable bytes of `group` over all its members: Raft state plus snapshot (the lab's
    /// RaftStateSize + len(ReadSnapshot)).
    pub fn persisted_group_bytes(&self, group: GroupId) -> usize {
        self.cfg
            .members(group)
            .into_iter()
            .map(|n| self.persisted_raft_bytes(n, group) + self.snapshot_bytes(n, group))
            .sum()
    }

    pub(super) fn on_shardkv_event(&mut self, event: Event) {
        match event {
            Event::ShardClientTick { client } => self.on_shard_client_tick(client),
            Event::ToShardServer {
                client,
                server,
                incarnation,
                group,
                request,
            } => self.on_shard_request(client, server, incarnation, group, request),
            Event::ToShardClient {
                client,
                server,
                incarnation,
                group,
                response,
            } => {
                if self.is_current(server, incarnation) {
                    let c = &mut self.shard_clients[client];
                    if let Some(outcome) = c.clerk.on_response(server, group, response) {
                        self.finish_shard_op(client, outcome);
                    }
                    self.send_shard_client_requests(client);
                }
            }
            Event::ShardCtlToServer {
                client,
                server,
                incarnation,
                request,
            } => self.on_shard_ctl_request(client, server, incarnation, request),
            Event::ShardCtlToClient {
                client,
                server,
                incarnation,
                response,
            } => {
                if self.is_current(server, incarnation) {
                    let clerk = &mut self.shard_clients[client].clerk;
                    clerk.on_controller_response(server, response);
                    self.send_shard_client_requests(client);
                }
            }
            Event::Inquiry {
                from,
                from_group,
                from_incarnation,
                to,
                to_group,
                to_incarnation,
                inquiry,
            } => {
                if !self.deliverable(to_group, (from, from_incarnation), (to, to_incarnation)) {
                    return;
                }
                let replica = self.replica(to, to_group);
                let answer = match (&replica.ctl, &replica.skv) {
                    (Some(ctl), _) => answer_config_inquiry(ctl.store(), &inquiry),
                    (None, Some(skv)) => skv.answer_inquiry(&inquiry),
                    (None, None) => None,
                };
                let Some(answer) = answer else {
                    return;
                };
                if let Ok(delay_us) = self.net.route(from_group, to, from, true) {
                    let event = Event::InquiryAnswer {
                        from: to,
                        from_incarnation: to_incarnation,
                        to: from,
                        to_group: from_group,
                        to_incarnation: from_incarnation,
                        answer,
                    };
                    self.queue.push(self.now_us + delay_us, event);
                }
            }
            Event::InquiryAnswer {
                from,
                from_incarnation,
                to,
                to_group,
                to_incarnation,
                answer,
            } => {
                if !self.deliverable(to_group, (from, from_incarnation), (to, to_incarnation)) {
                    return;
                }
                let Replica { raw, skv, .. } = self.replica_mut(to, to_group);
                if let Some(skv) = skv.as_mut() {
                    skv.on_answer(raw, answer);
                }
                self.drain(to, to_group);
                self.flush_shardkv(to, to_group);
            }
            _ => unreachable!("not a sharded KV event"),
        }
    }

    fn on_shard_client_tick(&mut self, client: usize) {
        if let Some(outcome) = self.shard_clients[client].clerk.tick() {
            self.finish_shard_op(client, outcome);
        }
        self.send_shard_client_requests(client);
        self.queue.push(
            self.now_us + self.cfg.tick_us,
            Event::ShardClientTick { client },
        );
    }

    fn finish_shard_op(&mut self, client: usize, outcome: ShardOutcome) {
        let c = &mut self.shard_clients[client];
        let (op, call_us) = c.current.take().expect("an operation was in flight");
        self.shard_history.push(ShardCompletedOp {
            client,
            op,
            outcome,
            call_us,
            return_us: self.now_us,
        });
    }

    fn send_shard_client_requests(&mut self, client: usize) {
        for out in self.shard_clients[client].clerk.take_outgoing() {
            self.stats.kv_requests += 1;
            let Ok(delay_us) = self.net.fate(false) else {
                continue;
            };
            let event = match out {
                ShardOutgoing::Controller(out) => Event::ShardCtlToServer {
                    client,
                    server: out.to,
                    incarnation: self.node(out.to).incarnation,
                    request: out.request,
                },
                ShardOutgoing::Group { group, to, request } => {
                    if to == 0 || to as usize > self.nodes.len() {
                        continue; // a configuration naming a node the cluster lacks
                    }
                    Event::ToShardServer {
                        client,
                        server: to,
                        incarnation: self.node(to).incarnation,
                        group,
                        request,
                    }
                }
            };
            self.queue.push(self.now_us + delay_us, event);
        }
    }

    fn on_shard_request(
        &mut self,
        client: usize,
        server: NodeId,
        incarnation: u64,
        group: GroupId,
        request: Request,
    ) {
        let hosted =
            group >= 1 && group as usize <= self.cfg.groups && self.cfg.hosts(server, group);
        if !self.is_current(server, incarnation) || !hosted {
            return;
        }
        let now_ms = self.now_us / 1000;
        let Replica { raw, skv, .. } = self.replica_mut(server, group);
        let Some(skv) = skv.as_mut() else {
            return; // a group that runs another service: the clerk times out and moves on
        };
        skv.on_request(raw, now_ms, client as u64, request);
        self.drain(server, group);
        self.flush_shardkv(server, group);
    }

    fn on_shard_ctl_request(
        &mut self,
        client: usize,
        server: NodeId,
        incarnation: u64,
        request: CtlRequest,
    ) {
        let group = self.ctl_group();
        if !self.is_current(server, incarnation) || !self.cfg.hosts(server, group) {
            return;
        }
        let now_ms = self.now_us / 1000;
        let Replica { raw, ctl, .. } = self.replica_mut(server, group);
        let Some(ctl) = ctl.as_mut() else {
            return;
        };
        ctl.on_request(raw, now_ms, SHARD_CLIENT_TAG | client as u64, request);
        self.drain(server, group);
        self.flush_ctl_responses(server, group);
    }

    /// Sends a controller replica's answer to a sharded client.
    pub(super) fn send_shard_ctl_response(
        &mut self,
        node: NodeId,
        client: usize,
        response: CtlResponse,
    ) {
        if let Ok(delay_us) = self.net.fate(true) {
            let event = Event::ShardCtlToClient {
                client,
                server: node,
                incarnation: self.node(node).incarnation,
                response,
            };
            self.queue.push(self.now_us + delay_us, event);
        }
    }

    /// Sends what `node`'s shard group replica of `group` has ready: client responses, and its
    /// inquiries, each to a replica of the target group drawn at random.
    pub(super) fn flush_shardkv(&mut self, node: NodeId, group: GroupId) {
        if !self.node(node).alive {
            return;
        }
        let Some(skv) = self.replica_mut(node, group).skv.as_mut() else {
            return;
        };
        let responses = skv.take_responses();
        let outbound = skv.take_outbound();
        let incarnation = self.node(node).incarnation;
        for (reply_to, response) in responses {
            if let Ok(delay_us) = self.net.fate(true) {
                let event = Event::ToShardClient {
                    client: reply_to as usize,
                    server: node,
                    incarnation,
                    group,
                    response,
                };
                self.queue.push(self.now_us + delay_us, event);
            }
        }
        for out in outbound {
            let to_group = match out.to {
                Target::Controller => self.ctl_group(),
                Target::Group(g) if g >= 1 && g as usize <= self.cfg.groups => g,
                Target::Group(_) => continue, // a group the cluster does not have
            };
            let members = self.cfg.members(to_group);
            let to = members[self.inquiry_rng.index(members.len())];
            if let Ok(delay_us) = self.net.route(to_group, node, to, false) {
                let event = Event::Inquiry {
                    from: node,
                    from_group: group,
                    from_incarnation: incarnation,
                    to,
                    to_group,
                    to_incarnation: self.node(to).incarnation,
                    inquiry: out.inquiry,
                };
                self.queue.push(self.now_us + delay_us, event);
            }
        }
    }
}
