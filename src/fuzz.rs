//! The entry points of the fuzz targets (`fuzz/`), kept in the library so that `cargo test`
//! replays the kept corpus through the very same code (`tests/fuzz_corpus.rs`).
//!
//! Invariant: each entry point takes any bytes and must neither panic nor hang; where an
//! answer can be checked cheaply, it is.

use std::collections::BTreeMap;
use std::path::Path;

use crate::core::slot::{SlotSettings, StateName};
use crate::proto::control::{Reply, parse_request};
use crate::proto::health::{HealthDoc, HealthStatus, Slots};
use crate::proto::status::{SlotStatus, Wanted};

/// The state-file reader and the boot decision, with and without an intent, and the
/// timestamp parser on every string of the file.
pub fn state_file(data: &[u8]) {
    let parsed = crate::volume::state::parse_state("gateway_state.json", data);
    let intent =
        crate::core::reconcile::Intent { running: data.len().is_multiple_of(2), at_ms: Some(data.len() as i64) };
    let decision = crate::core::reconcile::decide(parsed.as_ref().map_err(String::as_str), Some(intent));
    assert_eq!(decision.start, decision.desired.as_deref() == Some("running") || decision.record_running);
    let _ = crate::core::reconcile::decide(parsed.as_ref().map_err(String::as_str), None);
    if let Ok(object) = &parsed {
        for value in object.values() {
            if let Some(text) = value.as_str() {
                let _ = crate::core::reconcile::parse_timestamp_ms(text);
            }
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::core::reconcile::parse_timestamp_ms(text);
    }
}

/// The control-line parser: whatever it accepts, serializes back to a line it accepts the
/// same way (what the client sends, the server reads).
pub fn control_line(data: &[u8]) {
    if let Ok(request) = parse_request(data) {
        let again = serde_json::to_vec(&request).expect("a parsed request serializes");
        assert_eq!(parse_request(&again).as_ref(), Ok(&request), "round trip");
    }
    if let Ok(reply) = serde_json::from_slice::<Reply>(data) {
        let _ = reply.to_line();
    }
}

fn sample_document() -> HealthDoc {
    let slot = SlotStatus {
        slot: "a".into(),
        path: "/run/service/a".into(),
        loaded_at: 0,
        state: StateName::Up,
        wanted: Wanted::Up,
        pid: Some(7),
        since: 0.0,
        ready: true,
        restarts: 0,
        last_exit: None,
        failure: None,
        gateway: None,
        checks: Vec::new(),
    };
    HealthDoc {
        status: HealthStatus::Healthy,
        init: "hermes-init".into(),
        version: "0".into(),
        uptime: 0.0,
        started_at: 0,
        standby: None,
        slots: Slots::new(vec![slot]),
    }
}

/// The health API's request path, as the bytes arrive and once the client has finished:
/// every answer is a whole HTTP/1.1 response.
pub fn http_request(data: &[u8]) {
    for ended in [false, true] {
        let init = crate::reaper::health::InitState { stopping: false, reaped: 0, wakeups: 0 };
        if let Some(response) = crate::reaper::health::respond(data, ended, init, sample_document) {
            assert!(response.starts_with(b"HTTP/1.1 "), "a response");
            assert!(response.windows(4).any(|w| w == b"\r\n\r\n"), "a whole head");
        }
    }
}

/// The slot-directory reader's parsing of setting files: the input is split on `\0` into
/// the contents of `timeout-kill`, `timeout-finish`, `down-signal` and `notification-fd`.
pub fn slot_dir(data: &[u8]) {
    let mut files = BTreeMap::new();
    for (name, content) in crate::reaper::slotdir::SETTING_FILES.iter().zip(data.split(|b| *b == 0)) {
        if !content.is_empty() {
            files.insert(*name, content.to_vec());
        }
    }
    let defaults = SlotSettings::default();
    if let Ok(read) = crate::reaper::slotdir::settings_from(
        Path::new("/run/service/x"),
        &files,
        &defaults,
        data.len().is_multiple_of(2),
        false,
    ) {
        assert!(read.notification_fd.is_none_or(|fd| (3..=1023).contains(&fd)));
        assert!((1..=64).contains(&read.settings.down_signal));
    }
}
