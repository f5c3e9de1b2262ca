//! Everything that knows `HERMES_HOME`, the volume: finding profiles, their state and
//! intent files, the gateway slots written from them, the boot log and the gateway logs.
//!
//! The volume belongs to the user whose gateways write there, while the init and its tools
//! often run as root. So every path under the home is reached through `sys::beneath`
//! (no symlink followed below the home, nothing resolved outside it, no hard-linked file
//! written), and what root creates there is given to the owner of the directory it is
//! created in.
//!
//! Invariants: a profile name is validated before any path is built from it; `default` is
//! the home itself; a directory is a named profile only if it holds `SOUL.md` as a regular
//! file and is not a symlink.

pub mod atomic;
pub mod boot_log;
pub mod gateway_log;
pub mod intent;
pub mod lock;
pub mod slot_writer;
pub mod state;

use std::io::{self, Read};
use std::path::PathBuf;

use crate::core::reconcile::valid_profile_name;
use crate::sys::beneath::{Dir, Kind, Owner};

/// The file in a profile that holds its deterministic port.
pub const PORT_FILE: &str = "gateway.port";
/// The file that makes a directory of `profiles/` a profile.
pub const SOUL_FILE: &str = "SOUL.md";

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

    /// The home, opened.
    pub fn open(&self) -> io::Result<Dir> {
        Dir::open_root(&self.root)
    }

    /// The directory of a profile, for messages and `run` files; `default` is the home itself.
    pub fn profile_dir(&self, name: &str) -> PathBuf {
        if name == "default" { self.root.clone() } else { self.root.join("profiles").join(name) }
    }

    /// The directory of a profile, opened beneath the home.
    pub fn open_profile(&self, name: &str) -> io::Result<Dir> {
        let root = self.open()?;
        if name == "default" {
            return Ok(root);
        }
        if !valid_profile_name(name) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("invalid profile name {name:?}")));
        }
        root.open_dir(format!("profiles/{name}"))
    }

    /// Whether a named profile exists: `profiles/<name>/` is a real directory with `SOUL.md`.
    pub fn is_profile(&self, name: &str) -> bool {
        if name == "default" {
            return self.open().is_ok();
        }
        self.open_profile(name).is_ok_and(|dir| dir.kind(SOUL_FILE).ok().flatten() == Some(Kind::File))
    }

    /// The default profile first (always), then named profiles sorted by name. Directories
    /// without `SOUL.md` and non-directories are not profiles; a symlink, `profiles/default/`
    /// and invalid names are reported as skipped.
    pub fn walk(&self) -> Vec<Found> {
        let mut found = vec![Found::Profile { name: "default".into(), dir: self.root.clone() }];
        let profiles = match self.open().and_then(|root| match root.kind("profiles")? {
            None => Ok(None),
            Some(_) => root.open_dir("profiles").map(Some),
        }) {
            Ok(Some(dir)) => dir,
            Ok(None) => return found,
            Err(e) => {
                found.push(Found::Skipped { name: "profiles".into(), reason: format!("no named profiles: {e}") });
                return found;
            }
        };
        let mut entries = match profiles.entries() {
            Ok(entries) => entries,
            Err(e) => {
                found.push(Found::Skipped { name: "profiles".into(), reason: format!("no named profiles: {e}") });
                return found;
            }
        };
        entries.sort();
        for (raw, kind) in entries {
            let name = raw.to_string_lossy().into_owned();
            match kind {
                Kind::Dir => {}
                Kind::Symlink => {
                    found.push(Found::Skipped {
                        name,
                        reason: "a symlink (not followed): a profile must be a directory on the volume".into(),
                    });
                    continue;
                }
                Kind::File | Kind::Other => continue,
            }
            let Ok(dir) = profiles.open_dir(&*raw) else { continue };
            if dir.kind(SOUL_FILE).ok().flatten() != Some(Kind::File) {
                continue;
            }
            if name == "default" {
                found.push(Found::Skipped {
                    name,
                    reason: "profiles/default/ is reserved: the default profile is HERMES_HOME itself".into(),
                });
            } else if !valid_profile_name(&name) {
                found.push(Found::Skipped {
                    reason: format!("invalid profile name {name:?}: must match ^[a-z0-9][a-z0-9_-]{{0,63}}$"),
                    name,
                });
            } else {
                found.push(Found::Profile { dir: self.profile_dir(&name), name });
            }
        }
        found
    }

    /// Ports held by profiles (their `gateway.port` files).
    pub fn taken_ports(&self) -> Vec<u16> {
        self.walk()
            .iter()
            .filter_map(|f| match f {
                Found::Profile { name, .. } => self.open_profile(name).ok().and_then(|dir| read_port(&dir)),
                Found::Skipped { .. } => None,
            })
            .collect()
    }
}

/// The port stored in a profile, if any (a small regular file, never followed or waited on).
pub fn read_port(profile: &Dir) -> Option<u16> {
    let mut text = String::new();
    profile.open_read(PORT_FILE).ok()?.take(32).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

/// Who should own what root creates in `dir`: the owner of `dir`.
pub fn owner_of(dir: &Dir) -> Option<Owner> {
    dir.owner().ok()
}
