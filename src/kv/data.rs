//! The one way a logged write changes key/value data, shared by the KV store (a hash map,
//! sorted only for snapshots) and a shard of the sharded KV (a B-tree, moved in key order).

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashSet};
use std::hash::{Hash, Hasher};

use bytes::{BufMut, Bytes, BytesMut};

use super::command::{Op, Reply, MAX_VALUE_BYTES};

/// A map of keys to values that [`apply_write`] can change.
pub trait KvMap {
    /// The value of `key`.
    fn value(&self, key: &Bytes) -> Option<&Bytes>;
    /// Sets `key` to `value`; the value it replaced.
    fn put(&mut self, key: Bytes, value: Bytes) -> Option<Bytes>;
    /// Removes `key`; the value it had.
    fn take(&mut self, key: &Bytes) -> Option<Bytes>;
}

/// Both maps have the same three methods under these names.
macro_rules! kv_map {
    ($map:ty) => {
        impl KvMap for $map {
            fn value(&self, key: &Bytes) -> Option<&Bytes> {
                self.get(key)
            }
            fn put(&mut self, key: Bytes, value: Bytes) -> Option<Bytes> {
                self.insert(key, value)
            }
            fn take(&mut self, key: &Bytes) -> Option<Bytes> {
                self.remove(key)
            }
        }
    };
}

kv_map!(BTreeMap<Bytes, Bytes>);

impl KvMap for HashSet<Slot> {
    fn value(&self, key: &Bytes) -> Option<&Bytes> {
        self.get(key.as_ref()).map(|slot| &slot.value)
    }
    fn put(&mut self, key: Bytes, value: Bytes) -> Option<Bytes> {
        let slot = Slot {
            key: MapKey::new(&key),
            value,
        };
        self.replace(slot).map(|old| old.value)
    }
    fn take(&mut self, key: &Bytes) -> Option<Bytes> {
        self.take(key.as_ref()).map(|slot| slot.value)
    }
}

/// One key and its value in the KV store's hash table: one cache line, aligned to one. A
/// put's cold read of the table is then one line; a 64-byte slot at the 16-byte alignment
/// the table would otherwise get straddles two.
#[repr(align(64))]
#[derive(Clone, Debug)]
pub struct Slot {
    /// The key.
    pub key: MapKey,
    /// Its value.
    pub value: Bytes,
}

const _: () = assert!(std::mem::size_of::<Slot>() == 64);

impl Borrow<[u8]> for Slot {
    fn borrow(&self) -> &[u8] {
        self.key.as_slice()
    }
}

impl Hash for Slot {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As `[u8]` hashes: `Borrow<[u8]>` lookups must find the same slot.
        self.key.as_slice().hash(state);
    }
}

impl PartialEq for Slot {
    fn eq(&self, other: &Slot) -> bool {
        self.key == other.key
    }
}

impl Eq for Slot {}

/// Keys up to this long are held inside the hash map's own slot.
pub const INLINE_KEY_BYTES: usize = 30;

/// A key as the KV store's hash map holds it: up to [`INLINE_KEY_BYTES`] bytes inside the
/// map's slot, a longer one in an allocation of its own. It hashes, compares and orders as its
/// bytes do (`Borrow<[u8]>`), so the map is looked up with a plain `&[u8]`.
///
/// Why: a key held as `Bytes` pointed into the receive buffer of the entry that wrote it, so
/// every lookup's compare read a cold cache line somewhere in an old buffer. Finding the slot
/// is one cache miss a write cannot avoid in a map larger than the cache; that compare was a
/// second (on the 2-CPU test VM, 64-client puts over 100k keys: the map's insert and its
/// `memcmp` were the largest user-space cost of every node).
#[derive(Clone)]
pub enum MapKey {
    /// A short key, in place.
    Inline {
        /// Bytes of `bytes` in use.
        len: u8,
        /// The key, then zeros.
        bytes: [u8; INLINE_KEY_BYTES],
    },
    /// A longer key.
    Heap(Box<[u8]>),
}

impl MapKey {
    /// The map's copy of `key`.
    pub fn new(key: &[u8]) -> MapKey {
        if key.len() <= INLINE_KEY_BYTES {
            let mut bytes = [0; INLINE_KEY_BYTES];
            bytes[..key.len()].copy_from_slice(key);
            MapKey::Inline {
                len: key.len() as u8,
                bytes,
            }
        } else {
            MapKey::Heap(key.into())
        }
    }

    /// The key's bytes.
    pub fn as_slice(&self) -> &[u8] {
        match self {
            MapKey::Inline { len, bytes } => &bytes[..usize::from(*len)],
            MapKey::Heap(bytes) => bytes,
        }
    }
}

impl Borrow<[u8]> for MapKey {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

impl Hash for MapKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As `[u8]` hashes: `Borrow<[u8]>` lookups must find the same slot.
        self.as_slice().hash(state);
    }
}

impl PartialEq for MapKey {
    fn eq(&self, other: &MapKey) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for MapKey {}

impl PartialOrd for MapKey {
    fn partial_cmp(&self, other: &MapKey) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for MapKey {
    fn cmp(&self, other: &MapKey) -> std::cmp::Ordering {
        self.as_slice().cmp(other.as_slice())
    }
}

impl std::fmt::Debug for MapKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", Bytes::copy_from_slice(self.as_slice()))
    }
}

/// An append would make a value longer than [`MAX_VALUE_BYTES`]; nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValueTooLong;

/// Applies the logged write `op` (Put, Append, Delete, CompareAndSwap) to `map`, keeping
/// `bytes` (the keys and values held) current. Reads and registrations are not logged writes:
/// `None` for them, and nothing changes.
pub fn apply_write<M: KvMap>(
    map: &mut M,
    bytes: &mut usize,
    op: &Op,
) -> Option<Result<Reply, ValueTooLong>> {
    let result = match op {
        Op::Register | Op::Get { .. } => return None,
        Op::Put { key, value } => {
            set(map, bytes, key.clone(), value.clone());
            Ok(Reply::Done)
        }
        Op::Append { key, value } => {
            let old = map.value(key).map_or(0, Bytes::len);
            if old + value.len() > MAX_VALUE_BYTES {
                return Some(Err(ValueTooLong));
            }
            let mut joined = BytesMut::with_capacity(old + value.len());
            if let Some(current) = map.value(key) {
                joined.put_slice(current);
            }
            joined.put_slice(value);
            set(map, bytes, key.clone(), joined.freeze());
            Ok(Reply::Done)
        }
        Op::Delete { key } => {
            if let Some(old) = map.take(key) {
                *bytes -= key.len() + old.len();
            }
            Ok(Reply::Done)
        }
        Op::CompareAndSwap { key, expected, new } => {
            let found = map.value(key).cloned();
            let swapped = found == *expected;
            if swapped {
                set(map, bytes, key.clone(), new.clone());
            }
            Ok(Reply::Swapped { swapped, found })
        }
    };
    Some(result)
}

/// Sets `key` to `value` in `map`, keeping `bytes` current (also for restoring a snapshot).
pub fn set<M: KvMap>(map: &mut M, bytes: &mut usize, key: Bytes, value: Bytes) {
    let added = key.len() + value.len();
    if let Some(old) = map.put(key.clone(), value) {
        *bytes -= key.len() + old.len();
    }
    *bytes += added;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys on both sides of the inline bound are found by their bytes, replaced, ordered as
    /// their bytes and removed; the byte count follows.
    #[test]
    fn short_and_long_keys_behave_as_their_bytes() {
        let keys: Vec<Bytes> = [
            0,
            1,
            INLINE_KEY_BYTES - 1,
            INLINE_KEY_BYTES,
            INLINE_KEY_BYTES + 1,
            200,
        ]
        .iter()
        .map(|&len| Bytes::from((0..len).map(|i| (i * 7 + len) as u8).collect::<Vec<u8>>()))
        .collect();
        let mut map: HashSet<Slot> = HashSet::new();
        let mut bytes = 0;
        for key in &keys {
            set(
                &mut map,
                &mut bytes,
                key.clone(),
                Bytes::from_static(b"one"),
            );
        }
        for key in &keys {
            let inline = matches!(MapKey::new(key), MapKey::Inline { .. });
            assert_eq!(inline, key.len() <= INLINE_KEY_BYTES, "{} bytes", key.len());
            assert_eq!(MapKey::new(key).as_slice(), &key[..]);
            assert_eq!(map.value(key), Some(&Bytes::from_static(b"one")));
            assert_eq!(
                map.get(&key[..]).map(|s| &s.value),
                Some(&Bytes::from_static(b"one"))
            );
            set(
                &mut map,
                &mut bytes,
                key.clone(),
                Bytes::from_static(b"three"),
            );
        }
        assert_eq!(map.len(), keys.len());
        let held: usize = keys.iter().map(|k| k.len() + 5).sum();
        assert_eq!(bytes, held);
        // A key that is a prefix of another, or equal but for trailing zeros, is another key.
        assert!(!map.contains(&[0u8][..]));
        assert!(MapKey::new(b"ab") != MapKey::new(b"ab\0"));
        let mut sorted: Vec<MapKey> = keys.iter().map(|k| MapKey::new(k)).collect();
        sorted.sort();
        let mut by_bytes = keys.clone();
        by_bytes.sort();
        let sorted: Vec<&[u8]> = sorted.iter().map(MapKey::as_slice).collect();
        assert_eq!(sorted, by_bytes.iter().map(|k| &k[..]).collect::<Vec<_>>());
        for key in &keys {
            assert_eq!(
                KvMap::take(&mut map, key),
                Some(Bytes::from_static(b"three"))
            );
            assert_eq!(KvMap::take(&mut map, key), None);
        }
        assert!(map.is_empty());
    }
}
