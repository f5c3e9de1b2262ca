//! A profile's `gateway_state.json`: reading it without trusting it, and updating the
//! fields hermes-init owns while keeping every other one.
//!
//! Invariants:
//! - reading never blocks (FIFO), never follows a symlink, never reads more than 1 MiB, and
//!   turns every problem into a reason naming the file;
//! - writing keeps every field it does not set, goes through a uniquely named temporary
//!   file in the same directory, fsync, rename and fsync of the directory, and keeps the
//!   file's mode and owner; a corrupt file is kept aside (`.corrupt-<ts>`), never lost;
//! - a temporary file left by a crash never blocks a later write, and the boot pass sweeps it.

use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use serde_json::{Map, Value, json};

use crate::sys::files;

pub const STATE_FILE: &str = "gateway_state.json";
pub const MAX_STATE_BYTES: u64 = 1024 * 1024;
/// Runtime files of a gateway that are stale after a restart.
pub const STALE_FILES: [&str; 2] = ["gateway.pid", "processes.json"];
/// The prefix of the temporary files of a state write.
pub const TEMP_PREFIX: &str = ".gateway_state.json.tmp-";

/// Reads `gateway_state.json` of a profile: the JSON object, or why it cannot be used.
pub fn read_state(profile_dir: &Path) -> Result<Map<String, Value>, String> {
    let path = profile_dir.join(STATE_FILE);
    let name = path.display();
    let mut file = match files::open_nofollow(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(format!("{name}: missing")),
        Err(e) if files::is_symlink_error(&e) => return Err(format!("{name}: is a symlink (not followed)")),
        Err(e) => return Err(format!("{name}: unreadable: {e}")),
    };
    let meta = file.metadata().map_err(|e| format!("{name}: unreadable: {e}"))?;
    if meta.is_dir() {
        return Err(format!("{name}: is a directory"));
    }
    if !meta.is_file() {
        return Err(format!("{name}: not a regular file"));
    }
    if meta.len() > MAX_STATE_BYTES {
        return Err(format!("{name}: larger than 1 MiB ({} bytes)", meta.len()));
    }
    let mut bytes = Vec::new();
    (&mut file).take(MAX_STATE_BYTES + 1).read_to_end(&mut bytes).map_err(|e| format!("{name}: unreadable: {e}"))?;
    if bytes.len() as u64 > MAX_STATE_BYTES {
        return Err(format!("{name}: larger than 1 MiB"));
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(format!("{name}: empty"));
    }
    if bytes.starts_with(&[0xEF, 0xBB, 0xBF]) {
        return Err(format!("{name}: starts with a byte order mark"));
    }
    match serde_json::from_slice::<Value>(&bytes) {
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
pub fn update_state(profile_dir: &Path, fields: &[(&str, Value)]) -> io::Result<()> {
    // The gateway writes this file too. If it replaced the file while this write was being
    // prepared (and fsynced), start over from its version instead of overwriting it.
    const ATTEMPTS: usize = 20;
    for _ in 0..ATTEMPTS {
        if write_state_once(profile_dir, fields)? {
            return Ok(());
        }
    }
    Err(io::Error::other(format!(
        "{} kept changing while it was being updated ({ATTEMPTS} attempts)",
        profile_dir.join(STATE_FILE).display()
    )))
}

/// What identifies one version of a file: replaced by a rename or rewritten, it changes.
fn version(path: &Path) -> Option<(u64, u64, i64, i64)> {
    fs_err::symlink_metadata(path).ok().map(|m| (m.ino(), m.len(), m.mtime(), m.mtime_nsec()))
}

/// One attempt of `update_state`: Ok(false) when the file changed under it.
fn write_state_once(profile_dir: &Path, fields: &[(&str, Value)]) -> io::Result<bool> {
    let path = profile_dir.join(STATE_FILE);
    let existing = fs_err::symlink_metadata(&path).ok();
    // Taken before the read: a change after it, even during the read, is caught below.
    let mut read_version = version(&path);
    let mut object = match read_state(profile_dir) {
        Ok(object) => object,
        Err(reason) => {
            if let Some(meta) = &existing {
                if meta.is_dir() || (!meta.is_file() && !meta.file_type().is_symlink()) {
                    return Err(io::Error::other(format!("refusing to replace {reason}")));
                }
                if meta.is_file() {
                    // Keep what was there: a corrupt file may still matter to someone.
                    let aside = profile_dir.join(format!("{STATE_FILE}.corrupt-{}", files::utc_timestamp()));
                    fs_err::rename(&path, &aside)?;
                    tracing::warn!("{reason}; kept aside as {}", aside.display());
                    read_version = None;
                }
            }
            Map::new()
        }
    };
    for (key, value) in fields {
        object.insert((*key).to_string(), value.clone());
    }
    let mut text = serde_json::to_vec_pretty(&Value::Object(object)).map_err(io::Error::other)?;
    text.push(b'\n');
    // A unique name: a temporary file left by a crash (PID 1 has the same pid at every
    // boot) never blocks this write; the boot pass sweeps such leftovers.
    let mut tmp = tempfile::Builder::new().prefix(TEMP_PREFIX).tempfile_in(profile_dir)?;
    tmp.write_all(&text)?;
    if let Some(meta) = existing.as_ref().filter(|m| m.is_file()) {
        let file = tmp.as_file();
        file.set_permissions(std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        files::copy_owner(file, meta.uid(), meta.gid())?;
    }
    tmp.as_file().sync_all()?;
    if version(&path) != read_version {
        // Dropping the temporary file removes it.
        return Ok(false);
    }
    tmp.persist(&path).map_err(|e| e.error)?;
    files::fsync_dir(profile_dir)?;
    Ok(true)
}

/// Records what the operator wants: `desired_state` and `desired_state_at`.
pub fn record_desired(profile_dir: &Path, desired: &str) -> io::Result<()> {
    update_state(profile_dir, &[("desired_state", json!(desired)), ("desired_state_at", json!(files::utc_timestamp()))])
}

/// Records a permanent failure, so the gateway never comes back by itself.
pub fn record_permanent_failure(profile_dir: &Path, reason: &str) -> io::Result<()> {
    update_state(
        profile_dir,
        &[
            ("desired_state", json!("stopped")),
            ("desired_state_at", json!(files::utc_timestamp())),
            ("gateway_state", json!("startup_failed")),
            ("exit_reason", json!(reason)),
        ],
    )
}

/// Removes the stale runtime files of a profile and the temporary files of interrupted
/// state writes; returns the names removed.
pub fn sweep_stale_files(profile_dir: &Path) -> Vec<String> {
    // unlink(2) never removes a directory, so no check is needed first.
    let mut removed: Vec<String> = STALE_FILES
        .into_iter()
        .filter(|name| fs_err::remove_file(profile_dir.join(name)).is_ok())
        .map(str::to_string)
        .collect();
    if let Ok(entries) = fs_err::read_dir(profile_dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let regular = entry.file_type().is_ok_and(|t| t.is_file());
            if name.starts_with(TEMP_PREFIX) && regular && fs_err::remove_file(entry.path()).is_ok() {
                removed.push(name);
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_keeps_fields_mode_and_sets_new_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        std::fs::write(&path, r#"{"gateway_state": "running", "pid": 7, "nested": {"a": [1, 2]}}"#).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        record_desired(dir.path(), "stopped").unwrap();
        let state = read_state(dir.path()).unwrap();
        assert_eq!(state["desired_state"], "stopped");
        assert_eq!(state["gateway_state"], "running");
        assert_eq!(state["pid"], 7);
        assert_eq!(state["nested"], json!({"a": [1, 2]}));
        assert!(state["desired_state_at"].as_str().unwrap().ends_with('Z'));
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o640);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(leftovers.len(), 1, "{leftovers:?}");
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
                    let state = read_state(&dir).expect("a torn state file");
                    assert_eq!(state["pad"].as_str().map(str::len), Some(64 * 1024));
                    reads += 1;
                }
                reads
            })
        };
        for i in 0..200 {
            record_desired(dir.path(), if i % 2 == 0 { "running" } else { "stopped" }).unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0);
    }

    #[test]
    fn a_corrupt_file_is_kept_aside_when_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STATE_FILE), "{not json").unwrap();
        record_desired(dir.path(), "running").unwrap();
        assert_eq!(read_state(dir.path()).unwrap()["desired_state"], "running");
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
        record_desired(dir.path(), "running").unwrap();
        assert_eq!(read_state(dir.path()).unwrap()["desired_state"], "running");
        assert_eq!(sweep_stale_files(dir.path()), vec![stale.file_name().unwrap().to_string_lossy().into_owned()]);
        assert!(!stale.exists());
    }

    #[test]
    fn a_directory_in_place_of_the_state_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(STATE_FILE)).unwrap();
        assert!(record_desired(dir.path(), "running").is_err());
        assert!(dir.path().join(STATE_FILE).is_dir());
    }
}
