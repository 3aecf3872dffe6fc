//! The first frame on every connection: which cluster, which node, peer or client, how many
//! cores. A node compares the cluster id with its own before it reads anything else.

use shardcore_protocol::schema::hello as fb;

use super::{DecodeError, EncodeError, Encoder};
use crate::raft::NodeId;

/// What the connecting side is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HelloRole {
    /// Another node of the cluster: Raft traffic follows.
    Peer,
    /// A client: requests follow.
    Client,
}

/// Who is speaking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    /// The cluster the sender belongs to; never 0.
    pub cluster_id: u64,
    /// The sender's node id (0 for a client).
    pub node_id: NodeId,
    /// Peer or client.
    pub role: HelloRole,
    /// The sender's core count.
    pub core_count: u16,
}

impl Encoder {
    /// The body of a `Hello` frame.
    pub fn hello_body(&mut self, hello: &Hello) -> Result<&[u8], EncodeError> {
        self.builder.reset();
        let args = fb::HelloArgs {
            cluster_id: hello.cluster_id,
            node_id: hello.node_id,
            role: match hello.role {
                HelloRole::Peer => fb::Role::Peer,
                HelloRole::Client => fb::Role::Client,
            },
            core_count: hello.core_count,
        };
        let table = fb::Hello::create(&mut self.builder, &args);
        self.builder.finish_minimal(table);
        self.finished_body()
    }
}

/// Decodes a `Hello` frame body.
pub fn decode_hello(body: &[u8]) -> Result<Hello, DecodeError> {
    let hello = shardcore_protocol::body::verify_hello(body)?;
    if hello.cluster_id() == 0 {
        return Err(DecodeError::Inconsistent {
            field: "Hello.cluster_id",
            why: "0 names no cluster",
        });
    }
    let role = match hello.role() {
        fb::Role::Peer => HelloRole::Peer,
        fb::Role::Client => HelloRole::Client,
        other => {
            return Err(DecodeError::UnknownEnum {
                field: "Hello.role",
                value: other.0,
            })
        }
    };
    Ok(Hello {
        cluster_id: hello.cluster_id(),
        node_id: hello.node_id(),
        role,
        core_count: hello.core_count(),
    })
}
