//! The shard controller's state machine: every configuration ever made, in order, and the
//! exactly-once session table; changed only by applying committed entries, so every replica
//! holds the same history at the same index. Snapshots carry the whole history, so a restarted
//! or lagging replica answers queries for any past configuration.
//!
//! The history grows by one configuration per join, leave or move. Those are operator actions,
//! rare next to client traffic, and each configuration is at most [`super::config::MAX_SHARDS`]
//! × 8 bytes plus its groups; a history of 10,000 changes of a 64-shard cluster is about 6 MB.

use bytes::{BufMut, Bytes, BytesMut};

use super::command::*;
use super::config::{Config, DEFAULT_SHARDS, MAX_SHARDS};
use crate::kv::command::{get_u64, get_u8, ClientId, DecodeError};
use crate::kv::session::{SessionCheck, SessionTable};
use crate::kv::store::SessionLimits;
use crate::kv::{Refusal, ServiceApplied, StateMachine};
use crate::raft::Index;

/// What an empty controller is made from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CtlSettings {
    /// Shards per configuration (1..=[`MAX_SHARDS`]); fixed for the controller's life.
    pub shards: usize,
}

impl Default for CtlSettings {
    fn default() -> CtlSettings {
        CtlSettings {
            shards: DEFAULT_SHARDS,
        }
    }
}

/// What applying one controller entry produced.
pub type CtlApplied = ServiceApplied<CtlReply, CtlError>;

/// The replicated controller state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CtlStore {
    /// Every configuration; `configs[n].num == n`.
    configs: Vec<Config>,
    sessions: SessionTable<Result<CtlReply, CtlError>>,
    /// Entries that could not be decoded; skipped alike on every replica.
    undecodable: u64,
}

const SNAPSHOT_V1: u8 = 1;

impl CtlStore {
    /// A controller holding only config 0.
    pub fn new(limits: SessionLimits, settings: CtlSettings) -> CtlStore {
        CtlStore {
            configs: vec![Config::initial(settings.shards)],
            sessions: SessionTable::new(limits),
            undecodable: 0,
        }
    }

    /// The latest configuration.
    pub fn latest(&self) -> &Config {
        self.configs.last().expect("config 0 always exists")
    }

    /// Configuration `num`; [`LATEST`] or any number past the latest gives the latest.
    pub fn query(&self, num: u64) -> &Config {
        usize::try_from(num)
            .ok()
            .and_then(|n| self.configs.get(n))
            .unwrap_or_else(|| self.latest())
    }

    /// Every configuration, oldest first.
    pub fn configs(&self) -> &[Config] {
        &self.configs
    }

    /// Sessions held.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Entries skipped because they could not be decoded.
    pub fn undecodable_entries(&self) -> u64 {
        self.undecodable
    }

    /// Applies one committed entry's bytes at `index`.
    pub fn apply(&mut self, index: Index, data: &Bytes) -> Option<CtlApplied> {
        let Ok(command) = CtlCommand::decode(data) else {
            self.undecodable += 1;
            return None;
        };
        self.sessions.advance(command.stamp_ms);
        let CtlCommand {
            client, seq, op, ..
        } = command;
        if op == CtlOp::Register {
            // The entry's index is the id: unique, and the same on every replica.
            self.sessions.open(index, Ok(CtlReply::Changed { num: 0 }));
            let result = Ok(CtlReply::Registered { client: index });
            return Some(CtlApplied {
                client: 0,
                seq: 0,
                result,
            });
        }
        let result = match self.sessions.check(client, seq) {
            SessionCheck::Expired => Err(CtlError::SessionExpired),
            SessionCheck::Stale => Err(CtlError::Stale),
            SessionCheck::Repeat(reply) => reply,
            SessionCheck::Fresh => {
                let result = self.execute(&op);
                self.sessions.record(client, seq, result.clone());
                result
            }
        };
        Some(CtlApplied {
            client,
            seq,
            result,
        })
    }

    fn execute(&mut self, op: &CtlOp) -> Result<CtlReply, CtlError> {
        let latest = self.latest();
        let next = match op {
            CtlOp::Register | CtlOp::Query { .. } => unreachable!("not a logged write"),
            CtlOp::Join { groups } => latest.join(groups),
            CtlOp::Leave { groups } => latest.leave(groups),
            CtlOp::Move { shard, group } => latest.move_shard(*shard, *group),
        }
        .map_err(CtlError::Invalid)?;
        assert_eq!(
            next.num,
            self.configs.len() as u64,
            "configs are numbered densely"
        );
        assert_eq!(
            next.shards.len(),
            latest.shards.len(),
            "the shard count is fixed"
        );
        let num = next.num;
        self.configs.push(next);
        Ok(CtlReply::Changed { num })
    }

    /// The whole state: version, clock, skipped entries, the configurations, the sessions.
    pub fn snapshot(&self) -> Bytes {
        let shards = self.latest().shards.len();
        let mut buf = BytesMut::with_capacity(32 + self.configs.len() * (16 + 8 * shards));
        buf.put_u8(SNAPSHOT_V1);
        buf.put_u64_le(self.sessions.now_ms());
        buf.put_u64_le(self.undecodable);
        buf.put_u64_le(self.configs.len() as u64);
        for config in &self.configs {
            put_config(&mut buf, config);
        }
        self.sessions.encode(&mut buf, put_result);
        buf.freeze()
    }

    /// Rebuilds a controller from [`CtlStore::snapshot`]'s bytes, checking that the history is
    /// numbered densely from 0 with one shard count.
    pub fn restore(limits: SessionLimits, bytes: &Bytes) -> Result<CtlStore, DecodeError> {
        let mut buf = bytes.clone();
        let version = get_u8(&mut buf)?;
        if version != SNAPSHOT_V1 {
            return Err(DecodeError::UnknownTag(version));
        }
        let now_ms = get_u64(&mut buf)?;
        let undecodable = get_u64(&mut buf)?;
        let count = get_u64(&mut buf)?;
        // Each config takes at least 16 bytes, so a count past the bytes left is damage.
        if count == 0 || count > buf.len() as u64 / 16 {
            return Err(DecodeError::TooLong);
        }
        let mut configs: Vec<Config> = Vec::with_capacity(count as usize);
        for n in 0..count {
            let config = get_config(&mut buf)?;
            let shards = configs
                .first()
                .map_or(config.shards.len(), |c| c.shards.len());
            let valid = config.num == n && config.shards.len() == shards && shards >= 1;
            if !valid || shards > MAX_SHARDS {
                return Err(DecodeError::TooLong);
            }
            configs.push(config);
        }
        let sessions = SessionTable::decode(limits, now_ms, &mut buf, get_result)?;
        if !buf.is_empty() {
            return Err(DecodeError::TrailingBytes);
        }
        Ok(CtlStore {
            configs,
            sessions,
            undecodable,
        })
    }
}

impl StateMachine for CtlStore {
    type Op = CtlOp;
    type Reply = CtlReply;
    type Error = CtlError;
    type Settings = CtlSettings;

    fn new(limits: SessionLimits, settings: CtlSettings) -> CtlStore {
        CtlStore::new(limits, settings)
    }

    fn restore(limits: SessionLimits, snapshot: &Bytes) -> Result<CtlStore, DecodeError> {
        CtlStore::restore(limits, snapshot)
    }

    fn snapshot(&self) -> Bytes {
        CtlStore::snapshot(self)
    }

    fn apply(&mut self, index: Index, data: &Bytes) -> Option<CtlApplied> {
        CtlStore::apply(self, index, data)
    }

    fn cached_reply(&self, client: ClientId, seq: u64) -> Option<Result<CtlReply, CtlError>> {
        self.sessions.cached_reply(client, seq)
    }

    fn read(&self, op: &CtlOp) -> Result<CtlReply, CtlError> {
        match op {
            CtlOp::Query { num } => Ok(CtlReply::Config(self.query(*num).clone())),
            _ => unreachable!("only queries are reads"),
        }
    }

    fn is_read(op: &CtlOp) -> bool {
        matches!(op, CtlOp::Query { .. })
    }

    fn check_bounds(op: &CtlOp) -> Result<(), CtlError> {
        op.check_bounds()
    }

    fn encode_write(client: ClientId, seq: u64, stamp_ms: u64, op: &CtlOp) -> Bytes {
        let command = CtlCommand {
            client,
            seq,
            stamp_ms,
            op: op.clone(),
        };
        command.encode()
    }

    fn register_op() -> CtlOp {
        CtlOp::Register
    }

    fn registered(reply: &CtlReply) -> Option<ClientId> {
        match reply {
            CtlReply::Registered { client } => Some(*client),
            _ => None,
        }
    }

    fn refusal(refusal: Refusal) -> CtlError {
        CtlError::from_refusal(refusal)
    }

    fn as_refusal(error: &CtlError) -> Option<Refusal> {
        error.as_refusal()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::shardctl::config::Replica;

    struct Log {
        store: CtlStore,
        index: Index,
    }

    impl Log {
        fn new(shards: usize) -> Log {
            let store = CtlStore::new(SessionLimits::default(), CtlSettings { shards });
            Log { store, index: 0 }
        }

        fn apply(&mut self, client: ClientId, seq: u64, op: CtlOp) -> Result<CtlReply, CtlError> {
            self.index += 1;
            let command = CtlCommand {
                client,
                seq,
                stamp_ms: self.index,
                op,
            };
            let applied = self.store.apply(self.index, &command.encode());
            applied.expect("decodes").result
        }
    }

    fn join(group: u64) -> CtlOp {
        CtlOp::Join {
            groups: BTreeMap::from([(group, vec![Replica::on(group)])]),
        }
    }

    /// Join, move and leave make configs 1, 2, 3; a retry is answered from the session without
    /// a new config; a refusal is a result and changes nothing; every config stays queryable.
    #[test]
    fn history_and_exactly_once() {
        let mut log = Log::new(10);
        let Ok(CtlReply::Registered { client }) = log.apply(0, 0, CtlOp::Register) else {
            panic!("registration");
        };
        assert_eq!(
            log.apply(client, 1, join(5)),
            Ok(CtlReply::Changed { num: 1 })
        );
        assert_eq!(
            log.apply(client, 1, join(5)),
            Ok(CtlReply::Changed { num: 1 })
        );
        assert_eq!(log.store.configs().len(), 2, "the retry made no config");
        let moved = CtlOp::Move { shard: 3, group: 6 };
        assert_eq!(
            log.apply(client, 2, moved),
            Err(CtlError::Invalid(
                super::super::config::ConfigError::UnknownGroup(6)
            ))
        );
        assert_eq!(
            log.apply(client, 3, join(6)),
            Ok(CtlReply::Changed { num: 2 })
        );
        let leave = CtlOp::Leave { groups: vec![5] };
        assert_eq!(
            log.apply(client, 4, leave),
            Ok(CtlReply::Changed { num: 3 })
        );
        assert_eq!(log.apply(client, 3, join(7)), Err(CtlError::Stale));
        assert_eq!(log.apply(99, 1, join(7)), Err(CtlError::SessionExpired));
        assert_eq!(log.store.query(1).shards, vec![5; 10]);
        assert_eq!(log.store.query(3).shards, vec![6; 10]);
        assert_eq!(log.store.query(LATEST).num, 3);
        assert_eq!(log.store.query(1_000).num, 3);
    }

    /// A snapshot carries the whole history and the sessions; damage is an error.
    #[test]
    fn snapshot_round_trip() {
        let mut log = Log::new(64);
        let Ok(CtlReply::Registered { client }) = log.apply(0, 0, CtlOp::Register) else {
            panic!("registration");
        };
        for (seq, g) in (1..=4).zip([3, 1, 4, 9]) {
            log.apply(client, seq, join(g)).expect("joins");
        }
        let bytes = log.store.snapshot();
        let restored = CtlStore::restore(SessionLimits::default(), &bytes).expect("decodes");
        assert_eq!(restored, log.store);
        for len in 0..bytes.len() {
            assert!(
                CtlStore::restore(SessionLimits::default(), &bytes.slice(..len)).is_err(),
                "prefix {len}"
            );
        }
    }
}
