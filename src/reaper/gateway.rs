//! The one adapter between the generic supervisor and gateways: a slot named
//! `gateway-<profile>` whose directory names its profile (the `profile` file written by
//! `hermes-cont-init`) is a gateway slot. The supervisor asks this module, and nothing
//! else, what such a slot means on the volume: where its output is logged, where a
//! permanent failure is recorded, and which saved states the status shows.
//!
//! Invariant: a failure to write the volume is a log line naming the file, never an error
//! of the slot or of the init.

use std::path::Path;

use crate::core::reconcile::valid_profile_name;
use crate::proto::status::GatewayFields;
use crate::volume::gateway_log::RotatingLog;
use crate::volume::{Home, slot_writer, state};

/// What the supervisor keeps for a gateway slot.
#[derive(Debug)]
pub struct Gateway {
    profile: String,
    home: Home,
    log: RotatingLog,
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
        slot_writer::slot_profile_dir(slot_dir)?;
        let home = Home::new(home);
        Some(Gateway { profile: profile.to_string(), log: RotatingLog::new(home.clone(), profile), home })
    }

    /// Appends service lines to the gateway's log on the volume.
    pub fn log_lines(&mut self, lines: &str) {
        self.log.append(lines);
    }

    /// Records a permanent failure in the profile's state file.
    pub fn record_permanent_failure(&self, slot: &str, reason: &str) {
        let path = self.home.profile_dir(&self.profile).join(state::STATE_FILE);
        match self.home.open_profile(&self.profile).and_then(|dir| state::record_permanent_failure(&dir, reason)) {
            Ok(()) => tracing::info!(slot, "recorded startup_failed in {}", path.display()),
            Err(e) => tracing::error!(slot, "cannot record the failure in {}: {e}", path.display()),
        }
    }

    /// The profile and the states saved in it, for the status.
    pub fn fields(&self) -> GatewayFields {
        let saved = self
            .home
            .open_profile(&self.profile)
            .map_err(|e| e.to_string())
            .and_then(|dir| state::read_state(&dir))
            .unwrap_or_default();
        let text = |key: &str| saved.get(key).and_then(|v| v.as_str()).map(str::to_string);
        GatewayFields {
            profile: self.profile.clone(),
            desired_state: text("desired_state"),
            gateway_state: text("gateway_state"),
            exit_reason: text("exit_reason"),
        }
    }
}
