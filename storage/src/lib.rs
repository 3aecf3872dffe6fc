//! shardcore-storage (placeholder)
