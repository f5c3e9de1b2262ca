//! The one adapter between the generic supervisor and gateways: a slot named
//! `gateway-<profile>` whose directory names its profile (the `profile` file written by
//! `hermes-cont-init`) is a gateway slot. The supervisor asks this module, and nothing
//! else, what such a slot means on the volume: where its output is logged, where a
//! permanent failure is recorded, and which saved states the status shows.
//!
//! Invariant: a failure to write the volume is a log line naming the file, never an error
//! of the slot or of the init.

use std::path::Path;

use crate::core::Pid;
use crate::core::reconcile::valid_profile_name;
use crate::proto::status::GatewayFields;
use crate::sys::spawn::fork_task;
use crate::volume::gateway_log::RotatingLog;
use crate::volume::{Home, owner_of, slot_writer, state};

/// What the supervisor keeps for a gateway slot.
#[derive(Debug)]
pub struct Gateway {
    profile: String,
    home: Home,
    log: RotatingLog,
    /// The states saved in the profile, as last read: refreshed when the watch on the
    /// profile directory reports a change, never per status request.
    fields: GatewayFields,
}

impl Gateway {
    /// The gateway behind a slot, if it is one: `gateway-<profile>` with a valid profile
    /// name and the marker file. Its profile is always reached beneath the home by name,
    /// never through a path read from the slot directory.
    pub fn detect(slot: &str, slot_dir: &Path, home: &Path) -> Option<Gateway> {
        let profile = slot.strip_prefix("gateway-")?;
        if profile != "default" && !valid_profile_name(profile) {
            return None;
        }
        // The marker, read as an entry of the slot directory, not followed.
        let marker = crate::sys::beneath::Dir::open_root(slot_dir).ok()?.kind(slot_writer::SLOT_PROFILE_FILE).ok()?;
        (marker == Some(crate::sys::beneath::Kind::File)).then_some(())?;
        let home = Home::new(home);
        let mut gateway = Gateway {
            profile: profile.to_string(),
            log: RotatingLog::new(home.clone(), profile),
            home,
            fields: GatewayFields {
                profile: profile.to_string(),
                desired_state: None,
                gateway_state: None,
                exit_reason: None,
            },
        };
        gateway.refresh();
        Some(gateway)
    }

    /// The directory to watch for changes of the state file.
    pub fn profile_dir(&self) -> std::path::PathBuf {
        self.home.profile_dir(&self.profile)
    }

    /// Whether a change to this entry of the profile directory concerns the status.
    pub fn concerns(name: Option<&std::ffi::OsStr>) -> bool {
        name.is_none_or(|n| n == state::STATE_FILE)
    }

    /// Appends service lines to the gateway's log on the volume.
    pub fn log_lines(&mut self, lines: &str) {
        self.log.append(lines);
    }

    /// Records a permanent failure in the profile's state file.
    ///
    /// The write (with its fsyncs and retries) runs in a short-lived child, as the owner of
    /// the profile directory: a slow volume never holds up the loop, and the file stays the
    /// owner's. Returns the child's pid, which the loop reaps.
    pub fn record_permanent_failure(&self, slot: &str, reason: &str) -> Option<Pid> {
        let path = self.home.profile_dir(&self.profile).join(state::STATE_FILE);
        let owner = self.home.open_profile(&self.profile).ok().and_then(|dir| owner_of(&dir));
        let (home, profile, slot_name, reason) =
            (self.home.clone(), self.profile.clone(), slot.to_string(), reason.to_string());
        let task = move || {
            let result = home.open_profile(&profile).and_then(|dir| state::record_permanent_failure(&dir, &reason));
            let code = match result {
                Ok(()) => {
                    tracing::info!(slot = %slot_name, "recorded startup_failed in {}", path.display());
                    0
                }
                Err(e) => {
                    tracing::error!(slot = %slot_name, "cannot record the failure in {}: {e}", path.display());
                    1
                }
            };
            crate::reaper::sink::drain(std::time::Duration::from_millis(200));
            code
        };
        match fork_task(owner.map(|o| (o.uid, o.gid)), task) {
            Ok(pid) => Some(pid),
            Err(e) => {
                tracing::error!(
                    slot,
                    "cannot start the writer of {}: {e}",
                    self.home.profile_dir(&self.profile).display()
                );
                None
            }
        }
    }

    /// The profile and the states saved in it, as last read.
    pub fn fields(&self) -> GatewayFields {
        self.fields.clone()
    }

    /// Whether the operator's intent says this gateway runs (the boot decision, read now).
    pub fn intends_running(&self) -> bool {
        let Ok(dir) = self.home.open_profile(&self.profile) else { return false };
        let intent = crate::volume::intent::read(&dir).ok().flatten();
        let saved = state::read_state(&dir);
        crate::core::reconcile::decide(saved.as_ref().map_err(String::as_str), intent).start
    }

    /// The gateway says it runs.
    pub fn says_running(&self) -> bool {
        self.fields.gateway_state.as_deref() == Some("running")
    }

    /// The gateway says it runs but not well.
    pub fn says_degraded(&self) -> bool {
        self.fields.gateway_state.as_deref() == Some("degraded")
    }

    /// Reads the state file again (after the watch reported a change).
    pub fn refresh(&mut self) {
        let saved = self
            .home
            .open_profile(&self.profile)
            .map_err(|e| e.to_string())
            .and_then(|dir| state::read_state(&dir))
            .unwrap_or_default();
        let text = |key: &str| saved.get(key).and_then(|v| v.as_str()).map(str::to_string);
        self.fields = GatewayFields {
            profile: self.profile.clone(),
            desired_state: text("desired_state"),
            gateway_state: text("gateway_state"),
            exit_reason: text("exit_reason"),
        };
    }
}
