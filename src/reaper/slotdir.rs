//! Slot directories in the s6 layout: `run` (executable), optional `finish`, `down`,
//! `timeout-kill`, `timeout-finish`, `down-signal`, `notification-fd`; the supervisor writes
//! `supervise/status.json`.
//!
//! Invariants: a slot name is checked before any path is built from it; a setting file with
//! a bad value is an error that names the file, never a silent default; reading a slot
//! never starts anything.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use crate::core::slot::SlotSettings;

/// Whether `name` is a valid slot name: `^[a-z0-9][a-z0-9_.-]{0,250}$` without `..`.
pub fn valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 251
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(b))
        && !name.contains("..")
}

/// What a slot directory asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotDir {
    pub settings: SlotSettings,
    /// The descriptor number on which the service reports readiness.
    pub notification_fd: Option<i32>,
    /// `down` exists: do not start the slot when it is loaded.
    pub down: bool,
}

/// Reads the slot directory `dir`, starting from `defaults`.
pub fn read(dir: &Path, defaults: &SlotSettings) -> Result<SlotDir, String> {
    let meta = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !meta.is_dir() {
        return Err(format!("{}: not a directory", dir.display()));
    }
    let run = dir.join("run");
    match std::fs::metadata(&run) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => {}
        Ok(_) => return Err(format!("{}: not an executable file", run.display())),
        Err(e) => return Err(format!("{}: {e}", run.display())),
    }
    let mut settings = defaults.clone();
    if let Some(ms) = number_file(dir, "timeout-kill", 0, 86_400_000)? {
        settings.timeout_kill = Duration::from_millis(ms);
    }
    if let Some(ms) = number_file(dir, "timeout-finish", 0, 86_400_000)? {
        settings.timeout_finish = Duration::from_millis(ms);
    }
    if let Some(text) = text_file(dir, "down-signal")? {
        settings.down_signal = crate::core::signal::parse(&text)
            .ok_or_else(|| format!("{}: not a signal: '{text}'", dir.join("down-signal").display()))?;
    }
    let notification_fd = number_file(dir, "notification-fd", 3, 1023)?.map(|n| n as i32);
    settings.notification = notification_fd.is_some();
    settings.has_finish = dir.join("finish").is_file();
    let down = dir.join("down").exists();
    Ok(SlotDir { settings, notification_fd, down })
}

fn text_file(dir: &Path, name: &str) -> Result<Option<String>, String> {
    let path = dir.join(name);
    match std::fs::read(&path) {
        Ok(bytes) if bytes.len() > 4096 => Err(format!("{}: too large", path.display())),
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).trim().to_string())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

fn number_file(dir: &Path, name: &str, min: u64, max: u64) -> Result<Option<u64>, String> {
    match text_file(dir, name)? {
        None => Ok(None),
        Some(text) => text.parse::<u64>().ok().filter(|n| (min..=max).contains(n)).map(Some).ok_or_else(|| {
            format!("{}: expected a number from {min} to {max}, found '{text}'", dir.join(name).display())
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn slot_names() {
        let cases = [
            ("gateway-default", true),
            ("a", true),
            ("0.x_y-z", true),
            ("", false),
            (".hidden", false),
            ("-dash", false),
            ("Upper", false),
            ("a..b", false),
            ("a/b", false),
            ("space x", false),
            ("é", false),
        ];
        for (name, ok) in cases {
            assert_eq!(valid_name(name), ok, "{name:?}");
        }
        assert!(valid_name(&"a".repeat(251)));
        assert!(!valid_name(&"a".repeat(252)));
    }

    fn slot(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, body) in files {
            fs::write(dir.path().join(name), body).unwrap();
        }
        if dir.path().join("run").exists() {
            fs::set_permissions(dir.path().join("run"), fs::Permissions::from_mode(0o755)).unwrap();
        }
        dir
    }

    #[test]
    fn settings_from_files() {
        let dir = slot(&[
            ("run", "#!/bin/sh\n"),
            ("finish", "#!/bin/sh\n"),
            ("down", ""),
            ("timeout-kill", "250\n"),
            ("timeout-finish", "100"),
            ("down-signal", "SIGINT"),
            ("notification-fd", "5"),
        ]);
        let got = read(dir.path(), &SlotSettings::default()).unwrap();
        assert!(got.down);
        assert_eq!(got.notification_fd, Some(5));
        assert!(got.settings.notification && got.settings.has_finish);
        assert_eq!(got.settings.timeout_kill, Duration::from_millis(250));
        assert_eq!(got.settings.timeout_finish, Duration::from_millis(100));
        assert_eq!(got.settings.down_signal, 2);
        let plain = read(slot(&[("run", "#!/bin/sh\n")]).path(), &SlotSettings::default()).unwrap();
        assert_eq!(plain, SlotDir { settings: SlotSettings::default(), notification_fd: None, down: false });
    }

    #[test]
    fn bad_slots_are_errors_that_name_the_file() {
        let cases: [(&[(&str, &str)], &str); 6] = [
            (&[], "run"),
            (&[("run", "x"), ("timeout-kill", "soon")], "timeout-kill"),
            (&[("run", "x"), ("notification-fd", "1")], "notification-fd"),
            (&[("run", "x"), ("down-signal", "NOPE")], "down-signal"),
            (&[("run", "x"), ("timeout-finish", "-5")], "timeout-finish"),
            (&[("run", "x"), ("down-signal", "99")], "down-signal"),
        ];
        for (files, needle) in cases {
            let dir = slot(files);
            let err = read(dir.path(), &SlotSettings::default()).unwrap_err();
            assert!(err.contains(needle), "{err}");
        }
        let dir = slot(&[("run", "x")]);
        fs::set_permissions(dir.path().join("run"), fs::Permissions::from_mode(0o644)).unwrap();
        assert!(read(dir.path(), &SlotSettings::default()).unwrap_err().contains("not an executable"));
    }
}
