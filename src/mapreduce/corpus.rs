//! The benchmark's corpus: seeded text with a Zipf word distribution, so anyone can recreate
//! the same bytes from the same seed and size.
//!
//! The vocabulary is `vocabulary` made-up words (lowercase ASCII, a few with accented letters
//! so the Unicode path is exercised), drawn with probability proportional to 1/rank^s
//! (s = 1.0, the classic Zipf law of natural text); lines hold 8 to 19 words separated by
//! spaces and sometimes punctuation.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::rng::Rng;

/// The generator's settings.
#[derive(Clone, Debug)]
pub struct CorpusConfig {
    /// The seed of every draw.
    pub seed: u64,
    /// Total bytes to write (at least; files end at a line end).
    pub total_bytes: u64,
    /// Files to spread them over.
    pub files: u32,
    /// Distinct words.
    pub vocabulary: u32,
}

/// Writes the corpus into `dir` as `corpus-<i>.txt`; returns the paths.
pub fn generate(config: &CorpusConfig, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut words_rng = Rng::stream(config.seed, "corpus-words");
    let words: Vec<Vec<u8>> = (0..config.vocabulary)
        .map(|rank| make_word(&mut words_rng, rank))
        .collect();
    // The cumulative Zipf weights, scaled to u64 so a draw is a binary search.
    let weights: Vec<f64> = (1..=config.vocabulary)
        .map(|r| 1.0 / f64::from(r))
        .collect();
    let total: f64 = weights.iter().sum();
    let mut cumulative = Vec::with_capacity(weights.len());
    let mut sum = 0.0;
    for w in &weights {
        sum += w / total;
        cumulative.push((sum * u64::MAX as f64) as u64);
    }
    *cumulative.last_mut().expect("a vocabulary") = u64::MAX;
    let per_file = config.total_bytes.div_ceil(u64::from(config.files.max(1)));
    let mut paths = Vec::new();
    for index in 0..config.files.max(1) {
        let path = dir.join(format!("corpus-{index}.txt"));
        let mut rng = Rng::stream(config.seed, &format!("corpus-file-{index}"));
        let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&path)?);
        let mut written = 0u64;
        let mut line = Vec::with_capacity(256);
        while written < per_file {
            line.clear();
            let count = rng.range(8, 20);
            for i in 0..count {
                let draw = rng.next_u64();
                let rank = cumulative.partition_point(|&c| c < draw);
                line.extend_from_slice(&words[rank.min(words.len() - 1)]);
                line.push(match (i + 1 == count, rng.range(0, 16)) {
                    (true, _) => b'\n',
                    (false, 0) => b',',
                    (false, 1) => b'.',
                    _ => b' ',
                });
            }
            out.write_all(&line)?;
            written += line.len() as u64;
        }
        out.flush()?;
        paths.push(path);
    }
    Ok(paths)
}

fn make_word(rng: &mut Rng, rank: u32) -> Vec<u8> {
    const LETTERS: &[u8] = b"etaoinshrdlucmfwypvbgkjqxz";
    // Frequent words are short, as in natural text.
    let len = 2 + (rank as f64).log2().max(0.0) as u64 / 2 + rng.range(0, 4);
    let mut word: Vec<u8> = (0..len)
        .map(|_| LETTERS[rng.index(LETTERS.len())])
        .collect();
    if rng.chance(1, 50) {
        word.extend_from_slice("é".as_bytes());
    }
    // Distinct words per rank: suffix the rank in letters.
    let mut r = rank;
    loop {
        word.push(LETTERS[(r % 26) as usize]);
        r /= 26;
        if r == 0 {
            break;
        }
    }
    word
}
