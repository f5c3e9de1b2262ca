//! The boot decision for each gateway profile, from its saved state, as a pure function;
//! profile names; the deterministic gateway port.
//!
//! Decision order: `desired_state` `running` -> start; `desired_state` `stopped` -> down;
//! no `desired_state` and `gateway_state` `running`, `draining` or `degraded` -> start (and
//! record `desired_state: running` now, so the intent survives the gateway's own `stopped`
//! at the next shutdown); anything else -> down, with the reason.
//!
//! Invariant: no input makes the decision fail; an unreadable or hostile state file is a
//! reason for `down`, never an error of the pass.

use serde_json::{Map, Value};

/// The gateway states that mean "it was running" when no `desired_state` is recorded.
pub const RUNNING_STATES: [&str; 3] = ["running", "draining", "degraded"];

/// Names `profile create` refuses.
pub const RESERVED_NAMES: [&str; 6] = ["hermes", "default", "test", "tmp", "root", "sudo"];

/// The port range for deterministic gateway ports: [9200, 9800).
pub const PORT_BASE: u16 = 9200;
pub const PORT_SPAN: u16 = 600;

/// Whether `name` is a valid profile name: `^[a-z0-9][a-z0-9_-]{0,63}$`.
pub fn valid_profile_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
}

/// The slot name of a profile.
pub fn slot_name(profile: &str) -> String {
    format!("gateway-{profile}")
}

/// What the boot pass does with one profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub start: bool,
    /// `gateway_state` as found (`None` when absent or unreadable).
    pub prior_state: Option<String>,
    /// `desired_state` as found, if it was a valid one.
    pub desired: Option<String>,
    /// Record `desired_state: running` now (started on `gateway_state` alone).
    pub record_running: bool,
    /// Why the profile stays down when that is not simply what was asked; a warning.
    pub warning: Option<String>,
}

/// Decides from the parsed state file, or from the reason it could not be read.
pub fn decide(state: Result<&Map<String, Value>, &str>) -> Decision {
    let object = match state {
        Ok(object) => object,
        Err(reason) => {
            return Decision {
                start: false,
                prior_state: None,
                desired: None,
                record_running: false,
                warning: Some(reason.to_string()),
            };
        }
    };
    let prior_state = object.get("gateway_state").and_then(Value::as_str).map(str::to_string);
    let mut decision = Decision { start: false, prior_state, desired: None, record_running: false, warning: None };
    match object.get("desired_state") {
        Some(Value::String(d)) if d == "running" || d == "stopped" => {
            decision.desired = Some(d.clone());
            decision.start = d == "running";
            return decision;
        }
        Some(Value::Null) | None => {}
        Some(other) => {
            decision.warning = Some(format!("invalid desired_state {other}: expected \"running\" or \"stopped\""));
            return decision;
        }
    }
    match object.get("gateway_state") {
        Some(Value::String(s)) if RUNNING_STATES.contains(&s.as_str()) => {
            decision.start = true;
            decision.record_running = true;
        }
        Some(Value::String(_)) | None => {}
        Some(other) => decision.warning = Some(format!("invalid gateway_state {other}: not a string")),
    }
    decision
}

/// The first candidate port of a profile: 9200 + (first 8 hex digits of sha256(name)) % 600.
pub fn preferred_port(sha256_of_name: &[u8; 32]) -> u16 {
    let first = u32::from_be_bytes([sha256_of_name[0], sha256_of_name[1], sha256_of_name[2], sha256_of_name[3]]);
    PORT_BASE + (first % PORT_SPAN as u32) as u16
}

/// The port to give a profile: its preferred one, or the next free one upward, wrapping
/// inside the range. `None` when all 600 are taken.
pub fn allocate_port(preferred: u16, taken: &[u16]) -> Option<u16> {
    (0..PORT_SPAN).map(|i| PORT_BASE + (preferred - PORT_BASE + i) % PORT_SPAN).find(|port| !taken.contains(port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decide_json(value: Value) -> Decision {
        decide(Ok(value.as_object().unwrap()))
    }

    #[test]
    fn decision_table() {
        // (state file, start, record running, warning expected)
        let cases = [
            (json!({"desired_state": "running", "gateway_state": "stopped"}), true, false, false),
            (json!({"desired_state": "stopped", "gateway_state": "running"}), false, false, false),
            (json!({"gateway_state": "running"}), true, true, false),
            (json!({"gateway_state": "draining"}), true, true, false),
            (json!({"gateway_state": "degraded"}), true, true, false),
            (json!({"gateway_state": "stopped"}), false, false, false),
            (json!({"gateway_state": "starting"}), false, false, false),
            (json!({"gateway_state": "startup_failed"}), false, false, false),
            (json!({"gateway_state": "weird"}), false, false, false),
            (json!({}), false, false, false),
            (json!({"gateway_state": 5}), false, false, true),
            (json!({"gateway_state": ["running"]}), false, false, true),
            (json!({"desired_state": true, "gateway_state": "running"}), false, false, true),
            (json!({"desired_state": "maybe", "gateway_state": "running"}), false, false, true),
            (json!({"desired_state": null, "gateway_state": "running"}), true, true, false),
        ];
        for (state, start, record, warned) in cases {
            let d = decide_json(state.clone());
            assert_eq!(d.start, start, "{state}");
            assert_eq!(d.record_running, record, "{state}");
            assert_eq!(d.warning.is_some(), warned, "{state}: {d:?}");
        }
        let d = decide(Err("corrupt JSON"));
        assert!(!d.start && d.prior_state.is_none() && d.warning.as_deref() == Some("corrupt JSON"));
    }

    #[test]
    fn profile_names() {
        let cases = [
            ("work", true),
            ("a", true),
            ("0-x_y", true),
            ("", false),
            ("-a", false),
            ("_a", false),
            ("Work", false),
            ("a.b", false),
            ("a b", false),
            ("../x", false),
            ("a;rm", false),
        ];
        for (name, ok) in cases {
            assert_eq!(valid_profile_name(name), ok, "{name:?}");
        }
        assert!(valid_profile_name(&"a".repeat(64)));
        assert!(!valid_profile_name(&"a".repeat(65)));
    }

    #[test]
    fn ports() {
        let mut hash = [0u8; 32];
        hash[..4].copy_from_slice(&1234u32.to_be_bytes());
        assert_eq!(preferred_port(&hash), 9200 + 1234 % 600);
        hash[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(preferred_port(&hash), 9200 + (u32::MAX % 600) as u16);
        // (preferred, taken, allocated)
        let cases: [(u16, &[u16], Option<u16>); 4] = [
            (9300, &[], Some(9300)),
            (9300, &[9300, 9301], Some(9302)),
            (9799, &[9799], Some(9200)),
            (9799, &[9799, 9200, 9201], Some(9202)),
        ];
        for (preferred, taken, want) in cases {
            assert_eq!(allocate_port(preferred, taken), want, "{preferred} {taken:?}");
        }
        let all: Vec<u16> = (9200..9800).collect();
        assert_eq!(allocate_port(9250, &all), None);
    }
}
