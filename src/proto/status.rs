//! A slot's status record: what `supervise/status.json` holds, what `slot.status` replies
//! and what the health API lists per slot.

use serde::{Deserialize, Serialize};

use crate::core::exit::ExitStatus;
use crate::core::slot::StateName;

/// Up or down, as the operator wants it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Wanted {
    Up,
    Down,
}

/// How the service last ended: `{"code": N}` or `{"signal": N}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LastExit {
    Code(i32),
    Signal(i32),
}

impl From<ExitStatus> for LastExit {
    fn from(status: ExitStatus) -> LastExit {
        match status {
            ExitStatus::Code(code) => LastExit::Code(code),
            ExitStatus::Signaled(sig) => LastExit::Signal(sig),
        }
    }
}

impl std::fmt::Display for LastExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LastExit::Code(code) => write!(f, "exit {code}"),
            LastExit::Signal(sig) => write!(f, "signal {sig}"),
        }
    }
}

/// What a gateway slot adds: its profile and the states saved in the profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayFields {
    pub profile: String,
    pub desired_state: Option<String>,
    pub gateway_state: Option<String>,
    /// Why the gateway failed for good, as recorded in its state file.
    pub exit_reason: Option<String>,
}

/// One slot's status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlotStatus {
    pub slot: String,
    pub path: String,
    /// When the slot was loaded (epoch seconds).
    pub loaded_at: u64,
    pub state: StateName,
    pub wanted: Wanted,
    pub pid: Option<i32>,
    /// When the state last changed (epoch seconds, millisecond precision).
    pub since: f64,
    pub ready: bool,
    pub restarts: u32,
    pub last_exit: Option<LastExit>,
    pub failure: Option<String>,
    /// Only for gateway slots, in the health API and `slot.status` replies.
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewayFields>,
    /// The slot's checks (its `check` file), if any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<crate::proto::check::CheckStatus>,
}

impl SlotStatus {
    /// Failed, a gateway that says it is degraded, or wanted up but not up and ready: what
    /// makes the health `degraded`.
    pub fn lagging(&self) -> bool {
        self.state == StateName::Failed
            || self.gateway.as_ref().is_some_and(|g| g.gateway_state.as_deref() == Some("degraded"))
            || (self.wanted == Wanted::Up && !(self.state == StateName::Up && self.ready))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(gateway: Option<GatewayFields>) -> SlotStatus {
        SlotStatus {
            slot: "gateway-work".into(),
            path: "/run/service/gateway-work".into(),
            loaded_at: 1_700_000_000,
            state: StateName::Up,
            wanted: Wanted::Up,
            pid: Some(42),
            since: 1_700_000_001.5,
            ready: true,
            restarts: 2,
            last_exit: Some(LastExit::Signal(9)),
            failure: None,
            gateway,
            checks: Vec::new(),
        }
    }

    #[test]
    fn the_record_keeps_its_field_names_and_round_trips() {
        let gateway = GatewayFields {
            profile: "work".into(),
            desired_state: Some("running".into()),
            gateway_state: None,
            exit_reason: None,
        };
        for status in [sample(None), sample(Some(gateway))] {
            let json = serde_json::to_value(&status).unwrap();
            assert_eq!(json["state"], "up");
            assert_eq!(json["wanted"], "up");
            assert_eq!(json["last_exit"], serde_json::json!({"signal": 9}));
            assert_eq!(json.get("profile").is_some(), status.gateway.is_some(), "{json}");
            let back: SlotStatus = serde_json::from_value(json).unwrap();
            assert_eq!(back, status);
        }
    }
}
