//! Overlapping writes (see "Overlapping writes" in the WAL's docs): a batch submitted while the
//! one before it is still in flight goes to fresh blocks and its write goes out at once;
//! recovery follows the log onto those blocks, cuts off a torn batch together with the batch
//! that overlapped it (and zeroes what it cut, so nothing cut comes back later), and still
//! refuses damage that a later batch proves was durable.

mod common;

use bytes::Bytes;
use common::{entries_record, Model, TempDir};
use shardcore_storage::{LogRecord, Wal, WalConfig, WalEntry, WalError};

/// Attempts at submitting a pair of batches back to back before a test gives up on seeing the
/// second overlap the first. Why 100: the second is encoded within microseconds of the first
/// being sent, and a write plus `fdatasync` takes at least tens of microseconds on any disk,
/// so nearly every pair overlaps; a hundred misses in a row would mean overlap is broken.
const PAIR_ATTEMPTS: usize = 100;

fn config() -> WalConfig {
    WalConfig {
        segment_bytes: 4 << 20,
        ..WalConfig::new()
    }
}

/// One entry of `group` at `index` whose data is a text naming `tag`, repeated to 2,000
/// bytes: found in the segment file by [`find`], and nowhere else.
fn tagged(group: u64, index: u64, tag: &str) -> Vec<LogRecord> {
    let text = format!("<overlap test entry {tag}>");
    let data: Vec<u8> = text.bytes().cycle().take(2000).collect();
    vec![LogRecord::Entries {
        group,
        entries: vec![WalEntry {
            index,
            term: 1,
            kind: 0,
            data: Bytes::from(data),
        }],
    }]
}

/// Where `tag`'s entry data starts in `bytes`.
fn find(bytes: &[u8], tag: &str) -> usize {
    let needle = format!("<overlap test entry {tag}>");
    bytes
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
        .unwrap_or_else(|| panic!("entry {tag} is not in the segment"))
}

/// Flips one byte in the middle of `tag`'s entry data in segment 1, in place.
fn damage(dir: &std::path::Path, tag: &str) {
    use std::os::unix::fs::FileExt;
    let path = dir.join("wal-00000001.seg");
    let bytes = std::fs::read(&path).unwrap();
    let at = (find(&bytes, tag) + 1000) as u64;
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&[bytes[at as usize] ^ 0x20], at).unwrap();
}

/// Appends `count` ordinary batches of group 1 from `next`, one at a time.
fn append_some(wal: &mut Wal, model: &mut Model, next: &mut u64, count: u64) {
    for _ in 0..count {
        let batch = [entries_record(1, *next, 2, 1, 1500)];
        wal.append(&batch).unwrap();
        model.apply(&batch);
        *next += 2;
    }
}

/// Submits pairs of batches back to back until the second of a pair overlaps the first;
/// returns that pair's tags, with both batches acknowledged (and in `model`).
fn overlapped_pair(wal: &mut Wal, model: &mut Model, next: &mut u64) -> (String, String) {
    for attempt in 0..PAIR_ATTEMPTS {
        let (first_tag, second_tag) = (format!("a{attempt}"), format!("b{attempt}"));
        let first = tagged(1, *next, &first_tag);
        let second = tagged(1, *next + 1, &second_tag);
        let first_ticket = wal.submit(&first).unwrap();
        let second_ticket = wal.submit(&second).unwrap();
        wal.wait(first_ticket).unwrap();
        let stats = wal.wait(second_ticket).unwrap();
        model.apply(&first);
        model.apply(&second);
        *next += 2;
        if stats.overlapped {
            return (first_tag, second_tag);
        }
    }
    panic!("no batch overlapped the one before it in {PAIR_ATTEMPTS} pairs");
}

/// Overlapped batches, in the middle of the log and at its end, are all found again.
#[test]
fn overlapped_batches_are_found_again() {
    let dir = TempDir::new("wal-overlap-found");
    let (mut wal, _) = Wal::open(dir.path(), config()).unwrap();
    let mut model = Model::default();
    let mut next = 1;
    append_some(&mut wal, &mut model, &mut next, 3);
    overlapped_pair(&mut wal, &mut model, &mut next);
    append_some(&mut wal, &mut model, &mut next, 3);
    overlapped_pair(&mut wal, &mut model, &mut next);
    overlapped_pair(&mut wal, &mut model, &mut next);
    drop(wal);
    let (wal, recovery) = Wal::open(dir.path(), config()).unwrap();
    assert_eq!(recovery.torn_tail, None);
    model.check(&wal, "after reopening");
}

/// The last batch but one torn while the last, which overlapped it, landed whole (what a crash
/// can leave): both are cut off as a torn tail, and the cut batch is zeroed: a new batch of
/// exactly the torn one's size, written where it was, ends where the cut one started, and the
/// next recovery does not take the cut batch up again.
#[test]
fn a_torn_batch_is_cut_off_with_the_batch_that_overlapped_it() {
    let dir = TempDir::new("wal-overlap-torn");
    let (mut wal, _) = Wal::open(dir.path(), config()).unwrap();
    let mut model = Model::default();
    let mut next = 1;
    append_some(&mut wal, &mut model, &mut next, 4);
    let before = model.clone();
    let first_index = next;
    let (first, _) = overlapped_pair(&mut wal, &mut model, &mut next);
    drop(wal);
    // Pretend the crash came before either was acknowledged: the first is torn.
    damage(dir.path(), &first);
    let mut model = before;
    let (mut wal, recovery) = Wal::open(dir.path(), config()).unwrap();
    let torn = recovery.torn_tail.expect("a torn tail");
    assert!(torn.reason.contains("checksum"), "{}", torn.reason);
    model.check(
        &wal,
        "the torn batch and the one that overlapped it are gone",
    );
    // The same size as the torn batch, at its place: its write ends where the cut one began.
    let again = tagged(1, first_index, "z0");
    wal.append(&again).unwrap();
    model.apply(&again);
    drop(wal);
    let (wal, recovery) = Wal::open(dir.path(), config()).unwrap();
    assert_eq!(recovery.torn_tail, None);
    model.check(&wal, "nothing cut off comes back");
}

/// Damage in a batch that an overlapping batch followed, when a later batch proves it was
/// durable (its synced through reaches it): corruption, refused with the file and offset.
#[test]
fn damage_a_later_batch_proves_durable_is_refused() {
    let dir = TempDir::new("wal-overlap-corrupt");
    let (mut wal, _) = Wal::open(dir.path(), config()).unwrap();
    let mut model = Model::default();
    let mut next = 1;
    append_some(&mut wal, &mut model, &mut next, 2);
    let (first, _) = overlapped_pair(&mut wal, &mut model, &mut next);
    append_some(&mut wal, &mut model, &mut next, 2);
    drop(wal);
    damage(dir.path(), &first);
    match Wal::open(dir.path(), config()) {
        Err(WalError::Corrupt { file, reason, .. }) => {
            assert_eq!(file, dir.path().join("wal-00000001.seg"));
            assert!(reason.contains("synced through"), "{reason}");
        }
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("damage proven durable was taken for a torn tail"),
    }
}
