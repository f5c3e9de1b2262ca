//! `hermesctl health`: asks the health API over its unix socket, for HEALTHCHECK and
//! Kubernetes exec probes.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use super::client::{CtlError, unreachable};
use super::{Flags, Globals};
use crate::core::exit::code;
use crate::proto::health::{HealthDoc, HealthStatus};

/// `health [--json] [--level alive|ready]`: 0 healthy at that level, 1 not, 111 when no
/// reaper answers.
pub fn health(globals: &Globals, words: &[String], flags: &Flags) -> Result<i32, CtlError> {
    if !words.is_empty() {
        return Err(CtlError::usage("usage: hermesctl health [--json] [--level alive|ready]"));
    }
    let level = flags.level.as_deref();
    if !matches!(level, None | Some("alive") | Some("ready")) {
        return Err(CtlError::usage("--level must be alive or ready"));
    }
    let socket = globals.health_socket.clone().unwrap_or_else(|| globals.socket.with_file_name("health.sock"));
    let fail = |e: std::io::Error| unreachable("no health answer from", &socket, &e);
    let mut stream = UnixStream::connect(&socket).map_err(fail)?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(fail)?;
    let query = level.map(|l| format!("?level={l}")).unwrap_or_default();
    write!(stream, "GET /api/health{query} HTTP/1.1\r\nHost: hermes-init\r\nConnection: close\r\n\r\n")
        .map_err(fail)?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(fail)?;
    let status: u16 = response
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| CtlError::System(format!("unreadable health answer from {}", socket.display())))?;
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let doc = serde_json::from_str::<HealthDoc>(body).ok();
    let ok = match level {
        Some(_) => status == 200,
        None => doc.as_ref().is_some_and(|d| d.status == HealthStatus::Healthy),
    };
    if flags.json {
        println!("{}", body.trim_end());
    } else if level == Some("alive") {
        println!("{}", if ok { "alive" } else { "not alive" });
    } else {
        let doc =
            doc.ok_or_else(|| CtlError::System(format!("unreadable health document from {}", socket.display())))?;
        let details = &doc.slots.details;
        let up = details.values().filter(|s| s.ready).count();
        println!(
            "hermes-init {}: {}, uptime {}s, {} slots ({up} up)",
            doc.version,
            doc.status.as_str(),
            doc.uptime,
            details.len()
        );
        if let Some(standby) = &doc.standby {
            println!("  {standby}");
        }
        for slot in details.values().filter(|s| s.lagging()) {
            println!("  not ready: {} ({})", slot.slot, slot.state.as_str());
        }
    }
    Ok(if ok { code::OK } else { code::NEGATIVE })
}
