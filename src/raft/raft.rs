//! TEMPORARY compile stub; replaced by the real state machine.
#![allow(missing_docs, unused)]
use bytes::Bytes;
use super::config::Config;
use super::log::RaftLog;
use super::node::{Ready, Restore};
use super::types::*;
pub struct Raft { log: RaftLog, cfg: Config }
impl Raft {
    pub fn new(cfg: Config, r: Restore) -> Result<Raft, ConfigError> { Ok(Raft { log: RaftLog::default(), cfg }) }
    pub fn group(&self) -> GroupId { self.cfg.group }
    pub fn id(&self) -> NodeId { self.cfg.id }
    pub fn is_voter(&self, id: NodeId) -> bool { self.cfg.voters.contains(&id) }
    pub fn step(&mut self, m: Message) {}
    pub fn tick(&mut self) {}
    pub fn propose(&mut self, b: Vec<Bytes>) -> Result<Index, ProposeError> { Err(ProposeError::TooLarge) }
    pub fn read_index(&mut self, c: Bytes) -> Result<(), ReadError> { Err(ReadError::NoLeader) }
    pub fn transfer_leader(&mut self, to: NodeId) -> Result<(), ProposeError> { Err(ProposeError::TooLarge) }
    pub fn persisted(&mut self, i: Index, t: Term) {}
    pub fn compact(&mut self, i: Index, d: Bytes) -> Result<(), CompactError> { Err(CompactError::NotApplied) }
    pub fn soft_state(&self) -> SoftState { SoftState { leader: 0, role: Role::Follower, term: 0 } }
    pub fn hard_state(&self) -> HardState { HardState::default() }
    pub fn has_ready_work(&self) -> bool { false }
    pub fn take_ready(&mut self) -> Ready { Ready::default() }
    pub fn applied_to(&mut self, i: Index) {}
    pub fn role(&self) -> Role { Role::Follower }
    pub fn leader(&self) -> NodeId { 0 }
    pub fn applied(&self) -> Index { 0 }
    pub fn stable_index(&self) -> Index { 0 }
    pub fn log(&self) -> &RaftLog { &self.log }
}
