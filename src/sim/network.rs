//! The simulated network: who can talk to whom, and what happens to one message (dropped, or
//! delivered after a delay). It mirrors the MIT 6.5840 lab's fault model (TEST-PARITY.md):
//!
//! - reliable: every message arrives after 0-1 ms;
//! - unreliable: every message is delayed 0-26 ms, and 10% of requests and 10% of responses are
//!   dropped (a dropped response means the receiver's handler already ran);
//! - long reordering: about two thirds of responses get 200-2200 ms extra, skewed short as in the
//!   lab (`200 + rand(1 + rand(2000))` ms);
//! - cuts: a node can be disconnected from everyone, the nodes can be split into partitions, and
//!   one group's traffic to a node can be cut while other groups still pass.
//!
//! Connectivity is checked when a message is sent and again when it arrives, so a cut that
//! happens while a message is in flight also drops it. The caller asks [`Network::route`] at send
//! time and [`Network::can_talk`] at delivery time.

use std::collections::BTreeSet;

use crate::raft::{GroupId, NodeId};
use crate::rng::Rng;

/// Percent of requests (and, separately, of responses) an unreliable network drops.
pub const UNRELIABLE_DROP_PERCENT: u64 = 10;
/// Longest delay of an unreliable network, exclusive (the lab: `rand() % 27` ms).
pub const UNRELIABLE_MAX_DELAY_US: u64 = 27_000;
/// Longest delay of a reliable network, inclusive.
pub const RELIABLE_MAX_DELAY_US: u64 = 1_000;

/// Why a message was dropped at send time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drop {
    /// The sender and the receiver cannot talk (disconnect or partition).
    Cut,
    /// The unreliable network lost it.
    Lost,
}

/// The network's state: cuts, fault switches and the random stream for delays and losses.
#[derive(Clone, Debug)]
pub struct Network {
    rng: Rng,
    unreliable: bool,
    long_reordering: bool,
    /// Indexed by node id; entry 0 is unused.
    disconnected: Vec<bool>,
    /// Partition side of every node (indexed by node id), when partitioned.
    sides: Option<Vec<usize>>,
    /// (group, node) pairs whose traffic in that group is cut.
    group_cuts: BTreeSet<(GroupId, NodeId)>,
}

impl Network {
    /// A whole, reliable network of `nodes` nodes (ids `1..=nodes`).
    pub fn new(seed: u64, nodes: usize) -> Network {
        Network {
            rng: Rng::stream(seed, "network"),
            unreliable: false,
            long_reordering: false,
            disconnected: vec![false; nodes + 1],
            sides: None,
            group_cuts: BTreeSet::new(),
        }
    }

    /// Switches the lab's unreliable mode on or off.
    pub fn set_unreliable(&mut self, on: bool) {
        self.unreliable = on;
    }

    /// Switches long reordering of responses on or off.
    pub fn set_long_reordering(&mut self, on: bool) {
        self.long_reordering = on;
    }

    /// True in unreliable mode.
    pub fn is_unreliable(&self) -> bool {
        self.unreliable
    }

    /// True with long reordering on.
    pub fn is_long_reordering(&self) -> bool {
        self.long_reordering
    }

    /// Cuts `node` off from every other node.
    pub fn disconnect(&mut self, node: NodeId) {
        self.disconnected[node as usize] = true;
    }

    /// Undoes [`Network::disconnect`] (partitions stay as they are).
    pub fn connect(&mut self, node: NodeId) {
        self.disconnected[node as usize] = false;
    }

    /// True unless `node` is disconnected (partitions do not count).
    pub fn is_connected(&self, node: NodeId) -> bool {
        !self.disconnected[node as usize]
    }

    /// Splits the nodes into sides that cannot talk to each other. A node listed nowhere is
    /// alone on a side of its own.
    pub fn partition(&mut self, sides: &[&[NodeId]]) {
        let n = self.disconnected.len();
        // Unlisted nodes get side numbers past the listed ones, one each.
        let mut side_of: Vec<usize> = (0..n).map(|node| sides.len() + node).collect();
        for (side, members) in sides.iter().enumerate() {
            for &node in members.iter() {
                side_of[node as usize] = side;
            }
        }
        self.sides = Some(side_of);
    }

    /// The current partition, as lists of nodes (none when the network is not partitioned).
    pub fn partition_sides(&self) -> Vec<Vec<NodeId>> {
        let Some(side_of) = &self.sides else {
            return Vec::new();
        };
        let mut sides: Vec<(usize, Vec<NodeId>)> = Vec::new();
        for (node, &side) in side_of.iter().enumerate().skip(1) {
            match sides.iter_mut().find(|(s, _)| *s == side) {
                Some((_, members)) => members.push(node as NodeId),
                None => sides.push((side, vec![node as NodeId])),
            }
        }
        sides.into_iter().map(|(_, members)| members).collect()
    }

    /// Cuts `node` off from everyone in `group` only; other groups' traffic still passes.
    pub fn disconnect_in_group(&mut self, group: GroupId, node: NodeId) {
        self.group_cuts.insert((group, node));
    }

    /// True when `group`'s traffic to and from `node` is cut.
    pub fn is_cut_in_group(&self, group: GroupId, node: NodeId) -> bool {
        self.group_cuts.contains(&(group, node))
    }

    /// Undoes [`Network::disconnect_in_group`].
    pub fn connect_in_group(&mut self, group: GroupId, node: NodeId) {
        self.group_cuts.remove(&(group, node));
    }

    /// Makes the network whole: no partition, no disconnected node, no group cut. The
    /// reliability switches stay as they are.
    pub fn heal(&mut self) {
        self.sides = None;
        self.disconnected.iter_mut().for_each(|d| *d = false);
        self.group_cuts.clear();
    }

    /// True when a message of `group` from `from` to `to` may pass right now.
    pub fn can_talk(&self, group: GroupId, from: NodeId, to: NodeId) -> bool {
        if from == to {
            return true;
        }
        if self.disconnected[from as usize] || self.disconnected[to as usize] {
            return false;
        }
        if let Some(side_of) = &self.sides {
            if side_of[from as usize] != side_of[to as usize] {
                return false;
            }
        }
        !(self.group_cuts.contains(&(group, from)) || self.group_cuts.contains(&(group, to)))
    }

    /// Decides the fate of one message at send time: its delay in microseconds, or why it is
    /// dropped.
    pub fn route(
        &mut self,
        group: GroupId,
        from: NodeId,
        to: NodeId,
        is_response: bool,
    ) -> Result<u64, Drop> {
        if !self.can_talk(group, from, to) {
            return Err(Drop::Cut);
        }
        self.fate(is_response)
    }

    /// The fate of one message whose endpoints can talk: lost, or delivered after a delay.
    /// Client traffic uses this directly: partitions cut servers from each other, while clients
    /// reach whichever servers their own links allow (as the lab's clerks do).
    pub fn fate(&mut self, is_response: bool) -> Result<u64, Drop> {
        let mut delay_us = if self.unreliable {
            if self.rng.chance(UNRELIABLE_DROP_PERCENT, 100) {
                return Err(Drop::Lost);
            }
            self.rng.range(0, UNRELIABLE_MAX_DELAY_US)
        } else {
            self.rng.range(0, RELIABLE_MAX_DELAY_US + 1)
        };
        // The lab: `if longreordering && rand.Intn(900) < 600` then `200 + rand(1 + rand(2000))` ms.
        if is_response && self.long_reordering && self.rng.chance(600, 900) {
            let spread_ms = self.rng.range(0, 2000);
            let extra_ms = 200 + self.rng.range(0, 1 + spread_ms);
            delay_us += extra_ms * 1000;
        }
        Ok(delay_us)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(net: &mut Network, is_response: bool, n: usize) -> (usize, Vec<u64>) {
        let mut dropped = 0;
        let mut delays = Vec::new();
        for _ in 0..n {
            match net.route(1, 1, 2, is_response) {
                Ok(d) => delays.push(d),
                Err(Drop::Lost) => dropped += 1,
                Err(Drop::Cut) => panic!("not cut"),
            }
        }
        (dropped, delays)
    }

    /// A reliable network never drops and delays by at most 1 ms.
    #[test]
    fn reliable_delays_within_one_ms() {
        let mut net = Network::new(1, 3);
        let (dropped, delays) = sample(&mut net, false, 10_000);
        assert_eq!(dropped, 0);
        assert!(delays.iter().all(|&d| d <= RELIABLE_MAX_DELAY_US));
        assert!(
            delays.iter().any(|&d| d > 500),
            "delays spread over the range"
        );
    }

    /// An unreliable network drops about 10% of requests and of responses, and delays by 0-26 ms.
    #[test]
    fn unreliable_drops_about_ten_percent() {
        let mut net = Network::new(2, 3);
        net.set_unreliable(true);
        for is_response in [false, true] {
            let (dropped, delays) = sample(&mut net, is_response, 10_000);
            assert!((800..1200).contains(&dropped), "dropped {dropped} of 10000");
            assert!(delays.iter().all(|&d| d < UNRELIABLE_MAX_DELAY_US));
            assert!(delays.iter().any(|&d| d > 20_000));
        }
    }

    /// Long reordering delays about two thirds of responses by 200-2200 ms, and no request.
    #[test]
    fn long_reordering_delays_two_thirds_of_responses() {
        let mut net = Network::new(3, 3);
        net.set_long_reordering(true);
        let (_, requests) = sample(&mut net, false, 3_000);
        assert!(requests.iter().all(|&d| d <= RELIABLE_MAX_DELAY_US));
        let (_, responses) = sample(&mut net, true, 9_000);
        let long: Vec<u64> = responses.into_iter().filter(|&d| d >= 200_000).collect();
        assert!(
            (5_600..6_400).contains(&long.len()),
            "{} long of 9000",
            long.len()
        );
        assert!(long.iter().all(|&d| d <= 2_201_000));
    }

    /// Disconnect, partitions and group cuts each stop exactly the traffic they should.
    #[test]
    fn cuts_stop_the_right_traffic() {
        let mut net = Network::new(4, 5);
        net.disconnect(3);
        assert!(!net.can_talk(1, 3, 1) && !net.can_talk(1, 1, 3));
        assert!(net.can_talk(1, 1, 2));
        assert_eq!(net.route(1, 2, 3, false), Err(Drop::Cut));
        net.connect(3);
        assert!(net.can_talk(1, 3, 1));

        net.partition(&[&[1, 2, 3], &[4]]);
        assert!(net.can_talk(1, 1, 3) && net.can_talk(1, 3, 2));
        assert!(
            !net.can_talk(1, 1, 4) && !net.can_talk(1, 4, 5),
            "5 is unlisted: alone"
        );
        assert_eq!(net.partition_sides(), vec![vec![1, 2, 3], vec![4], vec![5]]);

        net.heal();
        assert!(net.can_talk(1, 1, 4) && net.can_talk(1, 4, 5));
        assert!(net.partition_sides().is_empty());

        net.disconnect_in_group(2, 1);
        assert!(!net.can_talk(2, 1, 2) && !net.can_talk(2, 3, 1));
        assert!(net.can_talk(1, 1, 2) && net.can_talk(2, 2, 3));
        net.disconnect(4);
        net.heal();
        assert!(net.can_talk(2, 1, 2) && net.is_connected(4));
    }

    /// The same seed gives the same fates; another seed gives others.
    #[test]
    fn routing_is_deterministic() {
        let run = |seed| {
            let mut net = Network::new(seed, 3);
            net.set_unreliable(true);
            net.set_long_reordering(true);
            (0..200)
                .map(|i| net.route(1, 1, 2, i % 2 == 0))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(9), run(9));
        assert_ne!(run(9), run(10));
    }
}
