//! Gateway slots in the scan dir: the `run` file made from a profile, written atomically,
//! and the sweeps of staging directories and of slots whose profile is gone.
//!
//! Invariants: a slot directory appears complete or not at all (staging directory, then
//! rename or an atomic exchange with the old one); only validated names reach a `run`
//! file, and every value in it is quoted.

use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::core::reconcile;
use crate::sys::files;

/// The file in a gateway slot that names its profile directory.
pub const SLOT_PROFILE_FILE: &str = "profile";

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
    let exists = fs_err::symlink_metadata(&target).is_ok_and(|m| m.is_dir());
    // Unchanged since the last pass: only the down file may need to change.
    let same = |file: &str, text: &str| fs_err::read(target.join(file)).is_ok_and(|b| b == text.as_bytes());
    if exists && same("run", &run) && same(SLOT_PROFILE_FILE, &profile_line) {
        let down_file = target.join("down");
        match (down, down_file.exists()) {
            (true, false) => drop(std::fs::File::create(&down_file)?),
            (false, true) => fs_err::remove_file(&down_file)?,
            _ => {}
        }
        return Ok(target);
    }
    let staging = scan_dir.join(format!(".staging-{name}-{}", std::process::id()));
    if let Err(e) = fs_err::create_dir(&staging) {
        if e.kind() != io::ErrorKind::AlreadyExists {
            return Err(e);
        }
        fs_err::remove_dir_all(&staging)?;
        fs_err::create_dir(&staging)?;
    }
    let write = |file: &str, text: &str, mode: u32| -> io::Result<()> {
        let path = staging.join(file);
        let mut f = fs_err::File::create(&path)?;
        f.write_all(text.as_bytes())?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))
    };
    let written = (|| {
        write("run", &run, 0o755)?;
        write(SLOT_PROFILE_FILE, &profile_line, 0o644)?;
        if down {
            write("down", "", 0o644)?;
        }
        if exists {
            files::exchange(&staging, &target)?;
            fs_err::remove_dir_all(&staging)
        } else {
            fs_err::rename(&staging, &target)
        }
    })();
    if written.is_err() {
        // A full scan dir must not keep half a slot.
        let _ = fs_err::remove_dir_all(&staging);
    }
    written.map(|()| target)
}

/// Removes staging directories left by an interrupted pass; returns how many.
pub fn sweep_staging(scan_dir: &Path) -> usize {
    let Ok(entries) = fs_err::read_dir(scan_dir) else { return 0 };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".staging-"))
        .filter(|e| fs_err::remove_dir_all(e.path()).is_ok())
        .count()
}

/// Removes gateway slots (those with a profile metadata file) whose profile is not in
/// `kept`, for a scan dir that outlived a restart; returns their names.
pub fn sweep_orphan_slots(scan_dir: &Path, kept: &[String]) -> Vec<String> {
    let Ok(entries) = fs_err::read_dir(scan_dir) else { return Vec::new() };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name.starts_with("gateway-")
            && !kept.contains(&name)
            && slot_profile_dir(&path).is_some()
            && fs_err::remove_dir_all(&path).is_ok()
        {
            removed.push(name);
        }
    }
    removed.sort();
    removed
}

/// The profile directory a gateway slot belongs to, from its metadata file.
pub fn slot_profile_dir(slot_dir: &Path) -> Option<PathBuf> {
    let text = fs_err::read_to_string(slot_dir.join(SLOT_PROFILE_FILE)).ok()?;
    let dir = PathBuf::from(text.trim());
    dir.is_absolute().then_some(dir)
}

/// Where the `hermes-cont-init` binary is, for the `run` files' `exec-as`: this program
/// itself, the one beside the running program, or else the bare name (found on PATH when
/// the `run` file runs).
pub fn helper_path() -> PathBuf {
    let beside = |exe: PathBuf| {
        if exe.file_name().is_some_and(|n| n == "hermes-cont-init") {
            Some(exe)
        } else {
            exe.parent().map(|dir| dir.join("hermes-cont-init")).filter(|p| p.is_file())
        }
    };
    // Without /proc, argv[0] tells where the program is.
    std::env::current_exe()
        .ok()
        .and_then(beside)
        .or_else(|| std::env::args().next().filter(|a| a.contains('/')).map(PathBuf::from).and_then(beside))
        .unwrap_or_else(|| PathBuf::from("hermes-cont-init"))
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
}
