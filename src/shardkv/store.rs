//! A shard group's state machine: the configuration the group is in and every shard's state,
//! data and sessions, changed only by applying committed entries in order, so every replica of
//! the group holds the same state at the same index. Its snapshots carry all of it.
//!
//! Apply rules (the migration itself is described in [`super`]):
//! - a client write is applied only to a `Serving` shard, exactly once by the shard's sessions;
//!   otherwise it is answered `WrongGroup` with the group's configuration number and nothing
//!   changes (the client retries elsewhere with the same sequence number);
//! - configuration `n + 1` is applied only in configuration `n` with every shard settled;
//! - a shard part is applied only in the configuration it names, to a `Pulling` shard whose
//!   install has reached exactly the key the part continues after (so a duplicate, a part out
//!   of order or a stale leader's part changes nothing); a delete only in the configuration it
//!   names, to a `BePulled` shard. Everything else is counted as ignored and changes nothing;
//!   a part that does not decode, or whose keys are out of order or of another shard, is
//!   counted as undecodable and changes nothing either.
//!
//! Other groups' inquiries are answered by [`ShardStore::answer`], a pure function of the
//! applied state.

use bytes::{BufMut, Bytes, BytesMut};

use super::command::{get_key_option, Last, ShardCommand, ShardKvError, MAX_SHARD_PART_BYTES};
use super::inquiry::{Answer, Inquiry, PullAnswer};
use super::key_to_shard;
use super::shard::{decode_part, Outcome, Shard, ShardState};
use crate::kv::command::{get_u64, get_u8, put_option, ClientId, Command, DecodeError, KvError};
use crate::kv::{Op, Refusal, Reply, ServiceApplied, SessionLimits, StateMachine};
use crate::raft::{GroupId, Index};
use crate::shardctl::command::{get_config, get_count, put_config};
use crate::shardctl::config::MAX_SHARDS;
use crate::shardctl::{Config, ShardId, DEFAULT_SHARDS, NO_GROUP};

/// What an empty shard group's state machine is made from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardKvSettings {
    /// The group's id, as the controller's configurations name it.
    pub group: GroupId,
    /// Shards per configuration (the controller's setting; fixed for the cluster's life).
    pub shards: usize,
}

impl Default for ShardKvSettings {
    /// A placeholder (group 0 serves nothing); a restored store reads its own from the snapshot.
    fn default() -> ShardKvSettings {
        ShardKvSettings {
            group: NO_GROUP,
            shards: DEFAULT_SHARDS,
        }
    }
}

/// What applying one entry produced.
pub type ShardApplied = ServiceApplied<Reply, ShardKvError>;

/// One shard group's replicated state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardStore {
    group: GroupId,
    /// The configuration the group is in (config 0 until the first is applied).
    config: Config,
    /// Every shard of the configuration, by shard id.
    shards: Vec<Shard>,
    limits: SessionLimits,
    /// Entries that could not be decoded; skipped alike on every replica.
    undecodable: u64,
    /// Migration commands applied out of turn (stale or duplicate) and so ignored.
    ignored: u64,
    /// Migration commands that took effect (a configuration, a part, a delete): a host
    /// compares it across applies to take the next step at once rather than at its next poll.
    migration_steps: u64,
}

/// The snapshot format before chunked transfers: no step count, no install progress.
const SNAPSHOT_V1: u8 = 1;
/// The current snapshot format: V1 plus the step count and each pulling shard's progress.
const SNAPSHOT_V2: u8 = 2;

impl ShardStore {
    /// An empty group in configuration 0.
    pub fn new(limits: SessionLimits, settings: ShardKvSettings) -> ShardStore {
        let config = Config::initial(settings.shards);
        let shards = (0..settings.shards)
            .map(|_| Shard::new(ShardState::Absent, limits))
            .collect();
        ShardStore {
            group: settings.group,
            config,
            shards,
            limits,
            undecodable: 0,
            ignored: 0,
            migration_steps: 0,
        }
    }

    /// The group's id.
    pub fn group(&self) -> GroupId {
        self.group
    }

    /// The configuration the group is in.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Shard `shard`'s state.
    pub fn shard_state(&self, shard: ShardId) -> ShardState {
        self.shards[shard as usize].state
    }

    /// Shard `shard`.
    pub fn shard(&self, shard: ShardId) -> &Shard {
        &self.shards[shard as usize]
    }

    /// True when every shard is settled, so the next configuration may be applied.
    pub fn is_settled(&self) -> bool {
        self.shards.iter().all(|s| s.state.is_settled())
    }

    /// The shards not yet settled in this configuration (`Pulling` or `BePulled`, each naming
    /// the other group involved), in shard order: what the leader's poll asks about.
    pub fn migrating(&self) -> impl Iterator<Item = (ShardId, ShardState)> + '_ {
        self.shards
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.state.is_settled())
            .map(|(i, s)| (i as ShardId, s.state))
    }

    /// A key's value if this group serves its shard.
    pub fn get(&self, key: &[u8]) -> Result<Option<Bytes>, ShardKvError> {
        let shard = &self.shards[key_to_shard(key, self.shards.len()) as usize];
        if shard.state != ShardState::Serving {
            return Err(ShardKvError::WrongGroup {
                config: self.config.num,
            });
        }
        Ok(shard.get(key))
    }

    /// Bytes of keys and values held, over every shard (served, frozen or pulled).
    pub fn data_bytes(&self) -> usize {
        self.shards.iter().map(Shard::data_bytes).sum()
    }

    /// Entries skipped because they could not be decoded.
    pub fn undecodable_entries(&self) -> u64 {
        self.undecodable
    }

    /// Migration commands ignored because they were applied out of turn.
    pub fn ignored_commands(&self) -> u64 {
        self.ignored
    }

    /// Migration commands that took effect so far (configurations, parts, deletes).
    pub fn migration_steps(&self) -> u64 {
        self.migration_steps
    }

    /// Applies one committed entry's bytes at `index`; only client writes produce a result.
    pub fn apply(&mut self, _index: Index, data: &Bytes) -> Option<ShardApplied> {
        let command = match ShardCommand::decode(data) {
            Ok(command) => command,
            Err(_) => {
                self.undecodable += 1;
                return None;
            }
        };
        match command {
            ShardCommand::Client(command) => return Some(self.apply_client(command)),
            ShardCommand::Config(config) => self.apply_config(config),
            ShardCommand::Install {
                config,
                shard,
                payload,
            } => self.apply_install(config, shard, &payload),
            ShardCommand::InstallPart {
                config,
                shard,
                after,
                last,
                payload,
            } => self.apply_part(config, shard, after.as_ref(), last, &payload),
            ShardCommand::Delete { config, shard } => self.apply_delete(config, shard),
        }
        None
    }

    fn apply_client(&mut self, command: Command) -> ShardApplied {
        let Command {
            client,
            seq,
            stamp_ms,
            op,
        } = command;
        let result = match op {
            Op::Register | Op::Get { .. } => Err(ShardKvError::Unsupported),
            _ => {
                let index = key_to_shard(op.key(), self.shards.len()) as usize;
                let num = self.config.num;
                let max_sessions = self.limits.max_sessions;
                let shard = &mut self.shards[index];
                if shard.state == ShardState::Serving {
                    shard.apply_write(client, seq, stamp_ms, &op, max_sessions)
                } else {
                    Err(ShardKvError::WrongGroup { config: num })
                }
            }
        };
        ShardApplied {
            client,
            seq,
            result,
        }
    }

    /// Moves to the next configuration: each shard's state follows from its owner before and
    /// after (module docs of [`super`]).
    fn apply_config(&mut self, next: Config) {
        let in_turn = next.num == self.config.num + 1
            && next.shards.len() == self.shards.len()
            && self.is_settled();
        if !in_turn {
            self.ignored += 1;
            return;
        }
        let me = self.group;
        for (i, shard) in self.shards.iter_mut().enumerate() {
            let (old, new) = (self.config.shards[i], next.shards[i]);
            let held = shard.state == ShardState::Serving;
            assert_eq!(
                held,
                old == me,
                "a settled group serves exactly its shards (shard {i})"
            );
            shard.state = match (old == me, new == me) {
                (true, true) => ShardState::Serving,
                // New to every group: nothing to pull, it starts empty.
                (false, true) if old == NO_GROUP => ShardState::Serving,
                (false, true) => {
                    shard.start_pulling(old);
                    continue;
                }
                // Nobody will pull it: the controller left the shard unassigned (every group
                // left), and its data goes with it, as in the lab.
                (true, false) if new == NO_GROUP => {
                    shard.clear(self.limits);
                    ShardState::Absent
                }
                (true, false) => ShardState::BePulled { to: new },
                (false, false) => ShardState::Absent,
            };
        }
        self.config = next;
        self.migration_steps += 1;
    }

    /// The whole-shard install of earlier versions' logs (see [`ShardCommand::Install`]).
    fn apply_install(&mut self, config: u64, shard: ShardId, payload: &Bytes) {
        let Some(held) = self.shards.get(shard as usize) else {
            self.ignored += 1;
            return;
        };
        if config != self.config.num || !matches!(held.state, ShardState::Pulling { .. }) {
            self.ignored += 1;
            return;
        }
        match Shard::decode_transfer(payload, ShardState::Serving, self.limits) {
            Ok(installed) => {
                self.shards[shard as usize] = installed;
                self.migration_steps += 1;
            }
            // The leader pulls again at its next poll; every replica skips this one alike.
            Err(_) => self.undecodable += 1,
        }
    }

    /// One part of a pulled shard, applied only in turn (module docs).
    fn apply_part(
        &mut self,
        config: u64,
        shard: ShardId,
        after: Option<&Bytes>,
        last: Last,
        payload: &Bytes,
    ) {
        let shards = self.shards.len();
        let Some(held) = self.shards.get_mut(shard as usize) else {
            self.ignored += 1;
            return;
        };
        let in_turn = config == self.config.num
            && matches!(held.state, ShardState::Pulling { .. })
            && held.progress() == after;
        if !in_turn {
            self.ignored += 1;
            return;
        }
        // A part that cannot be installed is skipped alike by every replica; the leader asks
        // for the same part again at its next poll.
        let Ok(part) = decode_part(payload, last, self.limits) else {
            self.undecodable += 1;
            return;
        };
        if part
            .pairs
            .iter()
            .any(|(key, _)| key_to_shard(key, shards) != shard)
        {
            self.undecodable += 1;
            return;
        }
        if held.install_part(after, part).is_err() {
            self.undecodable += 1;
            return;
        }
        if last == Last::Yes {
            held.state = ShardState::Serving;
        }
        self.migration_steps += 1;
    }

    fn apply_delete(&mut self, config: u64, shard: ShardId) {
        let Some(held) = self.shards.get_mut(shard as usize) else {
            self.ignored += 1;
            return;
        };
        if config != self.config.num || !matches!(held.state, ShardState::BePulled { .. }) {
            self.ignored += 1;
            return;
        }
        held.clear(self.limits);
        held.state = ShardState::Absent;
        self.migration_steps += 1;
    }

    /// This replica's answer to another group's inquiry, from its applied state (`None`: not an
    /// inquiry for a shard group).
    pub fn answer(&self, inquiry: &Inquiry) -> Option<Answer> {
        match inquiry {
            Inquiry::Config { .. } => None,
            &Inquiry::PullShard {
                shard,
                config,
                ref after,
                max_part_bytes,
            } => {
                let answer = match self.shards.get(shard as usize) {
                    _ if self.config.num < config => PullAnswer::NotYet,
                    Some(held)
                        if self.config.num == config
                            && matches!(held.state, ShardState::BePulled { .. }) =>
                    {
                        // The frozen shard never changes: the part after `after` is the same
                        // on every replica and at every ask.
                        let budget = max_part_bytes.min(MAX_SHARD_PART_BYTES);
                        let (last, payload) = held.encode_part(after.as_ref(), budget);
                        PullAnswer::Part {
                            after: after.clone(),
                            last,
                            payload,
                        }
                    }
                    _ => PullAnswer::Gone,
                };
                Some(Answer::Shard {
                    shard,
                    config,
                    answer,
                })
            }
            &Inquiry::Installed { shard, config } => {
                let here = self.shards.get(shard as usize).map(|s| s.state);
                let installed = self.config.num > config
                    || (self.config.num == config && here == Some(ShardState::Serving));
                Some(Answer::Installed {
                    shard,
                    config,
                    installed,
                })
            }
        }
    }

    /// The whole state: version, group, counters, the configuration, then every shard's state
    /// (a pulling shard's with its install progress), data and sessions.
    pub fn snapshot(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(64 + self.data_bytes() + 16 * self.shards.len());
        buf.put_u8(SNAPSHOT_V2);
        buf.put_u64_le(self.group);
        buf.put_u64_le(self.undecodable);
        buf.put_u64_le(self.ignored);
        buf.put_u64_le(self.migration_steps);
        put_config(&mut buf, &self.config);
        buf.put_u32_le(self.shards.len() as u32);
        for shard in &self.shards {
            match shard.state {
                ShardState::Absent => buf.put_u8(0),
                ShardState::Serving => buf.put_u8(1),
                ShardState::Pulling { from } => {
                    buf.put_u8(2);
                    buf.put_u64_le(from);
                    put_option(&mut buf, shard.progress());
                }
                ShardState::BePulled { to } => {
                    buf.put_u8(3);
                    buf.put_u64_le(to);
                }
            }
            shard.put_transfer(&mut buf);
        }
        buf.freeze()
    }

    /// Rebuilds a store from [`ShardStore::snapshot`]'s bytes (or a V1 snapshot's, written
    /// before chunked transfers: no step count, and a pulling shard had installed nothing).
    pub fn restore(limits: SessionLimits, bytes: &Bytes) -> Result<ShardStore, DecodeError> {
        let mut buf = bytes.clone();
        let version = get_u8(&mut buf)?;
        if version != SNAPSHOT_V1 && version != SNAPSHOT_V2 {
            return Err(DecodeError::UnknownTag(version));
        }
        let v2 = version == SNAPSHOT_V2;
        let group = get_u64(&mut buf)?;
        let undecodable = get_u64(&mut buf)?;
        let ignored = get_u64(&mut buf)?;
        let migration_steps = if v2 { get_u64(&mut buf)? } else { 0 };
        let config = get_config(&mut buf)?;
        let count = get_count(&mut buf, MAX_SHARDS)?;
        if count == 0 || count != config.shards.len() {
            return Err(DecodeError::TooLong);
        }
        let mut shards = Vec::with_capacity(count);
        for _ in 0..count {
            let mut progress = None;
            let state = match get_u8(&mut buf)? {
                0 => ShardState::Absent,
                1 => ShardState::Serving,
                2 => {
                    let from = get_u64(&mut buf)?;
                    if v2 {
                        progress = get_key_option(&mut buf)?;
                    }
                    ShardState::Pulling { from }
                }
                3 => ShardState::BePulled {
                    to: get_u64(&mut buf)?,
                },
                other => return Err(DecodeError::UnknownTag(other)),
            };
            let mut shard = Shard::get_transfer(&mut buf, state, limits)?;
            shard.set_progress(progress);
            shards.push(shard);
        }
        if !buf.is_empty() {
            return Err(DecodeError::TrailingBytes);
        }
        Ok(ShardStore {
            group,
            config,
            shards,
            limits,
            undecodable,
            ignored,
            migration_steps,
        })
    }
}

impl StateMachine for ShardStore {
    type Op = Op;
    type Reply = Reply;
    type Error = ShardKvError;
    type Settings = ShardKvSettings;

    fn new(limits: SessionLimits, settings: ShardKvSettings) -> ShardStore {
        ShardStore::new(limits, settings)
    }

    fn restore(limits: SessionLimits, snapshot: &Bytes) -> Result<ShardStore, DecodeError> {
        ShardStore::restore(limits, snapshot)
    }

    fn snapshot(&self) -> Bytes {
        ShardStore::snapshot(self)
    }

    fn apply(&mut self, index: Index, data: &Bytes) -> Option<ShardApplied> {
        ShardStore::apply(self, index, data)
    }

    fn cached_reply(&self, client: ClientId, seq: u64) -> Option<Outcome> {
        // Only from a served shard: a frozen one's sessions belong to its new owner now.
        self.shards
            .iter()
            .filter(|s| s.state == ShardState::Serving)
            .find_map(|s| s.cached_reply(client, seq))
    }

    fn read(&self, op: &Op) -> Outcome {
        match op {
            Op::Get { key } => self.get(key).map(Reply::Value),
            _ => Err(ShardKvError::Unsupported),
        }
    }

    fn is_read(op: &Op) -> bool {
        !op.is_write()
    }

    fn check_bounds(op: &Op) -> Result<(), ShardKvError> {
        if *op == Op::Register {
            return Err(ShardKvError::Unsupported);
        }
        op.check_bounds().map_err(|e| match e {
            KvError::KeyTooLarge => ShardKvError::KeyTooLarge,
            _ => ShardKvError::ValueTooLarge,
        })
    }

    fn encode_write(client: ClientId, seq: u64, stamp_ms: u64, op: &Op) -> Bytes {
        let command = Command {
            client,
            seq,
            stamp_ms,
            op: op.clone(),
        };
        ShardCommand::Client(command).encode()
    }

    fn register_op() -> Op {
        Op::Register
    }

    fn registered(_reply: &Reply) -> Option<ClientId> {
        None
    }

    fn refusal(refusal: Refusal) -> ShardKvError {
        KvError::from(refusal).into()
    }

    fn as_refusal(error: &ShardKvError) -> Option<Refusal> {
        error.as_kv()?.as_refusal()
    }
}

#[cfg(test)]
mod tests;
