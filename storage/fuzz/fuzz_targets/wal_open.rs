//! A script of batches appended to a fresh WAL, its segment files damaged, then `Wal::open`: no
//! panic; it recovers a prefix of the acknowledged batches or refuses as corrupt, naming a file.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| shardcore_storage_fuzz::wal_open(data));
