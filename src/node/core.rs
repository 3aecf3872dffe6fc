//! One core's share of a node, as a pure state machine: the groups this core owns, their
//! Readies turned into one write batch for the core's log, messages for the peers and replies
//! for the clients.
//!
//! Each group runs one hosted service on top of its Raft log ([`Service`]): a KV replica, the
//! shard controller's replica for [`CONTROLLER_GROUP`], or (on a sharded node,
//! [`CoreConfig::sharded`]) a shard group's replica. Raft, the log, snapshots and the write
//! batch are the same for every service; only requests, replies and the state machine differ.
//!
//! Shard groups also talk to each other: a shard group's leader asks the controller for the next
//! configuration and other groups for shards ([`crate::shardkv::inquiry`]). Those questions
//! come out of [`CoreNode::tick`] as [`Output::inquiries`]; the caller carries each to the core
//! that hosts the target group (on this node: every node hosts every group), which answers it
//! from its local replica's applied state with [`CoreNode::answer_inquiry`], and hands the
//! answer back to the asking group's core with [`CoreNode::on_inquiry_answer`]. No Raft round
//! is needed to answer; a replica that has not applied far enough says "not yet", and the
//! asker asks again at its next poll, so a lost inquiry or answer costs one poll. A leader also
//! asks as soon as an applied entry lets it take the next migration step (the next part of a
//! shard it pulls): those inquiries come out of [`CoreNode::take_output`] too.
//!
//! Inputs: [`CoreNode::tick`], [`CoreNode::step`] (a peer's Raft message),
//! [`CoreNode::on_hosted_request`] (a client request for one of this core's groups, of its
//! service's kind; [`CoreNode::on_request`] for a KV one) and [`CoreNode::persisted`] (a write
//! batch became durable). After any inputs, the caller takes
//! [`CoreNode::take_output`] and carries it out:
//!
//! 1. send `messages` (Appends leave before the leader's own copy is durable: thesis §10.2.1);
//! 2. write `batch` (if any) to the log, in the order batches were taken, and report each with
//!    [`CoreNode::persisted`] once it is durable; the messages that promise durable state are
//!    held here until then and come out of a later `take_output`;
//! 3. send `replies` to the clients;
//! 4. carry `inquiries` to their targets' cores (see above);
//! 5. then, once the write is submitted and the messages are on their way, call
//!    [`CoreNode::apply_committed`]: `take_output` hands committed entries to the state
//!    machines no sooner, so that applying them never delays a write or an Append (a follower
//!    learns of new entries and of the commit of older ones from the same Append). What
//!    applying answers comes out of the next `take_output`.
//!
//! Every group's Readies of one `take_output` go into the same batch, so one fdatasync covers
//! all the groups of a core (group commit). Nothing here awaits, reads a clock or touches a file:
//! time arrives as `now_ms` arguments and ticks, and the runtime glue (`node::server`) owns the
//! sockets and the disk.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use shardcore_storage::{HardState as WalHardState, LogRecord, WalEntry};

use super::placement::CONTROLLER_GROUP;
use crate::kv::{KvError, KvServer, KvServerConfig, ReplyTo, Request, Response};
use crate::raft::{
    Config, Entry, EntryKind, GroupId, HardState, Index, Message, NodeId, RawNode, Ready, Restore,
    Role, Snapshot, SnapshotMeta, Term,
};
use crate::shardctl::{CtlError, CtlRequest, CtlResponse, CtlServer, CtlSettings, ShardId};
use crate::shardkv::command::{part_entry_bytes, MAX_SHARD_PART_BYTES};
use crate::shardkv::{
    answer_config_inquiry, Answer, Inquiry, Outbound, PullAnswer, ShardKvError, ShardKvServer,
    ShardKvServerConfig, ShardKvSettings, ShardResponse, Target,
};

/// At most this many Readies are handled per group per `take_output`; a group that still has
/// one is handled again on the next call. Bounds the work of one turn of the core's loop.
const MAX_READIES_PER_TURN: usize = 8;

/// A generous allowance for a log record's or an entry's header bytes, in the batch size
/// estimates ([`WriteBatch::approx_log_bytes`]).
const RECORD_OVERHEAD_BYTES: usize = 64;

/// What one group needs to start: its durable state as recovery found it.
#[derive(Clone, Debug, Default)]
pub struct GroupBoot {
    /// The group.
    pub group: GroupId,
    /// The last durable hard state.
    pub hard_state: HardState,
    /// The group's latest durable snapshot, if any (its data is the group's service's snapshot).
    pub snapshot: Option<Snapshot>,
    /// The durable entries after the snapshot, contiguous.
    pub entries: Vec<Entry>,
}

/// A snapshot to write to the core's snapshot store before the batch's log records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotWrite {
    /// The group.
    pub group: GroupId,
    /// The snapshot (its data is the group's service's snapshot).
    pub snapshot: Snapshot,
    /// The snapshot came from the leader and replaces the group's log (the batch truncates the
    /// log after it): nothing of the group may be logged before the file is durable. A snapshot
    /// the replica took itself only lets the log drop entries it covers: just its `Compact`
    /// record must wait for the file.
    pub replaces_log: bool,
}

/// One write for the core's log, covering every group that had something to persist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteBatch {
    /// Batches complete in ticket order; [`CoreNode::persisted`] names the last one done.
    pub ticket: u64,
    /// Snapshots to make durable first (each before the records of its group below).
    pub snapshots: Vec<SnapshotWrite>,
    /// The log records, in the order they must take effect.
    pub records: Vec<LogRecord>,
}

impl WriteBatch {
    /// True when the batch writes nothing (it only orders messages behind earlier batches).
    pub fn is_empty(&self) -> bool {
        self.snapshots.is_empty() && self.records.is_empty()
    }

    /// About how many bytes the records take in the log (entries' data plus a generous
    /// allowance per record and entry for headers); snapshots go to their own files and do not
    /// count. The log writer bounds how many batches it merges into one WAL write by this, as
    /// the WAL refuses a write larger than a segment.
    pub fn approx_log_bytes(&self) -> usize {
        self.records.iter().map(approx_record_bytes).sum()
    }
}

/// About how many bytes one record takes in the log (see [`WriteBatch::approx_log_bytes`]).
pub fn approx_record_bytes(record: &LogRecord) -> usize {
    match record {
        LogRecord::Entries { entries, .. } => entries.iter().map(approx_entry_bytes).sum(),
        _ => RECORD_OVERHEAD_BYTES,
    }
}

/// About how many bytes one entry takes in the log.
pub fn approx_entry_bytes(entry: &WalEntry) -> usize {
    entry.data.len() + RECORD_OVERHEAD_BYTES
}

/// What the caller must do after inputs (see the module docs for the order).
#[derive(Debug, Default)]
pub struct Output {
    /// Raft messages to send now.
    pub messages: Vec<Message>,
    /// The write for the core's log, if anything must be persisted or ordered.
    pub batch: Option<WriteBatch>,
    /// Client replies, each of its service's kind.
    pub replies: Vec<(ReplyTo, HostedResponse)>,
    /// Shard groups' inquiries to carry to the core hosting their target (module docs).
    pub inquiries: Vec<Outbound>,
    /// Shard parts this core refused because they are too large to go through the log (each
    /// reported once); the migration of that shard cannot finish.
    pub refused_transfers: Vec<RefusedTransfer>,
}

impl Output {
    /// True when there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
            && self.batch.is_none()
            && self.replies.is_empty()
            && self.inquiries.is_empty()
            && self.refused_transfers.is_empty()
    }
}

/// A shard part too large to travel as one `InstallPart` entry: the Raft core refuses an entry
/// over `max_entry_bytes`, and the WAL refuses a batch larger than a segment, which would stop
/// the node. Shards move in parts cut to fit ([`ShardedHosting::server`]'s `part_bytes`), so
/// only a part that cannot be cut smaller makes one: a single key and value, or a shard's
/// session table, larger than an entry may hold. The node refuses it first and says so; that
/// shard stays with its old owner, frozen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefusedTransfer {
    /// The group that would install it (`Side::Install`) or was asked for it (`Side::Answer`).
    pub group: GroupId,
    /// Which side noticed.
    pub side: TransferSide,
    /// The shard.
    pub shard: ShardId,
    /// The configuration it moves in.
    pub config: u64,
    /// The size of the part's entry.
    pub bytes: usize,
    /// The node's limit ([`ShardedHosting::max_install_bytes`]).
    pub limit: usize,
}

/// Where an oversized transfer was noticed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TransferSide {
    /// The old owner's replica, asked for a part: the part it made is over the limit, so it
    /// does not hand it over (the asker could not log it).
    Answer,
    /// The new owner's leader, handed a part: its entry would be too large.
    Install,
}

/// How one core runs its groups.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    /// This node.
    pub node: NodeId,
    /// Every node of the cluster (the voters of every group).
    pub voters: Vec<NodeId>,
    /// The Raft settings every group starts from (`id`, `group`, `voters` and `seed` are set
    /// per group).
    pub raft: Config,
    /// Every replica's bounds (KV and controller alike: the same snapshot policy).
    pub kv: KvServerConfig,
    /// What an empty controller is made from (its shard count, which shard groups share);
    /// the controller runs only on the core that hosts [`CONTROLLER_GROUP`].
    pub ctl: CtlSettings,
    /// `Some` on a sharded node: every group but the controller's runs the sharded KV.
    pub sharded: Option<ShardedHosting>,
    /// A turn stops driving more groups once its write batch holds about this many bytes of
    /// log records ([`WriteBatch::approx_log_bytes`]); the rest are driven next turn. The WAL
    /// refuses a write larger than a segment and that refusal stops the node, so the node sets
    /// a quarter of a segment: one more group's Readies (at most one entry of half a segment,
    /// or a turn's worth of small ones) still fit behind it.
    pub max_batch_log_bytes: usize,
    /// Seeds each group's election timer stream.
    pub seed: u64,
}

/// How a sharded node runs its shard groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardedHosting {
    /// Each replica's bounds, poll period and part size (its `part_bytes` leaves room under
    /// `max_install_bytes` for a part's entry header and cursor key).
    pub server: ShardKvServerConfig,
    /// The largest shard part entry a group may install: at most the Raft core's
    /// `max_entry_bytes`, [`MAX_SHARD_PART_BYTES`], and half a WAL segment (the WAL refuses a
    /// batch larger than a segment, and that refusal stops the node).
    pub max_install_bytes: usize,
}

impl CoreConfig {
    /// The service `group` runs. The controller's group is reserved; every other group is KV,
    /// or a shard group on a sharded node (the whole node is one or the other: its groups
    /// `1..=groups` all run the same service).
    pub fn service_of(&self, group: GroupId) -> ServiceKind {
        if group == CONTROLLER_GROUP {
            ServiceKind::Ctl
        } else if self.sharded.is_some() {
            ServiceKind::ShardKv
        } else {
            ServiceKind::Kv
        }
    }
}

/// Which service a group runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceKind {
    /// The KV store.
    Kv,
    /// The shard controller.
    Ctl,
    /// A shard group of the sharded KV.
    ShardKv,
}

/// The replica of one hosted service: the generic [`crate::kv::ReplicaServer`] around that
/// service's store. A new service is one more variant here, in [`HostedRequest`] and
/// [`HostedResponse`], and one arm in `each_service!`.
pub enum Service {
    /// A KV group's replica.
    Kv(KvServer),
    /// The shard controller's replica.
    Ctl(CtlServer),
    /// A shard group's replica (requests, and the leader's migration driver).
    ShardKv(ShardKvServer),
}

/// A client request for one hosted service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostedRequest {
    /// For a KV group.
    Kv(Request),
    /// For the controller's group.
    Ctl(CtlRequest),
    /// For a shard group: the KV request shape (the session id is the client's own).
    ShardKv(Request),
}

/// A hosted service's answer, of the request's kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostedResponse {
    /// A KV group's answer.
    Kv(Response),
    /// The controller's answer.
    Ctl(CtlResponse),
    /// A shard group's answer.
    ShardKv(ShardResponse),
}

impl HostedResponse {
    /// The KV response, if it is one (tests and KV-only callers).
    pub fn into_kv(self) -> Option<Response> {
        match self {
            HostedResponse::Kv(response) => Some(response),
            HostedResponse::Ctl(_) | HostedResponse::ShardKv(_) => None,
        }
    }

    /// The shard group's response, if it is one.
    pub fn into_shard_kv(self) -> Option<ShardResponse> {
        match self {
            HostedResponse::ShardKv(response) => Some(response),
            HostedResponse::Kv(_) | HostedResponse::Ctl(_) => None,
        }
    }
}

/// Runs the same expression on whichever replica server a [`Service`] holds: every server is a
/// `ReplicaServer<M>`, so the Raft-facing calls are the same code for each `M`.
macro_rules! each_service {
    ($service:expr, $server:ident => $body:expr) => {
        match $service {
            Service::Kv($server) => $body,
            Service::Ctl($server) => $body,
            Service::ShardKv($server) => $body,
        }
    };
}

impl Service {
    /// An empty replica of `kind` for `group`.
    fn new(kind: ServiceKind, config: &CoreConfig, group: GroupId) -> Service {
        match kind {
            ServiceKind::Kv => Service::Kv(KvServer::new(config.kv)),
            ServiceKind::Ctl => Service::Ctl(CtlServer::with_settings(config.kv, config.ctl)),
            ServiceKind::ShardKv => {
                let settings = ShardKvSettings {
                    group,
                    shards: config.ctl.shards,
                };
                Service::ShardKv(ShardKvServer::new(shard_server(config), settings))
            }
        }
    }

    /// A replica of `kind` for `group` restarting from its snapshot at `index`.
    fn restore(
        kind: ServiceKind,
        config: &CoreConfig,
        group: GroupId,
        index: Index,
        data: &Bytes,
    ) -> Result<Service, String> {
        let service = match kind {
            ServiceKind::Kv => {
                Service::Kv(KvServer::restore(config.kv, index, data).map_err(|e| e.to_string())?)
            }
            ServiceKind::Ctl => {
                Service::Ctl(CtlServer::restore(config.kv, index, data).map_err(|e| e.to_string())?)
            }
            ServiceKind::ShardKv => {
                let server = ShardKvServer::restore(shard_server(config), index, data)
                    .map_err(|e| e.to_string())?;
                // The snapshot names its group: one written for another group (a data
                // directory moved between cores or nodes by hand) must not be served as this.
                let held = server.store().group();
                if held != group {
                    return Err(format!("the snapshot is shard group {held}'s"));
                }
                Service::ShardKv(server)
            }
        };
        Ok(service)
    }

    /// The kind of service this is.
    pub fn kind(&self) -> ServiceKind {
        match self {
            Service::Kv(_) => ServiceKind::Kv,
            Service::Ctl(_) => ServiceKind::Ctl,
            Service::ShardKv(_) => ServiceKind::ShardKv,
        }
    }

    fn applied_index(&self) -> Index {
        each_service!(self, s => s.applied_index())
    }

    fn pending_requests(&self) -> usize {
        each_service!(self, s => s.pending_requests())
    }

    fn tick(&mut self) {
        each_service!(self, s => s.tick())
    }

    fn on_soft_state(&mut self, soft: crate::raft::SoftState) {
        each_service!(self, s => s.on_soft_state(soft))
    }

    fn on_snapshot(&mut self, index: Index, data: &Bytes) -> Result<(), String> {
        each_service!(self, s => s.on_snapshot(index, data).map_err(|e| e.to_string()))
    }

    fn on_committed(&mut self, entries: &[Entry]) {
        each_service!(self, s => s.on_committed(entries))
    }

    fn on_read_states(&mut self, read_states: &[crate::raft::ReadState]) {
        each_service!(self, s => s.on_read_states(read_states))
    }

    fn wants_snapshot(&self, log_bytes: usize) -> bool {
        each_service!(self, s => s.wants_snapshot(log_bytes))
    }

    fn snapshot(&self) -> Bytes {
        each_service!(self, s => s.snapshot())
    }

    /// Hands `request` to the replica; a request of another service's kind is answered "not
    /// here" (the node routes by kind, so only a confused client gets that far).
    fn on_request(
        &mut self,
        raw: &mut RawNode,
        now_ms: u64,
        reply_to: ReplyTo,
        request: HostedRequest,
    ) -> Option<(ReplyTo, HostedResponse)> {
        match (self, request) {
            (Service::Kv(s), HostedRequest::Kv(r)) => s.on_request(raw, now_ms, reply_to, r),
            (Service::Ctl(s), HostedRequest::Ctl(r)) => s.on_request(raw, now_ms, reply_to, r),
            (Service::ShardKv(s), HostedRequest::ShardKv(r)) => {
                s.on_request(raw, now_ms, reply_to, r)
            }
            (_, request) => return Some((reply_to, not_here(request))),
        }
        None
    }

    /// Moves the replica's finished answers to `out`.
    fn take_responses(&mut self, out: &mut Vec<(ReplyTo, HostedResponse)>) {
        match self {
            Service::Kv(s) => out.extend(
                s.take_responses()
                    .into_iter()
                    .map(|(to, r)| (to, HostedResponse::Kv(r))),
            ),
            Service::Ctl(s) => out.extend(
                s.take_responses()
                    .into_iter()
                    .map(|(to, r)| (to, HostedResponse::Ctl(r))),
            ),
            Service::ShardKv(s) => out.extend(
                s.take_responses()
                    .into_iter()
                    .map(|(to, r)| (to, HostedResponse::ShardKv(r))),
            ),
        }
    }
}

/// A shard group replica's settings on this core (KV's bounds when the node is not sharded:
/// only tests build one then).
fn shard_server(config: &CoreConfig) -> ShardKvServerConfig {
    config.sharded.map_or(
        ShardKvServerConfig {
            server: config.kv,
            ..ShardKvServerConfig::default()
        },
        |s| s.server,
    )
}

/// The answer to a request for a group this core does not host (or that runs another
/// service): "wrong leader" with no hint, so a client tries elsewhere.
fn not_here(request: HostedRequest) -> HostedResponse {
    match request {
        HostedRequest::Kv(request) => HostedResponse::Kv(Response {
            client: request.client,
            seq: request.seq,
            result: Err(KvError::WrongLeader { leader: 0 }),
            consistency: request.consistency,
        }),
        HostedRequest::Ctl(request) => HostedResponse::Ctl(CtlResponse {
            client: request.client,
            seq: request.seq,
            result: Err(CtlError::WrongLeader { leader: 0 }),
            consistency: request.consistency,
        }),
        HostedRequest::ShardKv(request) => HostedResponse::ShardKv(ShardResponse {
            client: request.client,
            seq: request.seq,
            result: Err(ShardKvError::WrongLeader { leader: 0 }),
            consistency: request.consistency,
        }),
    }
}

/// A write handed out and not yet durable: what to release when it is.
#[derive(Debug)]
struct Inflight {
    ticket: u64,
    /// Per group: the last (index, term) written, to report with `persisted`.
    reports: Vec<(GroupId, Index, Term)>,
    /// Messages that promise what the write records.
    messages: Vec<Message>,
}

struct Replica {
    raw: RawNode,
    service: Service,
    /// Approximate bytes of log held since the last snapshot (entries' data and overhead).
    log_bytes: usize,
    last_snapshot_index: Index,
    /// The storage asked for a snapshot (the group pins the oldest log segment).
    snapshot_requested: bool,
    /// The hard state last put into a write batch (term and vote there are durable or on
    /// their way).
    saved_hard_state: HardState,
    /// A newer hard state that differs from the saved one only in its commit index: written
    /// with the next batch that goes to the log anyway, never a write of its own (see
    /// [`CoreNode::take_output`]).
    unsaved_commit: Option<HardState>,
}

/// The groups of one core. See the module docs.
pub struct CoreNode {
    config: CoreConfig,
    replicas: BTreeMap<GroupId, Replica>,
    /// Groups that may have a Ready.
    dirty: BTreeSet<GroupId>,
    next_ticket: u64,
    inflight: VecDeque<Inflight>,
    out: Output,
    /// The batch being assembled during this turn.
    batch: WriteBatch,
    batch_reports: Vec<(GroupId, Index, Term)>,
    batch_messages: Vec<Message>,
    batch_needed: bool,
    now_ms: u64,
    /// Oversized transfers already reported, so each is reported once.
    refused: BTreeSet<(GroupId, TransferSide, ShardId, u64)>,
    /// Install bytes proposed since the last `take_output`: installs proposed between two
    /// turns land in one write batch, so together they get the budget one may have.
    install_bytes_this_turn: usize,
    /// Installs put off to a later poll by that budget.
    installs_deferred: u64,
    /// About how many bytes of log records the batch being assembled holds.
    batch_log_bytes: usize,
    /// What Raft handed out to apply and [`CoreNode::apply_committed`] has not applied yet, in
    /// the order it was handed out.
    to_apply: Vec<ToApply>,
}

/// One Ready's share for the state machine, held from [`CoreNode::take_output`] until
/// [`CoreNode::apply_committed`].
struct ToApply {
    group: GroupId,
    /// A snapshot from the leader to install first.
    snapshot: Option<Snapshot>,
    /// Committed entries, in order.
    entries: Vec<Entry>,
    read_states: Vec<crate::raft::ReadState>,
}

/// Why a core could not start or go on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CoreError {
    /// A group's durable state is unusable.
    Boot {
        /// The group.
        group: GroupId,
        /// What is wrong.
        reason: String,
    },
}

impl std::fmt::Display for CoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CoreError::Boot { group, reason } => write!(f, "group {group}: {reason}"),
        }
    }
}

impl std::error::Error for CoreError {}

impl CoreNode {
    /// Starts the groups in `boots` (one per group this core owns) from their durable state.
    pub fn new(config: CoreConfig, boots: Vec<GroupBoot>) -> Result<CoreNode, CoreError> {
        let mut replicas = BTreeMap::new();
        for boot in boots {
            let group = boot.group;
            let kind = config.service_of(group);
            let service =
                match &boot.snapshot {
                    None => Service::new(kind, &config, group),
                    Some(s) => Service::restore(kind, &config, group, s.meta.index, &s.data)
                        .map_err(|e| CoreError::Boot {
                            group,
                            reason: format!("snapshot at index {}: {e}", s.meta.index),
                        })?,
                };
            let last_snapshot_index = boot.snapshot.as_ref().map_or(0, |s| s.meta.index);
            let log_bytes = boot.entries.iter().map(Entry::approx_bytes).sum();
            let mut raft = config.raft.clone();
            raft.id = config.node;
            raft.group = group;
            raft.voters = config.voters.clone();
            raft.seed = crate::rng::Rng::stream(config.seed, &format!("group {group}")).next_u64();
            let saved_hard_state = boot.hard_state;
            let restore = Restore {
                hard_state: boot.hard_state,
                snapshot: boot.snapshot,
                entries: boot.entries,
            };
            let raw = RawNode::new(raft, restore).map_err(|e| CoreError::Boot {
                group,
                reason: format!("raft: {e}"),
            })?;
            replicas.insert(
                group,
                Replica {
                    raw,
                    service,
                    log_bytes,
                    last_snapshot_index,
                    snapshot_requested: false,
                    saved_hard_state,
                    unsaved_commit: None,
                },
            );
        }
        let dirty = replicas.keys().copied().collect();
        Ok(CoreNode {
            config,
            replicas,
            dirty,
            next_ticket: 1,
            inflight: VecDeque::new(),
            out: Output::default(),
            batch: WriteBatch {
                ticket: 0,
                snapshots: Vec::new(),
                records: Vec::new(),
            },
            batch_reports: Vec::new(),
            batch_messages: Vec::new(),
            batch_needed: false,
            now_ms: 0,
            refused: BTreeSet::new(),
            install_bytes_this_turn: 0,
            installs_deferred: 0,
            batch_log_bytes: 0,
            to_apply: Vec::new(),
        })
    }

    /// This node's id.
    pub fn node(&self) -> NodeId {
        self.config.node
    }

    /// The groups this core owns, ascending.
    pub fn groups(&self) -> impl Iterator<Item = GroupId> + '_ {
        self.replicas.keys().copied()
    }

    /// True when this core owns `group`.
    pub fn owns(&self, group: GroupId) -> bool {
        self.replicas.contains_key(&group)
    }

    /// The group's current leader as this replica knows it (0: unknown), or `None` when the
    /// group is not on this core.
    pub fn leader(&self, group: GroupId) -> Option<NodeId> {
        self.replicas.get(&group).map(|r| r.raw.leader())
    }

    /// The group's role here.
    pub fn role(&self, group: GroupId) -> Option<Role> {
        self.replicas.get(&group).map(|r| r.raw.role())
    }

    /// The group's applied index here.
    pub fn applied_index(&self, group: GroupId) -> Option<Index> {
        self.replicas.get(&group).map(|r| r.service.applied_index())
    }

    /// The service the group runs here, or `None` when the group is not on this core.
    pub fn service(&self, group: GroupId) -> Option<&Service> {
        self.replicas.get(&group).map(|r| &r.service)
    }

    /// Requests waiting for an answer, over all groups.
    pub fn pending_requests(&self) -> usize {
        self.replicas
            .values()
            .map(|r| r.service.pending_requests())
            .sum()
    }

    /// Shard parts put off to the leader's next poll because other parts had taken this turn's
    /// budget (one write batch holds at most `max_install_bytes` of them).
    pub fn installs_deferred(&self) -> u64 {
        self.installs_deferred
    }

    /// Write batches handed out and not yet durable.
    pub fn inflight_batches(&self) -> usize {
        self.inflight.len()
    }

    /// One tick of every group; `now_ms` is the node's clock (stamped into writes). A shard
    /// group's leader polls on some ticks: its inquiries go to [`Output::inquiries`].
    pub fn tick(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        for (group, replica) in &mut self.replicas {
            replica.raw.tick();
            replica.service.tick();
            if let Service::ShardKv(server) = &mut replica.service {
                self.out.inquiries.extend(server.take_outbound());
            }
            self.dirty.insert(*group);
        }
    }

    /// The group an inquiry is for: the controller's, or a shard group.
    pub fn target_group(target: Target) -> GroupId {
        match target {
            Target::Controller => CONTROLLER_GROUP,
            Target::Group(group) => group,
        }
    }

    /// This core's replica of `group` answers `inquiry` from its applied state: the controller
    /// with the configuration asked for, a shard group about a shard. `None` when the group is
    /// not here, runs a service the inquiry is not for, or (the old owner) made a part too
    /// large to be logged (reported once in [`Output::refused_transfers`]).
    pub fn answer_inquiry(&mut self, group: GroupId, inquiry: &Inquiry) -> Option<Answer> {
        let replica = self.replicas.get(&group)?;
        let answer = match &replica.service {
            Service::Ctl(server) => answer_config_inquiry(server.store(), inquiry),
            Service::ShardKv(server) => server.answer_inquiry(inquiry),
            Service::Kv(_) => None,
        }?;
        if let Some((shard, config, bytes)) = part_size(&answer) {
            let limit = self.max_install_bytes();
            if bytes > limit {
                // Only a part that cannot be cut smaller gets here (see `RefusedTransfer`): the
                // asker could not log it.
                self.refuse_transfer(group, TransferSide::Answer, shard, config, bytes, limit);
                return None;
            }
        }
        Some(answer)
    }

    /// An answer to an inquiry `group` made: its leader may propose the next migration step
    /// (a part larger than the node can log is refused and reported instead).
    pub fn on_inquiry_answer(&mut self, group: GroupId, answer: Answer) {
        if let Some((shard, config, bytes)) = part_size(&answer) {
            let limit = self.max_install_bytes();
            if bytes > limit && self.owns(group) {
                self.refuse_transfer(group, TransferSide::Install, shard, config, bytes, limit);
                return;
            }
            if self.install_bytes_this_turn + bytes > limit {
                // Parts of several shards arriving at once would make one write batch of all
                // their entries, larger than a WAL segment may take: this one waits for the
                // leader's next poll (its inquiry is asked again then: dropping one costs one
                // poll).
                self.installs_deferred += 1;
                return;
            }
            self.install_bytes_this_turn += bytes;
        }
        let Some(replica) = self.replicas.get_mut(&group) else {
            return;
        };
        let Service::ShardKv(server) = &mut replica.service else {
            return;
        };
        server.on_answer(&mut replica.raw, answer);
        self.dirty.insert(group);
    }

    fn max_install_bytes(&self) -> usize {
        self.config
            .sharded
            .map_or(MAX_SHARD_PART_BYTES, |s| s.max_install_bytes)
    }

    fn refuse_transfer(
        &mut self,
        group: GroupId,
        side: TransferSide,
        shard: ShardId,
        config: u64,
        bytes: usize,
        limit: usize,
    ) {
        if self.refused.insert((group, side, shard, config)) {
            self.out.refused_transfers.push(RefusedTransfer {
                group,
                side,
                shard,
                config,
                bytes,
                limit,
            });
        }
    }

    /// A Raft message from a peer. Messages for groups this core does not own are dropped
    /// (the caller routes by placement; a stale route after a restart with other cores is the
    /// only way here).
    pub fn step(&mut self, message: Message) {
        let group = message.group;
        let Some(replica) = self.replicas.get_mut(&group) else {
            return;
        };
        // A refused message (stale, malformed for this state) is like a lost one: Raft recovers.
        let _ = replica.raw.step(message);
        self.dirty.insert(group);
    }

    /// A KV client request for `group` (see [`CoreNode::on_hosted_request`]).
    pub fn on_request(&mut self, group: GroupId, reply_to: ReplyTo, request: Request) {
        self.on_hosted_request(group, reply_to, HostedRequest::Kv(request));
    }

    /// A client request for `group`, of any hosted service. Answered `WrongLeader` with no
    /// hint when the group is not here or runs another service.
    pub fn on_hosted_request(&mut self, group: GroupId, reply_to: ReplyTo, request: HostedRequest) {
        let Some(replica) = self.replicas.get_mut(&group) else {
            self.out.replies.push((reply_to, not_here(request)));
            return;
        };
        let now_ms = self.now_ms;
        if let Some(refused) =
            replica
                .service
                .on_request(&mut replica.raw, now_ms, reply_to, request)
        {
            self.out.replies.push(refused);
        }
        self.dirty.insert(group);
        replica.service.take_responses(&mut self.out.replies);
    }

    /// The storage asks `group` to snapshot (it pins the oldest log segment).
    pub fn request_snapshot(&mut self, group: GroupId) {
        if let Some(replica) = self.replicas.get_mut(&group) {
            replica.snapshot_requested = true;
            self.dirty.insert(group);
        }
    }

    /// Every batch up to and including `ticket` is durable.
    pub fn persisted(&mut self, ticket: u64) {
        while self.inflight.front().is_some_and(|w| w.ticket <= ticket) {
            let Some(done) = self.inflight.pop_front() else {
                break;
            };
            for (group, index, term) in done.reports {
                if let Some(replica) = self.replicas.get_mut(&group) {
                    replica.raw.persisted(index, term);
                    self.dirty.insert(group);
                }
            }
            self.out.messages.extend(done.messages);
        }
    }

    /// Handles the Readies of every group that may have one and returns what to do.
    pub fn take_output(&mut self) -> Output {
        self.install_bytes_this_turn = 0;
        let dirty = std::mem::take(&mut self.dirty);
        for group in dirty {
            if self.batch_log_bytes >= self.config.max_batch_log_bytes {
                // The batch is full: this group is driven next turn, into the next batch.
                self.dirty.insert(group);
                continue;
            }
            self.drive(group);
        }
        if self.batch_needed {
            // Commit indexes not yet written ride along with this write.
            for (&group, replica) in &mut self.replicas {
                if let Some(hs) = replica.unsaved_commit.take() {
                    replica.saved_hard_state = hs;
                    self.batch.records.push(hard_state_record(group, hs));
                }
            }
            self.batch_log_bytes = 0;
            let ticket = self.next_ticket;
            self.next_ticket += 1;
            let mut batch = std::mem::replace(
                &mut self.batch,
                WriteBatch {
                    ticket: 0,
                    snapshots: Vec::new(),
                    records: Vec::new(),
                },
            );
            batch.ticket = ticket;
            self.inflight.push_back(Inflight {
                ticket,
                reports: std::mem::take(&mut self.batch_reports),
                messages: std::mem::take(&mut self.batch_messages),
            });
            self.batch_needed = false;
            self.out.batch = Some(batch);
        }
        std::mem::take(&mut self.out)
    }

    fn drive(&mut self, group: GroupId) {
        for _ in 0..MAX_READIES_PER_TURN {
            let Some(replica) = self.replicas.get_mut(&group) else {
                return;
            };
            if !replica.raw.has_ready() {
                // With entries still to apply, the snapshot waits for them (apply_committed
                // looks again).
                if !self.to_apply.iter().any(|work| work.group == group) {
                    self.maybe_snapshot(group);
                }
                return;
            }
            let rd = replica.raw.ready();
            self.handle_ready(group, rd);
            if let Some(replica) = self.replicas.get_mut(&group) {
                replica.raw.advance();
            }
            if self.batch_log_bytes >= self.config.max_batch_log_bytes {
                break;
            }
        }
        // Still busy: come back next turn rather than starve the other groups.
        self.dirty.insert(group);
    }

    fn handle_ready(&mut self, group: GroupId, rd: Ready) {
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
        let Some(replica) = self.replicas.get_mut(&group) else {
            return;
        };
        if let Some(soft) = soft_state {
            replica.service.on_soft_state(soft);
        }
        self.out.messages.extend(messages);
        // A new term or vote must be durable before anything that depends on it leaves; a
        // commit index alone need not be (it is only a hint of progress: recovery clamps it,
        // and Raft learns the commit again from the leader or its own quorum), so a
        // commit-only change waits for the next write there is anyway, as etcd's MustSync.
        let hard_state = hard_state.and_then(|hs| {
            let saved = replica.saved_hard_state;
            if hs.term == saved.term && hs.vote == saved.vote {
                replica.unsaved_commit = Some(hs);
                None
            } else {
                Some(hs)
            }
        });
        let must_write = snapshot.is_some()
            || !entries.is_empty()
            || hard_state.is_some()
            || !persisted_messages.is_empty();
        if must_write {
            self.batch_needed = true;
            if let Some(s) = &snapshot {
                // A snapshot from the leader replaces the whole log: drop every entry after it,
                // then mark everything up to it as covered.
                self.batch.snapshots.push(SnapshotWrite {
                    group,
                    snapshot: s.clone(),
                    replaces_log: true,
                });
                self.batch.records.push(LogRecord::Truncate {
                    group,
                    from_index: s.meta.index + 1,
                });
                self.batch.records.push(LogRecord::Compact {
                    group,
                    index: s.meta.index,
                    term: s.meta.term,
                });
                replica.log_bytes = 0;
                replica.last_snapshot_index = s.meta.index;
            }
            self.batch_log_bytes += RECORD_OVERHEAD_BYTES * 3
                + entries
                    .iter()
                    .map(|e| e.data.len() + RECORD_OVERHEAD_BYTES)
                    .sum::<usize>();
            if let Some(last) = entries.last() {
                let report = (group, last.index, last.term);
                replica.log_bytes += entries.iter().map(Entry::approx_bytes).sum::<usize>();
                self.batch.records.push(LogRecord::Entries {
                    group,
                    entries: entries.iter().map(to_wal_entry).collect(),
                });
                self.batch_reports.push(report);
            } else if let Some(s) = &snapshot {
                self.batch_reports.push((group, s.meta.index, s.meta.term));
            }
            if let Some(hs) = hard_state {
                replica.saved_hard_state = hs;
                replica.unsaved_commit = None;
                self.batch.records.push(hard_state_record(group, hs));
            }
            self.batch_messages.extend(persisted_messages);
        }
        // A soft state change may have answered requests (a leader that stepped down), or
        // made a new shard group leader ask for what it pulls.
        replica.service.take_responses(&mut self.out.replies);
        if let Service::ShardKv(server) = &mut replica.service {
            self.out.inquiries.extend(server.take_outbound());
        }
        if snapshot.is_some() || !committed_entries.is_empty() || !read_states.is_empty() {
            self.to_apply.push(ToApply {
                group,
                snapshot,
                entries: committed_entries,
                read_states,
            });
        }
    }

    /// True when Raft handed out entries, a snapshot or reads that
    /// [`CoreNode::apply_committed`] has not applied yet.
    pub fn has_unapplied(&self) -> bool {
        !self.to_apply.is_empty()
    }

    /// Applies what the `take_output`s since the last call handed out to the state machines,
    /// in order: the leader's snapshots, committed entries, reads. Their replies, and the
    /// inquiries and snapshots they lead to, come out of the next `take_output`. Returns false
    /// when there was nothing to apply.
    ///
    /// Why apart from `take_output`: applying a turn's committed entries (a hash map insert
    /// per put, replies encoded) took longer than everything else a turn does, and the turn's
    /// write and Appends waited behind it. Taken apart, the caller submits the write and
    /// sends the Appends first: a follower's write starts before it applies what the same
    /// Append told it was committed, and the leader's Appends leave before it applies the
    /// entries the last acknowledgements committed. Raft is told the entries are applied
    /// (`advance`) before they are; nothing in it depends on that but `compact`, which the
    /// core calls only at the service's own applied index.
    pub fn apply_committed(&mut self) -> bool {
        if self.to_apply.is_empty() {
            return false;
        }
        let mut applied: Vec<GroupId> = Vec::new();
        for work in std::mem::take(&mut self.to_apply) {
            let group = work.group;
            let Some(replica) = self.replicas.get_mut(&group) else {
                continue;
            };
            if let Some(s) = &work.snapshot {
                // The snapshot came from the leader and was checked by Raft; a store that
                // cannot decode it means the leader's state machine and ours disagree on the
                // format.
                if let Err(e) = replica.service.on_snapshot(s.meta.index, &s.data) {
                    panic!(
                        "group {group}: installing the leader's snapshot at {}: {e}",
                        s.meta.index
                    );
                }
            }
            if !work.entries.is_empty() {
                replica.service.on_committed(&work.entries);
            }
            if !work.read_states.is_empty() {
                replica.service.on_read_states(&work.read_states);
            }
            replica.service.take_responses(&mut self.out.replies);
            if let Service::ShardKv(server) = &mut replica.service {
                // An applied migration step may have asked for the next one at once.
                self.out.inquiries.extend(server.take_outbound());
            }
            if !applied.contains(&group) {
                applied.push(group);
            }
        }
        for group in applied {
            self.maybe_snapshot(group);
        }
        true
    }

    /// Takes a snapshot when the log outgrew its bound or the storage asked: the store's
    /// snapshot at the applied index goes to disk (then a `Compact` record), and Raft drops the
    /// entries it covers.
    fn maybe_snapshot(&mut self, group: GroupId) {
        let Some(replica) = self.replicas.get_mut(&group) else {
            return;
        };
        let index = replica.service.applied_index();
        if index <= replica.last_snapshot_index {
            return;
        }
        if !replica.snapshot_requested && !replica.service.wants_snapshot(replica.log_bytes) {
            return;
        }
        let Some(term) = replica.raw.term_at(index) else {
            return;
        };
        let data: Bytes = replica.service.snapshot();
        if replica.raw.compact(index, data.clone()).is_err() {
            return;
        }
        replica.snapshot_requested = false;
        replica.last_snapshot_index = index;
        replica.log_bytes = replica
            .raw
            .entries()
            .filter(|e| e.index > index)
            .map(Entry::approx_bytes)
            .sum();
        self.batch_needed = true;
        self.batch.snapshots.push(SnapshotWrite {
            group,
            snapshot: Snapshot {
                meta: SnapshotMeta { index, term },
                data,
            },
            replaces_log: false,
        });
        self.batch
            .records
            .push(LogRecord::Compact { group, index, term });
        self.batch_log_bytes += RECORD_OVERHEAD_BYTES;
    }
}

/// A group's hard state as the log stores it.
fn hard_state_record(group: GroupId, hs: HardState) -> LogRecord {
    LogRecord::HardState {
        group,
        state: WalHardState {
            term: hs.term,
            vote: hs.vote,
            commit: hs.commit,
        },
    }
}

/// A Raft entry as the log stores it.
pub fn to_wal_entry(entry: &Entry) -> WalEntry {
    WalEntry {
        index: entry.index,
        term: entry.term,
        kind: match entry.kind {
            EntryKind::Normal => 0,
            EntryKind::Noop => 1,
        },
        data: entry.data.clone(),
    }
}

/// The shard, configuration and entry size of a shard part answer (`None` for any other).
fn part_size(answer: &Answer) -> Option<(ShardId, u64, usize)> {
    match answer {
        Answer::Shard {
            shard,
            config,
            answer: PullAnswer::Part { after, payload, .. },
        } => Some((*shard, *config, part_entry_bytes(after.as_ref(), payload))),
        _ => None,
    }
}

/// A stored entry back as a Raft entry; `None` for a kind byte no version wrote.
pub fn from_wal_entry(entry: WalEntry) -> Option<Entry> {
    let kind = match entry.kind {
        0 => EntryKind::Normal,
        1 => EntryKind::Noop,
        _ => return None,
    };
    Some(Entry {
        term: entry.term,
        index: entry.index,
        kind,
        data: entry.data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One sharded node alone: shard group 1 and the controller's group on one core.
    fn sharded_core(max_install_bytes: usize) -> CoreNode {
        let config = CoreConfig {
            node: 1,
            voters: vec![1],
            raft: Config::new(1, 0, vec![1], 7),
            kv: KvServerConfig::default(),
            ctl: CtlSettings { shards: 4 },
            sharded: Some(ShardedHosting {
                server: ShardKvServerConfig::default(),
                max_install_bytes,
            }),
            max_batch_log_bytes: 1 << 20,
            seed: 7,
        };
        let boots = [1, CONTROLLER_GROUP]
            .into_iter()
            .map(|group| GroupBoot {
                group,
                ..GroupBoot::default()
            })
            .collect();
        CoreNode::new(config, boots).expect("boots")
    }

    fn part(shard: ShardId, config: u64, bytes: usize) -> Answer {
        Answer::Shard {
            shard,
            config,
            answer: PullAnswer::Part {
                after: None,
                last: crate::shardkv::command::Last::No,
                payload: Bytes::from(vec![0u8; bytes]),
            },
        }
    }

    /// The services follow the node's mode; a part larger than one entry may hold (a single
    /// pair that cannot be cut smaller) is refused and reported once (not handed to the
    /// replica, whose proposal Raft would refuse at every poll); parts that together pass the
    /// budget of one turn wait for a later poll, and the budget renews with every turn.
    #[test]
    fn oversized_and_crowded_installs_are_held_back() {
        let mut core = sharded_core(1000);
        assert_eq!(
            core.service(1).map(Service::kind),
            Some(ServiceKind::ShardKv)
        );
        let kind = core.service(CONTROLLER_GROUP).map(Service::kind);
        assert_eq!(kind, Some(ServiceKind::Ctl));
        core.on_inquiry_answer(1, part(2, 5, 2000));
        core.on_inquiry_answer(1, part(2, 5, 2000));
        let out = core.take_output();
        assert_eq!(
            out.refused_transfers,
            vec![RefusedTransfer {
                group: 1,
                side: TransferSide::Install,
                shard: 2,
                config: 5,
                bytes: 2000 + crate::shardkv::command::PART_HEADER_BYTES,
                limit: 1000,
            }]
        );
        core.on_inquiry_answer(1, part(0, 5, 600));
        core.on_inquiry_answer(1, part(1, 5, 600));
        assert_eq!(core.installs_deferred(), 1);
        let _ = core.take_output();
        core.on_inquiry_answer(1, part(1, 5, 600));
        assert_eq!(core.installs_deferred(), 1, "a new turn, a new budget");
        assert!(core.take_output().refused_transfers.is_empty());
    }

    /// The controller's replica answers configuration inquiries ("not yet" for one it does
    /// not have); a KV-only inquiry target or an absent group answers nothing.
    #[test]
    fn inquiries_are_answered_by_the_target_service() {
        let mut core = sharded_core(1000);
        let config_two = Inquiry::Config { num: 2 };
        assert_eq!(
            core.answer_inquiry(CONTROLLER_GROUP, &config_two),
            Some(Answer::Config {
                num: 2,
                config: None
            })
        );
        let pull = Inquiry::PullShard {
            shard: 1,
            config: 1,
            after: None,
            max_part_bytes: 1 << 20,
        };
        assert_eq!(
            core.answer_inquiry(1, &pull),
            Some(Answer::Shard {
                shard: 1,
                config: 1,
                answer: PullAnswer::NotYet
            })
        );
        assert_eq!(core.answer_inquiry(2, &pull), None);
        assert_eq!(core.answer_inquiry(CONTROLLER_GROUP, &pull), None);
    }
}
