//! The body of shardcore-protocol's fuzz target, shared by the cargo-fuzz binary in
//! `fuzz_targets/` and by the stable smoke test `protocol/tests/fuzz_smoke.rs`, which includes
//! this file as a module (so it names nothing but `std`, `bytes` and `shardcore_protocol`).
//!
//! An input is read one of two ways, chosen by its first byte, so that a fuzzer reaches the
//! verifier without having to find CRC-32C collisions byte by byte:
//! - **raw**: the rest of the input is a connection's byte stream, taken apart frame by frame;
//! - **recipe**: the second byte picks a frame kind and the rest is a body, framed with a valid
//!   header and checksum, then taken apart the same way.
//!
//! Either way every frame taken off the stream is checked as in [`check_frame`], and every body
//! is verified as every kind, its fields all read when it passes.
#![deny(missing_docs)]

use std::fmt::{self, Write};

use bytes::BytesMut;
use shardcore_protocol::{check, decode, encode, verify, CheckError, Frame, FrameKind};

/// Target `frame_decode`: arbitrary bytes through frame check, decode and verification of
/// every kind; no input may panic.
pub fn frame_decode(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut stream = BytesMut::new();
    if mode % 2 == 0 {
        stream.extend_from_slice(rest);
    } else {
        let Some((&kind, body)) = rest.split_first() else {
            return;
        };
        let kind = FrameKind::ALL[kind as usize % FrameKind::ALL.len()];
        encode(kind, body, &mut stream).expect("a fuzz input is far below the frame limit");
    }
    take_frames(stream);
}

/// Takes every whole frame off `stream` as a connection's reader would, checking each.
fn take_frames(mut stream: BytesMut) {
    loop {
        let before = stream.clone().freeze();
        let checked = check(&before);
        match decode(&mut stream) {
            Ok(Some(frame)) => {
                let header = checked.expect("decode took a frame that check refused");
                assert_eq!(header.frame_bytes(), before.len() - stream.len());
                check_frame(&frame, &before[..header.frame_bytes()]);
            }
            Ok(None) => {
                assert!(matches!(checked, Err(CheckError::Incomplete { .. })));
                assert_eq!(
                    stream.len(),
                    before.len(),
                    "an incomplete frame consumes nothing"
                );
                return;
            }
            Err(malformed) => {
                assert_eq!(checked, Err(CheckError::Malformed(malformed)));
                let _ = malformed.to_string();
                return;
            }
        }
    }
}

/// One frame taken off a stream: it re-encodes to exactly the bytes it came from, and its body
/// is verified as every kind (its own and the others: a body that passes as another kind must
/// be just as safe to read), every field of every passing body read.
pub fn check_frame(frame: &Frame, wire: &[u8]) {
    let mut again = BytesMut::new();
    encode(frame.kind, &frame.body, &mut again).expect("a decoded body fits a frame");
    assert_eq!(&again[..], wire, "a frame re-encodes to its own bytes");
    for kind in FrameKind::ALL {
        match verify(kind, &frame.body) {
            // The generated Debug impls read every field, vector element and union variant.
            Ok(body) => write!(Discard, "{body:?}").expect("Discard never fails"),
            Err(error) => {
                assert_eq!(error.kind(), kind);
                write!(Discard, "{error}").expect("Discard never fails");
            }
        }
    }
}

/// A `fmt::Write` that keeps nothing: formatting reads every field without allocating.
struct Discard;

impl Write for Discard {
    fn write_str(&mut self, _: &str) -> fmt::Result {
        Ok(())
    }
}
