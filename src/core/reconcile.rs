//! The boot decision for each gateway profile, from its saved intent and state, as a pure
//! function; profile names; the deterministic gateway port.
//!
//! Decision order: the operator's intent — hermes-init's own `intent.json`, or a
//! `desired_state` in `gateway_state.json` written by another tool, whichever is newer by
//! its timestamp (a `desired_state` without a readable timestamp is older than any
//! intent) — `running` -> start, `stopped` -> down; no intent at all and `gateway_state`
//! `running`, `draining` or `degraded` -> start (and record the intent `running` now, so it
//! survives the gateway's own `stopped` at the next shutdown); anything else -> down, with
//! the reason.
//!
//! Invariant: no input makes the decision fail; an unreadable or hostile state file is a
//! reason for `down` (unless an intent says otherwise), never an error of the pass.

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

/// An operator's intent as recorded: running or stopped, and when it was said (epoch ms;
/// `None` when no readable timestamp came with it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intent {
    pub running: bool,
    pub at_ms: Option<i64>,
}

impl Intent {
    pub fn word(self) -> &'static str {
        if self.running { "running" } else { "stopped" }
    }

    /// Whether `self` was said after `other` (an intent without a time is the oldest).
    pub fn newer_than(self, other: Intent) -> bool {
        match (self.at_ms, other.at_ms) {
            (Some(a), Some(b)) => a > b,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }
}

/// Where the winning intent came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntentSource {
    /// hermes-init's own intent file.
    IntentFile,
    /// `desired_state` in `gateway_state.json`, newer than the intent file (or alone).
    StateFile,
}

/// What the boot pass does with one profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub start: bool,
    /// `gateway_state` as found (`None` when absent or unreadable).
    pub prior_state: Option<String>,
    /// The intent that decided, if any (`running` or `stopped`).
    pub desired: Option<String>,
    /// Where that intent came from.
    pub source: Option<IntentSource>,
    /// Record the intent `running` now (started on `gateway_state` alone).
    pub record_running: bool,
    /// Copy the state file's newer `desired_state` into the intent file.
    pub adopt: Option<Intent>,
    /// Why the profile stays down when that is not simply what was asked; a warning.
    pub warning: Option<String>,
}

/// Decides from the intent file (if any) and the parsed state file, or the reason the
/// state file could not be read.
pub fn decide(state: Result<&Map<String, Value>, &str>, intent: Option<Intent>) -> Decision {
    let mut decision = Decision {
        start: false,
        prior_state: None,
        desired: None,
        source: None,
        record_running: false,
        adopt: None,
        warning: None,
    };
    let object = match state {
        Ok(object) => Some(object),
        Err(reason) => {
            decision.warning = Some(reason.to_string());
            None
        }
    };
    decision.prior_state = object.and_then(|o| o.get("gateway_state")).and_then(Value::as_str).map(str::to_string);
    let mirror = match object.and_then(|o| o.get("desired_state")) {
        Some(Value::String(d)) if d == "running" || d == "stopped" => Some(Intent {
            running: d == "running",
            at_ms: object.and_then(|o| o.get("desired_state_at")).and_then(Value::as_str).and_then(parse_timestamp_ms),
        }),
        Some(Value::Null) | None => None,
        Some(other) => {
            if intent.is_none() {
                decision.warning = Some(format!("invalid desired_state {other}: expected \"running\" or \"stopped\""));
                return decision;
            }
            None
        }
    };
    let winner = match (intent, mirror) {
        (Some(own), Some(other)) if other.newer_than(own) => {
            if other.running != own.running {
                decision.adopt = Some(other);
            }
            Some((other, IntentSource::StateFile))
        }
        (Some(own), _) => Some((own, IntentSource::IntentFile)),
        (None, Some(other)) => {
            decision.adopt = Some(other);
            Some((other, IntentSource::StateFile))
        }
        (None, None) => None,
    };
    if let Some((said, source)) = winner {
        decision.desired = Some(said.word().to_string());
        decision.source = Some(source);
        decision.start = said.running;
        // The state file could not be read, but the intent decides: no warning needed.
        if source == IntentSource::IntentFile {
            decision.warning = None;
        }
        return decision;
    }
    let Some(object) = object else { return decision };
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

/// Milliseconds since the epoch of an ISO-8601 time `YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)`.
pub fn parse_timestamp_ms(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(range)?;
        part.bytes().all(|c| c.is_ascii_digit()).then(|| part.parse().ok())?
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &text[19..];
    let mut millis = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let padded = format!("{:0<3}", &fraction[..digits.min(3)]);
        millis = padded.parse::<i64>().ok()?;
        rest = &fraction[digits..];
    }
    let offset_minutes = match rest.as_bytes() {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), ..] => {
            let digits: String = rest[1..].chars().filter(|c| *c != ':').collect();
            if digits.len() != 4 || !digits.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            let minutes = digits[..2].parse::<i64>().ok()? * 60 + digits[2..].parse::<i64>().ok()?;
            if *sign == b'-' { -minutes } else { minutes }
        }
        _ => return None,
    };
    // Days from the civil date (the proleptic Gregorian calendar), as in H. Hinnant's
    // "chrono-Compatible Low-Level Date Algorithms".
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_minutes * 60;
    Some(seconds * 1000 + millis)
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
        decide(Ok(value.as_object().unwrap()), None)
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
        let d = decide(Err("corrupt JSON"), None);
        assert!(!d.start && d.prior_state.is_none() && d.warning.as_deref() == Some("corrupt JSON"));
    }

    /// The intent file against a `desired_state` in the state file: the newer wins.
    #[test]
    fn intent_table() {
        let at = |t: &str| parse_timestamp_ms(t);
        let own = |running: bool, t: &str| Some(Intent { running, at_ms: at(t) });
        // (intent file, state file, start, source, adopt into the intent file)
        let cases = [
            // The gateway rewrote its file from scratch: the intent survives.
            (
                own(false, "2026-12-01T10:00:00.000Z"),
                json!({"gateway_state": "running"}),
                false,
                Some(IntentSource::IntentFile),
                None,
            ),
            (
                own(true, "2026-12-01T10:00:00.000Z"),
                json!({"gateway_state": "stopped"}),
                true,
                Some(IntentSource::IntentFile),
                None,
            ),
            // The same intent mirrored.
            (
                own(false, "2026-12-01T10:00:00.000Z"),
                json!({"desired_state": "stopped", "desired_state_at": "2026-12-01T10:00:00.000Z"}),
                false,
                Some(IntentSource::IntentFile),
                None,
            ),
            // Another tool said later: it wins and is adopted.
            (
                own(false, "2026-12-01T10:00:00.000Z"),
                json!({"desired_state": "running", "desired_state_at": "2026-12-01T10:00:00.001Z"}),
                true,
                Some(IntentSource::StateFile),
                Some(true),
            ),
            (
                own(false, "2026-12-01T10:00:00Z"),
                json!({"desired_state": "running", "desired_state_at": "2026-12-01T11:00:00+00:30"}),
                true,
                Some(IntentSource::StateFile),
                Some(true),
            ),
            // Said earlier, or without a time: the intent file wins.
            (
                own(false, "2026-12-01T10:00:00.000Z"),
                json!({"desired_state": "running", "desired_state_at": "2026-12-01T09:59:59.999Z"}),
                false,
                Some(IntentSource::IntentFile),
                None,
            ),
            (
                own(false, "2026-12-01T10:00:00.000Z"),
                json!({"desired_state": "running"}),
                false,
                Some(IntentSource::IntentFile),
                None,
            ),
            (
                own(false, "2026-12-01T10:00:00.000Z"),
                json!({"desired_state": "running", "desired_state_at": "yesterday"}),
                false,
                Some(IntentSource::IntentFile),
                None,
            ),
            (
                own(true, "2026-12-01T10:00:00.000Z"),
                json!({"desired_state": 7}),
                true,
                Some(IntentSource::IntentFile),
                None,
            ),
            // No intent file: the state file's desired_state, adopted.
            (None, json!({"desired_state": "running"}), true, Some(IntentSource::StateFile), Some(true)),
            (
                None,
                json!({"desired_state": "stopped", "gateway_state": "running"}),
                false,
                Some(IntentSource::StateFile),
                Some(false),
            ),
        ];
        for (intent, state, start, source, adopt) in cases {
            let d = decide(Ok(state.as_object().unwrap()), intent);
            assert_eq!(d.start, start, "{intent:?} {state}");
            assert_eq!(d.source, source, "{intent:?} {state}");
            assert_eq!(d.adopt.map(|i| i.running), adopt, "{intent:?} {state}");
            assert!(!d.record_running, "{intent:?} {state}");
        }
        // An unreadable state file does not hide the intent.
        let d = decide(Err("corrupt JSON"), own(true, "2026-12-01T10:00:00Z"));
        assert!(d.start && d.warning.is_none());
    }

    #[test]
    fn timestamps() {
        let cases = [
            ("1970-01-01T00:00:00Z", Some(0)),
            ("1970-01-01T00:00:01.5Z", Some(1500)),
            ("1970-01-01T00:00:00.123456Z", Some(123)),
            ("2000-03-01T00:00:00Z", Some(951_868_800_000)),
            ("2026-12-04T17:24:31Z", Some(1_796_405_071_000)),
            ("2026-12-04T18:24:31+01:00", Some(1_796_405_071_000)),
            ("2026-12-04T16:24:31-0100", Some(1_796_405_071_000)),
            ("2026-12-04T17:24:31", None),
            ("2026-13-04T17:24:31Z", None),
            ("2026-12-04T17:24:31.Z", None),
            ("20261204T172431Z", None),
            ("", None),
            ("2026-12-04T17:24:31+1", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_timestamp_ms(text), want, "{text}");
        }
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
