//! The client's sharded request path, for a cluster of sharded nodes (`sharded = true`):
//! key → shard ([`crate::shardkv::key_to_shard`]) → group, by the shard controller's latest
//! configuration held in a [`ShardRouter`].
//!
//! - **Routing**: the first operation fetches the latest configuration from the controller;
//!   after that a key goes to the group its shard belongs to, and that group's leader is cached
//!   as for the fixed placement (every node hosts every group, so any node may be asked). A
//!   group that does not serve the shard now answers `WrongShard` with the configuration it
//!   judged by: newer than ours, the client fetches the latest and resends to the new owner;
//!   not newer (the group is behind, or it owns the shard and is still pulling it), the client
//!   waits a little (5 ms doubling to 100 ms) and asks the same group again. A shard no group
//!   holds (none joined yet, or every group left) is waited on the same way.
//! - **Exactly once** (the session design of `shardkv::client` and `shardkv::shard`): a session
//!   is a client-chosen 64-bit id, never registered; its sequence numbers count its writes,
//!   one in flight at a time. A write keeps its id and sequence across every retry, to any
//!   replica of any group. The servers keep sessions per shard and move them with the shard,
//!   so the group that finally applies a write applies it once, and a retry that reaches the
//!   shard's new owner after the old one applied it gets the remembered reply. Sessions are
//!   pooled like the fixed path's: one per concurrent write. Two clients collide with
//!   probability about n²/2⁶⁵ for n session ids in use.
//! - **Bounds**: every wait ends at the operation's deadline; a write whose deadline passes is
//!   [`ClientError::Timeout`] (its outcome unknown); an operation never sent because no group
//!   held its shard is [`ClientError::Refused`] (it did not take effect).

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{sessionless, Client, ClientError, Session, ShardRouter};
use crate::kv::{Consistency, Op, Reply, Request};
use crate::raft::GroupId;
use crate::rng::Rng;
use crate::shardctl::{Config, LATEST};

/// The first wait after a `WrongShard` from a group that is not ahead of us, or for an
/// unassigned shard; it doubles up to [`MAX_SHARD_WAIT`]. A migration takes a few of the
/// groups' 100 ms polls, so waiting longer than a poll only adds latency.
const FIRST_SHARD_WAIT: Duration = Duration::from_millis(5);
/// The longest wait between two tries of a shard that is moving.
const MAX_SHARD_WAIT: Duration = Duration::from_millis(100);

/// Distinguishes clients of one process made in the same nanosecond.
static CLIENTS_MADE: AtomicU64 = AtomicU64::new(0);

/// The sharded path's state inside a [`Client`].
pub(super) struct ShardState {
    /// The configuration routed by (`None` until the first fetch).
    router: RefCell<Option<ShardRouter>>,
    /// Idle sessions.
    sessions: RefCell<Vec<Session>>,
    /// Draws session ids.
    ids: RefCell<Rng>,
}

impl ShardState {
    pub(super) fn new() -> ShardState {
        // Session ids must differ across clients and processes, not replay: the clock, the
        // process and a counter seed them.
        let now_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let made = CLIENTS_MADE.fetch_add(1, Ordering::Relaxed);
        let seed = now_ns ^ (u64::from(std::process::id()) << 32) ^ made.rotate_left(48);
        ShardState {
            router: RefCell::new(None),
            sessions: RefCell::new(Vec::new()),
            ids: RefCell::new(Rng::stream(seed, "client shard sessions")),
        }
    }
}

/// The sharded KV's key-to-shard function in the router's shape.
fn shard_of(key: &[u8], shards: usize) -> u64 {
    u64::from(crate::shardkv::key_to_shard(key, shards))
}

impl Client {
    /// The configuration the sharded path routes by, if it has fetched one.
    pub fn shard_config(&self) -> Option<Config> {
        self.shard
            .router
            .borrow()
            .as_ref()
            .map(|r| r.config().clone())
    }

    /// Reads `key` from `group` as it is, without routing: a linearizable get sent to that
    /// shard group, which answers [`ClientError::WrongShard`] unless it serves the key's shard
    /// now. For tools and tests that check which group serves what.
    pub async fn get_from_group(
        &self,
        group: GroupId,
        key: Bytes,
    ) -> Result<Option<Bytes>, ClientError> {
        let deadline = Instant::now() + self.config.op_timeout;
        let request = sessionless(Op::Get { key }, Consistency::Linearizable);
        match self.run(group, request, deadline).await? {
            Reply::Value(value) => Ok(value),
            other => Err(ClientError::Refused(format!("unexpected reply {other:?}"))),
        }
    }

    /// Runs one operation through the sharded path (module docs).
    pub(super) async fn execute_sharded(
        &self,
        op: Op,
        consistency: Consistency,
    ) -> Result<Reply, ClientError> {
        let deadline = Instant::now() + self.config.op_timeout;
        if !op.is_write() {
            return self
                .run_sharded(sessionless(op, consistency), deadline)
                .await;
        }
        let mut session = self.take_shard_session();
        let request = session.next_request(op);
        let result = self.run_sharded(request, deadline).await;
        if !matches!(result, Err(ClientError::Unknown)) {
            // After a timeout the session is still sound: its next sequence supersedes the one
            // in doubt, in whichever shard that one lands.
            self.shard.sessions.borrow_mut().push(session);
        }
        result
    }

    /// Sends `request` to its key's group until a group serving the shard answers it, or the
    /// deadline passes.
    async fn run_sharded(&self, request: Request, deadline: Instant) -> Result<Reply, ClientError> {
        let mut wait = FIRST_SHARD_WAIT;
        let mut sent = false;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(if sent {
                    ClientError::Timeout
                } else {
                    self.unassigned_error(request.op.key())
                });
            }
            let Some(group) = self.route_of(request.op.key(), deadline).await? else {
                // No group holds the shard in our configuration: a newer one may assign it.
                self.refresh_shards(0, deadline).await?;
                shardcore_io::sleep(wait.min(left)).await;
                wait = (wait * 2).min(MAX_SHARD_WAIT);
                continue;
            };
            sent = true;
            match self.run(group, request.clone(), deadline).await {
                Err(ClientError::WrongShard { config_num }) => {
                    self.count(|s| s.wrong_shard += 1);
                    if !self.refresh_shards(config_num, deadline).await? {
                        // The group is not ahead of us: it is catching up, or pulling the
                        // shard it owns. Ask it again shortly.
                        let left = deadline.saturating_duration_since(Instant::now());
                        shardcore_io::sleep(wait.min(left)).await;
                        wait = (wait * 2).min(MAX_SHARD_WAIT);
                    }
                }
                other => return other,
            }
        }
    }

    /// The group serving `key`'s shard in the router's configuration (fetching the first
    /// configuration if there is none yet); `None` when no group holds the shard.
    async fn route_of(
        &self,
        key: &[u8],
        deadline: Instant,
    ) -> Result<Option<GroupId>, ClientError> {
        if self.shard.router.borrow().is_none() {
            self.refresh_shards(0, deadline).await?;
        }
        let router = self.shard.router.borrow();
        let Some(router) = router.as_ref() else {
            return Err(ClientError::Timeout);
        };
        Ok(router.route(key).group)
    }

    /// Fetches the latest configuration when a `WrongShard` carrying `config_num` calls for it
    /// (0: ask anyway); returns whether the router moved forward. Bounded by `deadline`.
    async fn refresh_shards(
        &self,
        config_num: u64,
        deadline: Instant,
    ) -> Result<bool, ClientError> {
        let needed = self
            .shard
            .router
            .borrow()
            .as_ref()
            .is_none_or(|r| r.needs_refresh(config_num));
        if !needed {
            return Ok(false);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let config = match shardcore_io::timeout(left, self.ctl_query(LATEST)).await {
            Ok(result) => result?,
            Err(_) => return Err(ClientError::Timeout),
        };
        self.count(|s| s.router_refreshes += 1);
        let mut router = self.shard.router.borrow_mut();
        match router.as_mut() {
            Some(router) => Ok(router.update(config)),
            None => {
                *router = Some(ShardRouter::new(config, shard_of));
                Ok(true)
            }
        }
    }

    /// The refusal for an operation never sent because no group held its shard.
    fn unassigned_error(&self, key: &[u8]) -> ClientError {
        let router = self.shard.router.borrow();
        let Some(router) = router.as_ref() else {
            return ClientError::Timeout;
        };
        let shard = router.route(key).shard;
        ClientError::Refused(format!(
            "no shard group serves shard {shard} in configuration {} (join groups with \
             `shardcore ctl join`)",
            router.config_num()
        ))
    }

    fn take_shard_session(&self) -> Session {
        let idle = self.shard.sessions.borrow_mut().pop();
        idle.unwrap_or_else(|| self.new_shard_session())
    }

    fn new_shard_session(&self) -> Session {
        self.count(|s| s.sessions_opened += 1);
        // 0 means "no session" on the wire.
        let client = self.shard.ids.borrow_mut().next_u64().max(1);
        Session {
            client,
            next_seq: 1,
        }
    }

    /// Pools fresh sessions until `count` are idle; returns how many are.
    pub(super) fn pool_shard_sessions(&self, count: usize) -> usize {
        let have = self.shard.sessions.borrow().len();
        for _ in have..count {
            let session = self.new_shard_session();
            self.shard.sessions.borrow_mut().push(session);
        }
        self.shard.sessions.borrow().len()
    }
}
