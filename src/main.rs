//! The `shardcore` binary.
fn main() {}
