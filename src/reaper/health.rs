//! The health API: HTTP/1.1 `GET` over `$HERMES_INIT_RUNTIME_DIR/health.sock`, and over TCP
//! when `HERMES_INIT_HEALTH_ADDR` is set, served from the init's loop without blocking it.
//!
//! Routes: `/api/health` (`?level=alive` answers 200 while the loop runs; `?level=ready`
//! 200 when healthy, 503 otherwise), `/api/slots`, `/api/slots/<name>`.
//!
//! Invariants: requests are parsed by `httparse`; every connection is non-blocking, has a
//! deadline and a size limit (431 for a head over 8 KiB, 413 for a body), gets one response
//! and is closed; the number of connections is capped; nothing here can stall supervision.

use std::io;
use std::net::TcpListener;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::proto::health::{Alive, HealthDoc, HealthStatus, HttpError, Slots};
use crate::proto::status::SlotStatus;
use crate::reaper::conn::{Connection, FdReserve, Stream};
use crate::reaper::supervisor::Supervisor;
use crate::sys::Interest;

/// The largest request head accepted.
pub const MAX_HEAD: usize = 8 * 1024;
/// A client must send its request within this time.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// The most connections served at once.
pub const MAX_CONNECTIONS: usize = 512;
/// The most connections one peer (a uid on the unix socket, an address on TCP) may hold:
/// idle connections from one local user cannot starve the HEALTHCHECK.
pub const PER_PEER: usize = 64;
/// Connections kept for root and the init's own user (the HEALTHCHECK, probes by exec)
/// beyond the others' limit.
pub const RESERVED: usize = 32;

/// Who is at the other end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    Uid(u32),
    Address(std::net::IpAddr),
    Unknown,
}

/// What the health document needs beyond the slots.
#[derive(Debug, Clone, Copy)]
pub struct InitState {
    pub stopping: bool,
    /// Processes reaped since the init started.
    pub reaped: u64,
    /// Turns of the event loop since the init started.
    pub wakeups: u64,
}

struct Exchange {
    conn: Connection,
    answered: bool,
    peer: Peer,
}

/// The listeners and open connections.
pub struct HealthServer {
    unix: UnixListener,
    path: PathBuf,
    tcp: Option<TcpListener>,
    exchanges: Vec<Exchange>,
    started_at: SystemTime,
    started: Instant,
    reserve: FdReserve,
    own_uid: u32,
}

/// Which descriptor of `poll_fds` a readiness belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    UnixListener,
    TcpListener,
    Connection(usize),
}

impl HealthServer {
    /// Binds `<runtime_dir>/health.sock` (mode 0666: read-only information) and, if given,
    /// the TCP address.
    pub fn bind(runtime_dir: &Path, tcp: Option<&str>) -> io::Result<HealthServer> {
        fs_err::create_dir_all(runtime_dir)?;
        let path = runtime_dir.join("health.sock");
        if let Ok(meta) = fs_err::symlink_metadata(&path) {
            use std::os::unix::fs::FileTypeExt;
            if meta.file_type().is_socket() {
                fs_err::remove_file(&path)?;
            }
        }
        let tcp = match tcp {
            Some(addr) => {
                let listener = TcpListener::bind(addr)
                    .map_err(|e| io::Error::new(e.kind(), format!("HERMES_INIT_HEALTH_ADDR {addr}: {e}")))?;
                listener.set_nonblocking(true)?;
                Some(listener)
            }
            None => None,
        };
        // The unix socket last: once it answers, the TCP listener does too.
        let unix = UnixListener::bind(&path)?;
        unix.set_nonblocking(true)?;
        fs_err::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?;
        Ok(HealthServer {
            unix,
            path,
            tcp,
            exchanges: Vec::new(),
            started_at: SystemTime::now(),
            started: Instant::now(),
            reserve: FdReserve::default(),
            own_uid: crate::sys::effective_uid(),
        })
    }

    /// The descriptors to poll: the listeners, then each connection that waits for its
    /// request or has a response to write.
    pub fn poll_fds(&self) -> Vec<(Source, BorrowedFd<'_>, Interest)> {
        let mut fds = vec![(Source::UnixListener, self.unix.as_fd(), Interest::READ)];
        if let Some(tcp) = &self.tcp {
            fds.push((Source::TcpListener, tcp.as_fd(), Interest::READ));
        }
        for (i, exchange) in self.exchanges.iter().enumerate() {
            if let Some((fd, interest)) = exchange.conn.interest(!exchange.answered) {
                fds.push((Source::Connection(i), fd, interest));
            }
        }
        fds
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.exchanges.iter().map(|e| e.conn.deadline).min()
    }

    /// Serves what poll reported for the descriptors of `poll_fds`.
    pub fn serve(&mut self, ready: &[(Source, bool, bool)], supervisor: &Supervisor, init: InitState, now: Instant) {
        let mut fresh = Vec::new();
        for &(source, readable, writable) in ready {
            match source {
                Source::UnixListener if readable => {
                    let unix = &self.unix;
                    accept_all(&mut self.reserve, || unix.accept().map(|(s, _)| Stream::Unix(s)), &mut fresh)
                }
                Source::TcpListener if readable => {
                    if let Some(tcp) = &self.tcp {
                        accept_all(&mut self.reserve, || tcp.accept().map(|(s, _)| Stream::Tcp(s)), &mut fresh);
                    }
                }
                Source::Connection(i) => {
                    let Some(exchange) = self.exchanges.get(i) else { continue };
                    if readable && !exchange.answered {
                        self.exchanges[i].conn.receive(MAX_HEAD);
                        let conn = &self.exchanges[i].conn;
                        let response = respond(&conn.input, conn.eof, init, || self.document(supervisor, init, now));
                        let exchange = &mut self.exchanges[i];
                        match response {
                            Some(response) => {
                                exchange.answered = true;
                                exchange.conn.send(&response);
                            }
                            // Closed before sending anything: nothing to answer.
                            None if exchange.conn.eof => exchange.conn.dead = true,
                            None => {}
                        }
                    }
                    if writable {
                        self.exchanges[i].conn.flush();
                    }
                }
                _ => {}
            }
        }
        for stream in fresh {
            let peer = match &stream {
                Stream::Unix(s) => crate::sys::peer_credentials(s).map_or(Peer::Unknown, |(_, uid, _)| Peer::Uid(uid)),
                Stream::Tcp(s) => s.peer_addr().map_or(Peer::Unknown, |a| Peer::Address(a.ip())),
            };
            let privileged = matches!(peer, Peer::Uid(uid) if uid == 0 || uid == self.own_uid);
            let limit = if privileged { MAX_CONNECTIONS + RESERVED } else { MAX_CONNECTIONS };
            let same_peer = self.exchanges.iter().filter(|e| e.peer == peer).count();
            if self.exchanges.len() >= limit || (!privileged && same_peer >= PER_PEER) {
                continue; // dropped: the client sees a closed connection
            }
            if let Ok(conn) = Connection::new(stream, now + REQUEST_DEADLINE) {
                self.exchanges.push(Exchange { conn, answered: false, peer });
            }
        }
        // Done: dead, or answered with the whole response written.
        self.exchanges.retain(|e| !(e.conn.dead || e.answered && !e.conn.pending_output()));
    }

    /// Drops connections past their deadline.
    pub fn housekeeping(&mut self, now: Instant) {
        self.exchanges.retain(|e| now < e.conn.deadline && !e.conn.dead);
    }

    /// The `/api/health` document, computed from the slot table.
    pub fn document(&self, supervisor: &Supervisor, init: InitState, now: Instant) -> HealthDoc {
        let details: Vec<SlotStatus> = supervisor.status_all();
        let status = if init.stopping {
            HealthStatus::Stopping
        } else if supervisor.all_wanted_ready() {
            HealthStatus::Healthy
        } else {
            HealthStatus::Degraded
        };
        HealthDoc {
            status,
            init: "hermes-init".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            uptime: now.saturating_duration_since(self.started).as_secs_f64().floor(),
            started_at: self.started_at.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            standby: supervisor.standby().map(|who| format!("the volume is held by another container: {who}")),
            slots: Slots::new(details),
        }
    }
}

impl Drop for HealthServer {
    fn drop(&mut self) {
        let _ = fs_err::remove_file(&self.path);
    }
}

fn accept_all(reserve: &mut FdReserve, mut accept: impl FnMut() -> io::Result<Stream>, out: &mut Vec<Stream>) {
    for _ in 0..MAX_CONNECTIONS {
        match accept() {
            Ok(stream) => {
                reserve.recovered("health API");
                out.push(stream);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) => {
                if !reserve.on_accept_error("health API", &e, || accept().is_ok()) {
                    return;
                }
            }
        }
    }
}

fn error(code: u16, message: impl Into<String>) -> Vec<u8> {
    response(code, &HttpError { error: message.into() })
}

/// The response to the bytes received so far, or `None` while the head is incomplete and
/// the client may still send the rest (`ended`: it has shut down its sending side).
pub fn respond(input: &[u8], ended: bool, init: InitState, document: impl FnOnce() -> HealthDoc) -> Option<Vec<u8>> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    let head_len = match request.parse(input) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if input.len() > MAX_HEAD => return Some(error(431, "request head too large")),
        Ok(httparse::Status::Partial) if ended && !input.is_empty() => {
            return Some(error(400, "the request ended before its head was complete"));
        }
        Ok(httparse::Status::Partial) => return None,
        Err(httparse::Error::TooManyHeaders) => return Some(error(431, "too many request headers")),
        Err(e) => return Some(error(400, format!("malformed request: {e}"))),
    };
    if head_len > MAX_HEAD {
        return Some(error(431, "request head too large"));
    }
    let lengths: Vec<Option<u64>> = request
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-length"))
        .map(|h| std::str::from_utf8(h.value).ok().and_then(|v| v.trim().parse::<u64>().ok()))
        .collect();
    match lengths[..] {
        [] | [Some(0)] => {}
        [None] => return Some(error(400, "bad Content-Length")),
        [Some(_)] => return Some(error(413, "request bodies are not accepted")),
        // RFC 9112, section 6.3: more than one length is an unrecoverable error.
        _ => return Some(error(400, "more than one Content-Length")),
    }
    if request.headers.iter().any(|h| h.name.eq_ignore_ascii_case("transfer-encoding")) {
        return Some(error(413, "request bodies are not accepted"));
    }
    let method = request.method.unwrap_or("");
    let target = request.path.unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return Some(error(405, format!("method {method} not allowed: use GET")));
    }
    let reply = match path {
        "/api/health" => {
            let level = query.split('&').find_map(|kv| kv.strip_prefix("level="));
            match level {
                Some("alive") => response(200, &Alive { status: "alive".into() }),
                Some("ready") => {
                    let doc = document();
                    let code = if doc.status == HealthStatus::Healthy { 200 } else { 503 };
                    response(code, &doc)
                }
                None | Some("") => response(200, &document()),
                Some(other) => error(400, format!("unknown level '{other}': use alive or ready")),
            }
        }
        "/api/slots" => response(200, &document().slots.details),
        "/metrics" => text_response(metrics(&document(), init)),
        _ => match path.strip_prefix("/api/slots/") {
            Some(name) => match document().slots.details.remove(name) {
                Some(slot) => response(200, &slot),
                None => error(404, format!("no such slot '{name}'")),
            },
            None => error(404, format!("not found: {path}")),
        },
    };
    if head_only {
        let end = reply.windows(4).position(|w| w == b"\r\n\r\n").map_or(reply.len(), |p| p + 4);
        return Some(reply[..end].to_vec());
    }
    Some(reply)
}

/// The Prometheus text exposition format (version 0.0.4) of the slot table and the init's
/// counters. Slot names are validated (`[a-z0-9_.-]`), so they need no escaping.
pub fn metrics(doc: &HealthDoc, init: InitState) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, String)>| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, value) in samples {
            out.push_str(&format!("{name}{labels} {value}\n"));
        }
    };
    let per_slot = |value: &dyn Fn(&SlotStatus) -> String| -> Vec<(String, String)> {
        doc.slots.details.values().map(|s| (format!("{{slot=\"{}\"}}", s.slot), value(s))).collect()
    };
    family(
        "hermes_init_build_info",
        "gauge",
        "The running hermes-init.",
        vec![(format!("{{version=\"{}\"}}", doc.version), "1".into())],
    );
    family(
        "hermes_init_healthy",
        "gauge",
        "1 when every slot wanted up is up and ready.",
        vec![(String::new(), u8::from(doc.status == HealthStatus::Healthy).to_string())],
    );
    family("hermes_init_slots", "gauge", "Slots loaded.", vec![(String::new(), doc.slots.count.to_string())]);
    family(
        "hermes_init_slot_state",
        "gauge",
        "1 for the state each slot is in.",
        doc.slots
            .details
            .values()
            .map(|s| (format!("{{slot=\"{}\",state=\"{}\"}}", s.slot, s.state.as_str()), "1".into()))
            .collect(),
    );
    family(
        "hermes_init_slot_up",
        "gauge",
        "1 while the slot's service runs.",
        per_slot(&|s| u8::from(s.pid.is_some()).to_string()),
    );
    family(
        "hermes_init_slot_ready",
        "gauge",
        "1 when the slot is ready.",
        per_slot(&|s| u8::from(s.ready).to_string()),
    );
    family(
        "hermes_init_slot_restarts_total",
        "counter",
        "Restarts of the slot after a death.",
        per_slot(&|s| s.restarts.to_string()),
    );
    family(
        "hermes_init_slot_check_failures",
        "gauge",
        "Consecutive failures of the slot's checks, summed (0 without checks).",
        per_slot(&|s| s.checks.iter().map(|c| u64::from(c.failures)).sum::<u64>().to_string()),
    );
    family(
        "hermes_init_slot_last_exit_code",
        "gauge",
        "How the slot's service last ended, as a shell reports it (128+N for signal N; -1: never).",
        per_slot(&|s| match s.last_exit {
            Some(crate::proto::status::LastExit::Code(c)) => c.to_string(),
            Some(crate::proto::status::LastExit::Signal(n)) => (128 + n).to_string(),
            None => "-1".into(),
        }),
    );
    family(
        "hermes_init_reaped_total",
        "counter",
        "Processes reaped since the init started.",
        vec![(String::new(), init.reaped.to_string())],
    );
    family(
        "hermes_init_loop_wakeups_total",
        "counter",
        "Turns of the init's event loop since it started.",
        vec![(String::new(), init.wakeups.to_string())],
    );
    family(
        "hermes_init_output_lines_dropped_total",
        "counter",
        "Lines of output dropped because the log reader was too slow.",
        vec![(String::new(), crate::reaper::sink::dropped_total().to_string())],
    );
    family(
        "hermes_init_uptime_seconds",
        "gauge",
        "Seconds since the init started.",
        vec![(String::new(), doc.uptime.to_string())],
    );
    out
}

fn text_response(body: String) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

fn response(code: u16, body: &impl Serialize) -> Vec<u8> {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let mut text = serde_json::to_string_pretty(body).unwrap_or_else(|_| "{}".into());
    text.push('\n');
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{}\r\n",
        text.len(),
        if code == 405 { "Allow: GET, HEAD\r\n" } else { "" }
    )
    .into_bytes();
    out.extend_from_slice(text.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::slot::StateName;
    use crate::proto::status::Wanted;

    fn doc() -> HealthDoc {
        let slot = SlotStatus {
            slot: "a".into(),
            path: "/run/service/a".into(),
            loaded_at: 0,
            state: StateName::Down,
            wanted: Wanted::Up,
            pid: None,
            since: 0.0,
            ready: false,
            restarts: 0,
            last_exit: None,
            failure: None,
            gateway: None,
            checks: Vec::new(),
        };
        HealthDoc {
            status: HealthStatus::Degraded,
            init: "hermes-init".into(),
            version: "0".into(),
            uptime: 0.0,
            started_at: 0,
            standby: None,
            slots: Slots::new(vec![slot]),
        }
    }

    fn status_of(input: &[u8], ended: bool) -> Option<u16> {
        respond(input, ended, InitState { stopping: false, reaped: 0, wakeups: 0 }, doc)
            .map(|r| String::from_utf8_lossy(&r[9..12]).parse().unwrap())
    }

    #[test]
    fn request_table() {
        let big_header = format!("GET /api/health HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000));
        // (request bytes, the client has finished sending, status)
        let cases: Vec<(Vec<u8>, bool, Option<u16>)> = vec![
            (b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), false, Some(200)),
            (b"GET /api/health?level=alive HTTP/1.1\r\n\r\n".to_vec(), false, Some(200)),
            (b"GET /api/health?level=ready HTTP/1.1\r\n\r\n".to_vec(), false, Some(503)),
            (b"GET /api/health?level=bogus HTTP/1.1\r\n\r\n".to_vec(), false, Some(400)),
            (b"GET /api/slots HTTP/1.1\r\n\r\n".to_vec(), false, Some(200)),
            (b"GET /api/slots/a HTTP/1.1\r\n\r\n".to_vec(), false, Some(200)),
            (b"GET /api/slots/zz HTTP/1.1\r\n\r\n".to_vec(), false, Some(404)),
            (b"GET /nope HTTP/1.1\r\n\r\n".to_vec(), false, Some(404)),
            (b"GET /metrics HTTP/1.1\r\n\r\n".to_vec(), false, Some(200)),
            (b"POST /api/health HTTP/1.1\r\n\r\n".to_vec(), false, Some(405)),
            (b"DELETE /api/slots/a HTTP/1.1\r\n\r\n".to_vec(), false, Some(405)),
            (b"GET /api/health HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello".to_vec(), false, Some(413)),
            (b"GET /api/health HTTP/1.1\r\nContent-Length: x\r\n\r\n".to_vec(), false, Some(400)),
            (b"GET /api/health HTTP/1.1\r\nContent-Length: 0\r\n\r\n".to_vec(), false, Some(200)),
            (b"GET /api/health HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n".to_vec(), false, Some(400)),
            (b"GET /api/health HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(), false, Some(413)),
            (b"\x00\x01garbage\r\n\r\n".to_vec(), false, Some(400)),
            (b"GET /api/health HTTP/1.1\r\nHost".to_vec(), false, None),
            (b"GET /api/he".to_vec(), false, None),
            (b"GET /api/he".to_vec(), true, Some(400)),
            (b"".to_vec(), true, None),
            (big_header.into_bytes(), false, Some(431)),
            (vec![b'G'; 9000], false, Some(431)),
        ];
        for (input, ended, want) in cases {
            assert_eq!(
                status_of(&input, ended),
                want,
                "{:?} ended={ended}",
                String::from_utf8_lossy(&input[..input.len().min(60)])
            );
        }
    }

    #[test]
    fn head_gets_no_body() {
        let reply = respond(
            b"HEAD /api/health HTTP/1.1\r\n\r\n",
            false,
            InitState { stopping: false, reaped: 0, wakeups: 0 },
            doc,
        )
        .unwrap();
        assert!(reply.ends_with(b"\r\n\r\n"));
        assert!(String::from_utf8_lossy(&reply).contains("Content-Length: "));
    }
}
