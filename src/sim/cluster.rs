//! The cluster: N nodes hosting G Raft groups on one thread and one virtual clock.
//!
//! Three kinds of event drive it, popped from one queue in (time, sequence) order:
//! a node's tick (every `tick_us`, at a per-node phase), a message's delivery, and a disk write's
//! completion. Test calls (`propose`, `crash`, `partition`, ...) happen between events.
//! After every input to a [`RawNode`] the cluster drains its Readies, following the contract in
//! `raft/node.rs`: send `messages` now; queue one disk write per Ready that persists anything or
//! holds `persisted_messages`; install the snapshot and apply `committed_entries` now; `advance`.
//! When a write completes, its data becomes durable, then its `persisted_messages` go out, then
//! `persisted(index, term)` is reported. Each fact a Ready reveals goes through the
//! [`Checker`] at once, so a violation stops the run at the event that caused it.

use bytes::Bytes;

use super::app::AppState;
use super::config::{SimConfig, TraceMode};
use super::disk::{DiskQueue, DiskWrite, Durable};
use super::invariants::{Checker, CommittedEntry};
use super::network::Network;
use super::queue::EventQueue;
use super::stats::Stats;
use super::trace::{summarize, Trace, TraceEvent, TraceKind};
use crate::kv::{KvServer, Request, Response};
use crate::raft::{
    Entry, GroupId, Index, Message, NodeId, ProposeError, RawNode, ReadError, Ready, Role,
    Snapshot, SnapshotMeta, SoftState, Term,
};
use crate::rng::Rng;
use crate::shardctl::{CtlRequest, CtlResponse, CtlServer};
use crate::shardkv::{Answer, Inquiry, ShardKvServer, ShardResponse};

/// Upper bound on Readies drained after one input. A healthy core settles in a handful; more
/// than this means the core keeps producing work from nothing.
const MAX_READIES_PER_INPUT: usize = 1_000;
/// Upper bound on events processed at one instant of virtual time. Real traffic always moves
/// the clock; this many events without it is a livelock.
const MAX_EVENTS_AT_ONE_INSTANT: u64 = 1_000_000;
/// Trace lines shown with a failure.
const FAILURE_TRACE_LINES: usize = 40;

mod kv;
mod shardctl;
mod shardkv;

pub use kv::CompletedOp;
pub use shardctl::{ControllerConfig, CtlCompletedOp};
pub use shardkv::{ShardCompletedOp, ShardKvSimConfig};

enum Event {
    Tick {
        node: NodeId,
        incarnation: u64,
    },
    Deliver {
        message: Message,
        from_incarnation: u64,
        to_incarnation: u64,
    },
    DiskDone {
        node: NodeId,
        incarnation: u64,
        write_id: u64,
    },
    /// A KV client's clock.
    ClientTick {
        client: usize,
    },
    /// A KV request on its way from a client to a server.
    ToServer {
        client: usize,
        server: NodeId,
        incarnation: u64,
        group: GroupId,
        request: Request,
    },
    /// A KV response on its way back.
    ToClient {
        client: usize,
        server: NodeId,
        incarnation: u64,
        response: Response,
    },
    /// A controller client's clock.
    CtlClientTick {
        client: usize,
    },
    /// A controller request on its way from a client to a server.
    ToCtlServer {
        client: usize,
        server: NodeId,
        incarnation: u64,
        request: CtlRequest,
    },
    /// A controller response on its way back.
    ToCtlClient {
        client: usize,
        server: NodeId,
        incarnation: u64,
        response: CtlResponse,
    },
    /// A sharded KV client's clock.
    ShardClientTick {
        client: usize,
    },
    /// A sharded KV request on its way to a replica of `group`.
    ToShardServer {
        client: usize,
        server: NodeId,
        incarnation: u64,
        group: GroupId,
        request: Request,
    },
    /// A sharded KV response on its way back.
    ToShardClient {
        client: usize,
        server: NodeId,
        incarnation: u64,
        group: GroupId,
        response: ShardResponse,
    },
    /// A sharded KV client's configuration query on its way to a controller replica.
    ShardCtlToServer {
        client: usize,
        server: NodeId,
        incarnation: u64,
        request: CtlRequest,
    },
    /// The controller's answer on its way back to a sharded KV client.
    ShardCtlToClient {
        client: usize,
        server: NodeId,
        incarnation: u64,
        response: CtlResponse,
    },
    /// A shard group's inquiry on its way to a replica of another group.
    Inquiry {
        from: NodeId,
        from_group: GroupId,
        from_incarnation: u64,
        to: NodeId,
        to_group: GroupId,
        to_incarnation: u64,
        inquiry: Inquiry,
    },
    /// The answer on its way back to the asking replica.
    InquiryAnswer {
        from: NodeId,
        from_incarnation: u64,
        to: NodeId,
        to_group: GroupId,
        to_incarnation: u64,
        answer: Answer,
    },
}

/// One member: the Raft core and the application above it. Dropped on crash.
struct Replica {
    raw: RawNode,
    app: AppState,
    /// The KV service, when the cluster runs it.
    kv: Option<KvServer>,
    /// The shard controller, on the controller's group when the cluster runs it.
    ctl: Option<CtlServer>,
    /// A shard group replica, on the other groups when the cluster runs the sharded KV.
    skv: Option<ShardKvServer>,
    /// The index of the last snapshot the application took or installed.
    last_snapshot_index: Index,
}

struct SimNode {
    alive: bool,
    /// Bumped at every crash and restart; messages and disk completions carry the incarnation
    /// they belong to, and anything of an older one is dropped.
    incarnation: u64,
    /// Indexed by group - 1 (`None`: a group this node is not a voter of); empty while
    /// crashed.
    replicas: Vec<Option<Replica>>,
    /// Indexed by group - 1; survives crashes.
    durable: Vec<Durable>,
    disk: DiskQueue,
}

/// A ReadState that came out of a Ready (Raft thesis §6.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedRead {
    /// The group.
    pub group: GroupId,
    /// The member whose Ready held it.
    pub node: NodeId,
    /// The context given to `read_index`.
    pub context: Bytes,
    /// The read index.
    pub index: Index,
    /// When it came out.
    pub at_us: u64,
}

/// A simulated cluster. See the module docs.
pub struct Cluster {
    cfg: SimConfig,
    now_us: u64,
    queue: EventQueue<Event>,
    nodes: Vec<SimNode>,
    net: Network,
    disk_rng: Rng,
    tick_rng: Rng,
    crash_rng: Rng,
    /// Draws made by the lab-style helpers (check_one_leader's sleeps).
    pub(crate) harness_rng: Rng,
    checker: Checker,
    stats: Stats,
    trace: Trace,
    reads: Vec<ObservedRead>,
    next_write_id: u64,
    events_at_this_instant: u64,
    /// KV clients, by handle.
    clients: Vec<kv::SimClient>,
    /// Every KV operation that ended, in the order they ended.
    kv_history: Vec<kv::CompletedOp>,
    /// Controller clients, by handle.
    ctl_clients: Vec<shardctl::SimCtlClient>,
    /// Every controller operation that ended, in the order they ended.
    ctl_history: Vec<shardctl::CtlCompletedOp>,
    /// Sharded KV clients, by handle.
    shard_clients: Vec<shardkv::SimShardClient>,
    /// Every sharded KV operation that ended, in the order they ended.
    shard_history: Vec<shardkv::ShardCompletedOp>,
    /// Which replica of a group an inquiry goes to.
    inquiry_rng: Rng,
}

impl Cluster {
    /// Builds and boots a cluster: every node starts with empty durable state.
    pub fn new(cfg: SimConfig) -> Cluster {
        assert!(
            cfg.nodes >= 1 && cfg.groups >= 1,
            "a cluster needs nodes and groups"
        );
        assert!(cfg.disk_latency_min_us <= cfg.disk_latency_max_us);
        assert!(cfg.tick_us > 0);
        let mut net = Network::new(cfg.seed, cfg.nodes);
        net.set_unreliable(cfg.unreliable);
        net.set_long_reordering(cfg.long_reordering);
        let nodes = cfg
            .node_ids()
            .map(|_| SimNode {
                alive: false,
                incarnation: 0,
                replicas: Vec::new(),
                durable: vec![Durable::default(); cfg.groups],
                disk: DiskQueue::default(),
            })
            .collect();
        let trace = Trace::new(match cfg.trace {
            TraceMode::Tail(n) => Some(n),
            TraceMode::Full => None,
        });
        let mut cluster = Cluster {
            now_us: 0,
            queue: EventQueue::new(),
            nodes,
            net,
            disk_rng: Rng::stream(cfg.seed, "disk"),
            tick_rng: Rng::stream(cfg.seed, "ticks"),
            crash_rng: Rng::stream(cfg.seed, "crashes"),
            harness_rng: Rng::stream(cfg.seed, "harness"),
            checker: Checker::new(),
            stats: Stats::default(),
            trace,
            reads: Vec::new(),
            next_write_id: 0,
            events_at_this_instant: 0,
            clients: Vec::new(),
            kv_history: Vec::new(),
            ctl_clients: Vec::new(),
            ctl_history: Vec::new(),
            shard_clients: Vec::new(),
            shard_history: Vec::new(),
            inquiry_rng: Rng::stream(cfg.seed, "inquiries"),
            cfg,
        };
        for node in cluster.cfg.node_ids() {
            cluster.boot(node);
        }
        cluster
    }

    // ---- time ----

    /// The configuration the cluster was built from.
    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }

    /// The seed that reproduces this run.
    pub fn seed(&self) -> u64 {
        self.cfg.seed
    }

    /// Virtual time in microseconds since the start.
    pub fn now_us(&self) -> u64 {
        self.now_us
    }

    /// Virtual time in milliseconds since the start.
    pub fn now_ms(&self) -> u64 {
        self.now_us / 1000
    }

    /// Runs `ms` of virtual time.
    pub fn run_for(&mut self, ms: u64) {
        self.run_until_us(|_| false, ms * 1000);
    }

    /// Runs `us` microseconds of virtual time.
    pub fn run_for_us(&mut self, us: u64) {
        self.run_until_us(|_| false, us);
    }

    /// Runs until `pred` holds (checked before the first event and after every event) or until
    /// `timeout_ms` of virtual time have passed; returns whether `pred` held.
    pub fn run_until(&mut self, pred: impl FnMut(&Cluster) -> bool, timeout_ms: u64) -> bool {
        self.run_until_us(pred, timeout_ms * 1000)
    }

    /// [`Cluster::run_until`] with the timeout in microseconds.
    pub fn run_until_us(
        &mut self,
        mut pred: impl FnMut(&Cluster) -> bool,
        timeout_us: u64,
    ) -> bool {
        let deadline_us = self.now_us + timeout_us;
        if pred(self) {
            return true;
        }
        while self.queue.peek_time().is_some_and(|at| at <= deadline_us) {
            self.step_event();
            if pred(self) {
                return true;
            }
        }
        self.now_us = deadline_us;
        pred(self)
    }

    fn step_event(&mut self) {
        let (at_us, event) = self.queue.pop().expect("caller checked the queue");
        if at_us == self.now_us {
            self.events_at_this_instant += 1;
            if self.events_at_this_instant > MAX_EVENTS_AT_ONE_INSTANT {
                self.fail(None, None, "livelock: a million events without time moving");
            }
        } else {
            self.events_at_this_instant = 0;
        }
        self.now_us = at_us;
        self.stats.events += 1;
        match event {
            Event::Tick { node, incarnation } => self.on_tick(node, incarnation),
            Event::Deliver {
                message,
                from_incarnation,
                to_incarnation,
            } => self.on_deliver(message, from_incarnation, to_incarnation),
            Event::DiskDone {
                node,
                incarnation,
                write_id,
            } => self.on_disk_done(node, incarnation, write_id),
            Event::ClientTick { client } => self.on_client_tick(client),
            Event::ToServer {
                client,
                server,
                incarnation,
                group,
                request,
            } => self.on_client_request(client, server, incarnation, group, request),
            Event::ToClient {
                client,
                server,
                incarnation,
                response,
            } => self.on_client_response(client, server, incarnation, response),
            Event::CtlClientTick { client } => self.on_ctl_client_tick(client),
            Event::ToCtlServer {
                client,
                server,
                incarnation,
                request,
            } => self.on_ctl_request(client, server, incarnation, request),
            Event::ToCtlClient {
                client,
                server,
                incarnation,
                response,
            } => self.on_ctl_response(client, server, incarnation, response),
            event => self.on_shardkv_event(event),
        }
    }

    // ---- events ----

    fn is_current(&self, node: NodeId, incarnation: u64) -> bool {
        let n = self.node(node);
        n.alive && n.incarnation == incarnation
    }

    /// Whether something `from` sent (as incarnation `from_incarnation`) for `group` reaches
    /// `to` (as `to_incarnation`): both still those incarnations, and the network lets them
    /// talk. Counts a drop when not.
    fn deliverable(
        &mut self,
        group: GroupId,
        (from, from_incarnation): (NodeId, u64),
        (to, to_incarnation): (NodeId, u64),
    ) -> bool {
        let deliverable = self.is_current(from, from_incarnation)
            && self.is_current(to, to_incarnation)
            && self.net.can_talk(group, from, to);
        if !deliverable {
            self.stats.dropped += 1;
        }
        deliverable
    }

    fn on_tick(&mut self, node: NodeId, incarnation: u64) {
        if !self.is_current(node, incarnation) {
            return;
        }
        for group in self.cfg.groups_of(node) {
            let replica = self.replica_mut(node, group);
            replica.raw.tick();
            if let Some(kv) = replica.kv.as_mut() {
                kv.tick();
            }
            if let Some(ctl) = replica.ctl.as_mut() {
                ctl.tick();
            }
            if let Some(skv) = replica.skv.as_mut() {
                skv.tick();
            }
            self.drain(node, group);
            self.flush_shardkv(node, group);
        }
        self.queue.push(
            self.now_us + self.cfg.tick_us,
            Event::Tick { node, incarnation },
        );
    }

    fn on_deliver(&mut self, message: Message, from_incarnation: u64, to_incarnation: u64) {
        let (from, to, group) = (message.from, message.to, message.group);
        if !self.deliverable(group, (from, from_incarnation), (to, to_incarnation)) {
            return;
        }
        self.stats.delivered += 1;
        *self.stats.delivered_to.entry(to).or_default() += 1;
        if let Err(e) = self.replica_mut(to, group).raw.step(message) {
            self.fail(
                Some(to),
                Some(group),
                &format!("step refused a routed message: {e:?}"),
            );
        }
        self.drain(to, group);
    }

    fn on_disk_done(&mut self, node: NodeId, incarnation: u64, write_id: u64) {
        if !self.is_current(node, incarnation) {
            return; // The crash already decided this write's fate.
        }
        let write = self.node_mut(node).disk.complete(write_id);
        self.make_durable(node, &write);
        let DiskWrite {
            group,
            persisted_messages,
            report,
            ..
        } = write;
        for message in persisted_messages {
            self.send(message);
        }
        if let Some((index, term)) = report {
            self.replica_mut(node, group).raw.persisted(index, term);
        }
        self.drain(node, group);
    }

    fn make_durable(&mut self, node: NodeId, write: &DiskWrite) {
        let result = self.node_mut(node).durable[write.group as usize - 1].apply(write);
        self.check(result, Some(node), Some(write.group));
        self.stats.disk_writes += 1;
    }

    /// Counts and routes one message from a live node.
    fn send(&mut self, message: Message) {
        self.stats.on_send(&message);
        if self.cfg.trace_messages {
            let kind = TraceKind::Send {
                group: message.group,
                from: message.from,
                to: message.to,
                term: message.term,
                summary: summarize(&message.body),
            };
            self.trace.record(self.now_us, kind);
        }
        let (from, to) = (message.from, message.to);
        if to == 0 || to as usize > self.nodes.len() {
            self.fail(
                Some(from),
                Some(message.group),
                &format!("message to unknown node {to}"),
            );
        }
        match self
            .net
            .route(message.group, from, to, message.body.is_response())
        {
            Err(_) => self.stats.dropped += 1,
            Ok(delay_us) => {
                let from_incarnation = self.node(from).incarnation;
                let to_incarnation = self.node(to).incarnation;
                let event = Event::Deliver {
                    message,
                    from_incarnation,
                    to_incarnation,
                };
                self.queue.push(self.now_us + delay_us, event);
            }
        }
    }

    // ---- the Ready loop ----

    /// Handles Readies of one member until it has none.
    fn drain(&mut self, node: NodeId, group: GroupId) {
        for _ in 0..MAX_READIES_PER_INPUT {
            let replica = self.replica_mut(node, group);
            if !replica.raw.has_ready() {
                return;
            }
            let rd = replica.raw.ready();
            self.handle_ready(node, group, rd);
            self.replica_mut(node, group).raw.advance();
            self.maybe_take_snapshot(node, group);
            self.flush_kv_responses(node, group);
            self.flush_ctl_responses(node, group);
            self.flush_shardkv(node, group);
        }
        self.fail(Some(node), Some(group), "the Ready loop did not settle");
    }

    fn handle_ready(&mut self, node: NodeId, group: GroupId, rd: Ready) {
        let Ready {
            soft_state,
            messages,
            snapshot,
            entries,
            hard_state,
            persisted_messages,
            committed_entries,
            read_states,
        } = rd;
        if let Some(soft) = soft_state {
            self.on_soft_state(node, group, soft);
            let replica = self.replica_mut(node, group);
            if let Some(kv) = replica.kv.as_mut() {
                kv.on_soft_state(soft);
            }
            if let Some(ctl) = replica.ctl.as_mut() {
                ctl.on_soft_state(soft);
            }
            if let Some(skv) = replica.skv.as_mut() {
                skv.on_soft_state(soft);
            }
        }
        for message in messages {
            self.send(message);
        }
        if let Some(first) = entries.first() {
            let prev_term = self.replica(node, group).raw.term_at(first.index - 1);
            let result = self.checker.on_entries(group, &entries, prev_term);
            self.check(result, Some(node), Some(group));
        }
        let must_write = snapshot.is_some()
            || !entries.is_empty()
            || hard_state.is_some()
            || !persisted_messages.is_empty();
        if must_write {
            let report = entries
                .last()
                .map(|e| (e.index, e.term))
                .or(snapshot.as_ref().map(|s| (s.meta.index, s.meta.term)));
            let write = DiskWrite {
                id: 0,
                group,
                snapshot: snapshot.clone(),
                entries,
                hard_state,
                persisted_messages,
                report,
                done_at_us: 0,
            };
            self.submit_write(node, write);
        }
        if let Some(snapshot) = snapshot {
            self.install_snapshot(node, group, &snapshot);
        }
        if !committed_entries.is_empty() {
            self.apply(node, group, &committed_entries);
        }
        let replica = self.replica_mut(node, group);
        if let Some(kv) = replica.kv.as_mut() {
            kv.on_read_states(&read_states);
        }
        if let Some(ctl) = replica.ctl.as_mut() {
            ctl.on_read_states(&read_states);
        }
        if let Some(skv) = replica.skv.as_mut() {
            skv.on_read_states(&read_states);
        }
        for rs in read_states {
            let at_us = self.now_us;
            self.reads.push(ObservedRead {
                group,
                node,
                context: rs.context,
                index: rs.index,
                at_us,
            });
        }
    }

    fn on_soft_state(&mut self, node: NodeId, group: GroupId, soft: SoftState) {
        let kind = TraceKind::Role {
            group,
            node,
            role: soft.role,
            term: soft.term,
            leader: soft.leader,
        };
        self.trace.record(self.now_us, kind);
        if soft.role != Role::Leader {
            return;
        }
        let result = self.checker.on_leader(group, soft.term, node);
        self.check(result, Some(node), Some(group));
        let raw = &(self.nodes[node as usize - 1].replicas[group as usize - 1].as_ref())
            .expect("a leader is a member")
            .raw;
        let result = self.checker.on_become_leader(group, node, soft.term, raw);
        self.check(result, Some(node), Some(group));
    }

    fn submit_write(&mut self, node: NodeId, mut write: DiskWrite) {
        write.id = self.next_write_id;
        self.next_write_id += 1;
        let write_id = write.id;
        // A write with nothing to persist (only messages waiting on earlier writes) is a pure
        // barrier: it costs no I/O of its own, but still completes after the writes before it.
        let has_data =
            write.snapshot.is_some() || !write.entries.is_empty() || write.hard_state.is_some();
        let latency_us = if has_data {
            self.disk_rng.range(
                self.cfg.disk_latency_min_us,
                self.cfg.disk_latency_max_us + 1,
            )
        } else {
            0
        };
        let now_us = self.now_us;
        let n = self.node_mut(node);
        let incarnation = n.incarnation;
        let done_at_us = n.disk.submit(now_us, latency_us, write);
        self.queue.push(
            done_at_us,
            Event::DiskDone {
                node,
                incarnation,
                write_id,
            },
        );
    }

    fn install_snapshot(&mut self, node: NodeId, group: GroupId, snapshot: &Snapshot) {
        let (app, kv_bytes) = match split_snapshot(&snapshot.data) {
            Ok(parts) => parts,
            Err(e) => self.fail(Some(node), Some(group), &format!("installed snapshot: {e}")),
        };
        let index = snapshot.meta.index;
        if let Some(kv) = self.replica_mut(node, group).kv.as_mut() {
            if let Err(e) = kv.on_snapshot(index, &kv_bytes) {
                self.fail(
                    Some(node),
                    Some(group),
                    &format!("installed KV snapshot: {e}"),
                );
            }
        }
        if let Some(ctl) = self.replica_mut(node, group).ctl.as_mut() {
            if let Err(e) = ctl.on_snapshot(index, &kv_bytes) {
                let what = format!("installed controller snapshot: {e}");
                self.fail(Some(node), Some(group), &what);
            }
        }
        if let Some(skv) = self.replica_mut(node, group).skv.as_mut() {
            if let Err(e) = skv.on_snapshot(index, &kv_bytes) {
                let what = format!("installed sharded KV snapshot: {e}");
                self.fail(Some(node), Some(group), &what);
            }
        }
        if app.applied != snapshot.meta.index {
            let what = format!(
                "snapshot meta says index {} but its data is at {}",
                snapshot.meta.index, app.applied
            );
            self.fail(Some(node), Some(group), &what);
        }
        let result = self
            .checker
            .on_snapshot_install(group, node, snapshot.meta, app.chain);
        self.check(result, Some(node), Some(group));
        let replica = self.replica_mut(node, group);
        replica.app = app;
        replica.last_snapshot_index = snapshot.meta.index;
        self.stats.on_snapshot_installed(group, node);
        let kind = TraceKind::SnapshotInstalled {
            group,
            node,
            index: snapshot.meta.index,
        };
        self.trace.record(self.now_us, kind);
    }

    fn apply(&mut self, node: NodeId, group: GroupId, entries: &[Entry]) {
        let frontier = self.checker.max_committed(group);
        let term = self.replica(node, group).raw.term();
        for entry in entries {
            let replica = self.replica_mut(node, group);
            replica.app.apply(entry);
            let chain = replica.app.chain;
            let result = self.checker.on_apply(group, node, term, entry, chain);
            self.check(result, Some(node), Some(group));
        }
        let replica = self.replica_mut(node, group);
        if let Some(kv) = replica.kv.as_mut() {
            kv.on_committed(entries);
        }
        if let Some(ctl) = replica.ctl.as_mut() {
            ctl.on_committed(entries);
        }
        if let Some(skv) = replica.skv.as_mut() {
            skv.on_committed(entries);
        }
        let new_frontier = self.checker.max_committed(group);
        if new_frontier > frontier {
            let kind = TraceKind::Commit {
                group,
                index: new_frontier,
                node,
            };
            self.trace.record(self.now_us, kind);
        }
    }

    /// The application's snapshot policy: once `snapshot_every` entries were applied past the
    /// last snapshot, snapshot the state, make it durable (dropping the entries it covers), and
    /// tell Raft to compact.
    fn maybe_take_snapshot(&mut self, node: NodeId, group: GroupId) {
        let padding_bytes = self.cfg.snapshot_padding_bytes;
        let raft_state_bytes = self.persisted_raft_bytes(node, group);
        let replica = self.replica(node, group);
        let index = replica.app.applied;
        if index <= replica.last_snapshot_index {
            return;
        }
        let every_due = self
            .cfg
            .snapshot_every
            .is_some_and(|every| index >= replica.last_snapshot_index + every.max(1));
        let size_due = replica
            .kv
            .as_ref()
            .is_some_and(|kv| kv.wants_snapshot(raft_state_bytes))
            || (replica.ctl.as_ref()).is_some_and(|ctl| ctl.wants_snapshot(raft_state_bytes))
            || (replica.skv.as_ref()).is_some_and(|skv| skv.wants_snapshot(raft_state_bytes));
        if !every_due && !size_due {
            return;
        }
        let Some(term) = replica.raw.term_at(index) else {
            let what = format!("applied index {index} is not in the log; cannot snapshot");
            self.fail(Some(node), Some(group), &what);
        };
        let data = join_snapshot(
            replica.app.to_snapshot(padding_bytes),
            (replica.kv.as_ref().map(KvServer::snapshot))
                .or_else(|| replica.ctl.as_ref().map(CtlServer::snapshot))
                .or_else(|| replica.skv.as_ref().map(ShardKvServer::snapshot)),
        );
        let snapshot = Snapshot {
            meta: SnapshotMeta { index, term },
            data: data.clone(),
        };
        let result = self.node_mut(node).durable[group as usize - 1].compact(snapshot);
        self.check(result, Some(node), Some(group));
        let replica = self.replica_mut(node, group);
        replica.last_snapshot_index = index;
        if let Err(e) = replica.raw.compact(index, data) {
            self.fail(
                Some(node),
                Some(group),
                &format!("compact({index}) refused: {e:?}"),
            );
        }
        self.stats.on_snapshot_taken(group, node);
        self.trace
            .record(self.now_us, TraceKind::SnapshotTaken { group, node, index });
    }

    // ---- crash and restart ----

    /// Builds a node's members from its durable state and starts its ticks.
    fn boot(&mut self, node: NodeId) {
        let n = &mut self.nodes[node as usize - 1];
        assert!(!n.alive);
        n.incarnation += 1;
        n.alive = true;
        let incarnation = n.incarnation;
        for group in self.cfg.group_ids() {
            if !self.cfg.hosts(node, group) {
                self.nodes[node as usize - 1].replicas.push(None);
                continue;
            }
            let voters = self.cfg.members(group);
            let durable = &self.nodes[node as usize - 1].durable[group as usize - 1];
            let restore = durable.restore();
            let (app, kv_bytes, meta) = match &restore.snapshot {
                None => (AppState::default(), None, SnapshotMeta::default()),
                Some(s) => match split_snapshot(&s.data) {
                    Ok((app, kv_bytes)) => (app, Some(kv_bytes), s.meta),
                    Err(e) => self.fail(Some(node), Some(group), &format!("durable snapshot: {e}")),
                },
            };
            let ctl = self.boot_controller(node, group, kv_bytes.as_ref().map(|b| (meta.index, b)));
            let skv = match ctl {
                Some(_) => None,
                None => self.boot_shardkv(node, group, kv_bytes.as_ref().map(|b| (meta.index, b))),
            };
            let runs_kv = ctl.is_none() && skv.is_none();
            let kv = match (self.cfg.kv.filter(|_| runs_kv), kv_bytes) {
                (None, _) => None,
                (Some(config), None) => Some(KvServer::new(config)),
                (Some(config), Some(bytes)) => {
                    match KvServer::restore(config, meta.index, &bytes) {
                        Ok(kv) => Some(kv),
                        Err(e) => self.fail(
                            Some(node),
                            Some(group),
                            &format!("durable KV snapshot: {e}"),
                        ),
                    }
                }
            };
            let salt = format!("raft n{node} g{group} i{incarnation}");
            let seed = Rng::stream(self.cfg.seed, &salt).next_u64();
            let config = self.cfg.member_config(node, group, voters, seed);
            let raw = match RawNode::new(config, restore) {
                Ok(raw) => raw,
                Err(e) => self.fail(Some(node), Some(group), &format!("RawNode::new: {e}")),
            };
            let result = self.checker.on_restart(group, node, meta, app.chain);
            self.check(result, Some(node), Some(group));
            let replica = Replica {
                raw,
                app,
                kv,
                ctl,
                skv,
                last_snapshot_index: meta.index,
            };
            self.nodes[node as usize - 1].replicas.push(Some(replica));
        }
        let phase_us = self.tick_rng.range(0, self.cfg.tick_us);
        self.queue
            .push(self.now_us + phase_us, Event::Tick { node, incarnation });
        for group in self.cfg.groups_of(node) {
            self.drain(node, group);
        }
    }

    /// Crashes `node`: its members and applications are gone; of its pending disk writes a
    /// seeded random prefix reached the disk (without sending their `persisted_messages`) and
    /// the rest are lost; every message from or to it in flight is dropped on arrival. A node
    /// already down is left as it is.
    pub fn crash(&mut self, node: NodeId) {
        if !self.node(node).alive {
            return;
        }
        let pending = self.node(node).disk.len();
        let reached_disk = self.crash_rng.range(0, pending as u64 + 1) as usize;
        let now_us = self.now_us;
        let kept = self.node_mut(node).disk.crash(now_us, reached_disk);
        for write in &kept {
            self.make_durable(node, write);
        }
        let n = self.node_mut(node);
        n.replicas.clear();
        n.alive = false;
        n.incarnation += 1;
        self.checker.on_crash(node);
        let kind = TraceKind::Crash {
            node,
            writes_kept: reached_disk,
            writes_lost: pending - reached_disk,
        };
        self.trace.record(self.now_us, kind);
    }

    /// Restarts `node` from its durable state, with a fresh seed. A live node is crashed first
    /// (as the lab's restart does).
    pub fn restart(&mut self, node: NodeId) {
        self.crash(node);
        self.trace.record(self.now_us, TraceKind::Restart { node });
        self.boot(node);
    }

    /// Crashes every node (the lab's Shutdown).
    pub fn crash_all(&mut self) {
        for node in self.cfg.node_ids() {
            self.crash(node);
        }
    }

    /// Restarts every crashed node; live nodes are left alone.
    pub fn restart_crashed(&mut self) {
        for node in self.cfg.node_ids() {
            if !self.is_alive(node) {
                self.restart(node);
            }
        }
    }

    /// True unless `node` is crashed.
    pub fn is_alive(&self, node: NodeId) -> bool {
        self.node(node).alive
    }

    /// Disk writes of `node` not yet durable.
    pub fn pending_disk_writes(&self, node: NodeId) -> usize {
        self.node(node).disk.len()
    }

    // ---- inputs ----

    /// Proposes one command through `node`; see [`Cluster::propose_batch`].
    pub fn propose(
        &mut self,
        group: GroupId,
        node: NodeId,
        command: Bytes,
    ) -> Result<Index, ProposeError> {
        self.propose_batch(group, node, vec![command])
    }

    /// Proposes commands through `node` in one call to `RawNode::propose`, and handles the
    /// Readies that follow. A crashed node answers `NotLeader { leader: 0 }`.
    pub fn propose_batch(
        &mut self,
        group: GroupId,
        node: NodeId,
        commands: Vec<Bytes>,
    ) -> Result<Index, ProposeError> {
        if !self.is_alive(node) {
            return Err(ProposeError::NotLeader { leader: 0 });
        }
        let result = self.replica_mut(node, group).raw.propose(commands);
        self.drain(node, group);
        result
    }

    /// Asks `node` for a linearizable read point; the answer, if any, appears in
    /// [`Cluster::reads`]. A crashed node answers `NoLeader`.
    pub fn read_index(
        &mut self,
        group: GroupId,
        node: NodeId,
        context: Bytes,
    ) -> Result<(), ReadError> {
        if !self.is_alive(node) {
            return Err(ReadError::NoLeader);
        }
        let result = self.replica_mut(node, group).raw.read_index(context);
        self.drain(node, group);
        result
    }

    /// Every ReadState that came out of a Ready so far, in order.
    pub fn reads(&self) -> &[ObservedRead] {
        &self.reads
    }

    /// Asks `node` (the leader) to hand leadership of `group` to `to`.
    pub fn transfer_leader(
        &mut self,
        group: GroupId,
        node: NodeId,
        to: NodeId,
    ) -> Result<(), ProposeError> {
        if !self.is_alive(node) {
            return Err(ProposeError::NotLeader { leader: 0 });
        }
        let result = self.replica_mut(node, group).raw.transfer_leader(to);
        self.drain(node, group);
        result
    }

    // ---- network ----

    /// Switches the lab's unreliable mode.
    pub fn set_unreliable(&mut self, on: bool) {
        if self.net.is_unreliable() != on {
            self.net.set_unreliable(on);
            self.trace.record(self.now_us, TraceKind::Unreliable { on });
        }
    }

    /// Switches long reordering of responses.
    pub fn set_long_reordering(&mut self, on: bool) {
        if self.net.is_long_reordering() != on {
            self.net.set_long_reordering(on);
            self.trace
                .record(self.now_us, TraceKind::LongReordering { on });
        }
    }

    /// Cuts `node` off from every other node (the lab's DisconnectAll).
    pub fn disconnect(&mut self, node: NodeId) {
        self.net.disconnect(node);
        self.trace
            .record(self.now_us, TraceKind::Disconnect { node });
    }

    /// Reconnects `node` (the lab's ConnectOne).
    pub fn connect(&mut self, node: NodeId) {
        self.net.connect(node);
        self.trace.record(self.now_us, TraceKind::Connect { node });
    }

    /// Cuts one group's traffic to and from `node`; its other groups still talk.
    pub fn disconnect_in_group(&mut self, group: GroupId, node: NodeId) {
        self.net.disconnect_in_group(group, node);
        self.trace.record(
            self.now_us,
            TraceKind::GroupCut {
                group,
                node,
                cut: true,
            },
        );
    }

    /// Undoes [`Cluster::disconnect_in_group`].
    pub fn connect_in_group(&mut self, group: GroupId, node: NodeId) {
        self.net.connect_in_group(group, node);
        self.trace.record(
            self.now_us,
            TraceKind::GroupCut {
                group,
                node,
                cut: false,
            },
        );
    }

    /// Splits the network into sides; a node listed nowhere is alone.
    pub fn partition(&mut self, sides: &[&[NodeId]]) {
        self.net.partition(sides);
        let sides = self.net.partition_sides();
        self.trace
            .record(self.now_us, TraceKind::Partition { sides });
    }

    /// Makes the network whole: no partition, no disconnected node, no group cut.
    pub fn heal(&mut self) {
        self.net.heal();
        self.trace.record(self.now_us, TraceKind::Heal);
    }

    /// True unless `node` is disconnected (the lab's notion of connected).
    pub fn is_connected(&self, node: NodeId) -> bool {
        self.net.is_connected(node)
    }

    /// The network, for its switches and cuts.
    pub fn network(&self) -> &Network {
        &self.net
    }

    // ---- observation ----

    /// The Raft member of `node` in `group`, unless crashed.
    pub fn raw(&self, node: NodeId, group: GroupId) -> Option<&RawNode> {
        self.node(node)
            .replicas
            .get(group as usize - 1)
            .and_then(Option::as_ref)
            .map(|r| &r.raw)
    }

    /// The application state of `node` in `group`, unless crashed.
    pub fn app(&self, node: NodeId, group: GroupId) -> Option<AppState> {
        self.node(node)
            .replicas
            .get(group as usize - 1)
            .and_then(Option::as_ref)
            .map(|r| r.app)
    }

    /// The role of `node` in `group`, unless crashed.
    pub fn role(&self, node: NodeId, group: GroupId) -> Option<Role> {
        self.raw(node, group).map(RawNode::role)
    }

    /// The term of `node` in `group`, unless crashed.
    pub fn term(&self, node: NodeId, group: GroupId) -> Option<Term> {
        self.raw(node, group).map(RawNode::term)
    }

    /// True when `node` is alive and leads `group`.
    pub fn is_leader(&self, node: NodeId, group: GroupId) -> bool {
        self.raw(node, group).is_some_and(RawNode::is_leader)
    }

    /// The live node that leads `group` in the highest term, if any.
    pub fn leader(&self, group: GroupId) -> Option<NodeId> {
        self.cfg
            .node_ids()
            .filter(|&n| self.is_leader(n, group))
            .max_by_key(|&n| self.term(n, group))
    }

    /// The applied index of `node`'s application in `group`, unless crashed.
    pub fn applied_index(&self, node: NodeId, group: GroupId) -> Option<Index> {
        self.app(node, group).map(|a| a.applied)
    }

    /// The entry committed at `index` in `group`, as first applied anywhere.
    pub fn committed(&self, group: GroupId, index: Index) -> Option<&CommittedEntry> {
        self.checker.committed(group, index)
    }

    /// The highest index applied anywhere in `group`.
    pub fn max_committed(&self, group: GroupId) -> Index {
        self.checker.max_committed(group)
    }

    /// The lab's RaftStateSize of `node` in `group`: durable hard state and entries, in bytes.
    pub fn persisted_raft_bytes(&self, node: NodeId, group: GroupId) -> usize {
        self.node(node).durable[group as usize - 1].raft_bytes()
    }

    /// The largest [`Cluster::persisted_raft_bytes`] over all nodes (the lab's LogSize).
    pub fn max_persisted_raft_bytes(&self, group: GroupId) -> usize {
        self.cfg
            .node_ids()
            .map(|n| self.persisted_raft_bytes(n, group))
            .max()
            .unwrap_or(0)
    }

    /// Size of the durable snapshot of `node` in `group`.
    pub fn snapshot_bytes(&self, node: NodeId, group: GroupId) -> usize {
        self.node(node).durable[group as usize - 1].snapshot_bytes()
    }

    /// The durable state of `node` in `group`.
    pub fn durable(&self, node: NodeId, group: GroupId) -> &Durable {
        &self.node(node).durable[group as usize - 1]
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The kept trace events, oldest first.
    pub fn trace(&self) -> impl Iterator<Item = &TraceEvent> {
        self.trace.events()
    }

    /// Removes and returns the kept trace events.
    pub fn take_trace(&mut self) -> Vec<TraceEvent> {
        self.trace.take()
    }

    // ---- helpers ----

    fn node(&self, node: NodeId) -> &SimNode {
        &self.nodes[node as usize - 1]
    }

    fn node_mut(&mut self, node: NodeId) -> &mut SimNode {
        &mut self.nodes[node as usize - 1]
    }

    fn replica(&self, node: NodeId, group: GroupId) -> &Replica {
        self.nodes[node as usize - 1].replicas[group as usize - 1]
            .as_ref()
            .expect("the node hosts the group")
    }

    fn replica_mut(&mut self, node: NodeId, group: GroupId) -> &mut Replica {
        self.nodes[node as usize - 1].replicas[group as usize - 1]
            .as_mut()
            .expect("the node hosts the group")
    }

    fn check(&self, result: Result<(), String>, node: Option<NodeId>, group: Option<GroupId>) {
        if let Err(what) = result {
            self.fail(node, group, &what);
        }
    }

    /// Stops the run with everything needed to replay and understand it.
    pub(crate) fn fail(&self, node: Option<NodeId>, group: Option<GroupId>, what: &str) -> ! {
        let node = node.map_or("-".to_string(), |n| format!("n{n}"));
        let group = group.map_or("-".to_string(), |g| format!("g{g}"));
        // A full trace was asked for to debug this seed: show all of it.
        let lines = match self.cfg.trace {
            TraceMode::Full => usize::MAX,
            TraceMode::Tail(_) => FAILURE_TRACE_LINES,
        };
        panic!(
            "{what}\n  SEED={} at {:.6}s node {node} group {group}\n  trace:\n{}",
            self.cfg.seed,
            self.now_us as f64 / 1e6,
            self.trace.tail(lines)
        );
    }
}

/// A snapshot's bytes: the chain-hash application's, then the KV store's (when it runs).
fn join_snapshot(app: Bytes, kv: Option<Bytes>) -> Bytes {
    match kv {
        None => app,
        Some(kv) => {
            let mut joined = Vec::with_capacity(app.len() + kv.len());
            joined.extend_from_slice(&app);
            joined.extend_from_slice(&kv);
            Bytes::from(joined)
        }
    }
}

/// Splits [`join_snapshot`]'s bytes into the application state and the KV store's bytes.
fn split_snapshot(data: &Bytes) -> Result<(AppState, Bytes), String> {
    let app_len = AppState::snapshot_len(data).ok_or("snapshot too short for its header")?;
    let app = AppState::from_snapshot(&data[..app_len])?;
    Ok((app, data.slice(app_len..)))
}

#[cfg(test)]
impl Cluster {
    /// A disk that forgets everything: the mutation the invariant tests use to prove that a
    /// broken durability contract is caught.
    fn wipe_durable(&mut self, node: NodeId) {
        let groups = self.cfg.groups;
        self.node_mut(node).durable = vec![Durable::default(); groups];
    }

    /// Messages in flight from or to `node`.
    fn in_flight(&self, node: NodeId) -> usize {
        let touches = |e: &Event| match e {
            Event::Deliver { message, .. } => message.from == node || message.to == node,
            _ => false,
        };
        self.queue.iter().filter(|e| touches(e)).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::NodeId;
    use std::panic::{catch_unwind, AssertUnwindSafe};

    fn fingerprint(seed: u64) -> (u64, u64, u64, Vec<String>, Vec<Option<AppState>>) {
        let mut cfg = SimConfig::new(seed, 3);
        cfg.unreliable = true;
        cfg.trace = TraceMode::Full;
        let mut c = Cluster::new(cfg);
        for i in 0..40u64 {
            c.run_for(50);
            for node in 1..=3 {
                let _ = c.propose(1, node, Bytes::from(i.to_le_bytes().to_vec()));
            }
            if i == 20 {
                c.crash(2);
            }
            if i == 30 {
                c.restart(2);
            }
        }
        let trace = c.trace().map(|e| e.to_string()).collect();
        let apps = (1..=3).map(|n| c.app(n, 1)).collect();
        (
            c.stats().events,
            c.stats().total_messages(),
            c.stats().dropped,
            trace,
            apps,
        )
    }

    /// One seed, one run: two clusters built from the same seed go through the same events,
    /// messages, trace and final states.
    #[test]
    fn runs_are_deterministic() {
        assert_eq!(fingerprint(5), fingerprint(5));
    }

    /// Ticks keep coming at the configured period, crash stops a node's ticks and restart
    /// resumes them, and time only moves forward.
    #[test]
    fn ticks_crash_and_restart() {
        let mut c = Cluster::new(SimConfig::new(1, 3));
        c.run_for(1_000);
        assert_eq!(c.now_ms(), 1_000);
        // 3 nodes x 100 ticks per second, one phase each.
        let events = c.stats().events;
        assert!((290..=400).contains(&events), "{events} events in 1 s");
        c.crash(1);
        assert!(!c.is_alive(1) && c.raw(1, 1).is_none() && c.app(1, 1).is_none());
        assert_eq!(
            c.propose(1, 1, Bytes::from_static(b"x")),
            Err(ProposeError::NotLeader { leader: 0 })
        );
        c.run_for(1_000);
        c.restart(1);
        assert!(c.is_alive(1) && c.raw(1, 1).is_some());
        // It re-applies what its durable log says is committed, from index 1 on.
        assert!(c.app(1, 1).is_some_and(|a| a.applied <= c.max_committed(1)));
        c.run_until(|c| c.now_ms() >= 2_500, 10_000);
        assert_eq!(c.now_ms(), 2_500);
        let lines: Vec<String> = c.trace().map(|e| e.to_string()).collect();
        assert!(lines
            .iter()
            .any(|l| l.ends_with("n1 crash (0 pending writes reached disk, 0 lost)")));
        assert!(lines.iter().any(|l| l.ends_with("n1 restart")));
    }

    /// A cluster with every node down still lets time pass.
    #[test]
    fn time_passes_with_every_node_down() {
        let mut c = Cluster::new(SimConfig::new(2, 3));
        c.crash_all();
        c.run_for(500);
        assert_eq!(c.now_ms(), 500);
        c.restart_crashed();
        assert!((1..=3).all(|n| c.is_alive(n)));
    }

    /// Crash semantics: every message in flight from or to a crashed incarnation is dropped on
    /// arrival, even when the node is back by then. On a reliable, whole network those are
    /// the only drops, so the count is exact.
    #[test]
    fn messages_of_a_dead_incarnation_are_dropped() {
        let mut cfg = SimConfig::new(3, 3);
        // Responses stay in flight for up to 2.2 s, so plenty are pending at the crash.
        cfg.long_reordering = true;
        let mut c = Cluster::new(cfg);
        let leader = c.check_one_leader(1);
        c.run_for(2_000);
        let in_flight = c.in_flight(leader);
        assert!(in_flight > 0);
        let dropped = c.stats().dropped;
        c.restart(leader);
        c.run_for(3_000);
        assert_eq!(c.stats().dropped - dropped, in_flight as u64);
    }

    /// Connectivity is checked again on arrival: messages in flight to a node when it is cut
    /// off are dropped, and it receives nothing until it is reconnected.
    #[test]
    fn a_cut_drops_messages_already_in_flight() {
        let mut cfg = SimConfig::new(4, 3);
        // Responses to the leader stay in flight for up to 2.2 s.
        cfg.long_reordering = true;
        let mut c = Cluster::new(cfg);
        let leader = c.check_one_leader(1);
        c.run_for(1_000);
        assert!(c.in_flight(leader) > 0);
        let received = c.stats().delivered_to[&leader];
        c.disconnect(leader);
        c.run_for(3_000);
        assert_eq!(c.stats().delivered_to[&leader], received);
        c.connect(leader);
        c.run_for(1_000);
        assert!(c.stats().delivered_to[&leader] > received);
    }

    /// The invariants are not vacuous: a node whose disk forgets everything after
    /// acknowledging entries lets a stale node win an election without committed entries,
    /// and the run stops at that election with a leader completeness violation.
    #[test]
    fn a_forgetful_disk_is_caught() {
        for seed in 1..=5 {
            let mut c = Cluster::new(SimConfig::new(seed, 3));
            let leader = c.check_one_leader(1);
            let (follower, stale): (NodeId, NodeId) = (leader % 3 + 1, (leader + 1) % 3 + 1);
            c.disconnect(stale);
            for x in 0..5u64 {
                c.one(1, Bytes::from(x.to_le_bytes().to_vec()), 2, false);
            }
            c.crash(follower);
            c.wipe_durable(follower);
            c.restart(follower);
            c.disconnect(leader);
            c.connect(stale);
            let outcome = catch_unwind(AssertUnwindSafe(|| c.run_for(5_000)));
            let panic = outcome.expect_err("the forgetful disk went unnoticed");
            let message = panic.downcast_ref::<String>().expect("a formatted panic");
            assert!(message.contains("leader completeness"), "{message}");
            assert!(message.contains(&format!("SEED={seed}")), "{message}");
        }
    }
}
