//! Profiles on the volume and their gateway slots: finding profiles, reading and writing
//! `gateway_state.json`, writing the slot directory, the boot log.
//!
//! Invariants:
//! - reading a state file never blocks (FIFO), never follows a symlink, never reads more
//!   than 1 MiB, and turns every problem into a reason naming the file;
//! - writing a state file keeps every field it does not set, goes through a temporary file
//!   in the same directory, fsync, rename and fsync of the directory, and keeps the file's
//!   mode and owner; a corrupt file is kept aside (`.corrupt-<ts>`), never silently lost;
//! - a slot directory appears complete or not at all (staging directory, then rename or
//!   an atomic exchange with the old one).

use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use crate::core::reconcile::{self, valid_profile_name};
use crate::sys::files;

pub const STATE_FILE: &str = "gateway_state.json";
pub const MAX_STATE_BYTES: u64 = 1024 * 1024;
pub const BOOT_LOG_LIMIT: u64 = 256 * 1024;
/// Runtime files of a gateway that are stale after a restart.
pub const STALE_FILES: [&str; 2] = ["gateway.pid", "processes.json"];
/// The file in a profile that holds its deterministic port.
pub const PORT_FILE: &str = "gateway.port";
/// The file in a gateway slot that names its profile directory.
pub const SLOT_PROFILE_FILE: &str = "profile";

/// The profile home (`HERMES_HOME`).
#[derive(Debug, Clone)]
pub struct Home {
    pub root: PathBuf,
}

/// One entry of the profile walk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    Profile { name: String, dir: PathBuf },
    Skipped { name: String, reason: String },
}

impl Home {
    pub fn new(root: impl Into<PathBuf>) -> Home {
        Home { root: root.into() }
    }

    /// The directory of a profile; `default` is the home itself.
    pub fn profile_dir(&self, name: &str) -> PathBuf {
        if name == "default" { self.root.clone() } else { self.root.join("profiles").join(name) }
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// The default profile first (always), then named profiles sorted by name. Directories
    /// without `SOUL.md`, non-directories and symlinks are not profiles; `profiles/default/`
    /// and invalid names are reported as skipped.
    pub fn walk(&self) -> Vec<Found> {
        let mut found = vec![Found::Profile { name: "default".into(), dir: self.root.clone() }];
        let profiles = self.root.join("profiles");
        let Ok(entries) = std::fs::read_dir(&profiles) else { return found };
        let mut named: Vec<(String, PathBuf)> = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let is_dir = std::fs::symlink_metadata(&path).map(|m| m.is_dir()).unwrap_or(false);
            if !is_dir || !path.join("SOUL.md").is_file() {
                continue;
            }
            named.push((entry.file_name().to_string_lossy().into_owned(), path));
        }
        named.sort();
        for (name, dir) in named {
            if name == "default" {
                found.push(Found::Skipped {
                    name,
                    reason: "profiles/default/ is reserved: the default profile is HERMES_HOME itself".into(),
                });
            } else if !valid_profile_name(&name) {
                found.push(Found::Skipped {
                    name: name.clone(),
                    reason: format!("invalid profile name {name:?}: must match ^[a-z0-9][a-z0-9_-]{{0,63}}$"),
                });
            } else {
                found.push(Found::Profile { name, dir });
            }
        }
        found
    }

    /// Ports held by profiles (their `gateway.port` files).
    pub fn taken_ports(&self) -> Vec<u16> {
        self.walk()
            .iter()
            .filter_map(|f| match f {
                Found::Profile { dir, .. } => read_port(dir),
                Found::Skipped { .. } => None,
            })
            .collect()
    }
}

/// The port stored in a profile, if any.
pub fn read_port(profile_dir: &Path) -> Option<u16> {
    std::fs::read_to_string(profile_dir.join(PORT_FILE)).ok()?.trim().parse().ok()
}

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
    std::fs::symlink_metadata(path).ok().map(|m| (m.ino(), m.len(), m.mtime(), m.mtime_nsec()))
}

/// One attempt of `update_state`: Ok(false) when the file changed under it.
fn write_state_once(profile_dir: &Path, fields: &[(&str, Value)]) -> io::Result<bool> {
    let path = profile_dir.join(STATE_FILE);
    let existing = std::fs::symlink_metadata(&path).ok();
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
                    std::fs::rename(&path, &aside)?;
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
    let tmp = profile_dir.join(format!(".{STATE_FILE}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        file.write_all(&text)?;
        if let Some(meta) = existing.as_ref().filter(|m| m.is_file()) {
            file.set_permissions(std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
            files::copy_owner(&tmp, meta.uid(), meta.gid())?;
        }
        file.sync_all()?;
        if version(&path) != read_version {
            std::fs::remove_file(&tmp)?;
            return Ok(false);
        }
        std::fs::rename(&tmp, &path)?;
        files::fsync_dir(profile_dir)?;
        Ok(true)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
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

/// Removes the stale runtime files of a profile; returns the names removed.
pub fn sweep_stale_files(profile_dir: &Path) -> Vec<&'static str> {
    // unlink(2) never removes a directory, so no check is needed first.
    STALE_FILES.into_iter().filter(|name| std::fs::remove_file(profile_dir.join(name)).is_ok()).collect()
}

/// Quotes a string for `sh` (single quotes; a single quote becomes `'\''`).
pub fn sh_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// What a gateway slot's `run` file is made from.
#[derive(Debug, Clone)]
pub struct GatewaySlot {
    pub profile: String,
    pub profile_dir: PathBuf,
    pub home: PathBuf,
    pub port: Option<u16>,
    /// `HERMES_INIT_GATEWAY_CMD`: a shell command line replacing the default command.
    pub command: Option<String>,
    /// `HERMES_INIT_GATEWAY_USER`.
    pub user: String,
    /// The `hermes-cont-init` binary, whose `exec-as` drops privileges.
    pub helper: PathBuf,
}

impl GatewaySlot {
    /// The `run` script. Only validated names reach it, and every value is quoted.
    pub fn run_script(&self) -> String {
        let mut s = String::from("#!/bin/sh\n");
        s.push_str(&format!("# Gateway of profile {}; written by hermes-cont-init on every boot.\n", self.profile));
        let mut exports = vec![
            ("HERMES_HOME", self.home.display().to_string()),
            ("HOME", self.home.display().to_string()),
            ("HERMES_PROFILE", self.profile.clone()),
            ("HERMES_PROFILE_DIR", self.profile_dir.display().to_string()),
        ];
        if let Some(port) = self.port {
            exports.push(("HERMES_GATEWAY_PORT", port.to_string()));
        }
        for (key, value) in &exports {
            s.push_str(&format!("{key}={}\nexport {key}\n", sh_quote(value)));
        }
        let command: Vec<String> = match &self.command {
            Some(line) => vec!["/bin/sh".into(), "-c".into(), line.clone()],
            None if self.profile == "default" => ["hermes", "gateway", "run", "--replace"].map(String::from).to_vec(),
            None => vec![
                "hermes".into(),
                "-p".into(),
                self.profile.clone(),
                "gateway".into(),
                "run".into(),
                "--replace".into(),
            ],
        };
        let quoted: Vec<String> = command.iter().map(|c| sh_quote(c)).collect();
        s.push_str(&format!(
            "exec {} exec-as {} -- {}\n",
            sh_quote(&self.helper.display().to_string()),
            sh_quote(&self.user),
            quoted.join(" ")
        ));
        s
    }
}

/// Writes the slot directory of a gateway into `scan_dir`, atomically: a dot-prefixed
/// staging directory, then a rename (or an exchange with the existing slot). Nothing is
/// fsynced: the scan dir is a tmpfs rebuilt at every boot, so only atomicity matters.
pub fn write_slot(scan_dir: &Path, slot: &GatewaySlot, down: bool) -> io::Result<PathBuf> {
    let name = reconcile::slot_name(&slot.profile);
    let target = scan_dir.join(&name);
    let run = slot.run_script();
    let profile_line = format!("{}\n", slot.profile_dir.display());
    let exists = std::fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir());
    // Unchanged since the last pass: only the down file may need to change.
    let same = |file: &str, text: &str| std::fs::read(target.join(file)).is_ok_and(|b| b == text.as_bytes());
    if exists && same("run", &run) && same(SLOT_PROFILE_FILE, &profile_line) {
        let down_file = target.join("down");
        match (down, down_file.exists()) {
            (true, false) => drop(std::fs::File::create(&down_file)?),
            (false, true) => std::fs::remove_file(&down_file)?,
            _ => {}
        }
        return Ok(target);
    }
    let staging = scan_dir.join(format!(".staging-{name}-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir(&staging) {
        if e.kind() != io::ErrorKind::AlreadyExists {
            return Err(e);
        }
        std::fs::remove_dir_all(&staging)?;
        std::fs::create_dir(&staging)?;
    }
    let write = |file: &str, text: &str, mode: u32| -> io::Result<()> {
        let path = staging.join(file);
        let mut f = std::fs::File::create(&path)?;
        f.write_all(text.as_bytes())?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))
    };
    write("run", &run, 0o755)?;
    write(SLOT_PROFILE_FILE, &profile_line, 0o644)?;
    if down {
        write("down", "", 0o644)?;
    }
    if exists {
        files::exchange(&staging, &target)?;
        std::fs::remove_dir_all(&staging)?;
    } else {
        std::fs::rename(&staging, &target)?;
    }
    Ok(target)
}

/// Removes staging directories left by an interrupted pass; returns how many.
pub fn sweep_staging(scan_dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(scan_dir) else { return 0 };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".staging-"))
        .filter(|e| std::fs::remove_dir_all(e.path()).is_ok())
        .count()
}

/// Removes gateway slots (those with a profile metadata file) whose profile is not in
/// `kept`, for a scan dir that outlived a restart; returns their names.
pub fn sweep_orphan_slots(scan_dir: &Path, kept: &[String]) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(scan_dir) else { return Vec::new() };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name.starts_with("gateway-")
            && !kept.contains(&name)
            && slot_profile_dir(&path).is_some()
            && std::fs::remove_dir_all(&path).is_ok()
        {
            removed.push(name);
        }
    }
    removed.sort();
    removed
}

/// The profile directory a gateway slot belongs to, from its metadata file.
pub fn slot_profile_dir(slot_dir: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(slot_dir.join(SLOT_PROFILE_FILE)).ok()?;
    let dir = PathBuf::from(text.trim());
    dir.is_absolute().then_some(dir)
}

/// Appends lines to `logs/container-boot.log` in one write, first rotating it to `.1` at
/// 256 KiB.
pub fn append_boot_log(home: &Home, lines: &str) -> io::Result<()> {
    let dir = home.logs_dir();
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("container-boot.log");
    if std::fs::metadata(&path).is_ok_and(|m| m.len() >= BOOT_LOG_LIMIT) {
        std::fs::rename(&path, dir.join("container-boot.log.1"))?;
    }
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
    file.write_all(lines.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_defeats_injection() {
        let cases = [("plain", "'plain'"), ("it's", r"'it'\''s'"), ("$(rm -rf /)", "'$(rm -rf /)'"), ("", "''")];
        for (text, want) in cases {
            assert_eq!(sh_quote(text), want);
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", sh_quote(text)))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), text);
        }
    }

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

    #[test]
    fn a_directory_in_place_of_the_state_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(STATE_FILE)).unwrap();
        assert!(record_desired(dir.path(), "running").is_err());
        assert!(dir.path().join(STATE_FILE).is_dir());
    }
}
