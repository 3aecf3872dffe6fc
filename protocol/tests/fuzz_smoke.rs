//! The fuzz target's body (protocol/fuzz/src/lib.rs) run on the stable toolchain over seeded
//! random inputs, so `cargo test` exercises it without cargo-fuzz or nightly. `SEED=<u64>`
//! replays a run; each failure prints the seed and the input's index.

#[path = "../fuzz/src/lib.rs"]
mod fuzz;

use bytes::BytesMut;
use flatbuffers::FlatBufferBuilder;
use shardcore_protocol::schema::{client, hello, raft};
use shardcore_protocol::{encode, FrameKind};

/// Random inputs: a few thousand, well under a second.
const INPUTS: usize = 4000;
/// The longest random input.
const MAX_INPUT_BYTES: usize = 1024;

fn seed() -> u64 {
    let seed = std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_f4a3);
    println!("SEED={seed}");
    seed
}

/// xorshift64*: a seeded generator without a dependency (this crate may not use shardcore's).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn input(&mut self, max_bytes: usize) -> Vec<u8> {
        let len = self.next() as usize % (max_bytes + 1);
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// Valid bodies of three kinds, as a recipe input would carry them.
fn valid_bodies() -> Vec<(FrameKind, Vec<u8>)> {
    let mut bodies = Vec::new();
    let mut builder = FlatBufferBuilder::new();
    let args = hello::HelloArgs {
        cluster_id: 1,
        node_id: 2,
        role: hello::Role::Peer,
        core_count: 4,
    };
    let root = hello::Hello::create(&mut builder, &args);
    builder.finish_minimal(root);
    bodies.push((FrameKind::Hello, builder.finished_data().to_vec()));

    let mut builder = FlatBufferBuilder::new();
    let data = builder.create_vector(&b"command"[..]);
    let entry = raft::Entry::create(
        &mut builder,
        &raft::EntryArgs {
            term: 3,
            index: 7,
            kind: raft::EntryKind::Normal,
            data: Some(data),
        },
    );
    let entries = builder.create_vector(&[entry]);
    let append = raft::Append::create(
        &mut builder,
        &raft::AppendArgs {
            prev_index: 6,
            prev_term: 3,
            entries: Some(entries),
            commit: 5,
        },
    );
    let message = raft::Message::create(
        &mut builder,
        &raft::MessageArgs {
            group: 9,
            term: 3,
            body_type: raft::Body::Append,
            body: Some(append.as_union_value()),
        },
    );
    let messages = builder.create_vector(&[message]);
    let heartbeats = builder.create_vector(&[raft::Heartbeat::new(9, 3, 5, 1)]);
    let batch = raft::RaftBatch::create(
        &mut builder,
        &raft::RaftBatchArgs {
            from: 1,
            to: 2,
            heartbeats: Some(heartbeats),
            heartbeat_responses: None,
            messages: Some(messages),
        },
    );
    builder.finish_minimal(batch);
    bodies.push((FrameKind::PeerRaft, builder.finished_data().to_vec()));

    let mut builder = FlatBufferBuilder::new();
    let key = builder.create_vector(&b"k"[..]);
    let get = client::Get::create(
        &mut builder,
        &client::GetArgs {
            key: Some(key),
            consistency: client::Consistency::Serializable,
        },
    );
    let request = client::Request::create(
        &mut builder,
        &client::RequestArgs {
            id: 1,
            group: 4,
            client: 2,
            seq: 3,
            op_type: client::Op::Get,
            op: Some(get.as_union_value()),
        },
    );
    let requests = builder.create_vector(&[request]);
    let batch = client::RequestBatch::create(
        &mut builder,
        &client::RequestBatchArgs {
            requests: Some(requests),
        },
    );
    builder.finish_minimal(batch);
    bodies.push((FrameKind::ClientRequest, builder.finished_data().to_vec()));
    bodies
}

/// Random raw streams and random recipe bodies: no panic.
#[test]
fn random_inputs_never_panic() {
    let mut rng = Rng(seed() | 1);
    for index in 0..INPUTS {
        let input = rng.input(MAX_INPUT_BYTES);
        let result = std::panic::catch_unwind(|| fuzz::frame_decode(&input));
        assert!(result.is_ok(), "input {index} panicked: {input:02x?}");
    }
}

/// Valid bodies as recipes, then every single-byte change to each (a mutation fuzzer's first
/// moves): no panic, and the unchanged ones pass as their own kind.
#[test]
fn mutated_valid_bodies_never_panic() {
    let mut rng = Rng(seed() | 1);
    for (kind, body) in valid_bodies() {
        let body_only = shardcore_protocol::verify(kind, &body);
        assert!(body_only.is_ok(), "{kind:?}: {body_only:?}");
        let mut recipe = vec![1, kind as u8 - 1];
        recipe.extend_from_slice(&body);
        fuzz::frame_decode(&recipe);
        for at in 2..recipe.len() {
            let mut mutated = recipe.clone();
            mutated[at] = rng.next() as u8;
            fuzz::frame_decode(&mutated);
        }
        // The same body framed, as a raw stream, twice in a row.
        let mut stream = vec![0];
        let mut wire = BytesMut::new();
        encode(kind, &body, &mut wire).unwrap();
        encode(kind, &body, &mut wire).unwrap();
        stream.extend_from_slice(&wire);
        fuzz::frame_decode(&stream);
    }
}
