//! The application every simulated group member runs: a state machine that only remembers how
//! far it got and a chain hash over everything it applied. Two members agree on their whole
//! history exactly when they agree on (applied index, chain hash), which is what the invariant
//! checks compare; the state is tiny so snapshots are cheap, and optional padding makes them as
//! large as a test wants (to exercise chunked InstallSnapshot).

use bytes::{BufMut, Bytes, BytesMut};

use crate::raft::{Entry, EntryKind, Index};

const SNAPSHOT_MAGIC: u32 = 0x5349_4d53; // "SIMS"
/// magic, applied, chain, commands, padding length.
const SNAPSHOT_HEADER_BYTES: usize = 4 + 8 + 8 + 8 + 4;
const SNAPSHOT_CHECKSUM_BYTES: usize = 8;

/// FNV-1a over `bytes`, continuing from `hash`.
pub fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        hash ^= b as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// The hash of an entry's payload (kind and data; not its position).
pub fn entry_hash(entry: &Entry) -> u64 {
    let kind = match entry.kind {
        EntryKind::Normal => 1u8,
        EntryKind::Noop => 2u8,
    };
    fnv1a(fnv1a(FNV_OFFSET, &[kind]), &entry.data)
}

/// One member's application state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AppState {
    /// The last index applied (or restored from a snapshot).
    pub applied: Index,
    /// A hash chained over every applied entry, in order.
    pub chain: u64,
    /// How many commands (non-no-op entries) were applied.
    pub commands: u64,
}

impl AppState {
    /// Applies an entry. The invariant checker, not this method, checks it is the next one, so
    /// that a gap is reported with the run's context rather than as a bare assertion.
    pub fn apply(&mut self, entry: &Entry) {
        let mut chain = fnv1a(FNV_OFFSET, &self.chain.to_le_bytes());
        chain = fnv1a(chain, &entry.index.to_le_bytes());
        chain = fnv1a(chain, &entry_hash(entry).to_le_bytes());
        self.chain = chain;
        self.applied = entry.index;
        if entry.kind == EntryKind::Normal {
            self.commands += 1;
        }
    }

    /// Serializes the state, followed by `padding_bytes` of bytes derived from it and a
    /// checksum over everything, so that a snapshot damaged in transfer cannot go unnoticed.
    pub fn to_snapshot(&self, padding_bytes: usize) -> Bytes {
        let mut buf = BytesMut::with_capacity(
            SNAPSHOT_HEADER_BYTES + padding_bytes + SNAPSHOT_CHECKSUM_BYTES,
        );
        buf.put_u32_le(SNAPSHOT_MAGIC);
        buf.put_u64_le(self.applied);
        buf.put_u64_le(self.chain);
        buf.put_u64_le(self.commands);
        buf.put_u32_le(u32::try_from(padding_bytes).expect("padding fits in u32"));
        for i in 0..padding_bytes {
            buf.put_u8(self.padding_byte(i));
        }
        let checksum = fnv1a(FNV_OFFSET, &buf);
        buf.put_u64_le(checksum);
        buf.freeze()
    }

    /// The length of the snapshot made by [`AppState::to_snapshot`] at the start of `data` (a
    /// service's own snapshot may follow it), or `None` when `data` is too short to say.
    pub fn snapshot_len(data: &[u8]) -> Option<usize> {
        let padding = data.get(28..32)?;
        let padding_bytes = u32::from_le_bytes(padding.try_into().ok()?) as usize;
        let len = SNAPSHOT_HEADER_BYTES + padding_bytes + SNAPSHOT_CHECKSUM_BYTES;
        (len <= data.len()).then_some(len)
    }

    /// Parses and checks a snapshot made by [`AppState::to_snapshot`].
    pub fn from_snapshot(data: &[u8]) -> Result<AppState, String> {
        let min = SNAPSHOT_HEADER_BYTES + SNAPSHOT_CHECKSUM_BYTES;
        if data.len() < min {
            return Err(format!(
                "snapshot of {} bytes is shorter than {min}",
                data.len()
            ));
        }
        let (body, tail) = data.split_at(data.len() - SNAPSHOT_CHECKSUM_BYTES);
        let u64_at = |at: usize| u64::from_le_bytes(data[at..at + 8].try_into().unwrap());
        let u32_at = |at: usize| u32::from_le_bytes(data[at..at + 4].try_into().unwrap());
        if u64::from_le_bytes(tail.try_into().unwrap()) != fnv1a(FNV_OFFSET, body) {
            return Err("snapshot checksum mismatch".to_string());
        }
        if u32_at(0) != SNAPSHOT_MAGIC {
            return Err("snapshot magic mismatch".to_string());
        }
        let state = AppState {
            applied: u64_at(4),
            chain: u64_at(12),
            commands: u64_at(20),
        };
        let padding_bytes = u32_at(28) as usize;
        if body.len() != SNAPSHOT_HEADER_BYTES + padding_bytes {
            return Err(format!(
                "snapshot length {} does not match its header",
                data.len()
            ));
        }
        let padding = &body[SNAPSHOT_HEADER_BYTES..];
        if padding
            .iter()
            .enumerate()
            .any(|(i, &b)| b != state.padding_byte(i))
        {
            return Err("snapshot padding damaged".to_string());
        }
        Ok(state)
    }

    fn padding_byte(&self, i: usize) -> u8 {
        (self.chain >> ((i % 8) * 8)) as u8 ^ (i as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: Index, data: &'static [u8]) -> Entry {
        let kind = if data.is_empty() {
            EntryKind::Noop
        } else {
            EntryKind::Normal
        };
        Entry {
            index,
            term: 1,
            kind,
            data: Bytes::from_static(data),
        }
    }

    /// Equal histories give equal states; a different command anywhere gives another chain.
    #[test]
    fn chain_identifies_the_history() {
        let run = |cmds: &[&'static [u8]]| {
            let mut app = AppState::default();
            for (i, c) in cmds.iter().enumerate() {
                app.apply(&entry(i as Index + 1, c));
            }
            app
        };
        let a = run(&[b"", b"x", b"y"]);
        assert_eq!(a, run(&[b"", b"x", b"y"]));
        assert_ne!(a.chain, run(&[b"", b"y", b"x"]).chain);
        assert_eq!((a.applied, a.commands), (3, 2));
    }

    /// A snapshot round-trips, with or without padding, and any flipped byte is caught.
    #[test]
    fn snapshot_round_trips_and_detects_damage() {
        let mut app = AppState::default();
        app.apply(&entry(1, b"hello"));
        for padding in [0, 5000] {
            let data = app.to_snapshot(padding);
            assert_eq!(
                data.len(),
                SNAPSHOT_HEADER_BYTES + padding + SNAPSHOT_CHECKSUM_BYTES
            );
            assert_eq!(AppState::from_snapshot(&data), Ok(app));
            for at in [0, 5, data.len() / 2, data.len() - 1] {
                let mut bad = data.to_vec();
                bad[at] ^= 0x40;
                assert!(AppState::from_snapshot(&bad).is_err(), "flip at {at}");
            }
            assert!(AppState::from_snapshot(&data[..data.len() - 1]).is_err());
        }
    }
}
