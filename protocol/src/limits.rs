//! The bounds on untrusted input. Every number here is checked before the bytes it bounds are
//! buffered or parsed; each says why it is that number.

/// The size of the fixed frame header that precedes every body: magic (4), version (1), kind (1),
/// reserved (2), body length (4), CRC-32C (4).
pub const FRAME_HEADER_BYTES: usize = 16;

/// The largest frame body a node accepts; a header that announces more closes the connection
/// before any of the body is read.
///
/// Why 16 MiB: the largest single message a node sends is one Raft Append carrying one entry of
/// the largest allowed size (the Raft core's default `max_entry_bytes` is 8 MiB; an entry larger
/// than the batch bound still travels alone), plus its envelope. Twice that leaves room for the
/// envelope and for a coalesced batch of other groups' traffic in the same frame, while keeping
/// the memory one misbehaving connection can pin to 16 MiB.
pub const MAX_FRAME_BYTES: u32 = 16 << 20;

/// The version of the frame format this build speaks. A peer speaking another version is
/// refused at the first frame: there is no negotiation yet.
pub const FRAME_VERSION: u8 = 1;

/// The four bytes every frame starts with. They make a stream that is not shardcore (an HTTP
/// request, a stray telnet) fail at its first four bytes with a clear error.
pub const FRAME_MAGIC: [u8; 4] = *b"SHCR";

// The header must fit the body length field; a bound the field cannot express would be a lie.
const _: () = assert!(MAX_FRAME_BYTES as u64 <= u32::MAX as u64);
const _: () = assert!(FRAME_HEADER_BYTES == 4 + 1 + 1 + 2 + 4 + 4);
