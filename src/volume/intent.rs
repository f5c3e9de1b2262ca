//! The operator's intent, in a file only hermes-init writes: `<profile>/.hermes-init/intent.json`,
//! `{"desired_state": "running"|"stopped", "desired_state_at": ISO-8601}`. A gateway that
//! rewrites its own `gateway_state.json` from scratch cannot erase it.
//!
//! Invariants: written atomically (`volume::atomic`) before its mirror in the state file;
//! read without trust (a link, a FIFO, garbage: no intent, with the reason).

use std::io;

use serde::{Deserialize, Serialize};

use super::atomic::{self, ReadError};
use crate::core::reconcile::{Intent, parse_timestamp_ms};
use crate::sys::beneath::Dir;

/// The directory of hermes-init's own files in a profile.
pub const DIR: &str = ".hermes-init";
pub const FILE: &str = "intent.json";
const TEMP_PREFIX: &str = ".intent.json.tmp-";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    desired_state: String,
    desired_state_at: String,
}

/// Reads the intent of a profile: `Ok(None)` when none was recorded, `Err` with the reason
/// when the file cannot be used.
pub fn read(profile: &Dir) -> Result<Option<Intent>, String> {
    let dir = match profile.kind(DIR) {
        Ok(None) => return Ok(None),
        Ok(Some(_)) => profile.open_dir(DIR).map_err(|e| e.to_string())?,
        Err(e) => return Err(e.to_string()),
    };
    let name = dir.display(FILE);
    let bytes = match atomic::read_bounded(&dir, FILE, 4096) {
        Ok(bytes) => bytes,
        Err(ReadError::Missing) => return Ok(None),
        Err(ReadError::TooLarge(len)) => return Err(format!("{}: too large ({len} bytes)", name.display())),
        Err(ReadError::Unusable(reason)) => return Err(reason),
    };
    let record: Record =
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: not an intent record: {e}", name.display()))?;
    let running = match record.desired_state.as_str() {
        "running" => true,
        "stopped" => false,
        other => return Err(format!("{}: desired_state {other:?} is neither running nor stopped", name.display())),
    };
    Ok(Some(Intent { running, at_ms: parse_timestamp_ms(&record.desired_state_at) }))
}

/// Records an intent, said at `at` (ISO-8601 UTC).
pub fn write(profile: &Dir, running: bool, at: &str) -> io::Result<()> {
    let dir = profile.create_dir(DIR, 0o755, super::owner_of(profile))?;
    let record =
        Record { desired_state: if running { "running" } else { "stopped" }.into(), desired_state_at: at.into() };
    let mut bytes = serde_json::to_vec_pretty(&record).map_err(io::Error::other)?;
    bytes.push(b'\n');
    atomic::replace(&dir, FILE, TEMP_PREFIX, &bytes, 0o644, || true).map(drop)
}

/// Removes temporary files of interrupted intent writes; returns their names.
pub fn sweep(profile: &Dir) -> Vec<String> {
    let Ok(dir) = profile.open_dir(DIR) else { return Vec::new() };
    let Ok(entries) = dir.entries() else { return Vec::new() };
    entries
        .into_iter()
        .map(|(raw, _)| raw.to_string_lossy().into_owned())
        .filter(|name| name.starts_with(TEMP_PREFIX) && dir.unlink(name).is_ok())
        .map(|name| format!("{DIR}/{name}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_then_read_back_and_hostile_files_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let profile = Dir::open_root(tmp.path()).unwrap();
        assert_eq!(read(&profile), Ok(None));
        write(&profile, false, "2026-12-01T10:00:00.000Z").unwrap();
        assert_eq!(
            read(&profile),
            Ok(Some(Intent { running: false, at_ms: parse_timestamp_ms("2026-12-01T10:00:00.000Z") }))
        );
        write(&profile, true, "2026-12-01T10:00:01.000Z").unwrap();
        assert!(read(&profile).is_ok_and(|i| i.is_some_and(|i| i.running)));
        let file = tmp.path().join(DIR).join(FILE);
        for garbage in ["", "{", "[]", r#"{"desired_state": "maybe", "desired_state_at": "x"}"#] {
            std::fs::write(&file, garbage).unwrap();
            assert!(read(&profile).is_err(), "{garbage:?}");
        }
        std::fs::remove_file(&file).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", &file).unwrap();
        assert!(read(&profile).is_err());
    }
}
