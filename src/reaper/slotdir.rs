//! Slot directories in the s6 layout: `run` (executable), optional `finish`, `down`,
//! `timeout-kill`, `timeout-finish`, `down-signal`, `notification-fd`; the supervisor writes
//! `supervise/status.json`.
//!
//! Invariants: a slot name is checked before any path is built from it; a setting file with
//! a bad value is an error that names the file, never a silent default; reading a slot
//! never starts anything, never follows a link inside it, never blocks on a FIFO and never
//! reads more than 4 KiB of a file.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::sys::beneath::{Dir, Kind};
use crate::volume::atomic::{self, ReadError};

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
    /// `on-failure` says `shutdown`: the slot is essential, and its permanent failure stops
    /// the container with its exit code.
    pub essential: bool,
    /// The checks of its `check` file.
    pub checks: Vec<crate::proto::check::CheckSpec>,
}

/// Reads the slot directory `dir`, starting from `defaults`. Every file is opened relative
/// to the directory's descriptor, without following a link, without blocking on a FIFO,
/// regular files only, at most 4 KiB.
pub fn read(dir: &Path, defaults: &SlotSettings) -> Result<SlotDir, String> {
    let slot = Dir::open_root(dir).map_err(|e| e.to_string())?;
    match slot.stat("run") {
        Ok(Some(stat)) if slot.kind("run").ok().flatten() == Some(Kind::File) && stat.st_mode & 0o111 != 0 => {}
        Ok(Some(_)) => return Err(format!("{}: not an executable file", dir.join("run").display())),
        Ok(None) => return Err(format!("{}: No such file or directory", dir.join("run").display())),
        Err(e) => return Err(e.to_string()),
    }
    let mut files = BTreeMap::new();
    for name in SETTING_FILES {
        match atomic::read_bounded(&slot, name, MAX_SETTING) {
            Ok(bytes) => {
                files.insert(name, bytes);
            }
            Err(ReadError::Missing) => {}
            Err(ReadError::TooLarge(_)) => return Err(format!("{}: too large", dir.join(name).display())),
            Err(ReadError::Unusable(reason)) => return Err(reason),
        }
    }
    let checks = match atomic::read_bounded(&slot, "check", 64 * 1024) {
        Ok(bytes) => crate::proto::check::parse(&bytes)
            .map_err(|e| format!("{}: not a valid check: {e}", dir.join("check").display()))?,
        Err(ReadError::Missing) => Vec::new(),
        Err(ReadError::TooLarge(_)) => return Err(format!("{}: too large", dir.join("check").display())),
        Err(ReadError::Unusable(reason)) => return Err(reason),
    };
    let has_finish = slot.kind("finish").ok().flatten() == Some(Kind::File);
    let down = slot.kind("down").ok().flatten().is_some();
    let mut read = settings_from(dir, &files, defaults, has_finish, down)?;
    // A ready check decides readiness: no timer.
    read.settings.notification |= checks.iter().any(|c| c.level == crate::proto::check::Level::Ready);
    read.checks = checks;
    Ok(read)
}

/// The setting files a slot directory may hold.
pub const SETTING_FILES: [&str; 5] = ["timeout-kill", "timeout-finish", "down-signal", "notification-fd", "on-failure"];
/// The largest setting file read.
pub const MAX_SETTING: u64 = 4096;

/// The settings from the contents of the setting files (a pure function: the fuzz target
/// of the slot-directory reader drives it).
pub fn settings_from(
    dir: &Path,
    files: &BTreeMap<&str, Vec<u8>>,
    defaults: &SlotSettings,
    has_finish: bool,
    down: bool,
) -> Result<SlotDir, String> {
    let text = |name: &str| files.get(name).map(|b| String::from_utf8_lossy(b).trim().to_string());
    let number = |name: &str, min: u64, max: u64| -> Result<Option<u64>, String> {
        match text(name) {
            None => Ok(None),
            Some(text) => text.parse::<u64>().ok().filter(|n| (min..=max).contains(n)).map(Some).ok_or_else(|| {
                format!("{}: expected a number from {min} to {max}, found {text:?}", dir.join(name).display())
            }),
        }
    };
    let mut settings = defaults.clone();
    if let Some(ms) = number("timeout-kill", 0, 86_400_000)? {
        settings.timeout_kill = Duration::from_millis(ms);
    }
    if let Some(ms) = number("timeout-finish", 0, 86_400_000)? {
        settings.timeout_finish = Duration::from_millis(ms);
    }
    if let Some(text) = text("down-signal") {
        settings.down_signal = crate::core::signal::parse(&text)
            .ok_or_else(|| format!("{}: not a signal: {text:?}", dir.join("down-signal").display()))?;
    }
    let notification_fd = number("notification-fd", 3, 1023)?.map(|n| n as i32);
    settings.notification = notification_fd.is_some();
    settings.has_finish = has_finish;
    let essential = match text("on-failure").as_deref() {
        None | Some("restart") => false,
        Some("shutdown") => true,
        Some(other) => {
            return Err(format!("{}: expected restart or shutdown, found {other:?}", dir.join("on-failure").display()));
        }
    };
    Ok(SlotDir { settings, notification_fd, down, essential, checks: Vec::new() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

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
        assert_eq!(
            plain,
            SlotDir {
                settings: SlotSettings::default(),
                notification_fd: None,
                down: false,
                essential: false,
                checks: Vec::new()
            }
        );
    }

    #[test]
    fn bad_slots_are_errors_that_name_the_file() {
        let cases: [(&[(&str, &str)], &str); 7] = [
            (&[], "run"),
            (&[("run", "x"), ("timeout-kill", "soon")], "timeout-kill"),
            (&[("run", "x"), ("notification-fd", "1")], "notification-fd"),
            (&[("run", "x"), ("down-signal", "NOPE")], "down-signal"),
            (&[("run", "x"), ("timeout-finish", "-5")], "timeout-finish"),
            (&[("run", "x"), ("down-signal", "99")], "down-signal"),
            (&[("run", "x"), ("on-failure", "panic")], "on-failure"),
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

    /// Links, FIFOs and oversized files in a slot directory are refused, never followed,
    /// waited on or read whole.
    #[test]
    fn hostile_slot_files_are_refused() {
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("big"), "1".repeat(100)).unwrap();
        let dir = slot(&[("run", "x")]);
        std::os::unix::fs::symlink(outside.path().join("big"), dir.path().join("timeout-kill")).unwrap();
        assert!(read(dir.path(), &SlotSettings::default()).unwrap_err().contains("symlink"));
        fs::remove_file(dir.path().join("timeout-kill")).unwrap();
        nix::unistd::mkfifo(&dir.path().join("down-signal"), nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        assert!(read(dir.path(), &SlotSettings::default()).is_err(), "a FIFO is refused, not waited on");
        fs::remove_file(dir.path().join("down-signal")).unwrap();
        fs::write(dir.path().join("notification-fd"), "3".repeat(5000)).unwrap();
        assert!(read(dir.path(), &SlotSettings::default()).unwrap_err().contains("too large"));
        fs::remove_file(dir.path().join("notification-fd")).unwrap();
        fs::remove_file(dir.path().join("run")).unwrap();
        std::os::unix::fs::symlink("/bin/true", dir.path().join("run")).unwrap();
        assert!(read(dir.path(), &SlotSettings::default()).unwrap_err().contains("not an executable"));
    }
}
