//! The frame: a fixed header, then a body of the kind the header names.
//!
//! ```text
//! offset  size  field
//!      0     4  magic         b"SHCR"
//!      4     1  version       FRAME_VERSION
//!      5     1  kind          FrameKind as u8
//!      6     2  reserved      zero
//!      8     4  body length   u32 little-endian, <= MAX_FRAME_BYTES
//!     12     4  checksum      CRC-32C (Castagnoli), u32 little-endian, over bytes 0..12 and body
//!     16     n  body
//! ```
//!
//! The checksum covers the header's first 12 bytes as well as the body, so a flipped bit in the
//! kind or the length is caught, not only one in the body.
//!
//! Reading is [`check`] then use: `check` looks at a buffer that may hold any prefix of a stream
//! and says "here is a whole valid frame" ([`FrameHeader`]), "not yet: need n more bytes"
//! ([`CheckError::Incomplete`]) or "this is not a valid frame" ([`CheckError::Malformed`]). The
//! header is judged as soon as its 16 bytes arrive, so an oversized length or a foreign protocol
//! is refused before any body is buffered.

use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::limits::{FRAME_HEADER_BYTES, FRAME_MAGIC, FRAME_VERSION, MAX_FRAME_BYTES};

/// Offset of the version byte.
const VERSION_OFFSET: usize = 4;
/// Offset of the kind byte.
const KIND_OFFSET: usize = 5;
/// Offset of the two reserved bytes.
const RESERVED_OFFSET: usize = 6;
/// Offset of the body length.
const LENGTH_OFFSET: usize = 8;
/// Offset of the checksum; the bytes before it are covered by it.
const CHECKSUM_OFFSET: usize = 12;

/// What a frame's body is: each kind names the FlatBuffers root table of its body (see
/// [`crate::body`]). A byte that names no kind is malformed input, not something to skip.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    /// The first frame on a connection: who is speaking (a peer node or a client) and which
    /// cluster it belongs to.
    Hello = 1,
    /// Node to node: Raft messages for any number of groups, coalesced per destination node.
    PeerRaft = 2,
    /// Client to node: one or more requests.
    ClientRequest = 3,
    /// Node to client: the replies.
    ClientResponse = 4,
    /// Client to the shard controller: join, leave, move or query (reserved: nothing sends it
    /// until the shard controller exists).
    ControllerRequest = 5,
    /// The shard controller's reply, with a configuration for a query (reserved, as above).
    ControllerReply = 6,
    /// Between the MapReduce coordinator and its workers, either way (reserved: nothing sends
    /// it until MapReduce exists).
    MapReduce = 7,
}

impl FrameKind {
    /// Every kind, in wire order.
    pub const ALL: [FrameKind; 7] = [
        FrameKind::Hello,
        FrameKind::PeerRaft,
        FrameKind::ClientRequest,
        FrameKind::ClientResponse,
        FrameKind::ControllerRequest,
        FrameKind::ControllerReply,
        FrameKind::MapReduce,
    ];

    /// The kind a wire byte names, if any.
    pub fn from_byte(byte: u8) -> Option<FrameKind> {
        FrameKind::ALL.into_iter().find(|kind| *kind as u8 == byte)
    }
}

/// A checked frame header: the body that follows it has `body_bytes` bytes and matches
/// `checksum`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// What the body is.
    pub kind: FrameKind,
    /// The body's length, at most [`MAX_FRAME_BYTES`].
    pub body_bytes: u32,
    /// CRC-32C over the header's first 12 bytes and the body.
    pub checksum: u32,
}

/// A whole frame taken off a connection's read buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// What the body is.
    pub kind: FrameKind,
    /// The body, checked against its checksum but not yet parsed.
    pub body: Bytes,
}

/// Why a buffer does not (yet) hold a valid frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckError {
    /// Not an error: the buffer holds a valid prefix of a frame. Read at least `needed_bytes`
    /// more and check again.
    Incomplete {
        /// How many more bytes the frame needs at least.
        needed_bytes: usize,
    },
    /// The bytes are not a valid frame. Close the connection; nothing after this point can be
    /// trusted to be aligned on a frame.
    Malformed(Malformed),
}

/// How a frame is malformed. Each says what was found, so that the error a connection closes
/// with is enough to diagnose the peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// The stream does not start with [`FRAME_MAGIC`]: not a shardcore peer or client.
    BadMagic {
        /// The bytes found where the magic belongs (as many as had arrived; the rest zero).
        found: [u8; 4],
    },
    /// A frame format version this build does not speak.
    UnsupportedVersion {
        /// The version byte found.
        found: u8,
    },
    /// A kind byte that names no [`FrameKind`].
    UnknownKind {
        /// The kind byte found.
        found: u8,
    },
    /// The reserved bytes are not zero: a newer format, or garbage.
    ReservedNotZero {
        /// The reserved field found.
        found: u16,
    },
    /// The header announces a body larger than [`MAX_FRAME_BYTES`].
    TooLarge {
        /// The announced body length.
        body_bytes: u32,
    },
    /// The checksum does not match the bytes.
    ChecksumMismatch {
        /// The checksum in the header.
        expected: u32,
        /// The checksum of the bytes received.
        computed: u32,
    },
}

/// Why a frame could not be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// The body exceeds [`MAX_FRAME_BYTES`]; the peer would refuse it, so it is not sent.
    TooLarge {
        /// The body's length.
        body_bytes: usize,
    },
}

impl FrameHeader {
    /// The header for `body` of `kind`, with its checksum.
    pub fn for_body(kind: FrameKind, body: &[u8]) -> Result<FrameHeader, EncodeError> {
        let body_bytes = u32::try_from(body.len())
            .ok()
            .filter(|len| *len <= MAX_FRAME_BYTES)
            .ok_or(EncodeError::TooLarge {
                body_bytes: body.len(),
            })?;
        let mut header = FrameHeader {
            kind,
            body_bytes,
            checksum: 0,
        };
        header.checksum = checksum(&header.to_bytes(), body);
        Ok(header)
    }

    /// The header's wire bytes.
    pub fn to_bytes(&self) -> [u8; FRAME_HEADER_BYTES] {
        let mut bytes = [0u8; FRAME_HEADER_BYTES];
        bytes[..VERSION_OFFSET].copy_from_slice(&FRAME_MAGIC);
        bytes[VERSION_OFFSET] = FRAME_VERSION;
        bytes[KIND_OFFSET] = self.kind as u8;
        // Reserved bytes stay zero.
        bytes[LENGTH_OFFSET..CHECKSUM_OFFSET].copy_from_slice(&self.body_bytes.to_le_bytes());
        bytes[CHECKSUM_OFFSET..].copy_from_slice(&self.checksum.to_le_bytes());
        bytes
    }

    /// The whole frame's length on the wire: header and body.
    pub fn frame_bytes(&self) -> usize {
        FRAME_HEADER_BYTES + self.body_bytes as usize
    }

    /// Judges the header's fields, everything but the checksum (which needs the body).
    pub fn parse(bytes: &[u8; FRAME_HEADER_BYTES]) -> Result<FrameHeader, Malformed> {
        check_magic(bytes)?;
        let version = bytes[VERSION_OFFSET];
        if version != FRAME_VERSION {
            return Err(Malformed::UnsupportedVersion { found: version });
        }
        let kind_byte = bytes[KIND_OFFSET];
        let kind =
            FrameKind::from_byte(kind_byte).ok_or(Malformed::UnknownKind { found: kind_byte })?;
        let reserved = u16::from_le_bytes([bytes[RESERVED_OFFSET], bytes[RESERVED_OFFSET + 1]]);
        if reserved != 0 {
            return Err(Malformed::ReservedNotZero { found: reserved });
        }
        let body_bytes = read_u32(bytes, LENGTH_OFFSET);
        if body_bytes > MAX_FRAME_BYTES {
            return Err(Malformed::TooLarge { body_bytes });
        }
        Ok(FrameHeader {
            kind,
            body_bytes,
            checksum: read_u32(bytes, CHECKSUM_OFFSET),
        })
    }
}

/// Is there one whole, valid frame at the start of `buf`? Looks at no more than the header
/// until the header is valid, and computes the checksum only once the whole body is there.
pub fn check(buf: &[u8]) -> Result<FrameHeader, CheckError> {
    let Some(header_bytes) = buf.first_chunk::<FRAME_HEADER_BYTES>() else {
        // Refuse a foreign protocol at its first bytes instead of waiting for a whole header.
        check_magic(buf).map_err(CheckError::Malformed)?;
        return Err(CheckError::Incomplete {
            needed_bytes: FRAME_HEADER_BYTES - buf.len(),
        });
    };
    let header = FrameHeader::parse(header_bytes).map_err(CheckError::Malformed)?;
    let Some(body) = buf[FRAME_HEADER_BYTES..].get(..header.body_bytes as usize) else {
        return Err(CheckError::Incomplete {
            needed_bytes: header.frame_bytes() - buf.len(),
        });
    };
    let computed = checksum(header_bytes, body);
    if computed != header.checksum {
        return Err(CheckError::Malformed(Malformed::ChecksumMismatch {
            expected: header.checksum,
            computed,
        }));
    }
    Ok(header)
}

/// Takes one whole frame off the front of a connection's read buffer: `Ok(None)` when more
/// bytes are needed (the buffer is left as it was), an error when the stream is malformed.
pub fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, Malformed> {
    match check(buf) {
        Ok(header) => {
            let mut frame = buf.split_to(header.frame_bytes());
            frame.advance(FRAME_HEADER_BYTES);
            Ok(Some(Frame {
                kind: header.kind,
                body: frame.freeze(),
            }))
        }
        Err(CheckError::Incomplete { .. }) => Ok(None),
        Err(CheckError::Malformed(malformed)) => Err(malformed),
    }
}

/// Appends one frame (header and body) to `out`.
pub fn encode(kind: FrameKind, body: &[u8], out: &mut BytesMut) -> Result<(), EncodeError> {
    let header = FrameHeader::for_body(kind, body)?;
    out.reserve(header.frame_bytes());
    out.put_slice(&header.to_bytes());
    out.put_slice(body);
    Ok(())
}

/// CRC-32C over the header bytes before the checksum field, then the body.
fn checksum(header: &[u8; FRAME_HEADER_BYTES], body: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&header[..CHECKSUM_OFFSET]), body)
}

/// Checks as much of the magic as `bytes` holds.
fn check_magic(bytes: &[u8]) -> Result<(), Malformed> {
    let present = bytes.len().min(FRAME_MAGIC.len());
    if bytes[..present] == FRAME_MAGIC[..present] {
        return Ok(());
    }
    let mut found = [0u8; 4];
    found[..present].copy_from_slice(&bytes[..present]);
    Err(Malformed::BadMagic { found })
}

fn read_u32(bytes: &[u8; FRAME_HEADER_BYTES], offset: usize) -> u32 {
    u32::from_le_bytes(bytes[offset..offset + 4].try_into().expect("4 bytes"))
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Malformed::BadMagic { found } => {
                write!(
                    f,
                    "bad frame magic {found:02x?} (expected {FRAME_MAGIC:02x?}): not shardcore"
                )
            }
            Malformed::UnsupportedVersion { found } => {
                write!(
                    f,
                    "unsupported frame version {found} (this build speaks {FRAME_VERSION})"
                )
            }
            Malformed::UnknownKind { found } => write!(f, "unknown frame kind {found}"),
            Malformed::ReservedNotZero { found } => {
                write!(f, "frame reserved bytes are {found:#06x}, expected zero")
            }
            Malformed::TooLarge { body_bytes } => {
                write!(
                    f,
                    "frame body of {body_bytes} bytes exceeds the limit of {MAX_FRAME_BYTES}"
                )
            }
            Malformed::ChecksumMismatch { expected, computed } => {
                write!(f, "frame checksum mismatch: header says {expected:#010x}, bytes give {computed:#010x}")
            }
        }
    }
}

impl std::error::Error for Malformed {}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckError::Incomplete { needed_bytes } => {
                write!(
                    f,
                    "incomplete frame: at least {needed_bytes} more bytes needed"
                )
            }
            CheckError::Malformed(malformed) => malformed.fmt(f),
        }
    }
}

impl std::error::Error for CheckError {}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::TooLarge { body_bytes } => {
                write!(
                    f,
                    "frame body of {body_bytes} bytes exceeds the limit of {MAX_FRAME_BYTES}"
                )
            }
        }
    }
}

impl std::error::Error for EncodeError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: FrameKind, body: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode(kind, body, &mut out).unwrap();
        out.to_vec()
    }

    /// The checksum is CRC-32C (Castagnoli), not CRC-32 (IEEE): the standard check value.
    #[test]
    fn checksum_is_crc32c() {
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
    }

    /// The header's bytes sit where the module docs say, little-endian.
    #[test]
    fn header_layout_is_as_documented() {
        let bytes = frame(FrameKind::ClientRequest, b"abc");
        assert_eq!(&bytes[0..4], b"SHCR");
        assert_eq!(bytes[4], FRAME_VERSION);
        assert_eq!(bytes[5], 3);
        assert_eq!(&bytes[6..8], &[0, 0]);
        assert_eq!(&bytes[8..12], &3u32.to_le_bytes());
        let expected = crc32c::crc32c_append(crc32c::crc32c(&bytes[..12]), b"abc");
        assert_eq!(&bytes[12..16], &expected.to_le_bytes());
        assert_eq!(&bytes[16..], b"abc");
    }

    /// Every kind and an empty body survive encode then check then decode.
    #[test]
    fn round_trip_every_kind() {
        for kind in FrameKind::ALL {
            for body in [&b""[..], b"x", &[7u8; 1000][..]] {
                let bytes = frame(kind, body);
                let header = check(&bytes).unwrap();
                assert_eq!(
                    (header.kind, header.body_bytes as usize),
                    (kind, body.len())
                );
                assert_eq!(header.frame_bytes(), bytes.len());
                let mut buf = BytesMut::from(&bytes[..]);
                let decoded = decode(&mut buf).unwrap().unwrap();
                assert_eq!(
                    decoded,
                    Frame {
                        kind,
                        body: Bytes::copy_from_slice(body)
                    }
                );
                assert!(buf.is_empty());
            }
        }
    }

    /// Every strict prefix of a valid frame is incomplete (never malformed), and says exactly
    /// how much more it needs once the header is there.
    #[test]
    fn every_prefix_is_incomplete() {
        let bytes = frame(FrameKind::PeerRaft, b"hello, raft");
        for cut in 0..bytes.len() {
            let needed = match check(&bytes[..cut]) {
                Err(CheckError::Incomplete { needed_bytes }) => needed_bytes,
                other => panic!("prefix of {cut} bytes: {other:?}"),
            };
            let whole_header = cut >= FRAME_HEADER_BYTES;
            assert_eq!(
                needed,
                if whole_header {
                    bytes.len()
                } else {
                    FRAME_HEADER_BYTES
                } - cut
            );
        }
    }

    /// No single flipped bit anywhere in a frame is accepted. A flip that grows the length can
    /// only look incomplete (the stream would then stall until the peer times out), never valid.
    #[test]
    fn every_single_bit_flip_is_refused() {
        let bytes = frame(FrameKind::ClientResponse, b"value=42");
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            match check(&flipped) {
                Err(CheckError::Malformed(_)) => {}
                Err(CheckError::Incomplete { .. }) => {
                    assert!(
                        (LENGTH_OFFSET..CHECKSUM_OFFSET).contains(&(bit / 8)),
                        "bit {bit}"
                    );
                }
                Ok(header) => panic!("bit {bit} flipped and accepted: {header:?}"),
            }
        }
    }

    /// A foreign protocol is refused at its first byte, without waiting for a whole header.
    #[test]
    fn foreign_stream_is_refused_early() {
        assert_eq!(
            check(b"G"),
            Err(CheckError::Malformed(Malformed::BadMagic {
                found: *b"G\0\0\0"
            }))
        );
        assert_eq!(
            check(b"GET / HTTP/1.1\r\n"),
            Err(CheckError::Malformed(Malformed::BadMagic {
                found: *b"GET "
            }))
        );
        assert_eq!(
            check(b"SH"),
            Err(CheckError::Incomplete { needed_bytes: 14 })
        );
    }

    /// An oversized length is refused from the header alone; nothing of the body is needed.
    #[test]
    fn oversized_length_is_refused_from_the_header() {
        let mut header = frame(FrameKind::PeerRaft, b"")[..FRAME_HEADER_BYTES].to_vec();
        header[LENGTH_OFFSET..CHECKSUM_OFFSET]
            .copy_from_slice(&(MAX_FRAME_BYTES + 1).to_le_bytes());
        assert_eq!(
            check(&header),
            Err(CheckError::Malformed(Malformed::TooLarge {
                body_bytes: MAX_FRAME_BYTES + 1
            }))
        );
        let at_limit = FrameHeader {
            kind: FrameKind::PeerRaft,
            body_bytes: MAX_FRAME_BYTES,
            checksum: 0,
        };
        assert_eq!(
            check(&at_limit.to_bytes()),
            Err(CheckError::Incomplete {
                needed_bytes: MAX_FRAME_BYTES as usize
            })
        );
    }

    /// Each header field is judged and named in the error.
    #[test]
    fn bad_header_fields_are_named() {
        let good = frame(FrameKind::Hello, b"node 1");
        let with = |offset: usize, byte: u8| {
            let mut bytes = good.clone();
            bytes[offset] = byte;
            check(&bytes)
        };
        let malformed = |m| Err(CheckError::Malformed(m));
        assert_eq!(
            with(VERSION_OFFSET, 9),
            malformed(Malformed::UnsupportedVersion { found: 9 })
        );
        assert_eq!(
            with(KIND_OFFSET, 0),
            malformed(Malformed::UnknownKind { found: 0 })
        );
        assert_eq!(
            with(KIND_OFFSET, 200),
            malformed(Malformed::UnknownKind { found: 200 })
        );
        assert_eq!(
            with(RESERVED_OFFSET, 1),
            malformed(Malformed::ReservedNotZero { found: 1 })
        );
        assert!(matches!(
            with(FRAME_HEADER_BYTES, b'N'),
            Err(CheckError::Malformed(Malformed::ChecksumMismatch { .. }))
        ));
    }

    /// A read buffer holding two frames and part of a third yields the two and keeps the part.
    #[test]
    fn decode_takes_whole_frames_and_keeps_the_rest() {
        let mut buf = BytesMut::new();
        encode(FrameKind::ClientRequest, b"one", &mut buf).unwrap();
        encode(FrameKind::ClientRequest, b"two", &mut buf).unwrap();
        let third = frame(FrameKind::ClientRequest, b"three");
        buf.extend_from_slice(&third[..20]);
        assert_eq!(
            decode(&mut buf).unwrap().unwrap().body,
            Bytes::from_static(b"one")
        );
        assert_eq!(
            decode(&mut buf).unwrap().unwrap().body,
            Bytes::from_static(b"two")
        );
        assert_eq!(decode(&mut buf).unwrap(), None);
        assert_eq!(buf.len(), 20);
        buf.extend_from_slice(&third[20..]);
        assert_eq!(
            decode(&mut buf).unwrap().unwrap().body,
            Bytes::from_static(b"three")
        );
    }

    /// A body over the limit is not encoded.
    #[test]
    fn encode_refuses_oversized_bodies() {
        let body = vec![0u8; MAX_FRAME_BYTES as usize + 1];
        let mut out = BytesMut::new();
        assert_eq!(
            encode(FrameKind::PeerRaft, &body, &mut out),
            Err(EncodeError::TooLarge {
                body_bytes: body.len()
            })
        );
        assert!(out.is_empty());
    }

    /// Errors read as sentences that name what was found.
    #[test]
    fn errors_display_what_was_found() {
        let text = Malformed::TooLarge {
            body_bytes: 1 << 30,
        }
        .to_string();
        assert!(
            text.contains("1073741824") && text.contains("16777216"),
            "{text}"
        );
        let text = CheckError::Incomplete { needed_bytes: 5 }.to_string();
        assert!(text.contains('5'), "{text}");
    }
}
