//! Everything that knows `HERMES_HOME`, the volume: finding profiles, their state files,
//! the gateway slots written from them, the boot log and the gateway log files.
//!
//! Invariants: a profile name is validated before any path is built from it; `default` is
//! the home itself; a directory is a named profile only if it holds `SOUL.md` and is not a
//! symlink.

pub mod boot_log;
pub mod gateway_log;
pub mod slot_writer;
pub mod state;

use std::path::{Path, PathBuf};

use crate::core::reconcile::valid_profile_name;

/// The file in a profile that holds its deterministic port.
pub const PORT_FILE: &str = "gateway.port";

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
        let Ok(entries) = fs_err::read_dir(&profiles) else { return found };
        let mut named: Vec<(String, PathBuf)> = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let is_dir = fs_err::symlink_metadata(&path).map(|m| m.is_dir()).unwrap_or(false);
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
    fs_err::read_to_string(profile_dir.join(PORT_FILE)).ok()?.trim().parse().ok()
}
