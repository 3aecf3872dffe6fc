//! KV clients in the simulator: endpoints with their own clocks that run the real client logic
//! ([`Clerk`]) against the replicas' [`KvServer`]s, over the same faulty network. Every
//! operation that ends is recorded with its call and return times, for the linearizability
//! checker.
//!
//! Partitions cut servers from each other, not clients from servers: as in the lab, a client
//! reaches every server unless its own links say otherwise ([`Cluster::kv_set_reachable`]),
//! and the unreliable network drops and delays its requests and responses like any message.

use std::collections::BTreeSet;

use super::*;
use crate::kv::{Clerk, ClerkConfig, Consistency, KvStore, Op, Outcome};

/// One simulated client: a clerk, the group it talks to, and the servers it can reach.
pub(super) struct SimClient {
    clerk: Clerk,
    group: GroupId,
    reachable: BTreeSet<NodeId>,
    current: Option<(Op, u64)>,
}

/// One KV operation that ended: what was asked, how it ended, and when (virtual time).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompletedOp {
    /// The client's handle.
    pub client: usize,
    /// The group it was sent to.
    pub group: GroupId,
    /// The operation.
    pub op: Op,
    /// How it ended, as the client knows it.
    pub outcome: Outcome,
    /// When the client started it.
    pub call_us: u64,
    /// When the client learned the outcome.
    pub return_us: u64,
}

impl Cluster {
    /// Adds a client of `group`'s KV service that can reach every node; returns its handle.
    pub fn kv_client(&mut self, group: GroupId) -> usize {
        assert!(
            self.cfg.kv.is_some(),
            "the cluster does not run the KV service"
        );
        let handle = self.clients.len();
        let salt = format!("kv client {handle}");
        let seed = Rng::stream(self.cfg.seed, &salt).next_u64();
        let servers: Vec<NodeId> = self.cfg.node_ids().collect();
        let clerk = Clerk::new(servers.clone(), ClerkConfig::default(), seed);
        let reachable = servers.into_iter().collect();
        self.clients.push(SimClient {
            clerk,
            group,
            reachable,
            current: None,
        });
        let phase_us = self.tick_rng.range(0, self.cfg.tick_us);
        self.queue
            .push(self.now_us + phase_us, Event::ClientTick { client: handle });
        handle
    }

    /// Limits which nodes `client` can reach (the lab's per-clerk connections).
    pub fn kv_set_reachable(&mut self, client: usize, nodes: &[NodeId]) {
        self.clients[client].reachable = nodes.iter().copied().collect();
    }

    /// Starts an operation on an idle client; it retries until it ends.
    pub fn kv_start(&mut self, client: usize, op: Op, consistency: Consistency) {
        let c = &mut self.clients[client];
        assert!(c.current.is_none(), "client {client} is busy");
        c.current = Some((op.clone(), self.now_us));
        c.clerk.start(op, consistency);
        self.send_client_requests(client);
    }

    /// True when `client` has no operation in flight.
    pub fn kv_idle(&self, client: usize) -> bool {
        self.clients[client].current.is_none()
    }

    /// Runs one operation to its end (as the lab's `Clerk.Get` and `Clerk.Put` do), for up to
    /// `timeout_ms` of virtual time. `None` if it did not end in time.
    pub fn kv_do(&mut self, client: usize, op: Op, timeout_ms: u64) -> Option<Outcome> {
        self.kv_start(client, op, Consistency::Linearizable);
        if !self.run_until(|c| c.kv_idle(client), timeout_ms) {
            return None;
        }
        let last = self
            .kv_history
            .iter()
            .rev()
            .find(|done| done.client == client);
        last.map(|done| done.outcome.clone())
    }

    /// Every operation that ended so far, in the order they ended.
    pub fn kv_history(&self) -> &[CompletedOp] {
        &self.kv_history
    }

    /// The store of `node`'s replica of `group` (None while it is down).
    pub fn kv_store(&self, node: NodeId, group: GroupId) -> Option<&KvStore> {
        let n = self.node(node);
        if !n.alive {
            return None;
        }
        n.replicas[group as usize - 1]
            .as_ref()?
            .kv
            .as_ref()
            .map(|kv| kv.store())
    }

    pub(super) fn on_client_tick(&mut self, client: usize) {
        self.clients[client].clerk.tick();
        self.send_client_requests(client);
        self.queue
            .push(self.now_us + self.cfg.tick_us, Event::ClientTick { client });
    }

    fn send_client_requests(&mut self, client: usize) {
        let group = self.clients[client].group;
        for out in self.clients[client].clerk.take_outgoing() {
            self.stats.kv_requests += 1;
            let server = out.to;
            if !self.clients[client].reachable.contains(&server) {
                continue;
            }
            if let Ok(delay_us) = self.net.fate(false) {
                let incarnation = self.node(server).incarnation;
                let event = Event::ToServer {
                    client,
                    server,
                    incarnation,
                    group,
                    request: out.request,
                };
                self.queue.push(self.now_us + delay_us, event);
            }
        }
    }

    pub(super) fn on_client_request(
        &mut self,
        client: usize,
        server: NodeId,
        incarnation: u64,
        group: GroupId,
        request: Request,
    ) {
        if !self.is_current(server, incarnation)
            || !self.clients[client].reachable.contains(&server)
        {
            return;
        }
        let now_ms = self.now_us / 1000;
        let Replica { raw, kv, .. } = self.replica_mut(server, group);
        let Some(kv) = kv.as_mut() else {
            self.fail(
                Some(server),
                Some(group),
                "a KV request reached a member without KV",
            );
        };
        kv.on_request(raw, now_ms, client as u64, request);
        self.drain(server, group);
        self.flush_kv_responses(server, group);
    }

    /// Sends the responses `node`'s replica of `group` has ready.
    pub(super) fn flush_kv_responses(&mut self, node: NodeId, group: GroupId) {
        if !self.node(node).alive {
            return;
        }
        let Some(kv) = self.replica_mut(node, group).kv.as_mut() else {
            return;
        };
        let responses = kv.take_responses();
        let incarnation = self.node(node).incarnation;
        for (reply_to, response) in responses {
            let client = reply_to as usize;
            if !self.clients[client].reachable.contains(&node) {
                continue;
            }
            if let Ok(delay_us) = self.net.fate(true) {
                let event = Event::ToClient {
                    client,
                    server: node,
                    incarnation,
                    response,
                };
                self.queue.push(self.now_us + delay_us, event);
            }
        }
    }

    pub(super) fn on_client_response(
        &mut self,
        client: usize,
        server: NodeId,
        incarnation: u64,
        response: Response,
    ) {
        // As in the lab, a reply from a server that crashed meanwhile goes nowhere.
        if !self.is_current(server, incarnation)
            || !self.clients[client].reachable.contains(&server)
        {
            return;
        }
        let c = &mut self.clients[client];
        if let Some(outcome) = c.clerk.on_response(server, response) {
            let (op, call_us) = c.current.take().expect("an operation was in flight");
            let group = c.group;
            let done = CompletedOp {
                client,
                group,
                op,
                outcome,
                call_us,
                return_us: self.now_us,
            };
            self.kv_history.push(done);
        }
        self.send_client_requests(client);
    }
}
