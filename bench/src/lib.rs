//! shardcore-bench (placeholder)
