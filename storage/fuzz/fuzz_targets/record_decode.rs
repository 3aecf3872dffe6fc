//! Arbitrary bytes (raw, or a recipe for a damaged segment) to `read_record` and `scan`, in an
//! open and in a sealed segment: no panic, and every record returned re-encodes to its bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| shardcore_storage_fuzz::record_decode(data));
