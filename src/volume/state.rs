//! A profile's `gateway_state.json`: reading it without trusting it, and updating the
//! fields hermes-init owns while keeping every other one.
//!
//! Invariants:
//! - reading never blocks (FIFO), never follows a symlink, never reads more than 1 MiB, and
//!   turns every problem into a reason naming the file;
//! - writing keeps every field it does not set and replaces the file atomically
//!   (`volume::atomic`); a corrupt file is kept aside (`.corrupt-<ts>`), never lost; a
//!   temporary file left by a crash never blocks a later write, and the boot pass sweeps it;
//! - the operator's intent lives in `intent.json` (`volume::intent`); `desired_state` here
//!   is its mirror for other tools, and a permanent failure never overwrites it.

use std::io;

use serde_json::{Map, Value, json};

use super::atomic::{self, ReadError};
use super::intent;
use crate::sys::beneath::{Dir, Kind};
use crate::sys::files;

pub const STATE_FILE: &str = "gateway_state.json";
pub const MAX_STATE_BYTES: u64 = 1024 * 1024;
/// Runtime files of a gateway that are stale after a restart.
pub const STALE_FILES: [&str; 2] = ["gateway.pid", "processes.json"];
/// The prefix of the temporary files of a state write.
pub const TEMP_PREFIX: &str = ".gateway_state.json.tmp-";

/// Reads `gateway_state.json` of a profile: the JSON object, or why it cannot be used.
pub fn read_state(profile: &Dir) -> Result<Map<String, Value>, String> {
    let path = profile.display(STATE_FILE);
    let name = path.display();
    let bytes = match atomic::read_bounded(profile, STATE_FILE, MAX_STATE_BYTES) {
        Ok(bytes) => bytes,
        Err(ReadError::Missing) => return Err(format!("{name}: missing")),
        Err(ReadError::TooLarge(len)) => return Err(format!("{name}: larger than 1 MiB ({len} bytes)")),
        Err(ReadError::Unusable(reason)) => {
            return Err(match profile.kind(STATE_FILE) {
                Ok(Some(Kind::Symlink)) => format!("{name}: is a symlink (not followed)"),
                Ok(Some(Kind::Dir)) => format!("{name}: is a directory"),
                Ok(Some(Kind::Other)) => format!("{name}: not a regular file"),
                _ => reason,
            });
        }
    };
    parse_state(&name.to_string(), &bytes)
}

/// The state file's object from its bytes, or why it cannot be used (`name` names the file
/// in the reason). Pure: the fuzz target of the state-file reader drives it.
pub fn parse_state(name: &str, bytes: &[u8]) -> Result<Map<String, Value>, String> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(format!("{name}: empty"));
    }
    if bytes.starts_with(&[0xEF, 0xBB, 0xBF]) {
        return Err(format!("{name}: starts with a byte order mark"));
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(other) => Err(format!("{name}: valid JSON but not an object ({})", json_kind(&other))),
        Err(e) => Err(format!("{name}: corrupt JSON: {e}")),
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Sets `fields` in the profile's state file, keeping every other field.
pub fn update_state(profile: &Dir, fields: &[(&str, Value)]) -> io::Result<()> {
    // The gateway writes this file too. If it replaced the file while this write was being
    // prepared (and fsynced), start over from its version instead of overwriting it.
    const ATTEMPTS: usize = 20;
    for _ in 0..ATTEMPTS {
        if write_state_once(profile, fields)? {
            return Ok(());
        }
    }
    Err(io::Error::other(format!(
        "{} kept changing while it was being updated ({ATTEMPTS} attempts)",
        profile.display(STATE_FILE).display()
    )))
}

/// One attempt of `update_state`: Ok(false) when the file changed under it.
fn write_state_once(profile: &Dir, fields: &[(&str, Value)]) -> io::Result<bool> {
    // Taken before the read: a change after it, even during the read, is caught below.
    let mut read_version = atomic::version(profile, STATE_FILE);
    let mut object = match read_state(profile) {
        Ok(object) => object,
        Err(reason) => {
            match profile.kind(STATE_FILE)? {
                None | Some(Kind::Symlink) => {}
                Some(Kind::File) => {
                    // Keep what was there: a corrupt file may still matter to someone.
                    let aside = format!("{STATE_FILE}.corrupt-{}", files::utc_timestamp());
                    profile.rename(STATE_FILE, &aside)?;
                    tracing::warn!("{reason}; kept aside as {}", profile.display(&aside).display());
                    read_version = None;
                }
                Some(Kind::Dir | Kind::Other) => return Err(io::Error::other(format!("refusing to replace {reason}"))),
            }
            Map::new()
        }
    };
    for (key, value) in fields {
        object.insert((*key).to_string(), value.clone());
    }
    let mut text = serde_json::to_vec_pretty(&Value::Object(object)).map_err(io::Error::other)?;
    text.push(b'\n');
    atomic::replace(profile, STATE_FILE, TEMP_PREFIX, &text, 0o644, || {
        atomic::version(profile, STATE_FILE) == read_version
    })
}

/// Records what the operator wants: the intent file first (hermes-init's own), then its
/// mirror `desired_state` and `desired_state_at` in the state file.
pub fn record_desired(profile: &Dir, desired: &str) -> io::Result<()> {
    let at = files::utc_timestamp_ms();
    intent::write(profile, desired == "running", &at)?;
    update_state(profile, &[("desired_state", json!(desired)), ("desired_state_at", json!(at))])
}

/// Records a permanent failure (`gateway_state: startup_failed` and `exit_reason`), leaving
/// the operator's intent as it is: after a restart, a gateway that was wanted is tried again.
pub fn record_permanent_failure(profile: &Dir, reason: &str) -> io::Result<()> {
    update_state(profile, &[("gateway_state", json!("startup_failed")), ("exit_reason", json!(reason))])
}

/// Removes the stale runtime files of a profile and the temporary files of interrupted
/// writes; returns the names removed. Links are removed as links.
pub fn sweep_stale_files(profile: &Dir) -> Vec<String> {
    let mut removed: Vec<String> =
        STALE_FILES.into_iter().filter(|name| profile.unlink(name).is_ok()).map(str::to_string).collect();
    if let Ok(entries) = profile.entries() {
        for (raw, kind) in entries {
            let name = raw.to_string_lossy().into_owned();
            if name.starts_with(TEMP_PREFIX) && kind != Kind::Dir && profile.unlink(&name).is_ok() {
                removed.push(name);
            }
        }
    }
    removed.extend(intent::sweep(profile));
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn open(path: &std::path::Path) -> Dir {
        Dir::open_root(path).unwrap()
    }

    #[test]
    fn update_keeps_fields_mode_and_sets_new_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        std::fs::write(&path, r#"{"gateway_state": "running", "pid": 7, "nested": {"a": [1, 2]}}"#).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        record_desired(&open(dir.path()), "stopped").unwrap();
        let state = read_state(&open(dir.path())).unwrap();
        assert_eq!(state["desired_state"], "stopped");
        assert_eq!(state["gateway_state"], "running");
        assert_eq!(state["pid"], 7);
        assert_eq!(state["nested"], json!({"a": [1, 2]}));
        assert!(state["desired_state_at"].as_str().unwrap().ends_with('Z'));
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o640);
        let mut leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.file_name()).collect();
        leftovers.sort();
        assert_eq!(leftovers, [".hermes-init", STATE_FILE], "no temporary file is left");
    }

    /// A reader racing the writer sees the old or the new file, never a torn one.
    #[test]
    fn state_writes_are_atomic_under_a_racing_reader() {
        let dir = tempfile::tempdir().unwrap();
        let padding = "y".repeat(64 * 1024);
        std::fs::write(dir.path().join(STATE_FILE), json!({"gateway_state": "running", "pad": padding}).to_string())
            .unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (stop, dir) = (stop.clone(), dir.path().to_path_buf());
            std::thread::spawn(move || {
                let mut reads = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let state = read_state(&open(&dir)).expect("a torn state file");
                    assert_eq!(state["pad"].as_str().map(str::len), Some(64 * 1024));
                    reads += 1;
                }
                reads
            })
        };
        for i in 0..200 {
            record_desired(&open(dir.path()), if i % 2 == 0 { "running" } else { "stopped" }).unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0);
    }

    #[test]
    fn a_corrupt_file_is_kept_aside_when_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STATE_FILE), "{not json").unwrap();
        record_desired(&open(dir.path()), "running").unwrap();
        assert_eq!(read_state(&open(dir.path())).unwrap()["desired_state"], "running");
        let aside: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".corrupt-"))
            .collect();
        assert_eq!(aside.len(), 1);
        assert_eq!(std::fs::read_to_string(dir.path().join(&aside[0])).unwrap(), "{not json");
    }

    /// A temporary file left by an earlier writer of the same pid never blocks a write,
    /// and the sweep removes it.
    #[test]
    fn a_stale_temp_file_neither_blocks_nor_survives_the_sweep() {
        let dir = tempfile::tempdir().unwrap();
        let stale = dir.path().join(format!("{TEMP_PREFIX}{}", std::process::id()));
        std::fs::write(&stale, "half").unwrap();
        record_desired(&open(dir.path()), "running").unwrap();
        assert_eq!(read_state(&open(dir.path())).unwrap()["desired_state"], "running");
        assert_eq!(
            sweep_stale_files(&open(dir.path())),
            vec![stale.file_name().unwrap().to_string_lossy().into_owned()]
        );
        assert!(!stale.exists());
    }

    #[test]
    fn a_directory_in_place_of_the_state_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(STATE_FILE)).unwrap();
        assert!(record_desired(&open(dir.path()), "running").is_err());
        assert!(dir.path().join(STATE_FILE).is_dir());
    }
}
