//! The control protocol: one JSON object per line each way over a unix socket.
//!
//! A request is `{"event": NAME, ...fields}`; a reply is `{"success": bool, "message":
//! text, "error": kind or null, "data": ...}`. Unknown fields of a request are ignored,
//! so newer clients can add optional ones.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::status::SlotStatus;
use crate::core::signal;

/// The longest request line accepted.
pub const MAX_LINE: usize = 64 * 1024;
/// The default limit of a waiting request.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(30);
/// The longest wait a request may ask for.
pub const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);

/// A state a request may wait for before its reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "&'static str")]
pub enum WaitFor {
    /// Running (starting or up).
    Up,
    /// Up and ready.
    Ready,
    /// Down (or failed).
    Down,
}

impl TryFrom<String> for WaitFor {
    type Error = String;
    fn try_from(text: String) -> Result<WaitFor, String> {
        match text.as_str() {
            "up" => Ok(WaitFor::Up),
            "ready" => Ok(WaitFor::Ready),
            "down" => Ok(WaitFor::Down),
            _ => Err("\"wait\" must be \"up\", \"ready\" or \"down\"".into()),
        }
    }
}

impl From<WaitFor> for &'static str {
    fn from(wait: WaitFor) -> &'static str {
        match wait {
            WaitFor::Up => "up",
            WaitFor::Ready => "ready",
            WaitFor::Down => "down",
        }
    }
}

/// A signal as the wire carries it: a name or a number, in a string or as a number; checked
/// by the one parser of `core::signal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Value", into = "i32")]
pub struct SignalSpec(pub i32);

impl TryFrom<Value> for SignalSpec {
    type Error = String;
    fn try_from(value: Value) -> Result<SignalSpec, String> {
        let parsed = match &value {
            Value::String(text) => signal::parse(text),
            Value::Number(n) => {
                n.as_i64().and_then(|n| i32::try_from(n).ok()).and_then(|n| signal::parse(&n.to_string()))
            }
            _ => None,
        };
        parsed
            .map(SignalSpec)
            .ok_or_else(|| format!("\"signal\" must be a signal name or a number from 1 to 64, not {value}"))
    }
}

impl From<SignalSpec> for i32 {
    fn from(spec: SignalSpec) -> i32 {
        spec.0
    }
}

/// How long a waiting request may wait, in ms (capped at a day).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Wait {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<WaitFor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

impl Wait {
    pub fn limit(&self) -> Duration {
        self.timeout_ms.map_or(DEFAULT_WAIT, |ms| Duration::from_millis(ms).min(MAX_WAIT))
    }
}

/// A request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event")]
pub enum Request {
    #[serde(rename = "slot.start")]
    Start {
        slot: String,
        #[serde(flatten)]
        wait: Wait,
    },
    #[serde(rename = "slot.stop")]
    Stop {
        slot: String,
        #[serde(flatten)]
        wait: Wait,
    },
    #[serde(rename = "slot.restart")]
    Restart {
        slot: String,
        #[serde(flatten)]
        wait: Wait,
    },
    #[serde(rename = "slot.signal")]
    Signal { slot: String, signal: SignalSpec },
    /// One slot's status, or every slot's.
    #[serde(rename = "slot.status")]
    Status {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        slot: Option<String>,
    },
    /// Loads a directory (`path`) or a name in the scan dir (`slot`).
    #[serde(rename = "slot.load")]
    Load {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        slot: Option<String>,
        #[serde(flatten)]
        wait: Wait,
    },
    /// Stops, waits until the group is gone, forgets; `remove` deletes the directory too.
    #[serde(rename = "slot.unload")]
    Unload {
        slot: String,
        #[serde(default)]
        remove: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
    },
    /// A slot's recent output: the last `lines` lines, or the lines after `after` (a
    /// sequence number from an earlier reply, to follow it).
    #[serde(rename = "slot.logs")]
    Logs {
        slot: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lines: Option<usize>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<u64>,
    },
    #[serde(rename = "scan")]
    Scan,
    #[serde(rename = "shutdown")]
    Shutdown,
}

/// The event names, for error messages.
pub const EVENTS: [&str; 10] = [
    "slot.start",
    "slot.stop",
    "slot.restart",
    "slot.signal",
    "slot.status",
    "slot.load",
    "slot.unload",
    "slot.logs",
    "scan",
    "shutdown",
];

/// One line of a slot's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// Its place in the init's sequence of service lines (for following).
    pub seq: u64,
    pub stream: String,
    pub text: String,
}

/// Parses one request line, with an error that says what is wrong in the request's terms.
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
    let value: Value = serde_json::from_slice(line).map_err(|e| format!("not valid JSON: {e}"))?;
    let Value::Object(object) = &value else { return Err("a request must be a JSON object".into()) };
    let Some(event) = object.get("event").and_then(Value::as_str) else {
        return Err("missing \"event\" (a string)".into());
    };
    if !EVENTS.contains(&event) {
        return Err(format!("unknown event '{event}' (known: {})", EVENTS.join(", ")));
    }
    let event = event.to_string();
    serde_json::from_value(value).map_err(|e| {
        let text = e.to_string();
        match text.strip_prefix("missing field `").and_then(|rest| rest.split_once('`')) {
            Some((field, _)) => format!("{event}: missing \"{field}\""),
            None => format!("{event}: {text}"),
        }
    })
}

/// What kind of failure a reply reports, for clients that act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request could not be understood.
    BadRequest,
    /// No slot of that name is loaded.
    NoSuchSlot,
    /// The request makes no sense now (already loaded, not running, shutting down).
    Conflict,
    /// The slot failed while the request waited for it.
    Failed,
    /// The wait ran out.
    TimedOut,
    /// Not allowed on this socket, or too many clients.
    Refused,
    /// The supervisor could not do it (a file or directory that cannot be read or written).
    System,
}

/// The data a reply carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ReplyData {
    Slot {
        slot: Box<SlotStatus>,
    },
    Slots {
        slots: Vec<SlotStatus>,
    },
    Loaded {
        slot: String,
    },
    Scanned {
        loaded: Vec<String>,
        unloaded: Vec<String>,
    },
    /// Lines of output, and the sequence number to follow from.
    Logs {
        lines: Vec<LogLine>,
        last: u64,
    },
}

/// A reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub success: bool,
    pub message: String,
    #[serde(default)]
    pub error: Option<ErrorKind>,
    #[serde(default)]
    pub data: Option<ReplyData>,
}

impl Reply {
    pub fn ok(message: impl Into<String>, data: Option<ReplyData>) -> Reply {
        Reply { success: true, message: message.into(), error: None, data }
    }

    pub fn fail(kind: ErrorKind, message: impl Into<String>) -> Reply {
        Reply { success: false, message: message.into(), error: Some(kind), data: None }
    }

    pub fn with_data(mut self, data: Option<ReplyData>) -> Reply {
        self.data = data;
        self
    }

    /// The reply as one line, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).unwrap_or_else(|_| {
            br#"{"success":false,"message":"unserializable reply","error":"system","data":null}"#.to_vec()
        });
        line.push(b'\n');
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines() {
        let ok = [
            (r#"{"event": "slot.start", "slot": "a"}"#, Request::Start { slot: "a".into(), wait: Wait::default() }),
            (
                r#"{"event": "slot.stop", "slot": "a", "wait": "down", "timeout_ms": 5}"#,
                Request::Stop { slot: "a".into(), wait: Wait { wait: Some(WaitFor::Down), timeout_ms: Some(5) } },
            ),
            (
                r#"{"event": "slot.signal", "slot": "a", "signal": 10}"#,
                Request::Signal { slot: "a".into(), signal: SignalSpec(10) },
            ),
            (
                r#"{"event": "slot.signal", "slot": "a", "signal": "10"}"#,
                Request::Signal { slot: "a".into(), signal: SignalSpec(10) },
            ),
            (
                r#"{"event": "slot.signal", "slot": "a", "signal": "usr2"}"#,
                Request::Signal { slot: "a".into(), signal: SignalSpec(12) },
            ),
            (r#"{"event": "slot.status"}"#, Request::Status { slot: None }),
            (r#"{"event": "scan", "extra": 1}"#, Request::Scan),
            (
                r#"{"event": "slot.unload", "slot": "a", "remove": true}"#,
                Request::Unload { slot: "a".into(), remove: true, timeout_ms: None },
            ),
        ];
        for (line, want) in ok {
            assert_eq!(parse_request(line.as_bytes()), Ok(want.clone()), "{line}");
            // What the client sends, the server reads back.
            let sent = serde_json::to_vec(&want).unwrap();
            assert_eq!(parse_request(&sent), Ok(want), "{}", String::from_utf8_lossy(&sent));
        }
        let bad = [
            ("not json", "not valid JSON"),
            ("[1]", "must be a JSON object"),
            ("{}", "missing \"event\""),
            (r#"{"event": 5}"#, "missing \"event\""),
            (r#"{"event": "slot.explode"}"#, "unknown event 'slot.explode'"),
            (r#"{"event": "slot.start"}"#, "slot.start: missing \"slot\""),
            (r#"{"event": "slot.start", "slot": "a", "wait": "soon"}"#, "\"wait\" must be"),
            (r#"{"event": "slot.start", "slot": "a", "timeout_ms": -1}"#, "slot.start:"),
            (r#"{"event": "slot.signal", "slot": "a", "signal": 0}"#, "\"signal\" must be"),
            (r#"{"event": "slot.signal", "slot": "a", "signal": "NOPE"}"#, "\"signal\" must be"),
            (r#"{"event": "slot.signal", "slot": "a", "signal": [15]}"#, "\"signal\" must be"),
            (r#"{"event": "slot.unload", "slot": 7}"#, "slot.unload:"),
        ];
        for (line, needle) in bad {
            let err = parse_request(line.as_bytes()).unwrap_err();
            assert!(err.contains(needle), "{line}: {err}");
        }
    }

    #[test]
    fn replies_round_trip() {
        let replies = [
            Reply::ok("done", None),
            Reply::fail(ErrorKind::NoSuchSlot, "no such slot 'x'"),
            Reply::ok("scan", Some(ReplyData::Scanned { loaded: vec!["a".into()], unloaded: vec![] })),
            Reply::ok("loaded", Some(ReplyData::Loaded { slot: "a".into() })),
        ];
        for reply in replies {
            let line = reply.to_line();
            assert_eq!(line.last(), Some(&b'\n'));
            let back: Reply = serde_json::from_slice(&line).unwrap();
            assert_eq!(back, reply);
        }
    }
}
