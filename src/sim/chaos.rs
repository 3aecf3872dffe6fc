//! Composable workload and faults for a cluster (FoundationDB's Cycle + RandomClogging +
//! Attrition idea): a steady stream of client proposals and ReadIndex reads, and random
//! partitions, disconnects, crashes, restarts and reliability switches at seeded rates. Every
//! read is checked for linearizability as it comes back: its index must be at or past every
//! index applied anywhere before the read was asked (Raft thesis §6.4). The swarm test and the
//! `shardcore sim` command both drive a cluster with it, then [`Chaos::heal`] everything and
//! check that the cluster converges.

use std::collections::HashMap;

use bytes::Bytes;

use super::cluster::Cluster;
use crate::raft::{GroupId, Index, NodeId, ProposeError};
use crate::rng::Rng;

/// Virtual time between two decisions of the driver.
pub const CHAOS_STEP_MS: u64 = 10;
/// Proposals awaiting an outcome are forgotten after this long; bounds the pending list.
const PENDING_TIMEOUT_MS: u64 = 30_000;

/// The mix of one chaos run. Rates are means; a zero interval turns that part off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChaosConfig {
    /// Mean virtual time between two client proposals, per group.
    pub proposal_interval_ms: u64,
    /// Mean virtual time between two ReadIndex reads, per group.
    pub read_interval_ms: u64,
    /// Mean virtual time between two fault actions (each a fault or a repair).
    pub fault_interval_ms: u64,
    /// Weight of partition / heal actions.
    pub partition_weight: u64,
    /// Weight of disconnect / connect actions.
    pub disconnect_weight: u64,
    /// Weight of crash / restart actions.
    pub crash_weight: u64,
    /// Weight of switching unreliable mode or long reordering.
    pub reliability_weight: u64,
}

impl Default for ChaosConfig {
    fn default() -> ChaosConfig {
        ChaosConfig {
            proposal_interval_ms: 20,
            read_interval_ms: 50,
            fault_interval_ms: 0,
            partition_weight: 2,
            disconnect_weight: 2,
            crash_weight: 2,
            reliability_weight: 1,
        }
    }
}

/// What a chaos run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChaosCounts {
    /// Proposals made.
    pub proposed: u64,
    /// Proposals a leader accepted.
    pub accepted: u64,
    /// Accepted proposals later seen applied at their index.
    pub acknowledged: u64,
    /// Accepted proposals whose index was taken by another entry.
    pub lost: u64,
    /// Reads a node accepted.
    pub reads_asked: u64,
    /// Read answers (ReadStates) checked.
    pub reads_answered: u64,
    /// Fault and repair actions taken.
    pub faults: u64,
}

struct Pending {
    group: GroupId,
    index: Index,
    command: Bytes,
    at_us: u64,
}

/// The driver. Randomness comes from the `workload`, `reads` and `faults` streams of the seed.
pub struct Chaos {
    cfg: ChaosConfig,
    workload: Rng,
    reads: Rng,
    faults: Rng,
    next_command: u64,
    pending: Vec<Pending>,
    acknowledged: Vec<(GroupId, Index, Bytes)>,
    /// Read context → the highest index applied anywhere in its group when it was asked.
    read_floors: HashMap<Bytes, Index>,
    /// How many of the cluster's observed reads were checked already.
    reads_seen: usize,
    counts: ChaosCounts,
}

impl Chaos {
    /// A driver for a cluster built from `seed`.
    pub fn new(seed: u64, cfg: ChaosConfig) -> Chaos {
        Chaos {
            cfg,
            workload: Rng::stream(seed, "workload"),
            reads: Rng::stream(seed, "reads"),
            faults: Rng::stream(seed, "faults"),
            next_command: 0,
            pending: Vec::new(),
            acknowledged: Vec::new(),
            read_floors: HashMap::new(),
            reads_seen: 0,
            counts: ChaosCounts::default(),
        }
    }

    /// What the run did so far.
    pub fn counts(&self) -> ChaosCounts {
        self.counts
    }

    /// Commands that clients saw committed: (group, index, command).
    pub fn acknowledged(&self) -> &[(GroupId, Index, Bytes)] {
        &self.acknowledged
    }

    /// Drives `cluster` for `duration_ms` of virtual time.
    pub fn run(&mut self, cluster: &mut Cluster, duration_ms: u64) {
        for _ in 0..duration_ms / CHAOS_STEP_MS {
            self.step(cluster);
        }
    }

    /// One step of [`CHAOS_STEP_MS`]: maybe a proposal per group at its start, maybe one fault
    /// action at a random instant inside it (so that crashes catch disk writes and messages
    /// in flight), then bookkeeping.
    pub fn step(&mut self, cluster: &mut Cluster) {
        let step_us = CHAOS_STEP_MS * 1000;
        if self.cfg.proposal_interval_ms > 0 {
            for group in cluster.config().group_ids() {
                if self
                    .workload
                    .chance(CHAOS_STEP_MS, self.cfg.proposal_interval_ms)
                {
                    self.propose(cluster, group);
                }
            }
        }
        if self.cfg.read_interval_ms > 0 {
            for group in cluster.config().group_ids() {
                if self.reads.chance(CHAOS_STEP_MS, self.cfg.read_interval_ms) {
                    self.read(cluster, group);
                }
            }
        }
        let fault = self.cfg.fault_interval_ms > 0
            && self
                .faults
                .chance(CHAOS_STEP_MS, self.cfg.fault_interval_ms);
        if fault {
            let at_us = self.faults.range(0, step_us);
            cluster.run_for_us(at_us);
            self.fault(cluster);
            cluster.run_for_us(step_us - at_us);
        } else {
            cluster.run_for_us(step_us);
        }
        self.resolve(cluster);
    }

    /// A reader: ask a random live node for a read point, remembering what it must cover.
    fn read(&mut self, cluster: &mut Cluster, group: GroupId) {
        let node = self.reads.index(cluster.config().nodes) as NodeId + 1;
        let context = Bytes::from(format!("g{group}-r{}", self.counts.reads_asked));
        let floor = cluster.max_committed(group);
        if cluster.read_index(group, node, context.clone()).is_ok() {
            self.counts.reads_asked += 1;
            self.read_floors.insert(context, floor);
        }
    }

    /// Checks the read answers that came out since the last look.
    fn check_reads(&mut self, cluster: &Cluster) {
        for read in &cluster.reads()[self.reads_seen..] {
            let Some(&floor) = self.read_floors.get(&read.context) else {
                continue;
            };
            self.counts.reads_answered += 1;
            if read.index < floor {
                let what = format!(
                    "linearizability: read {:?} at n{} got index {}, but {floor} was applied \
                     before it was asked",
                    read.context, read.node, read.index
                );
                cluster.fail(Some(read.node), Some(read.group), &what);
            }
        }
        self.reads_seen = cluster.reads().len();
    }

    /// A client: ask a random live node; when it names another leader, ask that one.
    fn propose(&mut self, cluster: &mut Cluster, group: GroupId) {
        let nodes = cluster.config().nodes;
        let command = Bytes::from(format!("g{group}-c{}", self.next_command));
        self.next_command += 1;
        self.counts.proposed += 1;
        let mut node = self.workload.index(nodes) as NodeId + 1;
        for _ in 0..2 {
            match cluster.propose(group, node, command.clone()) {
                Ok(index) => {
                    self.counts.accepted += 1;
                    let at_us = cluster.now_us();
                    self.pending.push(Pending {
                        group,
                        index,
                        command,
                        at_us,
                    });
                    return;
                }
                Err(ProposeError::NotLeader { leader }) if leader != 0 && leader != node => {
                    node = leader
                }
                Err(_) => return,
            }
        }
    }

    fn resolve(&mut self, cluster: &Cluster) {
        self.check_reads(cluster);
        let now_us = cluster.now_us();
        let mut i = 0;
        while i < self.pending.len() {
            let p = &self.pending[i];
            let outcome = cluster
                .committed(p.group, p.index)
                .map(|e| e.data == p.command);
            let expired = now_us - p.at_us > PENDING_TIMEOUT_MS * 1000;
            if outcome.is_none() && !expired {
                i += 1;
                continue;
            }
            let p = self.pending.swap_remove(i);
            match outcome {
                Some(true) => {
                    self.counts.acknowledged += 1;
                    self.acknowledged.push((p.group, p.index, p.command));
                }
                Some(false) => self.counts.lost += 1,
                None => {}
            }
        }
    }

    /// One fault or repair, chosen by weight.
    fn fault(&mut self, cluster: &mut Cluster) {
        let c = &self.cfg;
        let weights = [
            c.partition_weight,
            c.disconnect_weight,
            c.crash_weight,
            c.reliability_weight,
        ];
        let total: u64 = weights.iter().sum();
        if total == 0 {
            return;
        }
        self.counts.faults += 1;
        let mut pick = self.faults.range(0, total);
        let kind = weights.iter().position(|&w| {
            if pick < w {
                return true;
            }
            pick -= w;
            false
        });
        let nodes: Vec<NodeId> = cluster.config().node_ids().collect();
        let any = |rng: &mut Rng| nodes[rng.index(nodes.len())];
        match kind {
            Some(0) if self.faults.chance(1, 2) => cluster.heal(),
            Some(0) => {
                let mut shuffled = nodes.clone();
                for i in (1..shuffled.len()).rev() {
                    shuffled.swap(i, self.faults.index(i + 1));
                }
                let cut = self.faults.range(1, shuffled.len() as u64) as usize;
                let (a, b) = shuffled.split_at(cut);
                cluster.partition(&[a, b]);
            }
            Some(1) => {
                let node = any(&mut self.faults);
                if cluster.is_connected(node) {
                    cluster.disconnect(node);
                } else {
                    cluster.connect(node);
                }
            }
            Some(2) => {
                let node = any(&mut self.faults);
                if cluster.is_alive(node) {
                    cluster.crash(node);
                } else {
                    cluster.restart(node);
                }
            }
            _ => {
                if self.faults.chance(1, 2) {
                    let on = !cluster.network().is_unreliable();
                    cluster.set_unreliable(on);
                } else {
                    let on = !cluster.network().is_long_reordering();
                    cluster.set_long_reordering(on);
                }
            }
        }
    }

    /// Ends the chaos: the network whole and reliable, every crashed node restarted.
    pub fn heal(&mut self, cluster: &mut Cluster) {
        cluster.heal();
        cluster.set_unreliable(false);
        cluster.set_long_reordering(false);
        cluster.restart_crashed();
    }

    /// Every command a client saw committed is still at its index (state-machine safety makes
    /// this hold; the check guards the bookkeeping).
    pub fn check_acknowledged(&self, cluster: &Cluster) {
        for (group, index, command) in &self.acknowledged {
            let entry = cluster.committed(*group, *index);
            if entry.is_none_or(|e| e.data != command) {
                let what = format!("acknowledged command at g{group} index {index} is gone");
                cluster.fail(None, Some(*group), &what);
            }
        }
    }
}
