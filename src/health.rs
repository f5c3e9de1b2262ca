//! The health API: HTTP/1.1 `GET` over `$HERMES_INIT_RUNTIME_DIR/health.sock`, and over TCP
//! when `HERMES_INIT_HEALTH_ADDR` is set, served from the init's loop without blocking it.
//!
//! Routes: `/api/health` (`?level=alive` answers 200 while the loop runs; `?level=ready`
//! 200 when healthy, 503 otherwise), `/api/slots`, `/api/slots/<name>`.
//!
//! Invariants: requests are parsed by `httparse`; every connection is non-blocking, has a
//! deadline and a size limit (431 for a head over 8 KiB, 413 for a body), gets one response
//! and is closed; the number of connections is capped; nothing here can stall supervision.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::supervisor::Supervisor;

/// The largest request head accepted.
pub const MAX_HEAD: usize = 8 * 1024;
/// A client must send its request within this time.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// The most connections served at once.
pub const MAX_CONNECTIONS: usize = 512;

enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Stream::Unix(s) => s.as_fd(),
            Stream::Tcp(s) => s.as_fd(),
        }
    }
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Connection {
    stream: Stream,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    deadline: Instant,
    answered: bool,
    dead: bool,
}

/// What the health document needs beyond the slots.
#[derive(Debug, Clone, Copy)]
pub struct InitState {
    pub stopping: bool,
}

/// The listeners and open connections.
pub struct HealthServer {
    unix: UnixListener,
    path: PathBuf,
    tcp: Option<TcpListener>,
    connections: Vec<Connection>,
    started_at: SystemTime,
    started: Instant,
}

impl HealthServer {
    /// Binds `<runtime_dir>/health.sock` (mode 0666: read-only information) and, if given,
    /// the TCP address.
    pub fn bind(runtime_dir: &Path, tcp: Option<&str>) -> io::Result<HealthServer> {
        std::fs::create_dir_all(runtime_dir)?;
        let path = runtime_dir.join("health.sock");
        if let Ok(meta) = std::fs::symlink_metadata(&path) {
            use std::os::unix::fs::FileTypeExt;
            if meta.file_type().is_socket() {
                std::fs::remove_file(&path)?;
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
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?;
        Ok(HealthServer {
            unix,
            path,
            tcp,
            connections: Vec::new(),
            started_at: SystemTime::now(),
            started: Instant::now(),
        })
    }

    /// The descriptors to poll: listeners first, then connections (with write interest
    /// while a response is pending).
    pub fn poll_fds(&self) -> Vec<(BorrowedFd<'_>, bool)> {
        let mut fds = vec![(self.unix.as_fd(), false)];
        if let Some(tcp) = &self.tcp {
            fds.push((tcp.as_fd(), false));
        }
        fds.extend(self.connections.iter().map(|c| (c.stream.fd(), !c.outbuf.is_empty())));
        fds
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.connections.iter().map(|c| c.deadline).min()
    }

    /// Serves what poll reported, in `poll_fds` order.
    pub fn serve(&mut self, ready: &[(bool, bool)], supervisor: &Supervisor, init: InitState, now: Instant) {
        let listeners = if self.tcp.is_some() { 2 } else { 1 };
        let mut fresh = Vec::new();
        if ready.first().is_some_and(|r| r.0) {
            accept_all(|| self.unix.accept().map(|(s, _)| Stream::Unix(s)), &mut fresh);
        }
        if let Some(tcp) = &self.tcp
            && ready.get(1).is_some_and(|r| r.0)
        {
            accept_all(|| tcp.accept().map(|(s, _)| Stream::Tcp(s)), &mut fresh);
        }
        let document = |server: &HealthServer| server.document(supervisor, init, now);
        for i in 0..self.connections.len() {
            let (readable, writable) = ready.get(listeners + i).copied().unwrap_or((false, false));
            if readable && !self.connections[i].answered {
                self.connections[i].read();
                if let Some(response) = respond(&self.connections[i].inbuf, || document(self)) {
                    let c = &mut self.connections[i];
                    c.outbuf = response;
                    c.answered = true;
                }
            }
            if writable || !self.connections[i].outbuf.is_empty() {
                self.connections[i].flush();
            }
        }
        for stream in fresh {
            if self.connections.len() >= MAX_CONNECTIONS {
                continue; // dropped: the client sees a closed connection
            }
            self.connections.push(Connection {
                stream,
                inbuf: Vec::new(),
                outbuf: Vec::new(),
                deadline: now + REQUEST_DEADLINE,
                answered: false,
                dead: false,
            });
        }
        // Done: dead, or answered with the whole response written.
        self.connections.retain(|c| !(c.dead || c.answered && c.outbuf.is_empty()));
    }

    /// Drops connections past their deadline.
    pub fn housekeeping(&mut self, now: Instant) {
        self.connections.retain(|c| now < c.deadline && !c.dead);
    }

    /// The `/api/health` document.
    pub fn document(&self, supervisor: &Supervisor, init: InitState, now: Instant) -> Value {
        let mut details = supervisor.status_all();
        for slot in &mut details {
            add_gateway_fields(slot);
        }
        let healthy = details.iter().all(|s| s["wanted"] != "up" || (s["state"] == "up" && s["ready"] == true));
        let status = if init.stopping {
            "stopping"
        } else if healthy {
            "healthy"
        } else {
            "degraded"
        };
        let names: Vec<Value> = details.iter().map(|s| s["slot"].clone()).collect();
        json!({
            "status": status,
            "init": "hermes-init",
            "version": env!("CARGO_PKG_VERSION"),
            "uptime": now.saturating_duration_since(self.started).as_secs_f64().floor(),
            "started_at": self.started_at.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            "slots": {"loaded": names, "count": details.len(), "details": details},
        })
    }
}

/// For a gateway slot: its profile and the states saved in the profile.
fn add_gateway_fields(slot: &mut Value) {
    let Some(profile) = slot["slot"].as_str().and_then(|n| n.strip_prefix("gateway-")).map(str::to_string) else {
        return;
    };
    let dir = crate::profile::slot_profile_dir(Path::new(slot["path"].as_str().unwrap_or("")));
    let state = dir.map(|d| crate::profile::read_state(&d)).and_then(Result::ok).unwrap_or_default();
    slot["profile"] = json!(profile);
    slot["desired_state"] = state.get("desired_state").cloned().unwrap_or(Value::Null);
    slot["gateway_state"] = state.get("gateway_state").cloned().unwrap_or(Value::Null);
}

impl Drop for HealthServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn accept_all(mut accept: impl FnMut() -> io::Result<Stream>, out: &mut Vec<Stream>) {
    for _ in 0..MAX_CONNECTIONS {
        match accept() {
            Ok(stream) => {
                let ok = match &stream {
                    Stream::Unix(s) => s.set_nonblocking(true).is_ok(),
                    Stream::Tcp(s) => s.set_nonblocking(true).is_ok(),
                };
                if ok {
                    out.push(stream);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        }
    }
}

impl Connection {
    fn read(&mut self) {
        let mut buf = [0u8; 4096];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    if self.inbuf.is_empty() {
                        self.dead = true;
                    }
                    return;
                }
                Ok(n) => {
                    self.inbuf.extend_from_slice(&buf[..n]);
                    if self.inbuf.len() > MAX_HEAD + 1 {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.dead = true;
                    return;
                }
            }
        }
    }

    fn flush(&mut self) {
        if crate::control::write_pending(&mut self.stream, &mut self.outbuf).is_err() {
            self.dead = true;
        }
    }
}

/// The response to the bytes received so far, or `None` while the head is incomplete.
pub fn respond(input: &[u8], document: impl FnOnce() -> Value) -> Option<Vec<u8>> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    let head_len = match request.parse(input) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if input.len() > MAX_HEAD => {
            return Some(response(431, &json!({"error": "request head too large"})));
        }
        Ok(httparse::Status::Partial) => return None,
        Err(httparse::Error::TooManyHeaders) => {
            return Some(response(431, &json!({"error": "too many request headers"})));
        }
        Err(e) => return Some(response(400, &json!({"error": format!("malformed request: {e}")}))),
    };
    if head_len > MAX_HEAD {
        return Some(response(431, &json!({"error": "request head too large"})));
    }
    let body_len = request
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .map(|h| std::str::from_utf8(h.value).ok().and_then(|v| v.trim().parse::<u64>().ok()));
    match body_len {
        Some(None) => return Some(response(400, &json!({"error": "bad Content-Length"}))),
        Some(Some(n)) if n > 0 => return Some(response(413, &json!({"error": "request bodies are not accepted"}))),
        _ => {}
    }
    if request.headers.iter().any(|h| h.name.eq_ignore_ascii_case("transfer-encoding")) {
        return Some(response(413, &json!({"error": "request bodies are not accepted"})));
    }
    let method = request.method.unwrap_or("");
    let target = request.path.unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return Some(response(405, &json!({"error": format!("method {method} not allowed: use GET")})));
    }
    let reply = match path {
        "/api/health" => {
            let level = query.split('&').find_map(|kv| kv.strip_prefix("level="));
            match level {
                Some("alive") => response(200, &json!({"status": "alive"})),
                Some("ready") => {
                    let doc = document();
                    let code = if doc["status"] == "healthy" { 200 } else { 503 };
                    response(code, &doc)
                }
                None | Some("") => response(200, &document()),
                Some(other) => response(400, &json!({"error": format!("unknown level '{other}': use alive or ready")})),
            }
        }
        "/api/slots" => response(200, &document()["slots"]["details"]),
        _ => match path.strip_prefix("/api/slots/") {
            Some(name) => {
                let doc = document();
                match doc["slots"]["details"].as_array().and_then(|d| d.iter().find(|s| s["slot"] == name)) {
                    Some(slot) => response(200, slot),
                    None => response(404, &json!({"error": format!("no such slot '{name}'")})),
                }
            }
            None => response(404, &json!({"error": format!("not found: {path}")})),
        },
    };
    if head_only {
        let end = reply.windows(4).position(|w| w == b"\r\n\r\n").map_or(reply.len(), |p| p + 4);
        return Some(reply[..end].to_vec());
    }
    Some(reply)
}

fn response(code: u16, body: &Value) -> Vec<u8> {
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

    fn status_of(input: &[u8]) -> Option<u16> {
        let doc = || json!({"status": "degraded", "slots": {"details": [{"slot": "a"}]}});
        respond(input, doc).map(|r| String::from_utf8_lossy(&r[9..12]).parse().unwrap())
    }

    #[test]
    fn request_table() {
        let big_header = format!("GET /api/health HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000));
        let cases: Vec<(Vec<u8>, Option<u16>)> = vec![
            (b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), Some(200)),
            (b"GET /api/health?level=alive HTTP/1.1\r\n\r\n".to_vec(), Some(200)),
            (b"GET /api/health?level=ready HTTP/1.1\r\n\r\n".to_vec(), Some(503)),
            (b"GET /api/health?level=bogus HTTP/1.1\r\n\r\n".to_vec(), Some(400)),
            (b"GET /api/slots HTTP/1.1\r\n\r\n".to_vec(), Some(200)),
            (b"GET /api/slots/a HTTP/1.1\r\n\r\n".to_vec(), Some(200)),
            (b"GET /api/slots/zz HTTP/1.1\r\n\r\n".to_vec(), Some(404)),
            (b"GET /nope HTTP/1.1\r\n\r\n".to_vec(), Some(404)),
            (b"POST /api/health HTTP/1.1\r\n\r\n".to_vec(), Some(405)),
            (b"DELETE /api/slots/a HTTP/1.1\r\n\r\n".to_vec(), Some(405)),
            (b"GET /api/health HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello".to_vec(), Some(413)),
            (b"GET /api/health HTTP/1.1\r\nContent-Length: x\r\n\r\n".to_vec(), Some(400)),
            (b"GET /api/health HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(), Some(413)),
            (b"\x00\x01garbage\r\n\r\n".to_vec(), Some(400)),
            (b"GET /api/health HTTP/1.1\r\nHost".to_vec(), None),
            (b"GET /api/he".to_vec(), None),
            (big_header.into_bytes(), Some(431)),
            (vec![b'G'; 9000], Some(431)),
        ];
        for (input, want) in cases {
            assert_eq!(status_of(&input), want, "{:?}", String::from_utf8_lossy(&input[..input.len().min(60)]));
        }
    }

    #[test]
    fn head_gets_no_body() {
        let reply = respond(b"HEAD /api/health HTTP/1.1\r\n\r\n", || json!({"status": "healthy"})).unwrap();
        assert!(reply.ends_with(b"\r\n\r\n"));
        assert!(String::from_utf8_lossy(&reply).contains("Content-Length: "));
    }
}
