//! The control socket: one JSON object per line in, one JSON object per line out, served
//! from the init's single loop without ever blocking it.
//!
//! Protocol: a request is `{"event": NAME, ...}`; a reply is `{"success": bool, "message":
//! text, "data": ...}`. Events: `slot.start`, `slot.stop`, `slot.restart` (with optional
//! `"wait": "up"|"ready"|"down"` and `"timeout_ms"`), `slot.signal` (`"signal"`),
//! `slot.status` (one `"slot"` or all), `slot.load` (`"path"` or `"slot"`), `slot.unload`
//! (`"remove": true` also deletes the directory; replies once the slot is gone), `scan`,
//! `shutdown`.
//!
//! Invariants: sockets are non-blocking and every client has a deadline, so a client that
//! sends nothing, trickles bytes, never reads, or sends garbage costs at most its buffer
//! and is cut off; only root, the init's own uid and the admin group are served; a bad
//! request gets an error reply and never disturbs other clients or the loop.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::core::slot::State;
use crate::supervisor::Supervisor;
use crate::sys;

/// The longest request line accepted.
pub const MAX_LINE: usize = 64 * 1024;
/// By default, a client that completes no request for this long is disconnected.
pub const DEFAULT_IDLE_LIMIT: Duration = Duration::from_secs(30);
/// The most clients served at once; more are turned away.
pub const MAX_CLIENTS: usize = 256;
/// Default limit of a waiting request.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WaitFor {
    Up,
    Ready,
    Down,
    Gone,
}

#[derive(Debug)]
struct Wait {
    slot: String,
    until: WaitFor,
    deadline: Instant,
}

struct Client {
    stream: UnixStream,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    deadline: Instant,
    wait: Option<Wait>,
    /// Close once the output is flushed and no request waits.
    closing: bool,
    /// The client closed its sending side: stop polling it for input.
    eof: bool,
    /// Refused or cut off: its input is read and dropped until it closes, so that closing
    /// our side never resets the connection before it has read our error reply.
    discard: bool,
    /// Our sending side is shut down.
    shut: bool,
    dead: bool,
}

/// The listening socket and its clients.
pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
    clients: Vec<Client>,
    admin_gid: Option<u32>,
    own_uid: u32,
    idle_limit: Duration,
}

/// What the loop must do after serving the clients.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub shutdown: bool,
}

impl ControlServer {
    /// Binds `<runtime_dir>/control.sock`, mode 0600, or 0660 owned by the admin group.
    pub fn bind(runtime_dir: &Path, admin_gid: Option<u32>, idle_limit: Duration) -> io::Result<ControlServer> {
        std::fs::create_dir_all(runtime_dir)?;
        let path = runtime_dir.join("control.sock");
        // A socket left by an earlier boot is stale (the runtime dir is per container).
        if let Ok(meta) = std::fs::symlink_metadata(&path) {
            use std::os::unix::fs::FileTypeExt;
            if meta.file_type().is_socket() {
                std::fs::remove_file(&path)?;
            } else {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a socket", path.display()),
                ));
            }
        }
        let listener = UnixListener::bind(&path)?;
        listener.set_nonblocking(true)?;
        let mode = match admin_gid {
            Some(gid) => {
                sys::chown_group(&path, gid)?;
                0o660
            }
            None => 0o600,
        };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
        Ok(ControlServer { listener, path, clients: Vec::new(), admin_gid, own_uid: sys::effective_uid(), idle_limit })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The descriptors to poll: the listener, then each client (with write interest when
    /// it has output pending).
    pub fn poll_fds(&self) -> Vec<(BorrowedFd<'_>, bool)> {
        let mut fds = vec![(self.listener.as_fd(), false)];
        fds.extend(self.clients.iter().filter(|c| !c.eof).map(|c| (c.stream.as_fd(), !c.outbuf.is_empty())));
        fds
    }

    /// The nearest client deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.clients.iter().map(|c| c.wait.as_ref().map_or(c.deadline, |w| w.deadline)).min()
    }

    /// Serves what poll reported: `ready` holds (readable, writable) in `poll_fds` order.
    pub fn serve(&mut self, ready: &[(bool, bool)], supervisor: &mut Supervisor, now: Instant) -> Outcome {
        let mut outcome = Outcome::default();
        let polled = self.clients.iter_mut().filter(|c| !c.eof);
        for (client, (readable, writable)) in polled.zip(ready.iter().skip(1)) {
            if *readable {
                client.read_requests(supervisor, now, self.idle_limit, &mut outcome);
            }
            if *writable || !client.outbuf.is_empty() {
                client.flush();
            }
        }
        if ready.first().is_some_and(|(r, _)| *r) {
            self.accept(now);
        }
        outcome
    }

    /// Answers waiting requests whose condition holds or whose time is up, and drops
    /// clients that are done or idle too long.
    pub fn housekeeping(&mut self, supervisor: &Supervisor, now: Instant) {
        for client in &mut self.clients {
            if let Some(wait) = &client.wait {
                if let Some(reply) = wait_result(wait, supervisor, now) {
                    client.wait = None;
                    client.deadline = now + self.idle_limit;
                    client.send(&reply);
                }
            } else if now >= client.deadline {
                client.dead = true;
            }
            if !client.outbuf.is_empty() {
                client.flush();
            }
            if client.closing && client.outbuf.is_empty() && client.wait.is_none() {
                if client.discard && !client.eof {
                    if !client.shut {
                        let _ = client.stream.shutdown(std::net::Shutdown::Write);
                        client.shut = true;
                    }
                } else {
                    client.dead = true;
                }
            }
        }
        self.clients.retain(|c| !c.dead);
    }

    fn accept(&mut self, now: Instant) {
        loop {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!("control socket: accept failed: {e}");
                    return;
                }
            };
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let mut client = Client {
                stream,
                inbuf: Vec::new(),
                outbuf: Vec::new(),
                deadline: now + self.idle_limit,
                wait: None,
                closing: false,
                eof: false,
                discard: false,
                shut: false,
                dead: false,
            };
            if self.clients.len() >= 2 * MAX_CLIENTS {
                continue;
            }
            if self.clients.len() >= MAX_CLIENTS {
                client.refuse(&failure("too many control clients; try again"));
                self.clients.push(client);
                continue;
            }
            match sys::peer_credentials(&client.stream) {
                Ok((pid, uid, gid)) if !self.allowed(pid, uid, gid) => {
                    tracing::warn!(
                        "control socket: refused pid {pid} uid {uid} gid {gid}: not root, not uid {}, not in the admin group",
                        self.own_uid
                    );
                    client.refuse(&failure(
                        "permission denied: only root, the init's user or the admin group may use this socket",
                    ));
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!("control socket: cannot read peer credentials: {e}");
                    client.refuse(&failure("permission denied: peer credentials unavailable"));
                }
            }
            client.flush();
            self.clients.push(client);
        }
    }

    fn allowed(&self, pid: i32, uid: u32, gid: u32) -> bool {
        if uid == 0 || uid == self.own_uid {
            return true;
        }
        let Some(admin) = self.admin_gid else { return false };
        gid == admin || supplementary_groups(pid).contains(&admin)
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn supplementary_groups(pid: i32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|groups| groups.split_whitespace().filter_map(|g| g.parse().ok()).collect())
        .unwrap_or_default()
}

impl Client {
    fn read_requests(
        &mut self,
        supervisor: &mut Supervisor,
        now: Instant,
        idle_limit: Duration,
        outcome: &mut Outcome,
    ) {
        let mut buf = [0u8; 8192];
        if self.discard {
            self.drain_input();
            return;
        }
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    // The client finished sending; answer what is pending, then close.
                    self.closing = true;
                    self.eof = true;
                    break;
                }
                Ok(n) => self.inbuf.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.dead = true;
                    return;
                }
            }
            if self.inbuf.len() > MAX_LINE {
                break;
            }
        }
        while self.wait.is_none() && !self.dead {
            let Some(end) = self.inbuf.iter().position(|b| *b == b'\n') else { break };
            let line: Vec<u8> = self.inbuf.drain(..=end).collect();
            self.deadline = now + idle_limit;
            match handle(&line[..line.len() - 1], supervisor, now) {
                Handled::Reply(reply) => self.send(&reply),
                Handled::Wait(wait) => {
                    if let Some(reply) = wait_result(&wait, supervisor, now) {
                        self.send(&reply);
                    } else {
                        self.wait = Some(wait);
                    }
                }
                Handled::Shutdown(reply) => {
                    self.send(&reply);
                    outcome.shutdown = true;
                }
            }
        }
        if self.inbuf.len() > MAX_LINE {
            self.inbuf.clear();
            self.refuse(&failure(&format!("request line longer than {MAX_LINE} bytes")));
        }
    }

    /// Sends a last error reply; from then on input is dropped until the client closes.
    fn refuse(&mut self, reply: &Value) {
        self.send(reply);
        self.discard = true;
        self.closing = true;
        self.wait = None;
        self.flush();
    }

    fn drain_input(&mut self) {
        let mut buf = [0u8; 8192];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    self.eof = true;
                    return;
                }
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.dead = true;
                    return;
                }
            }
        }
    }

    fn send(&mut self, reply: &Value) {
        if let Ok(mut line) = serde_json::to_vec(reply) {
            line.push(b'\n');
            self.outbuf.extend_from_slice(&line);
        }
    }

    fn flush(&mut self) {
        if write_pending(&mut self.stream, &mut self.outbuf).is_err() {
            self.dead = true;
        }
    }
}

/// Writes as much of `pending` as the non-blocking `writer` takes now, removing what was
/// written. An error means the peer is gone.
pub fn write_pending(writer: &mut impl Write, pending: &mut Vec<u8>) -> io::Result<()> {
    while !pending.is_empty() {
        match writer.write(pending) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                pending.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

enum Handled {
    Reply(Value),
    Wait(Wait),
    Shutdown(Value),
}

fn success(message: impl Into<String>, data: Value) -> Value {
    json!({"success": true, "message": message.into(), "data": data})
}

fn failure(message: &str) -> Value {
    json!({"success": false, "message": message, "data": null})
}

/// Parses and carries out one request line.
fn handle(line: &[u8], supervisor: &mut Supervisor, now: Instant) -> Handled {
    let request: Value = match serde_json::from_slice(line) {
        Ok(value) => value,
        Err(e) => return Handled::Reply(failure(&format!("not valid JSON: {e}"))),
    };
    let Some(object) = request.as_object() else {
        return Handled::Reply(failure("a request must be a JSON object"));
    };
    let Some(event) = object.get("event").and_then(Value::as_str) else {
        return Handled::Reply(failure("missing \"event\" (a string)"));
    };
    let slot = object.get("slot").and_then(Value::as_str);
    let need_slot = || slot.ok_or_else(|| format!("{event}: missing \"slot\" (a string)"));
    let timeout = match object.get("timeout_ms") {
        None => DEFAULT_WAIT,
        Some(v) => match v.as_u64() {
            Some(ms) => Duration::from_millis(ms.min(24 * 3600 * 1000)),
            None => return Handled::Reply(failure("\"timeout_ms\" must be a whole number of milliseconds")),
        },
    };
    let wait = match object.get("wait").map(|w| w.as_str()) {
        None => None,
        Some(Some("up")) => Some(WaitFor::Up),
        Some(Some("ready")) => Some(WaitFor::Ready),
        Some(Some("down")) => Some(WaitFor::Down),
        Some(_) => return Handled::Reply(failure("\"wait\" must be \"up\", \"ready\" or \"down\"")),
    };
    let result: Result<Handled, String> = (|| {
        let done = |slot: &str, message: String| match wait {
            Some(until) => Handled::Wait(Wait { slot: slot.to_string(), until, deadline: now + timeout }),
            None => Handled::Reply(success(message, Value::Null)),
        };
        match event {
            "slot.start" => {
                let slot = need_slot()?;
                supervisor.start(slot, now)?;
                Ok(done(slot, format!("slot {slot}: start requested")))
            }
            "slot.stop" => {
                let slot = need_slot()?;
                supervisor.stop(slot, now)?;
                Ok(done(slot, format!("slot {slot}: stop requested")))
            }
            "slot.restart" => {
                let slot = need_slot()?;
                supervisor.restart(slot, now)?;
                Ok(done(slot, format!("slot {slot}: restart requested")))
            }
            "slot.signal" => {
                let slot = need_slot()?;
                let sig = match object.get("signal") {
                    Some(Value::String(name)) => sys::kill::signal_number(name),
                    Some(Value::Number(n)) => n
                        .as_i64()
                        .and_then(|n| i32::try_from(n).ok())
                        .filter(|n| sys::kill::signal_from_number(*n).is_some()),
                    _ => None,
                }
                .ok_or_else(|| "slot.signal: \"signal\" must be a signal name or number".to_string())?;
                supervisor.signal(slot, sig)?;
                Ok(Handled::Reply(success(format!("slot {slot}: signal {sig} sent"), Value::Null)))
            }
            "slot.status" => match slot {
                Some(slot) => {
                    let status = supervisor.status(slot).ok_or_else(|| format!("no such slot '{slot}'"))?;
                    Ok(Handled::Reply(success(format!("slot {slot}"), json!({"slot": status}))))
                }
                None => {
                    let all = supervisor.status_all();
                    Ok(Handled::Reply(success(format!("{} slots", all.len()), json!({"slots": all}))))
                }
            },
            "slot.load" => {
                let target = object.get("path").and_then(Value::as_str).or(slot).ok_or_else(|| {
                    "slot.load: give \"path\" (a directory) or \"slot\" (a name in the scan dir)".to_string()
                })?;
                let name = supervisor.load(target, now)?;
                Ok(done(&name, format!("slot {name}: loaded")).with_data(json!({"slot": name})))
            }
            "slot.unload" => {
                let slot = need_slot()?;
                let remove = object.get("remove").and_then(Value::as_bool).unwrap_or(false);
                supervisor.unload(slot, remove, now)?;
                Ok(Handled::Wait(Wait { slot: slot.to_string(), until: WaitFor::Gone, deadline: now + timeout }))
            }
            "scan" => {
                let (loaded, unloaded) = supervisor.scan(true, now);
                Ok(Handled::Reply(success(
                    format!("scan: {} loaded, {} unloaded", loaded.len(), unloaded.len()),
                    json!({"loaded": loaded, "unloaded": unloaded}),
                )))
            }
            "shutdown" => Ok(Handled::Shutdown(success("shutting down", Value::Null))),
            other => Err(format!("unknown event '{other}'")),
        }
    })();
    match result {
        Ok(handled) => handled,
        Err(message) => Handled::Reply(failure(&message)),
    }
}

impl Handled {
    fn with_data(self, data: Value) -> Handled {
        match self {
            Handled::Reply(mut reply) => {
                reply["data"] = data;
                Handled::Reply(reply)
            }
            other => other,
        }
    }
}

/// The reply to a waiting request, once its condition holds, fails for good, or times out.
fn wait_result(wait: &Wait, supervisor: &Supervisor, now: Instant) -> Option<Value> {
    let name = &wait.slot;
    let state = supervisor.state(name);
    let reached = match (wait.until, state) {
        (WaitFor::Gone, None) => Some(Ok(format!("slot {name}: unloaded"))),
        (_, None) => Some(Err(format!("slot {name}: unloaded while waiting"))),
        (WaitFor::Up, Some(State::Starting | State::Up)) => Some(Ok(format!("slot {name}: up"))),
        (WaitFor::Ready, Some(State::Up)) => Some(Ok(format!("slot {name}: ready"))),
        (WaitFor::Up | WaitFor::Ready, Some(State::Failed)) => Some(Err(format!("slot {name}: failed"))),
        (WaitFor::Down, Some(State::Down | State::Failed)) => Some(Ok(format!("slot {name}: down"))),
        _ => None,
    };
    let data = supervisor.status(name).map(|s| json!({"slot": s})).unwrap_or(Value::Null);
    match reached {
        Some(Ok(message)) => Some(success(message, data)),
        Some(Err(message)) => Some(json!({"success": false, "message": message, "data": data})),
        None if now >= wait.deadline => Some(json!({
            "success": false,
            "message": format!("slot {name}: timed out waiting for {:?}", wait.until).to_lowercase(),
            "data": data,
        })),
        None => None,
    }
}
