//! The Rust code flatc 25.12.19 generates from protocol/schema/*.fbs, one module
//! per schema file. Written by scripts/gen-protocol.sh; do not edit.
pub mod client_generated;
pub mod hello_generated;
pub mod mapreduce_generated;
pub mod raft_generated;
pub mod shardctl_generated;
