//! The shard controller in the simulator: one group of the cluster runs the controller's replica
//! ([`CtlServer`]) instead of KV, and controller clients are endpoints with their own clocks
//! running the real clerk ([`CtlClerk`]) over the same faulty network. Every controller operation
//! that ends is recorded with its call and return times (virtual), for the history checks in
//! [`crate::sim::shardctl_lab`].
//!
//! As for KV clients, partitions cut servers from each other, not clients from servers; a
//! client's own links are set with [`Cluster::ctl_set_reachable`].

use std::collections::BTreeSet;

use super::*;
use crate::kv::{ClerkConfig, Consistency, ServerConfig};
use crate::shardctl::{CtlClerk, CtlOp, CtlOutcome, CtlServer, CtlSettings, CtlStore};

/// Which group runs the shard controller, and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControllerConfig {
    /// The group (every node is a voter of it, as of every group).
    pub group: GroupId,
    /// The replica server's bounds (its `max_raft_state_bytes` also triggers snapshots).
    pub server: ServerConfig,
    /// The controller's shard count.
    pub settings: CtlSettings,
}

/// One simulated controller client.
pub(super) struct SimCtlClient {
    clerk: CtlClerk,
    reachable: BTreeSet<NodeId>,
    current: Option<(CtlOp, u64)>,
}

/// One controller operation that ended: what was asked, how it ended, when (virtual time).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CtlCompletedOp {
    /// The client's handle.
    pub client: usize,
    /// The operation.
    pub op: CtlOp,
    /// How it ended, as the client knows it.
    pub outcome: CtlOutcome,
    /// When the client started it.
    pub call_us: u64,
    /// When the client learned the outcome.
    pub return_us: u64,
}

impl Cluster {
    /// The group running the shard controller, if any.
    pub fn controller_group(&self) -> Option<GroupId> {
        self.cfg.controller.map(|c| c.group)
    }

    fn controller(&self) -> ControllerConfig {
        self.cfg
            .controller
            .expect("the cluster does not run the shard controller")
    }

    /// A fresh controller replica for `group` of a booting node, or `None` when `group` is not
    /// the controller's; from the durable snapshot's service bytes when there are any.
    pub(super) fn boot_controller(
        &self,
        node: NodeId,
        group: GroupId,
        snapshot: Option<(Index, &Bytes)>,
    ) -> Option<CtlServer> {
        let ctl = self.cfg.controller.filter(|c| c.group == group)?;
        Some(match snapshot {
            None => CtlServer::with_settings(ctl.server, ctl.settings),
            Some((index, bytes)) => match CtlServer::restore(ctl.server, index, bytes) {
                Ok(server) => server,
                Err(e) => self.fail(
                    Some(node),
                    Some(group),
                    &format!("durable controller snapshot: {e}"),
                ),
            },
        })
    }

    /// Adds a controller client that can reach every node; returns its handle.
    pub fn ctl_client(&mut self) -> usize {
        let group = self.controller().group;
        let handle = self.ctl_clients.len();
        let salt = format!("ctl client {handle}");
        let seed = Rng::stream(self.cfg.seed, &salt).next_u64();
        let servers: Vec<NodeId> = self.cfg.members(group);
        let clerk = CtlClerk::new(servers.clone(), ClerkConfig::default(), seed);
        self.ctl_clients.push(SimCtlClient {
            clerk,
            reachable: servers.into_iter().collect(),
            current: None,
        });
        let phase_us = self.tick_rng.range(0, self.cfg.tick_us);
        self.queue.push(
            self.now_us + phase_us,
            Event::CtlClientTick { client: handle },
        );
        handle
    }

    /// Limits which nodes controller client `client` can reach.
    pub fn ctl_set_reachable(&mut self, client: usize, nodes: &[NodeId]) {
        self.ctl_clients[client].reachable = nodes.iter().copied().collect();
    }

    /// Starts an operation on an idle controller client; it retries until it ends.
    pub fn ctl_start(&mut self, client: usize, op: CtlOp) {
        let c = &mut self.ctl_clients[client];
        assert!(c.current.is_none(), "controller client {client} is busy");
        c.current = Some((op.clone(), self.now_us));
        c.clerk.start(op, Consistency::Linearizable);
        self.send_ctl_requests(client);
    }

    /// True when controller client `client` has no operation in flight.
    pub fn ctl_idle(&self, client: usize) -> bool {
        self.ctl_clients[client].current.is_none()
    }

    /// Runs one controller operation to its end, for up to `timeout_ms` of virtual time.
    /// `None` if it did not end in time (it keeps retrying in the background).
    pub fn ctl_do(&mut self, client: usize, op: CtlOp, timeout_ms: u64) -> Option<CtlOutcome> {
        self.ctl_start(client, op);
        if !self.run_until(|c| c.ctl_idle(client), timeout_ms) {
            return None;
        }
        let last = self.ctl_history.iter().rev().find(|d| d.client == client);
        last.map(|done| done.outcome.clone())
    }

    /// Every controller operation that ended so far, in the order they ended.
    pub fn ctl_history(&self) -> &[CtlCompletedOp] {
        &self.ctl_history
    }

    /// The controller store of `node` (None while it is down or runs no controller).
    pub fn ctl_store(&self, node: NodeId) -> Option<&CtlStore> {
        let group = self.cfg.controller?.group;
        let n = self.node(node);
        if !n.alive {
            return None;
        }
        n.replicas[group as usize - 1]
            .as_ref()?
            .ctl
            .as_ref()
            .map(|ctl| ctl.store())
    }

    pub(super) fn on_ctl_client_tick(&mut self, client: usize) {
        self.ctl_clients[client].clerk.tick();
        self.send_ctl_requests(client);
        self.queue.push(
            self.now_us + self.cfg.tick_us,
            Event::CtlClientTick { client },
        );
    }

    fn send_ctl_requests(&mut self, client: usize) {
        for out in self.ctl_clients[client].clerk.take_outgoing() {
            self.stats.ctl_requests += 1;
            let server = out.to;
            if !self.ctl_clients[client].reachable.contains(&server) {
                continue;
            }
            if let Ok(delay_us) = self.net.fate(false) {
                let incarnation = self.node(server).incarnation;
                let event = Event::ToCtlServer {
                    client,
                    server,
                    incarnation,
                    request: out.request,
                };
                self.queue.push(self.now_us + delay_us, event);
            }
        }
    }

    pub(super) fn on_ctl_request(
        &mut self,
        client: usize,
        server: NodeId,
        incarnation: u64,
        request: CtlRequest,
    ) {
        if !self.is_current(server, incarnation)
            || !self.ctl_clients[client].reachable.contains(&server)
        {
            return;
        }
        let group = self.controller().group;
        let now_ms = self.now_us / 1000;
        let Replica { raw, ctl, .. } = self.replica_mut(server, group);
        let Some(ctl) = ctl.as_mut() else {
            self.fail(
                Some(server),
                Some(group),
                "a controller request reached a non-controller",
            );
        };
        ctl.on_request(raw, now_ms, client as u64, request);
        self.drain(server, group);
        self.flush_ctl_responses(server, group);
    }

    /// Sends the responses `node`'s controller replica in `group` has ready.
    pub(super) fn flush_ctl_responses(&mut self, node: NodeId, group: GroupId) {
        if !self.node(node).alive {
            return;
        }
        let Some(ctl) = self.replica_mut(node, group).ctl.as_mut() else {
            return;
        };
        let responses = ctl.take_responses();
        let incarnation = self.node(node).incarnation;
        for (reply_to, response) in responses {
            if let Some(client) = shardkv::shard_client_of(reply_to) {
                self.send_shard_ctl_response(node, client, response);
                continue;
            }
            let client = reply_to as usize;
            if !self.ctl_clients[client].reachable.contains(&node) {
                continue;
            }
            if let Ok(delay_us) = self.net.fate(true) {
                let event = Event::ToCtlClient {
                    client,
                    server: node,
                    incarnation,
                    response,
                };
                self.queue.push(self.now_us + delay_us, event);
            }
        }
    }

    pub(super) fn on_ctl_response(
        &mut self,
        client: usize,
        server: NodeId,
        incarnation: u64,
        response: CtlResponse,
    ) {
        // As for KV, a reply from a server that crashed meanwhile goes nowhere.
        if !self.is_current(server, incarnation)
            || !self.ctl_clients[client].reachable.contains(&server)
        {
            return;
        }
        let c = &mut self.ctl_clients[client];
        if let Some(outcome) = c.clerk.on_response(server, response) {
            let (op, call_us) = c.current.take().expect("an operation was in flight");
            let done = CtlCompletedOp {
                client,
                op,
                outcome,
                call_us,
                return_us: self.now_us,
            };
            self.ctl_history.push(done);
        }
        self.send_ctl_requests(client);
    }
}
