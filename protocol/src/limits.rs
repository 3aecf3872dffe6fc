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

/// The deepest nesting of tables the FlatBuffers verifier accepts in a body.
///
/// Why 8: the deepest body the schemas allow is four tables deep (RaftBatch, Message, Append,
/// Entry; or ControllerReply, Config, GroupServers, Server). Twice that leaves room for the
/// schemas to grow while a crafted body still cannot make the verifier recurse far.
pub const MAX_VERIFY_DEPTH: usize = 8;

/// How many tables the verifier accepts per byte of body: one per 8 bytes.
///
/// Why 8: every table starts with a 4-byte offset to its vtable and is reached through a
/// 4-byte offset (the root offset, a field or a vector slot), so a body of n bytes written by a
/// FlatBufferBuilder (which shares vtables, never tables) holds at most n / 8 tables. More can
/// only come from offsets that point at the same table many times, a trick to multiply the
/// verifier's work, which this bound and [`VERIFY_APPARENT_BYTES_PER_BODY_BYTE`] stop.
pub const VERIFY_BODY_BYTES_PER_TABLE: usize = 8;

/// How many bytes the verifier may look at per byte of body, counting a table or vector again
/// each time an offset leads to it (its "apparent size").
///
/// Why 16: a legitimate body counts each of its bytes about once, plus each table's vtable once
/// per table (a vtable is shared by every table of a type) and two bytes per field looked up; a
/// small table with a long vtable counts at most about 6 times its own bytes. 16 is well above
/// that, and still keeps the verifier's work linear in the bytes a peer actually sent.
pub const VERIFY_APPARENT_BYTES_PER_BODY_BYTE: usize = 16;

/// The most client requests (or replies) one frame may carry.
///
/// Why 1024: a frame's requests are admitted together, and the KV server lets at most 10,000
/// requests wait at a replica; one frame may take a tenth of that, so a few pipelining clients
/// still share the replica fairly. A client with more sends more frames.
pub const MAX_REQUESTS_PER_FRAME: usize = 1024;
