//! The one adapter between the generic supervisor and gateways: a slot named
//! `gateway-<profile>` whose directory names its profile (the `profile` file written by
//! `hermes-cont-init`) is a gateway slot. The supervisor asks this module, and nothing
//! else, what such a slot means on the volume: where its output is logged, where a
//! permanent failure is recorded, and which saved states the status shows.
//!
//! Invariant: a failure to write the volume is a log line naming the file, never an error
//! of the slot or of the init.

use std::path::{Path, PathBuf};

use crate::proto::status::GatewayFields;
use crate::volume::gateway_log::{RotatingLog, gateway_log_dir};
use crate::volume::{slot_writer, state};

/// What the supervisor keeps for a gateway slot.
#[derive(Debug)]
pub struct Gateway {
    profile: String,
    profile_dir: PathBuf,
    log: RotatingLog,
}

impl Gateway {
    /// The gateway behind a slot, if it is one.
    pub fn detect(slot: &str, slot_dir: &Path, home: &Path) -> Option<Gateway> {
        let profile = slot.strip_prefix("gateway-")?;
        let profile_dir = slot_writer::slot_profile_dir(slot_dir)?;
        Some(Gateway {
            profile: profile.to_string(),
            profile_dir,
            log: RotatingLog::new(gateway_log_dir(home, profile)),
        })
    }

    /// Appends service lines to the gateway's log on the volume.
    pub fn log_lines(&mut self, lines: &str) {
        self.log.append(lines);
    }

    /// Records a permanent failure in the profile's state file.
    pub fn record_permanent_failure(&self, slot: &str, reason: &str) {
        match state::record_permanent_failure(&self.profile_dir, reason) {
            Ok(()) => tracing::info!(slot, "recorded startup_failed in {}", self.profile_dir.display()),
            Err(e) => tracing::error!(
                slot,
                "cannot record the failure in {}: {e}",
                self.profile_dir.join(state::STATE_FILE).display()
            ),
        }
    }

    /// The profile and the states saved in it, for the status.
    pub fn fields(&self) -> GatewayFields {
        let saved = state::read_state(&self.profile_dir).unwrap_or_default();
        let text = |key: &str| saved.get(key).and_then(|v| v.as_str()).map(str::to_string);
        GatewayFields {
            profile: self.profile.clone(),
            desired_state: text("desired_state"),
            gateway_state: text("gateway_state"),
            exit_reason: text("exit_reason"),
        }
    }
}
