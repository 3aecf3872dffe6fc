//! The one way a logged write changes key/value data, shared by the KV store (a hash map,
//! sorted only for snapshots) and a shard of the sharded KV (a B-tree, moved in key order).

use std::collections::{BTreeMap, HashMap};

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

kv_map!(HashMap<Bytes, Bytes>);
kv_map!(BTreeMap<Bytes, Bytes>);

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
