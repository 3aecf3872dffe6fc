//! The coordinator's job state on disk: one small checksummed file, replaced atomically.
//!
//! Format: the magic `SCMRJOB1`, the payload's length (u32, little-endian), its CRC-32C (u32),
//! then the payload (the planner's `durable_state`). Written to `<name>.tmp`, fsynced, renamed
//! over the old file, and the folder fsynced, so after a crash the file is the old state or the
//! new one, whole. A file that fails its checks is an error naming the file and the check: the
//! coordinator refuses to resume from it rather than guess (delete it to start the job over).

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

const MAGIC: [u8; 8] = *b"SCMRJOB1";
const HEADER_BYTES: usize = 16;

/// Most bytes a state file may hold: a job's state is a few hundred bytes per task, and a
/// length read from a damaged file must not make us allocate gigabytes.
pub const MAX_STATE_BYTES: usize = 64 << 20;

/// Writes `payload` as the state file at `path`, durably and atomically.
pub fn write(path: &Path, payload: &[u8]) -> Result<(), String> {
    assert!(payload.len() <= MAX_STATE_BYTES, "job state too large");
    let mut bytes = Vec::with_capacity(HEADER_BYTES + payload.len());
    bytes.extend_from_slice(&MAGIC);
    bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    bytes.extend_from_slice(payload);
    let temp = path.with_extension("tmp");
    let step = |what: &str, e: std::io::Error| format!("job state {}: {what}: {e}", path.display());
    let mut file = File::create(&temp).map_err(|e| step("create", e))?;
    file.write_all(&bytes).map_err(|e| step("write", e))?;
    file.sync_all().map_err(|e| step("fsync", e))?;
    drop(file);
    fs::rename(&temp, path).map_err(|e| step("rename", e))?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let dir = dir.unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| step("fsync of the folder", e))?;
    Ok(())
}

/// Reads the state file at `path`: `None` if there is none, the payload if it checks out.
pub fn read(path: &Path) -> Result<Option<Vec<u8>>, String> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("reading job state {}: {e}", path.display())),
    };
    decode(&bytes)
        .map(Some)
        .map_err(|why| format!("job state {} is damaged: {why}", path.display()))
}

/// Checks a state file's bytes and returns the payload.
pub fn decode(bytes: &[u8]) -> Result<Vec<u8>, &'static str> {
    if bytes.len() < HEADER_BYTES {
        return Err("shorter than its header");
    }
    if bytes[..8] != MAGIC {
        return Err("bad magic");
    }
    let len = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes"));
    if len > MAX_STATE_BYTES || bytes.len() != HEADER_BYTES + len {
        return Err("length does not match the file");
    }
    let payload = &bytes[HEADER_BYTES..];
    if crc32c::crc32c(payload) != crc {
        return Err("checksum mismatch");
    }
    Ok(payload.to_vec())
}

#[cfg(test)]
mod tests {
    //! A written state reads back; every truncation and bit flip is refused.
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let dir = std::env::temp_dir().join(format!("mr-state-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("job.state");
        assert_eq!(read(&path).unwrap(), None);
        write(&path, b"{\"a\":1}").unwrap();
        write(&path, b"{\"a\":2}").unwrap();
        assert_eq!(read(&path).unwrap().unwrap(), b"{\"a\":2}");
        let bytes = fs::read(&path).unwrap();
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err());
        }
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(decode(&flipped).is_err(), "bit {bit}");
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}
