//! Arbitrary bytes as a set of segment files, scanned in order as recovery does: no panic, a
//! torn tail only at the end of the open segment, and a truncated tail that rescans clean.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| shardcore_storage_fuzz::recovery_scan(data));
