//! shardcore-io (placeholder)
