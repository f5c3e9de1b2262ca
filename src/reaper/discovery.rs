//! Live discovery of profiles: the reaper watches `$HERMES_HOME/profiles/` (inotify). A
//! profile created there while the container runs (by `hermes profile create NAME`, or a
//! copy onto the volume) gets its gateway slot registered at once, down unless its intent
//! says running; a profile directory that disappears has its gateway stopped (gracefully,
//! by its `timeout-kill`) and its slot unloaded and removed.
//!
//! Invariants: the same validation as at boot (valid names, `SOUL.md` a regular file, a
//! symlinked profile refused); a directory whose `SOUL.md` is not there yet is looked at
//! again for a while (a profile is made in steps), and nothing is polled when nothing is
//! pending.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::core::reconcile::{self, valid_profile_name};
use crate::reaper::config::Config;
use crate::reaper::supervisor::Supervisor;
use crate::volume::slot_writer::{self, GatewaySlot};
use crate::volume::{Home, intent, read_port, state};

/// The watch key of `profiles/` (no slot name can hold a NUL).
pub const PROFILES_KEY: &str = "\0profiles";
/// How often a directory without its `SOUL.md` yet is looked at again, and for how long.
const RECHECK: Duration = Duration::from_millis(200);
const PATIENCE: Duration = Duration::from_secs(10);

pub struct Discovery {
    home: Home,
    scan_dir: PathBuf,
    command: Option<String>,
    user: String,
    helper: PathBuf,
    /// Profiles seen without their `SOUL.md` yet, and when to give up on them.
    pending: Vec<(String, Instant)>,
    next_check: Option<Instant>,
}

impl Discovery {
    pub fn new(config: &Config, env: impl Fn(&str) -> Option<String>) -> Discovery {
        Discovery {
            home: Home::new(&config.home),
            scan_dir: config.scan_dir.clone(),
            command: env("HERMES_INIT_GATEWAY_CMD").filter(|v| !v.trim().is_empty()),
            user: env("HERMES_INIT_GATEWAY_USER").filter(|v| !v.is_empty()).unwrap_or_else(|| "hermes".into()),
            helper: slot_writer::helper_path(),
            pending: Vec::new(),
            next_check: None,
        }
    }

    /// Starts watching `profiles/` (after the boot pass, when the slots are loaded).
    pub fn start(&self, supervisor: &mut Supervisor) {
        let dir = self.home.root.join("profiles");
        match std::fs::symlink_metadata(&dir) {
            Ok(meta) if meta.is_dir() => {
                if let Err(e) = supervisor.watch(PROFILES_KEY, &dir) {
                    tracing::warn!("cannot watch {} for new profiles: {e}", dir.display());
                }
            }
            _ => tracing::info!("no {} to watch for new profiles", dir.display()),
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.next_check
    }

    /// Entries of `profiles/` changed.
    pub fn on_events(&mut self, events: Vec<(String, Option<OsString>)>, supervisor: &mut Supervisor, now: Instant) {
        for (key, name) in events {
            if key != PROFILES_KEY {
                continue;
            }
            let Some(name) = name.and_then(|n| n.into_string().ok()) else { continue };
            if !self.consider(&name, supervisor, now) && !self.pending.iter().any(|(n, _)| *n == name) {
                self.pending.push((name, now + PATIENCE));
            }
        }
        self.schedule(now);
    }

    /// Looks at the pending profiles again.
    pub fn on_tick(&mut self, supervisor: &mut Supervisor, now: Instant) {
        if self.next_check.is_none_or(|at| now < at) {
            return;
        }
        let pending = std::mem::take(&mut self.pending);
        for (name, give_up) in pending {
            if !self.consider(&name, supervisor, now) && now < give_up {
                self.pending.push((name, give_up));
            }
        }
        self.schedule(now);
    }

    fn schedule(&mut self, now: Instant) {
        self.next_check = (!self.pending.is_empty()).then_some(now + RECHECK);
    }

    /// Registers a new profile or forgets a vanished one; `false` while its directory is
    /// there without its `SOUL.md` yet.
    fn consider(&mut self, name: &str, supervisor: &mut Supervisor, now: Instant) -> bool {
        if name == "default" || !valid_profile_name(name) {
            return true;
        }
        let slot = reconcile::slot_name(name);
        let loaded = supervisor.state(&slot).is_some();
        let profile = self.home.open_profile(name);
        if self.home.is_profile(name) {
            if loaded {
                return true;
            }
            let Ok(dir) = profile else { return true };
            let intent = intent::read(&dir).ok().flatten();
            let saved = state::read_state(&dir);
            let start = reconcile::decide(saved.as_ref().map_err(String::as_str), intent).start;
            let gateway = GatewaySlot {
                profile: name.to_string(),
                profile_dir: self.home.profile_dir(name),
                home: self.home.root.clone(),
                port: read_port(&dir),
                command: self.command.clone(),
                user: self.user.clone(),
                helper: self.helper.clone(),
            };
            if let Err(e) = slot_writer::write_slot(&self.scan_dir, &gateway, !start) {
                tracing::warn!(slot = %slot, "profile {name} discovered, but its slot cannot be written: {e}");
                return true;
            }
            match supervisor.load(&slot, now) {
                Ok(_) => tracing::info!(
                    slot = %slot,
                    "profile {name} discovered: gateway registered{}",
                    if start { " and started (its intent says running)" } else { ", down" }
                ),
                Err(e) => tracing::warn!(slot = %slot, "profile {name} discovered, but not loaded: {e}"),
            }
            return true;
        }
        match profile {
            // There, but no SOUL.md yet (or a link): look again shortly.
            Ok(_) => false,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if loaded && supervisor.is_gateway(&slot) {
                    tracing::info!(slot = %slot, "profile {name} is gone: stopping its gateway and unloading its slot");
                    if let Err(e) = supervisor.unload(&slot, true, now) {
                        tracing::warn!(slot = %slot, "cannot unload: {e}");
                    }
                }
                true
            }
            Err(e) => {
                tracing::warn!("profile {name:?} skipped: {e}");
                true
            }
        }
    }
}
