//! shardcore-protocol (placeholder)
