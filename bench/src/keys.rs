//! Which key an operation touches: key names, and the uniform and zipfian choices over the key
//! space, each drawn from a seeded [`Rng`] so a run's key sequence replays from `--seed`.

use shardcore::rng::Rng;

/// A uniform draw in `[0, 1)` with 53 random bits.
pub fn unit_f64(rng: &mut Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// The key of index `index`: `prefix` then the index zero-padded so that the key is
/// `key_bytes` long (longer if the index needs more digits; `cli::Args::validate` refuses key
/// spaces where that happens). `k` and 16 bytes give `k000000000000042`, as etcd-bench names
/// its keys.
pub fn key_name(prefix: &str, index: u64, key_bytes: usize) -> String {
    let mut name = Vec::with_capacity(key_bytes.max(prefix.len() + 20));
    name.extend_from_slice(prefix.as_bytes());
    push_decimal(&mut name, index, key_bytes.saturating_sub(prefix.len()));
    String::from_utf8(name).expect("a prefix and digits")
}

/// Appends `n` in decimal, zero-padded to `width` digits. Once an operation: `format!` was a
/// few percent of the generator's CPU.
pub fn push_decimal(out: &mut Vec<u8>, mut n: u64, width: usize) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let len = digits.len() - start;
    out.extend(std::iter::repeat_n(b'0', width.saturating_sub(len)));
    out.extend_from_slice(&digits[start..]);
}

/// A sharded run's keys limited by shard: only one shard's, or every shard's but one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardFilter {
    /// Only keys of this shard (to load one shard).
    Only(u32),
    /// No key of this shard (to measure the others while it moves).
    Skip(u32),
}

impl ShardFilter {
    fn keeps(self, shard: u32) -> bool {
        match self {
            ShardFilter::Only(s) => shard == s,
            ShardFilter::Skip(s) => shard != s,
        }
    }
}

/// The largest key space a shard filter takes. Why 10 million: its table holds a u64 per key
/// (80 MB at most), built in about a second.
pub const MAX_FILTERED_KEYS: u64 = 10_000_000;

/// The key numbers of a filtered run: key `i` is named by the `i`-th number (ascending) whose
/// key name ([`key_name`]) `filter` keeps over `shards` shards (`shardkv::key_to_shard`, the
/// servers' own function). Numbers past `keys` may need more digits than `key_bytes`: those
/// names are longer.
pub fn filtered_key_numbers(
    prefix: &str,
    key_bytes: usize,
    keys: u64,
    shards: usize,
    filter: ShardFilter,
) -> Result<Vec<u64>, String> {
    if keys > MAX_FILTERED_KEYS {
        return Err(format!(
            "a shard filter takes at most {MAX_FILTERED_KEYS} keys, not {keys}"
        ));
    }
    let mut numbers = Vec::with_capacity(keys as usize);
    // A shard gets one key in `shards` on average; sixteen times that many names without
    // enough of them means the filter keeps nothing.
    let limit = keys
        .saturating_mul(shards as u64)
        .saturating_mul(16)
        .max(1 << 20);
    for number in 0..limit {
        if numbers.len() as u64 == keys {
            return Ok(numbers);
        }
        let name = key_name(prefix, number, key_bytes);
        if filter.keeps(shardcore::shardkv::key_to_shard(name.as_bytes(), shards)) {
            numbers.push(number);
        }
    }
    if numbers.len() as u64 == keys {
        return Ok(numbers);
    }
    Err(format!(
        "only {} of {keys} keys pass {filter:?} in the first {limit} names",
        numbers.len()
    ))
}

/// How keys are drawn.
#[derive(Clone, Debug)]
pub enum KeyChooser {
    /// Every key equally likely.
    Uniform {
        /// Keys in the space.
        keys: u64,
    },
    /// Key `i` drawn with probability proportional to `1 / (i + 1)^θ`.
    Zipfian(Zipf),
}

impl KeyChooser {
    /// The index of the next key.
    pub fn next(&self, rng: &mut Rng) -> u64 {
        match self {
            KeyChooser::Uniform { keys } => rng.range(0, *keys),
            KeyChooser::Zipfian(zipf) => zipf.next(rng),
        }
    }
}

/// The zipfian generator of Gray et al., "Quickly generating billion-record synthetic
/// databases" (SIGMOD 1994), as YCSB's `ZipfianGenerator` uses it: ranks 0 and 1 are exact, the
/// rest follow the continuous approximation of the distribution's inverse. Rank 0 (key 0) is the
/// hottest; keys are hashed to groups, so hot keys still spread over groups.
#[derive(Clone, Debug)]
pub struct Zipf {
    keys: u64,
    theta: f64,
    zeta_n: f64,
    alpha: f64,
    eta: f64,
}

/// The largest key space the zipfian generator accepts. Why 100 million: its set-up sums
/// `1/i^θ` over every key, about a second for 100 million on this machine; beyond that the
/// start of a run would be noticeably delayed.
pub const MAX_ZIPF_KEYS: u64 = 100_000_000;

impl Zipf {
    /// A generator over `keys` keys with exponent `theta` in (0, 1) (YCSB's default is 0.99).
    pub fn new(keys: u64, theta: f64) -> Zipf {
        assert!((1..=MAX_ZIPF_KEYS).contains(&keys), "zipf over {keys} keys");
        assert!(
            theta > 0.0 && theta < 1.0,
            "zipf theta {theta} outside (0, 1)"
        );
        let zeta_n = zeta(keys, theta);
        let zeta_2 = zeta(2.min(keys), theta);
        let alpha = 1.0 / (1.0 - theta);
        let eta = if keys <= 2 {
            0.0
        } else {
            (1.0 - (2.0 / keys as f64).powf(1.0 - theta)) / (1.0 - zeta_2 / zeta_n)
        };
        Zipf {
            keys,
            theta,
            zeta_n,
            alpha,
            eta,
        }
    }

    /// The probability the exact distribution gives rank `rank` (for tests and reports).
    pub fn probability(&self, rank: u64) -> f64 {
        1.0 / ((rank + 1) as f64).powf(self.theta) / self.zeta_n
    }

    /// The next rank, in `[0, keys)`.
    pub fn next(&self, rng: &mut Rng) -> u64 {
        let u = unit_f64(rng);
        let uz = u * self.zeta_n;
        if uz < 1.0 || self.keys == 1 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) || self.keys == 2 {
            return 1;
        }
        let rank = (self.keys as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        rank.min(self.keys - 1)
    }
}

/// `sum_{i=1..n} 1/i^θ`.
fn zeta(n: u64, theta: f64) -> f64 {
    (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Key names are the prefix and a zero-padded index, exactly `key_bytes` long.
    #[test]
    fn key_names_are_padded() {
        assert_eq!(key_name("k", 42, 16), "k000000000000042");
        assert_eq!(key_name("k", 0, 4), "k000");
        assert_eq!(key_name("k", u64::MAX, 4), format!("k{}", u64::MAX));
        assert_eq!(key_name("prefix", 7, 3), "prefix7");
        for n in [0, 9, 10, 99, 100, 12_345, 1 << 40] {
            for width in [0, 1, 5, 16] {
                assert_eq!(key_name("k", n, width + 1), format!("k{n:0width$}"));
            }
        }
        assert_eq!(key_name("k", 99_999, 16).len(), 16);
        assert_eq!(key_name("run7-", 3, 8), "run7-003");
    }

    /// A filtered key space names only keys of the kept shards, every number once, ascending.
    #[test]
    fn shard_filters_keep_their_shards() {
        let shards = 16;
        let shard_of =
            |n: u64| shardcore::shardkv::key_to_shard(key_name("k", n, 8).as_bytes(), 16);
        let only = filtered_key_numbers("k", 8, 100, shards, ShardFilter::Only(3)).unwrap();
        assert_eq!(only.len(), 100);
        assert!(only.iter().all(|&n| shard_of(n) == 3));
        assert!(only.windows(2).all(|w| w[0] < w[1]));
        let skip = filtered_key_numbers("k", 8, 100, shards, ShardFilter::Skip(3)).unwrap();
        assert!(skip.iter().all(|&n| shard_of(n) != 3));
        assert!(filtered_key_numbers("k", 8, 10, shards, ShardFilter::Only(16)).is_err());
    }

    /// Uniform draws stay in range and hit every key of a small space.
    #[test]
    fn uniform_covers_the_space() {
        let chooser = KeyChooser::Uniform { keys: 10 };
        let mut rng = Rng::stream(1, "keys");
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            seen[chooser.next(&mut rng) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 800 && n < 1200), "{seen:?}");
    }

    /// With a seeded generator, the zipfian draws match the exact distribution: ranks 0 and 1
    /// within 1% absolute of their probability (the algorithm is exact there), the share of the
    /// hottest 1% and 10% of keys within 2% absolute (the rest is an approximation), and no draw
    /// out of range.
    #[test]
    fn zipf_matches_the_distribution() {
        let keys = 1000;
        let zipf = Zipf::new(keys, 0.99);
        let mut rng = Rng::stream(7, "zipf test");
        let draws = 200_000;
        let mut counts = vec![0u64; keys as usize];
        for _ in 0..draws {
            let rank = zipf.next(&mut rng);
            assert!(rank < keys);
            counts[rank as usize] += 1;
        }
        let share = |ranks: std::ops::Range<u64>| {
            ranks.clone().map(|r| counts[r as usize]).sum::<u64>() as f64 / draws as f64
        };
        let exact = |ranks: std::ops::Range<u64>| ranks.map(|r| zipf.probability(r)).sum::<f64>();
        for rank in [0, 1] {
            let (got, want) = (share(rank..rank + 1), exact(rank..rank + 1));
            assert!((got - want).abs() < 0.01, "rank {rank}: {got} vs {want}");
        }
        for top in [10, 100] {
            let (got, want) = (share(0..top), exact(0..top));
            assert!((got - want).abs() < 0.02, "top {top}: {got} vs {want}");
        }
        // And it is skewed: the hottest key is drawn far more than a uniform key would be.
        assert!(counts[0] > 50 * draws / keys);
    }

    /// Tiny key spaces work: one key is always rank 0; two keys give ranks 0 and 1 only.
    #[test]
    fn zipf_tiny_spaces() {
        let mut rng = Rng::stream(3, "tiny");
        let one = Zipf::new(1, 0.5);
        assert!((0..100).all(|_| one.next(&mut rng) == 0));
        let two = Zipf::new(2, 0.5);
        let draws: Vec<u64> = (0..1000).map(|_| two.next(&mut rng)).collect();
        assert!(draws.iter().all(|&r| r < 2));
        assert!(draws.contains(&0) && draws.contains(&1));
    }
}
