//! Which core of a node owns a Raft group.
//!
//! A group's log lives in its core's write-ahead log, so placement is part of the on-disk
//! layout: for a given core count the answer must never change between releases (a golden test
//! pins it). When a node restarts with another core count, as few groups as possible should
//! move; jump consistent hashing (Lamping & Veach, "A Fast, Minimal Memory, Consistent Hash
//! Algorithm", 2014) moves exactly the groups that must: going from `n` to `n + 1` cores, a group
//! either stays where it was or moves to the new core, about `1 / (n + 1)` of them.

use std::num::NonZeroUsize;

/// A core of one node, numbered from 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CoreId(pub usize);

/// The core that owns `group` on a node with `core_count` cores. Pure and stable: see the module
/// docs.
pub fn core_for_group(group: u64, core_count: NonZeroUsize) -> CoreId {
    // Group ids are often small and sequential; mix them so that neighbours spread out.
    let mut key = mix64(group);
    let buckets = core_count.get() as u128;
    let (mut chosen, mut next) = (0u128, 0u128);
    // Each round jumps forward to the next core count at which this key would move; the last
    // jump below `buckets` is the owner. The paper's floating-point step is done here in exact
    // integer arithmetic, so no platform's rounding can change an answer.
    while next < buckets {
        chosen = next;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        next = (chosen + 1) * (1u128 << 31) / (u128::from(key >> 33) + 1);
    }
    CoreId(chosen as usize)
}

/// The SplitMix64 finalizer: a bijection on u64 that spreads every input bit over the output.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cores(n: usize) -> NonZeroUsize {
        NonZeroUsize::new(n).unwrap()
    }

    fn place(groups: std::ops::Range<u64>, n: usize) -> Vec<usize> {
        groups.map(|g| core_for_group(g, cores(n)).0).collect()
    }

    /// Golden values: placement is part of the on-disk layout and must not change between
    /// releases. If this test fails, the change strands every existing node's WAL.
    #[test]
    fn placement_is_pinned() {
        assert_eq!(place(0..16, 1), vec![0; 16]);
        assert_eq!(place(0..16, 2), GOLDEN_2);
        assert_eq!(place(0..16, 4), GOLDEN_4);
        assert_eq!(place(0..16, 7), GOLDEN_7);
        let far = [u64::MAX, u64::MAX - 1, 1 << 63];
        assert_eq!(far.map(|g| core_for_group(g, cores(64)).0), GOLDEN_FAR_64);
    }

    // Cross-checked against an independent implementation of the paper's algorithm (in Python,
    // with the same SplitMix64 mixing) when they were pinned.
    const GOLDEN_2: [usize; 16] = [0, 0, 0, 0, 1, 0, 1, 1, 0, 1, 0, 0, 0, 0, 1, 0];
    const GOLDEN_4: [usize; 16] = [0, 0, 3, 0, 1, 0, 2, 3, 0, 1, 2, 3, 3, 2, 2, 0];
    const GOLDEN_7: [usize; 16] = [0, 0, 5, 0, 5, 6, 4, 4, 0, 1, 5, 4, 5, 5, 2, 4];
    const GOLDEN_FAR_64: [usize; 3] = [60, 9, 12];

    /// Every answer is a valid core.
    #[test]
    fn placement_is_in_range() {
        for n in 1..=70 {
            assert!(place(0..2000, n).iter().all(|c| *c < n), "{n} cores");
        }
    }

    /// Sequential group ids spread evenly: with 64,000 groups every core is within 5% of its fair
    /// share (over 6 standard deviations at 16 cores).
    #[test]
    fn placement_is_balanced() {
        let groups = 64_000u64;
        for n in 2..=16 {
            let mut per_core = vec![0u64; n];
            for core in place(0..groups, n) {
                per_core[core] += 1;
            }
            let fair = groups / n as u64;
            for (core, count) in per_core.iter().enumerate() {
                assert!(
                    count.abs_diff(fair) * 20 <= fair,
                    "{n} cores: core {core} has {count}"
                );
            }
        }
    }

    /// Adding a core moves only groups to the new core, and about 1/(n+1) of them.
    #[test]
    fn adding_a_core_moves_the_minimum() {
        let groups = 20_000u64;
        for n in 1..=12 {
            let before = place(0..groups, n);
            let after = place(0..groups, n + 1);
            let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count() as u64;
            assert!(
                before.iter().zip(&after).all(|(b, a)| b == a || *a == n),
                "{n} → {}",
                n + 1
            );
            let expected = groups / (n as u64 + 1);
            assert!(
                moved.abs_diff(expected) * 10 <= expected,
                "{n} → {}: {moved} moved",
                n + 1
            );
        }
    }
}
