//! The node's runtime glue: one [`CoreNode`] per core on the `shardcore_io` runtime, its log
//! writer, its sockets and the mesh between cores.
//!
//! Per core:
//! - a **log writer** ([`LogWriter`]) drives the core's WAL from the executor: every batch
//!   queued while the WAL's writes are in flight goes into its next write (one fdatasync: group
//!   commit across groups and across turns); the WAL's io_uring signals an eventfd the core
//!   awaits, and the core reaps it then. Snapshot files are written by the core's snapshot
//!   thread. A storage error stops the whole process before anything unsaved is acknowledged;
//! - a **ticker** drives Raft and request timeouts every `tick_ms`;
//! - a **client listener** on the shared client port (every core binds it with SO_REUSEPORT;
//!   the kernel spreads connections). A connection carries KV request frames and shard
//!   controller request frames alike; a request for a group another core owns (a KV group, or
//!   the controller's group [`CONTROLLER_GROUP`]) travels there over the mesh, and its reply
//!   travels back;
//! - a **peer listener** on `peer_port + core`; peers send each core the traffic of the groups
//!   it owns. A message for a group owned elsewhere (a peer with another core count) is
//!   forwarded over the mesh;
//! - **peer links**: one outbound connection per (peer node, its core), carrying every message
//!   for that destination, coalesced into one frame per turn.
//!
//! On a sharded node (`sharded = true`) groups `1..=groups` are shard groups: a client request
//! names the group it was routed to and that group's replica judges whether it serves the key's
//! shard. A shard group's leader asks other groups and the controller questions (inquiries,
//! `shardkv::inquiry`); every node hosts every group, so the pump hands each inquiry to this
//! node's replica of the target: on this core directly, on another core as a
//! [`CoreMsg::Inquiry`] over the mesh, whose [`CoreMsg::Answer`] comes back the same way. A
//! lost inquiry or answer (a full mesh queue) costs one poll: the leader asks again.
//!
//! Inputs only update the core's state and schedule one **pump** per executor turn: it takes
//! the core's output, sends the messages at once, hands the batch to the log writer and writes
//! the replies, one frame per connection.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use shardcore_io::bridge;
use shardcore_io::framed::{FrameReader, FrameWriter};
use shardcore_io::net::{TcpListener, TcpStream};
use shardcore_io::peer::{PeerLink, PeerLinkConfig};
use shardcore_io::{Core, CoreId, RuntimeConfig};
use shardcore_protocol::FrameKind;
use tracing::{debug, error, info, warn};

use super::config::NodeConfig;
use super::core::{
    CoreConfig, CoreNode, HostedRequest, HostedResponse, RefusedTransfer, TransferSide,
};
use super::disk::{CoreDisk, DiskError};
use super::log_writer::{snapshot_thread, LogWriter, MAX_SNAPSHOT_JOBS};
use super::placement::{
    core_of_group, group_for_key, hosted_groups_of_core, is_hosted, key_hash, CONTROLLER_GROUP,
};
use crate::kv::Op;
use crate::raft::{GroupId, Message, NodeId};
use crate::shardkv::{Answer, Inquiry, Outbound};
use crate::wire::shardctl::{decode_controller_request, ControllerReply, ControllerRequest};
use crate::wire::{
    decode_hello, decode_raft_batch, decode_requests, ClientReply, ClientRequest, Encoder, Hello,
    HelloRole, ReplyError, RequestId,
};

/// What travels between the cores of a node.
pub enum CoreMsg {
    /// A client request for a group the receiving core owns.
    Request {
        /// Names the request's connection on the sending core.
        token: u64,
        /// The group.
        group: GroupId,
        /// The request, of the group's service.
        request: HostedRequest,
    },
    /// A reply for a connection of the receiving core.
    Reply {
        /// The token the request came with.
        token: u64,
        /// The answer.
        response: HostedResponse,
    },
    /// Raft messages for groups the receiving core owns.
    Raft(Vec<Message>),
    /// A shard group's question for `target`, a group the receiving core owns.
    Inquiry {
        /// The asking group (its core gets the answer).
        asker: GroupId,
        /// The group whose replica answers (a shard group or the controller's).
        target: GroupId,
        /// The question.
        inquiry: Inquiry,
    },
    /// The answer to an inquiry `asker` (a group the receiving core owns) made.
    Answer {
        /// The asking group.
        asker: GroupId,
        /// The answer.
        answer: Answer,
    },
}

/// Why a connection that said nothing at all was dropped.
const CLOSED_BEFORE_HELLO: &str = "closed before its hello";

/// The cluster id on the wire: a stable hash of the configured name (never 0).
pub fn cluster_hash(cluster_id: &str) -> u64 {
    key_hash(cluster_id.as_bytes()) | 1
}

/// Why the server stopped with an error.
#[derive(Debug)]
pub struct ServerError(pub String);

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ServerError {}

/// Runs the node until a shutdown signal (SIGTERM, SIGINT) and a graceful drain.
pub fn run(config: NodeConfig) -> Result<(), ServerError> {
    config.validate().map_err(ServerError)?;
    shardcore_io::signal::install_shutdown_handler()
        .map_err(|e| ServerError(format!("installing signal handlers: {e}")))?;
    std::fs::create_dir_all(&config.data_dir).map_err(|e| {
        ServerError(format!(
            "creating data directory {}: {e}",
            config.data_dir.display()
        ))
    })?;
    check_service_mode(&config.data_dir, config.sharded).map_err(ServerError)?;
    let runtime = RuntimeConfig {
        cores: config.cores,
        name: format!("shardcore-n{}", config.node_id),
        pinning: if config.pin {
            shardcore_io::runtime::Pinning::Pinned
        } else {
            shardcore_io::runtime::Pinning::Unpinned
        },
        ..RuntimeConfig::default()
    };
    let config = std::sync::Arc::new(config);
    let results = shardcore_io::run(runtime, move |core: Core<CoreMsg>| {
        let config = config.clone();
        async move { core_main(core, (*config).clone()).await }
    })
    .map_err(|e| ServerError(format!("runtime: {e}")))?;
    for result in results {
        result?;
    }
    Ok(())
}

/// The file in a data directory that records which KV service its groups run.
const SERVICE_MODE_FILE: &str = "service-mode";

/// Refuses a data directory written by groups of the other service (KV or sharded KV), and
/// records the mode in a new one. A KV group's log replayed as a shard group's would be
/// misread (both start their entries with a version byte and a tag), so the mode is part of
/// the on-disk layout, like `groups` and the core count. A directory with data and no record
/// predates sharding: it is KV.
fn check_service_mode(data_dir: &std::path::Path, sharded: bool) -> Result<(), String> {
    let path = data_dir.join(SERVICE_MODE_FILE);
    let want = if sharded { "sharded-kv" } else { "kv" };
    let found = match std::fs::read_to_string(&path) {
        Ok(text) => Some(text.trim().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let has_data = std::fs::read_dir(data_dir)
                .map_err(|e| format!("reading {}: {e}", data_dir.display()))?
                .filter_map(Result::ok)
                .any(|entry| entry.file_name().to_string_lossy().starts_with("core-"));
            has_data.then(|| "kv".to_string())
        }
        Err(e) => return Err(format!("reading {}: {e}", path.display())),
    };
    match found {
        Some(found) if found == want => Ok(()),
        Some(found) => Err(format!(
            "{} holds {found} groups, but this node is configured for {want} \
             (sharded = {sharded}); use another data directory or the matching setting",
            data_dir.display()
        )),
        None => {
            // Written before any group's storage exists, and made durable with its directory,
            // so a crash cannot leave data without the record.
            let write = || -> std::io::Result<()> {
                let mut file = std::fs::File::create(&path)?;
                std::io::Write::write_all(&mut file, format!("{want}\n").as_bytes())?;
                file.sync_all()?;
                std::fs::File::open(data_dir)?.sync_all()
            };
            write().map_err(|e| format!("writing {}: {e}", path.display()))
        }
    }
}

struct ClientConn {
    writer: FrameWriter,
    replies: RefCell<Vec<ClientReply>>,
    /// Controller replies travel one a frame (`ControllerReply` holds one), after the KV batch.
    ctl_replies: RefCell<Vec<ControllerReply>>,
}

struct CoreState {
    me: usize,
    cores: usize,
    config: NodeConfig,
    cluster: u64,
    node: RefCell<CoreNode>,
    /// The Raft tick on fixed deadlines, read on demand: whoever touches the core's groups
    /// first delivers the ticks that fell due, the tick task or an input ([`CoreState::node_now`]).
    /// So Raft's time keeps up with real time through a busy or stalled core, which lease reads
    /// rely on: a leader checks its lease against ticks that are current when a read arrives.
    ticks: RefCell<shardcore_io::Ticker>,
    core: Core<CoreMsg>,
    /// The core's log writer; taken at shutdown, after the last write completed.
    log: RefCell<Option<LogWriter>>,
    links: RefCell<HashMap<(NodeId, usize), PeerLink>>,
    peer_cores: RefCell<HashMap<NodeId, usize>>,
    conns: RefCell<HashMap<u64, Rc<ClientConn>>>,
    /// Reply tokens of this core: token -> (connection, request id).
    tokens: RefCell<HashMap<u64, (u64, RequestId)>>,
    next_token: Cell<u64>,
    next_conn: Cell<u64>,
    /// Connections with replies waiting to be framed.
    conns_with_replies: RefCell<Vec<u64>>,
    /// Inquiry targets no node hosts (a group joined through the controller with an id past
    /// `groups`), already warned about.
    unhosted_warned: RefCell<std::collections::HashSet<GroupId>>,
    encoder: RefCell<Encoder>,
    pump_scheduled: Cell<bool>,
    /// An `apply` task is spawned and has not run yet.
    apply_scheduled: Cell<bool>,
    /// Inputs handled by a pump since it was scheduled.
    start: Instant,
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

async fn core_main(core: Core<CoreMsg>, config: NodeConfig) -> Result<(), ServerError> {
    let me = core.id().0;
    let cores = core.count();
    let groups = hosted_groups_of_core(me, cores, config.groups);
    let (disk, boots) = CoreDisk::open(&config.data_dir, me, &groups, config.wal_config())
        .map_err(|e| ServerError(format!("core {me}: opening storage: {e}")))?;
    let recovery = disk.recovery();
    info!(
        core = me,
        groups = ?groups,
        records = recovery.records,
        bytes = recovery.bytes,
        torn_tail = recovery.torn_tail.is_some(),
        "storage recovered"
    );
    let core_config = CoreConfig {
        node: config.node_id,
        voters: config.voters(),
        raft: config.raft_config(),
        kv: config.kv_server(),
        ctl: config.ctl_settings(),
        sharded: config.sharded_hosting(),
        max_batch_log_bytes: usize::try_from(config.wal.segment_bytes / 4).unwrap_or(usize::MAX),
        seed: wall_ms() ^ (config.node_id << 32) ^ me as u64,
    };
    let node =
        CoreNode::new(core_config, boots).map_err(|e| ServerError(format!("core {me}: {e}")))?;
    // The WAL refuses one write larger than a segment, and that stops the node: merge batches
    // only up to half a segment (a single batch over it still goes, alone).
    let merge_bytes = usize::try_from(config.wal.segment_bytes / 2).unwrap_or(usize::MAX);
    let (wal, snapshots) = disk.into_parts();
    let (jobs_tx, jobs_rx) = bridge::channel(MAX_SNAPSHOT_JOBS);
    let (snap_done_tx, snap_done_rx) = bridge::channel::<()>(MAX_SNAPSHOT_JOBS);
    let node_id = config.node_id;
    let snapshot_writer = std::thread::Builder::new()
        .name(format!("shardcore-n{node_id}-snap{me}"))
        .spawn(move || snapshot_thread(snapshots, jobs_rx, snap_done_tx, me))
        .map_err(|e| ServerError(format!("core {me}: starting the snapshot thread: {e}")))?;
    let log = LogWriter::new(wal, merge_bytes, jobs_tx);
    let wal_events = shardcore_io::EventCounter::new()
        .map_err(|e| ServerError(format!("core {me}: creating the WAL's eventfd: {e}")))?;
    log.register_eventfd(wal_events.raw_fd())
        .map_err(|e| ServerError(format!("core {me}: {e}")))?;
    let tick_period = Duration::from_millis(config.raft.tick_ms);
    let state = Rc::new(CoreState {
        me,
        cores,
        cluster: cluster_hash(&config.cluster_id),
        config,
        node: RefCell::new(node),
        ticks: RefCell::new(shardcore_io::Ticker::new(tick_period)),
        core,
        log: RefCell::new(Some(log)),
        links: RefCell::new(HashMap::new()),
        peer_cores: RefCell::new(HashMap::new()),
        conns: RefCell::new(HashMap::new()),
        tokens: RefCell::new(HashMap::new()),
        next_token: Cell::new(1),
        next_conn: Cell::new(1),
        conns_with_replies: RefCell::new(Vec::new()),
        unhosted_warned: RefCell::new(std::collections::HashSet::new()),
        encoder: RefCell::new(Encoder::new()),
        pump_scheduled: Cell::new(false),
        apply_scheduled: Cell::new(false),
        start: Instant::now(),
    });

    // Listeners first, so a peer's first connection finds them.
    let client_listener = TcpListener::bind(state.config.client_addr).map_err(|e| {
        ServerError(format!(
            "core {me}: binding client address {}: {e}",
            state.config.client_addr
        ))
    })?;
    let peer_addr = with_port_offset(state.config.peer_addr, me);
    let peer_listener = TcpListener::bind(peer_addr)
        .map_err(|e| ServerError(format!("core {me}: binding peer address {peer_addr}: {e}")))?;
    info!(core = me, client = %state.config.client_addr, peer = %peer_addr, "listening");

    let inbox = state
        .core
        .take_receiver()
        .ok_or_else(|| ServerError("mesh receiver taken twice".to_string()))?;
    let mesh_task = {
        let state = state.clone();
        shardcore_io::spawn(async move {
            while let Some((_, msg)) = inbox.recv().await {
                state.on_mesh(msg);
            }
        })
    };
    let disk_task = {
        let state = state.clone();
        shardcore_io::spawn(async move {
            loop {
                if let Err(e) = wal_events.wait().await {
                    storage_failed(
                        state.me,
                        &DiskError::Inconsistent(format!("waiting for the WAL's completions: {e}")),
                    );
                }
                state.drive_log();
            }
        })
    };
    let snapshot_task = {
        let state = state.clone();
        shardcore_io::spawn(async move {
            while snap_done_rx.recv().await.is_some() {
                if let Some(log) = state.log.borrow_mut().as_mut() {
                    log.snapshots_written();
                }
                state.drive_log();
            }
            // The snapshot thread ended: the node is stopping.
        })
    };
    let tick_task = {
        let state = state.clone();
        shardcore_io::spawn(async move {
            loop {
                let next = state.ticks.borrow().next_deadline();
                shardcore_io::sleep_until(next).await;
                drop(state.node_now());
                state.schedule_pump();
            }
        })
    };
    let accept_clients = {
        let state = state.clone();
        shardcore_io::spawn(async move {
            loop {
                match client_listener.accept().await {
                    Ok(stream) => {
                        let state = state.clone();
                        shardcore_io::spawn(async move { state.serve_client(stream).await })
                            .detach();
                    }
                    Err(e) => {
                        warn!(core = state.me, "accepting a client: {e}");
                        shardcore_io::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        })
    };
    let accept_peers = {
        let state = state.clone();
        shardcore_io::spawn(async move {
            loop {
                match peer_listener.accept().await {
                    Ok(stream) => {
                        let state = state.clone();
                        shardcore_io::spawn(async move { state.serve_peer(stream).await }).detach();
                    }
                    Err(e) => {
                        warn!(core = state.me, "accepting a peer: {e}");
                        shardcore_io::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        })
    };

    let reason = shardcore_io::signal::shutdown_signal().await;
    info!(
        core = me,
        ?reason,
        "shutting down: no new connections; finishing requests"
    );
    drop(accept_clients);
    drop(accept_peers);
    // Finish what is in flight (bounded), so acknowledged means durable and answered.
    let drain_deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < drain_deadline {
        let (pending, inflight) = {
            let node = state.node.borrow();
            (node.pending_requests(), node.inflight_batches())
        };
        if pending == 0 && inflight == 0 {
            break;
        }
        shardcore_io::sleep(Duration::from_millis(10)).await;
    }
    let writers: Vec<Rc<ClientConn>> = state.conns.borrow().values().cloned().collect();
    for conn in writers {
        let _ = shardcore_io::timeout(Duration::from_millis(500), conn.writer.flush()).await;
    }
    drop(tick_task);
    drop(mesh_task);
    drop(disk_task);
    drop(snapshot_task);
    let uptime = state.start.elapsed();
    // Dropping the log writer waits for a write still in flight (none after the drain, unless
    // it timed out) and closes the snapshot thread's queue, which ends that thread.
    drop(state.log.borrow_mut().take());
    if snapshot_writer.join().is_err() {
        return Err(ServerError(format!(
            "core {me}: the snapshot thread panicked"
        )));
    }
    info!(core = me, ?uptime, "stopped");
    Ok(())
}

/// The next frame of a connection that may carry only `kind` frames from `who`: `Ok(None)` at
/// a clean end, `Err(why)` for anything that closes the connection.
async fn next_frame_of(
    reader: &mut FrameReader,
    kind: FrameKind,
    who: &str,
) -> Result<Option<shardcore_protocol::Frame>, String> {
    match reader.next_frame().await {
        Ok(Some(frame)) if frame.kind == kind => Ok(Some(frame)),
        Ok(Some(frame)) => Err(format!("unexpected {:?} frame from {who}", frame.kind)),
        Ok(None) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

fn with_port_offset(addr: SocketAddr, offset: usize) -> SocketAddr {
    let mut addr = addr;
    addr.set_port(addr.port() + offset as u16);
    addr
}

/// Stops the node after a storage failure. fsyncgate: after a failed write or fdatasync
/// nothing may be acknowledged; the node stops, and recovery decides what is durable.
pub(super) fn storage_failed(core: usize, e: &DiskError) -> ! {
    error!(core, "storage failed, stopping the node: {e}");
    eprintln!("shardcore: core {core}: storage failed, stopping the node: {e}");
    std::process::exit(3);
}

impl CoreState {
    fn schedule_pump(self: &Rc<Self>) {
        if self.pump_scheduled.replace(true) {
            return;
        }
        let state = self.clone();
        shardcore_io::spawn(async move {
            shardcore_io::yield_now().await;
            state.pump_scheduled.set(false);
            state.pump();
        })
        .detach();
    }

    /// The core's groups, ticked first for every tick period that passed: every input goes
    /// through here, so a lease read is checked against current ticks.
    fn node_now(self: &Rc<Self>) -> std::cell::RefMut<'_, CoreNode> {
        let due = self.ticks.borrow_mut().take_due();
        let mut node = self.node.borrow_mut();
        if due > 0 {
            let now = wall_ms();
            for _ in 0..due {
                node.tick(now);
            }
            self.schedule_pump();
        }
        node
    }

    /// Submits what the log writer has queued and hands what became durable to the core.
    fn drive_log(self: &Rc<Self>) {
        let durable = match self.log.borrow_mut().as_mut().map(LogWriter::drive) {
            None => return,
            Some(Ok(durable)) => durable,
            Some(Err(e)) => storage_failed(self.me, &e),
        };
        let Some(ticket) = durable.ticket else {
            return;
        };
        let mut node = self.node_now();
        node.persisted(ticket);
        for group in durable.pinning {
            node.request_snapshot(group);
        }
        drop(node);
        self.schedule_pump();
    }

    /// Carries out the core's output until it has none.
    fn pump(self: &Rc<Self>) {
        for _ in 0..64 {
            let out = self.node.borrow_mut().take_output();
            if out.is_empty() {
                break;
            }
            self.send_messages(out.messages);
            if let Some(batch) = out.batch {
                // Stopping (no writer): the batch is never written, so nothing it holds is
                // reported durable or acknowledged.
                if let Some(log) = self.log.borrow_mut().as_mut() {
                    log.push(batch);
                }
                self.drive_log();
            }
            for (token, response) in out.replies {
                self.route_reply(token, response);
            }
            for refused in out.refused_transfers {
                self.report_refused_transfer(refused);
            }
            for outbound in out.inquiries {
                self.route_inquiry(outbound);
            }
        }
        self.flush_replies();
        if self.node.borrow().has_unapplied() {
            self.schedule_apply();
        }
    }

    /// Applies what the groups committed in a task of its own, called at the end of the pump:
    /// the turn's Appends are on the wire (sent in the pump, `send_now`) and its write
    /// submitted before the state machines apply anything. Its replies go out with the pump
    /// that follows. (`spawn` runs the task at once; queued behind the tasks the pump woke
    /// instead, 3 alternating pairs of 64-client puts measured 75,497 against 77,396 puts/s.)
    fn schedule_apply(self: &Rc<Self>) {
        if self.apply_scheduled.replace(true) {
            return;
        }
        let state = self.clone();
        shardcore_io::spawn(async move {
            state.apply_scheduled.set(false);
            // Applying can wait; a thread of another node on this CPU may have a round's
            // acknowledgement to send. Two followers sharing a CPU otherwise take turns whole,
            // and the first one's ack waited behind the other's apply (64-client puts, 7
            // alternating pairs: p50 826 -> 792 us, 73,346 -> 76,456 puts/s).
            shardcore_io::yield_cpu();
            if state.node.borrow_mut().apply_committed() {
                state.pump();
            }
        })
        .detach();
    }

    /// Carries a shard group's inquiry to this node's replica of its target: answered here when
    /// this core hosts the target (looped back without the mesh), else sent to the core that
    /// does. The answer is handed to the asking group, which lives on this core (it asked).
    fn route_inquiry(self: &Rc<Self>, outbound: Outbound) {
        let Outbound { from, to, inquiry } = outbound;
        let target = CoreNode::target_group(to);
        if !is_hosted(target, self.config.groups) {
            if self.unhosted_warned.borrow_mut().insert(target) {
                warn!(
                    core = self.me,
                    group = from,
                    target,
                    groups = self.config.groups,
                    "a shard group asks group {target}, which no node hosts (nodes host groups \
                     1..={}): a group joined through the controller must be one of them; its \
                     shards cannot move until it leaves",
                    self.config.groups
                );
            }
            return;
        }
        let owner = core_of_group(target, self.cores);
        if owner == self.me {
            let mut node = self.node.borrow_mut();
            if let Some(answer) = node.answer_inquiry(target, &inquiry) {
                node.on_inquiry_answer(from, answer);
            }
            drop(node);
            self.schedule_pump();
            return;
        }
        let msg = CoreMsg::Inquiry {
            asker: from,
            target,
            inquiry,
        };
        if self.core.try_send(CoreId(owner), msg).is_err() {
            debug!(
                core = self.me,
                owner, "mesh queue full: dropping an inquiry"
            );
        }
    }

    /// Answers an inquiry that came over the mesh and sends the answer to the asker's core.
    fn answer_remote_inquiry(self: &Rc<Self>, asker: GroupId, target: GroupId, inquiry: Inquiry) {
        let Some(answer) = self.node.borrow_mut().answer_inquiry(target, &inquiry) else {
            return;
        };
        let home = core_of_group(asker, self.cores);
        if home == self.me {
            self.node.borrow_mut().on_inquiry_answer(asker, answer);
            return;
        }
        let msg = CoreMsg::Answer { asker, answer };
        if self.core.try_send(CoreId(home), msg).is_err() {
            debug!(
                core = self.me,
                home, "mesh queue full: dropping an inquiry's answer"
            );
        }
    }

    fn report_refused_transfer(&self, refused: RefusedTransfer) {
        let RefusedTransfer {
            group,
            side,
            shard,
            config,
            bytes,
            limit,
        } = refused;
        let what = match side {
            TransferSide::Answer => format!("group {group} cannot hand over shard {shard}"),
            TransferSide::Install => format!("group {group} cannot install shard {shard}"),
        };
        error!(
            core = self.me,
            group,
            shard,
            config,
            bytes,
            limit,
            "{what} of configuration {config}: a part that cannot be cut smaller (one key and \
             its value, or the shard's session table) takes {bytes} bytes, over the {limit} \
             bytes one log entry may hold (raft max_entry_bytes, half a WAL segment, or the \
             sharded KV's transfer bound); the shard stays frozen with its old owner"
        );
    }

    fn send_messages(self: &Rc<Self>, messages: Vec<Message>) {
        if messages.is_empty() {
            return;
        }
        let mut by_dest: HashMap<(NodeId, usize), Vec<Message>> = HashMap::new();
        for message in messages {
            let cores = self
                .peer_cores
                .borrow()
                .get(&message.to)
                .copied()
                .unwrap_or(self.cores);
            let dest_core = core_of_group(message.group, cores);
            by_dest
                .entry((message.to, dest_core))
                .or_default()
                .push(message);
        }
        for ((to, dest_core), messages) in by_dest {
            self.send_to(to, dest_core, &messages);
        }
    }

    fn send_to(self: &Rc<Self>, to: NodeId, dest_core: usize, messages: &[Message]) {
        if !self.ensure_link(to, dest_core) {
            return;
        }
        let links = self.links.borrow();
        let link = links.get(&(to, dest_core)).expect("ensured above");
        let mut encoder = self.encoder.borrow_mut();
        match encoder.raft_batch_body(self.config.node_id, to, messages) {
            // Straight from the encoder's buffer into the link's queue: one copy. A full queue
            // (the peer is down or slow) drops the frame: Raft resends what matters.
            // Then onto the wire at once when the link is idle, not in its task's turn: a
            // leader's Appends leave before it submits its own write (the followers' writes
            // are the round's critical path; the leader's submission kicks the disk).
            Ok(body) => match link.try_send(FrameKind::PeerRaft, body) {
                Ok(()) => {
                    link.send_now();
                }
                Err(e) => debug!(
                    core = self.me,
                    to, "peer queue full, dropping a Raft frame: {e}"
                ),
            },
            Err(crate::wire::EncodeError::TooLarge { .. }) if messages.len() > 1 => {
                drop(encoder);
                drop(links);
                let (a, b) = messages.split_at(messages.len() / 2);
                self.send_to(to, dest_core, a);
                self.send_to(to, dest_core, b);
            }
            Err(e) => warn!(
                core = self.me,
                to, "dropping an unencodable Raft message: {e}"
            ),
        }
    }

    /// Makes sure a link to core `dest_core` of node `to` exists; false for an unknown node.
    fn ensure_link(&self, to: NodeId, dest_core: usize) -> bool {
        if self.links.borrow().contains_key(&(to, dest_core)) {
            return true;
        }
        let Some(peer) = self.config.peers.iter().find(|p| p.id == to) else {
            return false;
        };
        let mut config = PeerLinkConfig::new(with_port_offset(peer.peer_addr, dest_core));
        let hello = Hello {
            cluster_id: self.cluster,
            node_id: self.config.node_id,
            role: HelloRole::Peer,
            core_count: self.cores as u16,
        };
        let hello_body = match self.encoder.borrow_mut().hello_body(&hello) {
            Ok(body) => Bytes::copy_from_slice(body),
            Err(e) => {
                warn!(core = self.me, "cannot encode hello: {e}");
                return false;
            }
        };
        config.hello = Some((FrameKind::Hello, hello_body));
        self.links
            .borrow_mut()
            .insert((to, dest_core), PeerLink::new(config));
        true
    }

    fn route_reply(self: &Rc<Self>, token: u64, response: HostedResponse) {
        let origin = (token >> 56) as usize;
        if origin == self.me {
            self.deliver_reply(token, &response);
        } else if let Err(e) = self
            .core
            .try_send(CoreId(origin), CoreMsg::Reply { token, response })
        {
            // The origin core's queue is full: send when it has room.
            let state = self.clone();
            let msg = e.into_inner();
            shardcore_io::spawn(async move {
                let _ = state.core.send(CoreId(origin), msg).await;
            })
            .detach();
        }
    }

    fn deliver_reply(&self, token: u64, response: &HostedResponse) {
        let Some((conn_id, id)) = self.tokens.borrow_mut().remove(&token) else {
            return;
        };
        match response {
            HostedResponse::Kv(response) => {
                self.reply_now(conn_id, ClientReply::from_response(id, response))
            }
            HostedResponse::Ctl(response) => {
                self.ctl_reply_now(conn_id, ControllerReply::from_response(id, response))
            }
            HostedResponse::ShardKv(response) => {
                self.reply_now(conn_id, ClientReply::from_shard_response(id, response))
            }
        }
    }

    fn reply_now(&self, conn_id: u64, reply: ClientReply) {
        let conns = self.conns.borrow();
        let Some(conn) = conns.get(&conn_id) else {
            return;
        };
        let mut replies = conn.replies.borrow_mut();
        if replies.is_empty() && conn.ctl_replies.borrow().is_empty() {
            self.conns_with_replies.borrow_mut().push(conn_id);
        }
        replies.push(reply);
    }

    fn ctl_reply_now(&self, conn_id: u64, reply: ControllerReply) {
        let conns = self.conns.borrow();
        let Some(conn) = conns.get(&conn_id) else {
            return;
        };
        let mut replies = conn.ctl_replies.borrow_mut();
        if replies.is_empty() && conn.replies.borrow().is_empty() {
            self.conns_with_replies.borrow_mut().push(conn_id);
        }
        replies.push(reply);
    }

    /// One reply frame per connection with replies.
    fn flush_replies(&self) {
        let ids = std::mem::take(&mut *self.conns_with_replies.borrow_mut());
        for conn_id in ids {
            let conn = match self.conns.borrow().get(&conn_id) {
                Some(conn) => conn.clone(),
                None => continue,
            };
            let replies = std::mem::take(&mut *conn.replies.borrow_mut());
            // As many frames as the limit needs: large values split a turn's replies by size.
            let mut encoder = self.encoder.borrow_mut();
            let mut emit = |body: &[u8]| {
                self.send_reply_frame(&conn, conn_id, FrameKind::ClientResponse, body)
            };
            if let Err(e) = encoder.replies_bodies(&replies, &mut emit) {
                warn!(core = self.me, conn = conn_id, "cannot encode a reply: {e}");
            }
            drop(encoder);
            let ctl_replies = std::mem::take(&mut *conn.ctl_replies.borrow_mut());
            for reply in &ctl_replies {
                let mut encoder = self.encoder.borrow_mut();
                match encoder.controller_reply_body(reply) {
                    Ok(body) => {
                        self.send_reply_frame(&conn, conn_id, FrameKind::ControllerReply, body)
                    }
                    Err(e) => warn!(
                        core = self.me,
                        conn = conn_id,
                        "cannot encode a controller reply: {e}"
                    ),
                }
            }
            // On the wire now if the connection's writer is idle, not in its task's turn.
            conn.writer.send_now();
        }
    }

    /// Queues one reply frame on a client connection.
    fn send_reply_frame(&self, conn: &Rc<ClientConn>, conn_id: u64, kind: FrameKind, body: &[u8]) {
        match conn.writer.try_send(kind, body) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                // The client reads slower than it asks: wait for room rather than drop
                // answers (a dropped answer costs the client a timeout).
                let body = body.to_vec();
                let conn = conn.clone();
                shardcore_io::spawn(async move {
                    let _ = conn.writer.send(kind, &body).await;
                })
                .detach();
            }
            Err(e) => debug!(core = self.me, conn = conn_id, "client gone: {e}"),
        }
    }

    fn on_mesh(self: &Rc<Self>, msg: CoreMsg) {
        match msg {
            CoreMsg::Request {
                token,
                group,
                request,
            } => {
                self.node_now().on_hosted_request(group, token, request);
            }
            CoreMsg::Reply { token, response } => self.deliver_reply(token, &response),
            CoreMsg::Raft(messages) => {
                let mut node = self.node_now();
                for message in messages {
                    node.step(message);
                }
            }
            CoreMsg::Inquiry {
                asker,
                target,
                inquiry,
            } => self.answer_remote_inquiry(asker, target, inquiry),
            CoreMsg::Answer { asker, answer } => {
                self.node.borrow_mut().on_inquiry_answer(asker, answer);
            }
        }
        self.schedule_pump();
    }

    async fn serve_client(self: Rc<Self>, stream: TcpStream) {
        let remote = stream.peer_addr().ok();
        let (mut reader, writer) = stream.into_framed();
        match self.read_hello(&mut reader, HelloRole::Client).await {
            Ok(_) => {}
            // A probe that connects and leaves (a health check) is not worth a warning.
            Err(why) if why == CLOSED_BEFORE_HELLO => {
                debug!(
                    core = self.me,
                    ?remote,
                    "a client connection closed before its hello"
                );
                return;
            }
            Err(why) => {
                warn!(
                    core = self.me,
                    ?remote,
                    "closing a client connection: {why}"
                );
                return;
            }
        }
        let conn_id = self.next_conn.get();
        self.next_conn.set(conn_id + 1);
        self.conns.borrow_mut().insert(
            conn_id,
            Rc::new(ClientConn {
                writer,
                replies: RefCell::new(Vec::new()),
                ctl_replies: RefCell::new(Vec::new()),
            }),
        );
        let mut requests = Vec::new();
        let why = loop {
            let frame = match reader.next_frame().await {
                Ok(Some(frame)) => frame,
                Ok(None) => break None,
                Err(e) => break Some(e.to_string()),
            };
            match frame.kind {
                FrameKind::ClientRequest => {
                    requests.clear();
                    if let Err(e) = decode_requests(&frame.body, &mut requests) {
                        break Some(format!("bad request frame: {e}"));
                    }
                    for request in requests.drain(..) {
                        self.on_client_request(conn_id, request);
                    }
                }
                FrameKind::ControllerRequest => match decode_controller_request(&frame.body) {
                    Ok(request) => self.on_controller_request(conn_id, request),
                    Err(e) => break Some(format!("bad controller request frame: {e}")),
                },
                other => break Some(format!("unexpected {other:?} frame from a client")),
            }
            self.schedule_pump();
        };
        if let Some(why) = why {
            warn!(
                core = self.me,
                ?remote,
                "closing a client connection: {why}"
            );
        }
        self.conns.borrow_mut().remove(&conn_id);
        self.tokens.borrow_mut().retain(|_, (c, _)| *c != conn_id);
    }

    /// A KV request. On a KV node the group must be the key's by the fixed placement; on a
    /// sharded node any shard group may be named, and its replica judges whether it serves the
    /// key's shard now (`WrongShard` with its configuration number if not).
    fn on_client_request(self: &Rc<Self>, conn_id: u64, request: ClientRequest) {
        let ClientRequest { id, group, request } = request;
        let groups = self.config.groups;
        let sharded = self.config.sharded;
        let misrouted = group == 0
            || group > groups
            || (!sharded
                && !matches!(request.op, Op::Register)
                && group_for_key(request.op.key(), groups) != group);
        if misrouted {
            let reply = ClientReply {
                id,
                result: Err(ReplyError::WrongGroup),
                consistency: request.consistency,
            };
            self.reply_now(conn_id, reply);
            return;
        }
        let request = if sharded {
            HostedRequest::ShardKv(request)
        } else {
            HostedRequest::Kv(request)
        };
        self.route_request(conn_id, id, group, request);
    }

    /// A shard controller request: always for [`CONTROLLER_GROUP`], wherever it lives.
    fn on_controller_request(self: &Rc<Self>, conn_id: u64, request: ControllerRequest) {
        let ControllerRequest { id, request } = request;
        // The replica judges the session (an unknown one is answered SessionExpired).
        self.route_request(conn_id, id, CONTROLLER_GROUP, HostedRequest::Ctl(request));
    }

    /// Hands a request to the core that owns `group` (this one, or another over the mesh); its
    /// reply finds the connection again through the token.
    fn route_request(
        self: &Rc<Self>,
        conn_id: u64,
        id: RequestId,
        group: GroupId,
        request: HostedRequest,
    ) {
        let token = ((self.me as u64) << 56) | self.next_token.get();
        self.next_token
            .set((self.next_token.get() + 1) & ((1 << 56) - 1));
        self.tokens.borrow_mut().insert(token, (conn_id, id));
        let owner = core_of_group(group, self.cores);
        if owner == self.me {
            self.node_now().on_hosted_request(group, token, request);
            return;
        }
        let msg = CoreMsg::Request {
            token,
            group,
            request,
        };
        if let Err(e) = self.core.try_send(CoreId(owner), msg) {
            let state = self.clone();
            let msg = e.into_inner();
            shardcore_io::spawn(async move {
                let _ = state.core.send(CoreId(owner), msg).await;
            })
            .detach();
        }
    }

    async fn serve_peer(self: Rc<Self>, stream: TcpStream) {
        let remote = stream.peer_addr().ok();
        let (mut reader, _writer) = stream.into_framed();
        let hello = match self.read_hello(&mut reader, HelloRole::Peer).await {
            Ok(hello) => hello,
            Err(why) => {
                warn!(core = self.me, ?remote, "closing a peer connection: {why}");
                return;
            }
        };
        let from = hello.node_id;
        if !self.config.peers.iter().any(|p| p.id == from) {
            warn!(
                core = self.me,
                ?remote,
                from,
                "closing a connection from an unknown node"
            );
            return;
        }
        self.peer_cores
            .borrow_mut()
            .insert(from, usize::from(hello.core_count.max(1)));
        debug!(core = self.me, from, "peer connected");
        let mut messages = Vec::new();
        let who = format!("node {from}");
        let why = loop {
            let frame = match next_frame_of(&mut reader, FrameKind::PeerRaft, &who).await {
                Ok(Some(frame)) => frame,
                Ok(None) => break None,
                Err(why) => break Some(why),
            };
            messages.clear();
            if let Err(e) = decode_raft_batch(&frame.body, &mut messages) {
                break Some(format!("bad Raft frame from node {from}: {e}"));
            }
            let mut elsewhere: HashMap<usize, Vec<Message>> = HashMap::new();
            {
                let mut node = self.node_now();
                for message in messages.drain(..) {
                    if message.from != from || message.to != self.config.node_id {
                        continue;
                    }
                    if node.owns(message.group) {
                        node.step(message);
                    } else if is_hosted(message.group, self.config.groups) {
                        let owner = core_of_group(message.group, self.cores);
                        elsewhere.entry(owner).or_default().push(message);
                    }
                }
            }
            for (owner, batch) in elsewhere {
                // Raft tolerates loss: a full queue drops the forwarded messages.
                let _ = self.core.try_send(CoreId(owner), CoreMsg::Raft(batch));
            }
            self.schedule_pump();
        };
        if let Some(why) = why {
            warn!(core = self.me, ?remote, "closing a peer connection: {why}");
        }
    }

    async fn read_hello(&self, reader: &mut FrameReader, role: HelloRole) -> Result<Hello, String> {
        let frame = shardcore_io::timeout(Duration::from_secs(5), reader.next_frame())
            .await
            .map_err(|_| "no hello within 5 s".to_string())?
            .map_err(|e| e.to_string())?
            .ok_or_else(|| CLOSED_BEFORE_HELLO.to_string())?;
        if frame.kind != FrameKind::Hello {
            return Err(format!("first frame is {:?}, not Hello", frame.kind));
        }
        let hello = decode_hello(&frame.body).map_err(|e| format!("bad hello: {e}"))?;
        if hello.cluster_id != self.cluster {
            return Err(format!(
                "hello from another cluster ({:#x}, this is {:#x})",
                hello.cluster_id, self.cluster
            ));
        }
        if hello.role != role {
            return Err(format!("hello says {:?} on the {role:?} port", hello.role));
        }
        Ok(hello)
    }
}
