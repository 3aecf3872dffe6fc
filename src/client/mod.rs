//! The client library: a KV client for one core of an application (or of the bench tool).
//!
//! - **Pipelining**: any number of operations may be in flight at once from many tasks; they
//!   share one connection per node, and replies are matched by request id.
//! - **Routing**: a key's group is computed locally ([`crate::node::placement`]); each group's
//!   leader is cached, learnt from "not the leader" hints, and forgotten on failure.
//! - **Exactly once**: a write runs in a session of its group (Raft thesis §6.3) with a fresh
//!   sequence number and is retried with the same number until answered, so a retry after a
//!   lost reply is applied once. Sessions are pooled per group: one in-flight write per
//!   session, and as many sessions as concurrent writes. Reads need no session.
//! - **Timeouts**: each attempt has a timeout, after which the next node is tried; the whole
//!   operation has a deadline, after which it fails with [`ClientError::Timeout`] (a write may
//!   still take effect: its outcome is unknown).
//!
//! - **The shard controller**: the same client speaks to the controller's group
//!   ([`crate::node::placement::CONTROLLER_GROUP`], hosted by every node) over the same
//!   connections: [`Client::ctl_join`], [`Client::ctl_leave`], [`Client::ctl_move`] and
//!   [`Client::ctl_query`], with the controller's leader cached like a KV group's and changes
//!   retried in one session with the same sequence, so each applies once.
//! - **Sharded routing**: [`router::ShardRouter`] maps a key to its shard and group from a cached
//!   controller configuration, and says when a `WrongShard` answer calls for a fresher one
//!   ([`Client::refresh_router`]).
//! - **The sharded KV** ([`ClientConfig::sharded`], module [`sharded`]): for a cluster of
//!   sharded nodes the same operations route key → shard → group by the controller's latest
//!   configuration (fetched on first use, refreshed when a group answers `WrongShard` with a
//!   newer number), and a write keeps one client-chosen session id and sequence number across
//!   every retry and every group, so it applies once even when its shard moves mid-flight.
//!
//! The client runs on the runtime's executor (`shardcore_io`), one `Client` per core; it is not
//! `Send`.
//!
//! [`workload`] is a checking workload on top of it (histories and a lost-write count), used by
//! the real-process tests and `scripts/crash-restart.sh`.

pub mod cli;
mod conn;
pub mod ctl_cli;
pub mod router;
pub mod sharded;
pub mod workload;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;

pub use conn::{Conn, ConnError};
pub use router::ShardRouter;

use crate::kv::{ClientId, Consistency, KvError, Op, Reply, Request, ServiceRequest};
use crate::node::placement::{group_for_key, CONTROLLER_GROUP};
use crate::raft::{GroupId, NodeId};
use crate::shardctl::{Config, CtlError, CtlOp, CtlReply, CtlRequest, Replica, ShardId, LATEST};
use crate::wire::shardctl::{ControllerReply, ControllerReplyError, ControllerRequest};
use crate::wire::{ClientRequest, ReplyError};

/// How a client reaches the cluster and how patient it is.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Every node: its id and client address.
    pub nodes: Vec<(NodeId, SocketAddr)>,
    /// The cluster's name (checked by the nodes at connect).
    pub cluster_id: String,
    /// The cluster's KV group count (the nodes' `groups`).
    pub groups: u64,
    /// One attempt's limit; then the next node is tried.
    pub attempt_timeout: Duration,
    /// The whole operation's limit.
    pub op_timeout: Duration,
    /// Connecting's limit.
    pub connect_timeout: Duration,
    /// The nodes run the sharded KV (`sharded = true`): route keys by the shard controller's
    /// configuration instead of the fixed placement (module docs of [`sharded`]).
    pub sharded: bool,
}

impl ClientConfig {
    /// Defaults for a cluster of `nodes`: 1 s attempts, 10 s operations (several elections).
    pub fn new(nodes: Vec<(NodeId, SocketAddr)>) -> ClientConfig {
        ClientConfig {
            nodes,
            cluster_id: "local".to_string(),
            groups: 8,
            attempt_timeout: Duration::from_secs(1),
            op_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_millis(500),
            sharded: false,
        }
    }
}

/// Why an operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientError {
    /// No answer before the deadline. A write may still take effect.
    Timeout,
    /// The session expired while a write was retried: it may or may not have taken effect.
    Unknown,
    /// The service refused the operation (too large, ...): it did not take effect.
    Refused(String),
    /// The client's configuration is unusable (no nodes).
    Config(String),
    /// A shard group does not serve the key's shard under configuration `config_num` (0: not
    /// said); the operation did not take effect. Refresh the routing
    /// ([`Client::refresh_router`]) and send it again.
    WrongShard {
        /// The configuration the group judged by.
        config_num: u64,
    },
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Timeout => write!(f, "timed out (a write may still take effect)"),
            ClientError::Unknown => write!(f, "outcome unknown: the session expired mid-retry"),
            ClientError::Refused(why) => write!(f, "refused: {why}"),
            ClientError::Config(why) => write!(f, "client configuration: {why}"),
            ClientError::WrongShard { config_num } => {
                write!(f, "wrong shard group (by configuration {config_num})")
            }
        }
    }
}

impl std::error::Error for ClientError {}

/// Counters of one client.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Attempts sent (first tries and retries).
    pub attempts: u64,
    /// Retries after a wrong leader, timeout, busy node or failed connection.
    pub retries: u64,
    /// Sessions opened.
    pub sessions_opened: u64,
    /// Connections made.
    pub connects: u64,
    /// Sharded: `WrongShard` answers (each followed by a refresh or a wait, then a resend).
    pub wrong_shard: u64,
    /// Sharded: configurations fetched from the controller.
    pub router_refreshes: u64,
}

#[derive(Clone, Copy, Debug)]
struct Session {
    client: ClientId,
    next_seq: u64,
}

impl Session {
    /// The request for this session's next write `op`, with the next sequence number: a retry
    /// of it resends this very request, so the service applies it once.
    fn next_request<O>(&mut self, op: O) -> ServiceRequest<O> {
        let request = ServiceRequest {
            client: self.client,
            seq: self.next_seq,
            op,
            consistency: Consistency::Linearizable,
        };
        self.next_seq += 1;
        request
    }
}

/// A registration answered with something else.
fn unexpected_registration(reply: impl fmt::Debug) -> ClientError {
    ClientError::Refused(format!("unexpected reply to Register: {reply:?}"))
}

/// A request outside any session: a read, or the registration that opens one.
fn sessionless<O>(op: O, consistency: Consistency) -> ServiceRequest<O> {
    ServiceRequest {
        client: 0,
        seq: 0,
        op,
        consistency,
    }
}

/// A KV client for one core. See the module docs.
pub struct Client {
    config: ClientConfig,
    conns: RefCell<HashMap<NodeId, Rc<Conn>>>,
    leaders: RefCell<HashMap<GroupId, NodeId>>,
    sessions: RefCell<HashMap<GroupId, Vec<Session>>>,
    /// Nodes a task is connecting to now: the others wait for that connection.
    connecting: RefCell<std::collections::HashSet<NodeId>>,
    rotate: Cell<usize>,
    stats: Cell<ClientStats>,
    /// Sharded: the routing state (module [`sharded`]).
    shard: sharded::ShardState,
}

/// How one attempt ended: with the operation's result, or asking for another try.
enum Attempt<T> {
    Done(Result<T, ClientError>),
    Retry { hint: NodeId },
    SessionExpired,
}

impl Client {
    /// A client; it connects lazily.
    pub fn new(config: ClientConfig) -> Result<Client, ClientError> {
        if config.nodes.is_empty() {
            return Err(ClientError::Config("no nodes given".to_string()));
        }
        if config.groups == 0 {
            return Err(ClientError::Config("groups must be at least 1".to_string()));
        }
        Ok(Client {
            config,
            conns: RefCell::new(HashMap::new()),
            leaders: RefCell::new(HashMap::new()),
            sessions: RefCell::new(HashMap::new()),
            connecting: RefCell::new(std::collections::HashSet::new()),
            rotate: Cell::new(0),
            stats: Cell::new(ClientStats::default()),
            shard: sharded::ShardState::new(),
        })
    }

    /// The counters so far.
    pub fn stats(&self) -> ClientStats {
        self.stats.get()
    }

    /// The node this client last found leading `group` (KV or
    /// [`CONTROLLER_GROUP`]), if any: learnt from answers and "not the leader" hints.
    pub fn leader_hint(&self, group: GroupId) -> Option<NodeId> {
        self.leaders.borrow().get(&group).copied()
    }

    /// Reads `key` (linearizable).
    pub async fn get(&self, key: Bytes) -> Result<Option<Bytes>, ClientError> {
        self.get_with(key, Consistency::Linearizable).await
    }

    /// Reads `key` with the given consistency.
    pub async fn get_with(
        &self,
        key: Bytes,
        consistency: Consistency,
    ) -> Result<Option<Bytes>, ClientError> {
        match self.execute(Op::Get { key }, consistency).await? {
            Reply::Value(value) => Ok(value),
            other => Err(ClientError::Refused(format!("unexpected reply {other:?}"))),
        }
    }

    /// Sets `key` to `value`.
    pub async fn put(&self, key: Bytes, value: Bytes) -> Result<(), ClientError> {
        self.execute(Op::Put { key, value }, Consistency::Linearizable)
            .await
            .map(drop)
    }

    /// Appends `value` to `key`'s value.
    pub async fn append(&self, key: Bytes, value: Bytes) -> Result<(), ClientError> {
        self.execute(Op::Append { key, value }, Consistency::Linearizable)
            .await
            .map(drop)
    }

    /// Removes `key`.
    pub async fn delete(&self, key: Bytes) -> Result<(), ClientError> {
        self.execute(Op::Delete { key }, Consistency::Linearizable)
            .await
            .map(drop)
    }

    /// Sets `key` to `new` if it holds `expected` (`None`: if absent). Returns whether it
    /// swapped and the value found.
    pub async fn compare_and_swap(
        &self,
        key: Bytes,
        expected: Option<Bytes>,
        new: Bytes,
    ) -> Result<(bool, Option<Bytes>), ClientError> {
        let op = Op::CompareAndSwap { key, expected, new };
        match self.execute(op, Consistency::Linearizable).await? {
            Reply::Swapped { swapped, found } => Ok((swapped, found)),
            other => Err(ClientError::Refused(format!("unexpected reply {other:?}"))),
        }
    }

    /// Runs one operation to completion (or to its deadline).
    pub async fn execute(&self, op: Op, consistency: Consistency) -> Result<Reply, ClientError> {
        if self.config.sharded {
            return self.execute_sharded(op, consistency).await;
        }
        let group = group_for_key(op.key(), self.config.groups);
        let deadline = Instant::now() + self.config.op_timeout;
        if !op.is_write() {
            return self
                .run(group, sessionless(op, consistency), deadline)
                .await;
        }
        let mut session = self.take_session(group, deadline).await?;
        let request = session.next_request(op);
        let result = self.run(group, request, deadline).await;
        match &result {
            Err(ClientError::Unknown) => {}
            // A session whose request timed out is still sound: its next sequence number
            // supersedes the one in doubt, which the service then refuses as stale.
            _ => self.put_session(group, session),
        }
        result
    }

    /// Runs one KV request on `group` until answered or `deadline`.
    async fn run(
        &self,
        group: GroupId,
        request: Request,
        deadline: Instant,
    ) -> Result<Reply, ClientError> {
        let send = |conn: Rc<Conn>, until: Instant| {
            let request = ClientRequest {
                id: 0,
                group,
                request: request.clone(),
            };
            async move { conn.call(request, until).await }
        };
        self.run_with(group, deadline, send, judge_kv).await
    }

    /// Runs one request on `group` until answered or `deadline`: `send` makes one attempt on a
    /// connection (given when to give it up), `judge` reads its reply (given the node asked). The node to ask comes from
    /// the group's cached leader; hints update it, failures forget it and back off.
    async fn run_with<T, R, F, Fut>(
        &self,
        group: GroupId,
        deadline: Instant,
        send: F,
        judge: fn(NodeId, R) -> Attempt<T>,
    ) -> Result<T, ClientError>
    where
        F: Fn(Rc<Conn>, Instant) -> Fut,
        Fut: Future<Output = Result<R, ConnError>>,
    {
        let mut backoff = Duration::from_millis(5);
        let mut first = true;
        loop {
            if Instant::now() >= deadline {
                return Err(ClientError::Timeout);
            }
            if !first {
                self.count(|s| s.retries += 1);
            }
            first = false;
            match self.attempt(group, deadline, &send, judge).await {
                Attempt::Done(result) => return result,
                Attempt::SessionExpired => return Err(ClientError::Unknown),
                Attempt::Retry { hint } if hint != 0 => {
                    self.leaders.borrow_mut().insert(group, hint);
                }
                Attempt::Retry { .. } => {
                    self.leaders.borrow_mut().remove(&group);
                    self.rotate.set(self.rotate.get().wrapping_add(1));
                    let left = deadline.saturating_duration_since(Instant::now());
                    shardcore_io::sleep(backoff.min(left)).await;
                    backoff = (backoff * 2).min(Duration::from_millis(200));
                }
            }
        }
    }

    async fn attempt<T, R, F, Fut>(
        &self,
        group: GroupId,
        deadline: Instant,
        send: &F,
        judge: fn(NodeId, R) -> Attempt<T>,
    ) -> Attempt<T>
    where
        F: Fn(Rc<Conn>, Instant) -> Fut,
        Fut: Future<Output = Result<R, ConnError>>,
    {
        self.count(|s| s.attempts += 1);
        let node = self.pick_node(group);
        let Some(conn) = self.conn(node).await else {
            return Attempt::Retry { hint: 0 };
        };
        // The connection gives the attempt up at `until` (no timer of its own: see
        // `Conn::call`).
        let until = (Instant::now() + self.config.attempt_timeout).min(deadline);
        let reply = match send(conn, until).await {
            Ok(reply) => reply,
            Err(ConnError::Encode(why)) => return Attempt::Done(Err(ClientError::Refused(why))),
            Err(ConnError::Closed(_)) => {
                self.conns.borrow_mut().remove(&node);
                return Attempt::Retry { hint: 0 };
            }
            Err(ConnError::TimedOut) => return Attempt::Retry { hint: 0 },
        };
        let attempt = judge(node, reply);
        if let Attempt::Done(Ok(_)) = &attempt {
            self.leaders.borrow_mut().insert(group, node);
        }
        attempt
    }

    fn pick_node(&self, group: GroupId) -> NodeId {
        if let Some(&leader) = self.leaders.borrow().get(&group) {
            if self.config.nodes.iter().any(|(id, _)| *id == leader) {
                return leader;
            }
        }
        let nodes = &self.config.nodes;
        // Wrapping: the controller's group id is u64::MAX.
        nodes[self.rotate.get().wrapping_add(group as usize) % nodes.len()].0
    }

    async fn conn(&self, node: NodeId) -> Option<Rc<Conn>> {
        // One connect per node at a time: a task that finds one under way waits for it (at
        // most the connect timeout) instead of opening a connection it would throw away.
        let waited = Instant::now();
        loop {
            if let Some(conn) = self.conns.borrow().get(&node) {
                if conn.is_alive() {
                    return Some(conn.clone());
                }
            }
            if !self.connecting.borrow().contains(&node) {
                break;
            }
            if waited.elapsed() > self.config.connect_timeout {
                return None;
            }
            shardcore_io::sleep(Duration::from_millis(1)).await;
        }
        self.connecting.borrow_mut().insert(node);
        let conn = self.connect(node).await;
        self.connecting.borrow_mut().remove(&node);
        conn
    }

    async fn connect(&self, node: NodeId) -> Option<Rc<Conn>> {
        let addr = self
            .config
            .nodes
            .iter()
            .find(|(id, _)| *id == node)
            .map(|(_, addr)| *addr)?;
        let cluster = crate::node::server::cluster_hash(&self.config.cluster_id);
        match Conn::connect(addr, cluster, self.config.connect_timeout).await {
            Ok(conn) => {
                self.count(|s| s.connects += 1);
                // Two tasks may have connected at once; keep the first, drop ours.
                let mut conns = self.conns.borrow_mut();
                let entry = conns.entry(node).or_insert_with(|| conn.clone());
                if !entry.is_alive() {
                    *entry = conn;
                }
                Some(entry.clone())
            }
            Err(_) => None,
        }
    }

    async fn take_session(
        &self,
        group: GroupId,
        deadline: Instant,
    ) -> Result<Session, ClientError> {
        self.pooled_or_opened(group, || async move {
            let request = sessionless(Op::Register, Consistency::Linearizable);
            match self.run(group, request, deadline).await? {
                Reply::Registered { client } => Ok(client),
                other => Err(unexpected_registration(other)),
            }
        })
        .await
    }

    /// A pooled session of `group`, or a new one `register` opens through the service's log.
    async fn pooled_or_opened<Fut>(
        &self,
        group: GroupId,
        register: impl FnOnce() -> Fut,
    ) -> Result<Session, ClientError>
    where
        Fut: Future<Output = Result<ClientId, ClientError>>,
    {
        if let Some(session) = self
            .sessions
            .borrow_mut()
            .get_mut(&group)
            .and_then(Vec::pop)
        {
            return Ok(session);
        }
        let client = register().await?;
        self.count(|s| s.sessions_opened += 1);
        Ok(Session {
            client,
            next_seq: 1,
        })
    }

    /// Opens sessions for `group` until `count` are pooled (concurrently), so that a run's
    /// writes do not pay for opening them. Returns how many are pooled.
    pub async fn open_sessions(&self, group: GroupId, count: usize) -> Result<usize, ClientError> {
        if self.config.sharded {
            // Sharded sessions are the client's own ids: nothing to open through a log.
            return Ok(self.pool_shard_sessions(count));
        }
        let have = self.sessions.borrow().get(&group).map_or(0, Vec::len);
        let deadline = Instant::now() + self.config.op_timeout;
        let opening: Vec<_> = (have..count)
            .map(|_| Box::pin(self.take_session(group, deadline)))
            .collect();
        let mut first_error = None;
        for result in join_all(opening).await {
            match result {
                Ok(session) => self.put_session(group, session),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(self.sessions.borrow().get(&group).map_or(0, Vec::len)),
        }
    }

    fn put_session(&self, group: GroupId, session: Session) {
        self.sessions
            .borrow_mut()
            .entry(group)
            .or_default()
            .push(session);
    }

    fn count(&self, f: impl FnOnce(&mut ClientStats)) {
        let mut stats = self.stats.get();
        f(&mut stats);
        self.stats.set(stats);
    }
}

impl Client {
    /// Reads configuration `num` from the shard controller ([`LATEST`]: the latest).
    /// Linearizable: served by the controller's leader after a ReadIndex round.
    pub async fn ctl_query(&self, num: u64) -> Result<Config, ClientError> {
        match self.ctl_execute(CtlOp::Query { num }).await? {
            CtlReply::Config(config) => Ok(config),
            other => Err(ClientError::Refused(format!("unexpected reply {other:?}"))),
        }
    }

    /// Adds `groups` (with their replicas); returns the number of the config it made.
    pub async fn ctl_join(
        &self,
        groups: BTreeMap<GroupId, Vec<Replica>>,
    ) -> Result<u64, ClientError> {
        self.ctl_change(CtlOp::Join { groups }).await
    }

    /// Removes `groups`; returns the number of the config it made.
    pub async fn ctl_leave(&self, groups: Vec<GroupId>) -> Result<u64, ClientError> {
        self.ctl_change(CtlOp::Leave { groups }).await
    }

    /// Puts `shard` on `group`; returns the number of the config it made.
    pub async fn ctl_move(&self, shard: ShardId, group: GroupId) -> Result<u64, ClientError> {
        self.ctl_change(CtlOp::Move { shard, group }).await
    }

    async fn ctl_change(&self, op: CtlOp) -> Result<u64, ClientError> {
        match self.ctl_execute(op).await? {
            CtlReply::Changed { num } => Ok(num),
            other => Err(ClientError::Refused(format!("unexpected reply {other:?}"))),
        }
    }

    /// Runs one controller operation to completion (or to its deadline). A change runs in a
    /// pooled controller session with a fresh sequence number, retried with that same number
    /// until answered, so it is applied once however many attempts reach the log; a query
    /// needs no session. A refusal by the configuration (a group joining twice, ...) is
    /// [`ClientError::Refused`] with its reason.
    pub async fn ctl_execute(&self, op: CtlOp) -> Result<CtlReply, ClientError> {
        let deadline = Instant::now() + self.config.op_timeout;
        if matches!(op, CtlOp::Query { .. }) {
            let request = sessionless(op, Consistency::Linearizable);
            return self.run_ctl(request, deadline).await;
        }
        let mut session = self.take_ctl_session(deadline).await?;
        let request = session.next_request(op);
        let result = self.run_ctl(request, deadline).await;
        if !matches!(result, Err(ClientError::Unknown)) {
            self.put_session(CONTROLLER_GROUP, session);
        }
        result
    }

    /// Refreshes `router` from the controller when it is behind `config_num` (the number a
    /// `WrongShard` answer carried; 0: unknown, ask for the latest). Returns whether the router
    /// changed.
    pub async fn refresh_router(
        &self,
        router: &mut ShardRouter,
        config_num: u64,
    ) -> Result<bool, ClientError> {
        if !router.needs_refresh(config_num) {
            return Ok(false);
        }
        let config = self.ctl_query(LATEST).await?;
        Ok(router.update(config))
    }

    async fn run_ctl(
        &self,
        request: CtlRequest,
        deadline: Instant,
    ) -> Result<CtlReply, ClientError> {
        let send = |conn: Rc<Conn>, until: Instant| {
            let request = ControllerRequest {
                id: 0,
                request: request.clone(),
            };
            async move { conn.call_controller(request, until).await }
        };
        self.run_with(CONTROLLER_GROUP, deadline, send, judge_ctl)
            .await
    }

    async fn take_ctl_session(&self, deadline: Instant) -> Result<Session, ClientError> {
        self.pooled_or_opened(CONTROLLER_GROUP, || async move {
            let request = sessionless(CtlOp::Register, Consistency::Linearizable);
            match self.run_ctl(request, deadline).await? {
                CtlReply::Registered { client } => Ok(client),
                other => Err(unexpected_registration(other)),
            }
        })
        .await
    }
}

/// What a KV reply from `node` means for the operation.
fn judge_kv(node: NodeId, reply: crate::wire::ClientReply) -> Attempt<Reply> {
    match reply.result {
        Ok(reply) => Attempt::Done(Ok(reply)),
        Err(ReplyError::Kv(KvError::WrongLeader { leader })) => Attempt::Retry {
            hint: if leader == node { 0 } else { leader },
        },
        Err(
            ReplyError::Kv(KvError::Timeout | KvError::Busy)
            | ReplyError::Unavailable
            | ReplyError::ShuttingDown,
        ) => Attempt::Retry { hint: 0 },
        Err(ReplyError::Kv(KvError::SessionExpired)) => Attempt::SessionExpired,
        Err(ReplyError::WrongShard { config_num }) => {
            Attempt::Done(Err(ClientError::WrongShard { config_num }))
        }
        Err(error) => Attempt::Done(Err(ClientError::Refused(format!("{error:?}")))),
    }
}

/// What a controller reply from `node` means for the operation.
fn judge_ctl(node: NodeId, reply: ControllerReply) -> Attempt<CtlReply> {
    match reply.result {
        Ok(reply) => Attempt::Done(Ok(reply)),
        Err(ControllerReplyError::Ctl(CtlError::WrongLeader { leader })) => Attempt::Retry {
            hint: if leader == node { 0 } else { leader },
        },
        Err(
            ControllerReplyError::Ctl(CtlError::Timeout | CtlError::Busy)
            | ControllerReplyError::Unavailable,
        ) => Attempt::Retry { hint: 0 },
        Err(ControllerReplyError::Ctl(CtlError::SessionExpired)) => Attempt::SessionExpired,
        Err(ControllerReplyError::Ctl(CtlError::Invalid(error))) => {
            Attempt::Done(Err(ClientError::Refused(error.to_string())))
        }
        Err(ControllerReplyError::Ctl(error)) => {
            Attempt::Done(Err(ClientError::Refused(error.to_string())))
        }
        Err(ControllerReplyError::BadRequest) => Attempt::Done(Err(ClientError::Refused(
            "the controller found the request malformed".to_string(),
        ))),
    }
}

/// Runs every future at once on this core and returns their outputs in order.
async fn join_all<F: std::future::Future + Unpin>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Option<F>> = futures.into_iter().map(Some).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(move |cx| {
        let mut pending = false;
        for (slot, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if let Some(future) = slot {
                match std::pin::Pin::new(future).poll(cx) {
                    std::task::Poll::Ready(value) => {
                        *output = Some(value);
                        *slot = None;
                    }
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(
                outputs
                    .iter_mut()
                    .map(|o| o.take().expect("ready"))
                    .collect(),
            )
        }
    })
    .await
}
