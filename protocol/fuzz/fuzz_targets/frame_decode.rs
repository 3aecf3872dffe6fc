//! Arbitrary bytes as a connection's stream (raw) or as a body of a chosen kind in a valid frame
//! (recipe), through frame check, decode, the bounded FlatBuffers verifier, and a read of every
//! field of every verified body: no panic, and every accepted frame re-encodes to its bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| shardcore_protocol_fuzz::frame_decode(data));
