//! The control socket: one JSON request per line in, one JSON reply per line out (the types
//! of `proto::control`), served from the init's single loop without ever blocking it.
//!
//! Invariants: every client is a non-blocking `Connection` with a deadline, so a client that
//! sends nothing, trickles bytes, never reads, half-closes or sends garbage costs at most
//! its buffer and is cut off; only root, the init's own uid and the admin group are served;
//! a bad request gets an error reply and never disturbs other clients or the loop.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::core::slot::{Event, StateName};
use crate::proto::control::{ErrorKind, MAX_LINE, Reply, ReplyData, Request, Wait, WaitFor, parse_request};
use crate::reaper::conn::{Connection, FdReserve, Stream};
use crate::reaper::supervisor::{Supervisor, SupervisorError};
use crate::sys::{self, Interest};

/// By default, a client that completes no request for this long is disconnected.
pub const DEFAULT_IDLE_LIMIT: Duration = Duration::from_secs(30);
/// The most clients served at once; more are turned away.
pub const MAX_CLIENTS: usize = 256;

/// What a waiting request waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Until {
    State(WaitFor),
    Gone,
}

#[derive(Debug)]
struct Pending {
    slot: String,
    until: Until,
    deadline: Instant,
}

struct Client {
    conn: Connection,
    /// A request waiting for a slot's state before its reply.
    pending: Option<Pending>,
    /// Refused or cut off: its input is dropped until it closes, so that closing our side
    /// never resets the connection before it has read our error reply.
    refused: bool,
}

impl Client {
    fn done(&self) -> bool {
        self.conn.dead || (self.conn.eof && self.pending.is_none() && !self.conn.pending_output())
    }
}

/// The listening socket and its clients.
pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
    clients: Vec<Client>,
    admin_gid: Option<u32>,
    own_uid: u32,
    idle_limit: Duration,
    reserve: FdReserve,
}

/// What the loop must do after serving the clients.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub shutdown: bool,
}

impl ControlServer {
    /// Binds `<runtime_dir>/control.sock`, mode 0600, or 0660 owned by the admin group.
    pub fn bind(runtime_dir: &Path, admin_gid: Option<u32>, idle_limit: Duration) -> io::Result<ControlServer> {
        fs_err::create_dir_all(runtime_dir)?;
        let path = runtime_dir.join("control.sock");
        // A socket left by an earlier boot is stale (the runtime dir is per container).
        if let Ok(meta) = fs_err::symlink_metadata(&path) {
            use std::os::unix::fs::FileTypeExt;
            if meta.file_type().is_socket() {
                fs_err::remove_file(&path)?;
            } else {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a socket", path.display()),
                ));
            }
        }
        let listener = UnixListener::bind(&path)?;
        listener.set_nonblocking(true)?;
        let admin_gid = match admin_gid.map(|gid| (gid, sys::chown_group(&path, gid))) {
            Some((gid, Ok(()))) => Some(gid),
            Some((gid, Err(e))) => {
                // Not root and not in that group: the socket stays the init's own uid's.
                tracing::warn!(
                    "cannot give the control socket to the admin group (gid {gid}): {e}; only root and uid {} may use it",
                    sys::effective_uid()
                );
                None
            }
            None => None,
        };
        let mode = if admin_gid.is_some() { 0o660 } else { 0o600 };
        fs_err::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
        Ok(ControlServer {
            listener,
            path,
            clients: Vec::new(),
            admin_gid,
            own_uid: sys::effective_uid(),
            idle_limit,
            reserve: FdReserve::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Looks the admin group up again (a boot hook may have changed its gid) and gives the
    /// socket to it.
    pub fn refresh_admin_group(&mut self, group: &str) {
        match sys::group_id(group) {
            Ok(gid) if Some(gid) != self.admin_gid => match sys::chown_group(&self.path, gid) {
                Ok(()) => {
                    let _ = std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o660));
                    tracing::info!("control socket: admin group {group} is now gid {gid}");
                    self.admin_gid = Some(gid);
                }
                Err(e) => tracing::warn!("control socket: cannot give it to group {group} (gid {gid}): {e}"),
            },
            Ok(_) => {}
            Err(e) => tracing::warn!("HERMES_INIT_ADMIN_GROUP: {e}"),
        }
    }

    /// The descriptors to poll, each with its index for `serve`: the listener is `None`,
    /// a client is `Some(i)`.
    pub fn poll_fds(&self) -> Vec<(Option<usize>, BorrowedFd<'_>, Interest)> {
        let mut fds = vec![(None, self.listener.as_fd(), Interest::READ)];
        for (i, client) in self.clients.iter().enumerate() {
            // Input is read while no request waits (the next line waits in the socket).
            if let Some((fd, interest)) = client.conn.interest(client.pending.is_none() || client.refused) {
                fds.push((Some(i), fd, interest));
            }
        }
        fds
    }

    /// The nearest client deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.clients.iter().map(|c| c.pending.as_ref().map_or(c.conn.deadline, |p| p.deadline)).min()
    }

    /// Serves what poll reported for the descriptors of `poll_fds`.
    pub fn serve(
        &mut self,
        ready: &[(Option<usize>, bool, bool)],
        supervisor: &mut Supervisor,
        now: Instant,
    ) -> Outcome {
        let mut outcome = Outcome::default();
        let mut accept = false;
        for &(index, readable, writable) in ready {
            let Some(i) = index else {
                accept |= readable;
                continue;
            };
            let Some(client) = self.clients.get_mut(i) else { continue };
            if readable {
                if client.refused {
                    client.conn.discard();
                } else {
                    client.conn.receive(MAX_LINE);
                    client.serve_lines(supervisor, now, self.idle_limit, &mut outcome);
                }
            }
            if writable {
                client.conn.flush();
            }
        }
        if accept {
            self.accept(now);
        }
        outcome
    }

    /// Answers waiting requests whose condition holds or whose time is up, and drops
    /// clients that are done or idle too long.
    pub fn housekeeping(&mut self, supervisor: &Supervisor, now: Instant) {
        for client in &mut self.clients {
            if let Some(pending) = &client.pending {
                if let Some(reply) = wait_result(pending, supervisor, now) {
                    client.pending = None;
                    client.conn.deadline = now + self.idle_limit;
                    client.conn.send(&reply.to_line());
                }
            } else if now >= client.conn.deadline {
                client.conn.dead = true;
            }
            if client.refused && !client.conn.pending_output() {
                client.conn.shut_write();
            }
            if client.conn.eof && client.pending.is_none() && !client.conn.pending_output() {
                client.conn.dead = true;
            }
        }
        self.clients.retain(|c| !c.done());
    }

    fn accept(&mut self, now: Instant) {
        loop {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => {
                    self.reserve.recovered("control socket");
                    stream
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let listener = &self.listener;
                    if self.reserve.on_accept_error("control socket", &e, || listener.accept().is_ok()) {
                        continue;
                    }
                    return;
                }
            };
            if self.clients.len() >= 2 * MAX_CLIENTS {
                continue;
            }
            let Ok(conn) = Connection::new(Stream::Unix(stream), now + self.idle_limit) else { continue };
            let mut client = Client { conn, pending: None, refused: false };
            if self.clients.len() >= MAX_CLIENTS {
                client.refuse(&Reply::fail(ErrorKind::Refused, "too many control clients; try again"));
                self.clients.push(client);
                continue;
            }
            let credentials = client.conn.stream().unix().map(sys::peer_credentials);
            match credentials {
                Some(Ok((pid, uid, gid))) if !self.allowed(pid, uid, gid) => {
                    tracing::warn!(
                        "control socket: refused pid {pid} uid {uid} gid {gid}: not root, not uid {}, not in the admin group",
                        self.own_uid
                    );
                    client.refuse(&Reply::fail(
                        ErrorKind::Refused,
                        "permission denied: only root, the init's user or the admin group may use this socket",
                    ));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::warn!("control socket: cannot read peer credentials: {e}");
                    client.refuse(&Reply::fail(ErrorKind::Refused, "permission denied: peer credentials unavailable"));
                }
                None => client.refuse(&Reply::fail(ErrorKind::Refused, "not a unix socket peer")),
            }
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
        let _ = fs_err::remove_file(&self.path);
    }
}

fn supplementary_groups(pid: i32) -> Vec<u32> {
    fs_err::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|groups| groups.split_whitespace().filter_map(|g| g.parse().ok()).collect())
        .unwrap_or_default()
}

impl Client {
    /// Answers every complete line received, one at a time: a waiting request holds the
    /// lines after it until its reply is sent.
    fn serve_lines(&mut self, supervisor: &mut Supervisor, now: Instant, idle_limit: Duration, outcome: &mut Outcome) {
        while self.pending.is_none() && !self.conn.dead {
            let Some(end) = self.conn.input.iter().position(|b| *b == b'\n') else { break };
            let line: Vec<u8> = self.conn.input.drain(..=end).collect();
            self.conn.deadline = now + idle_limit;
            match handle(&line[..line.len() - 1], supervisor, now) {
                Handled::Reply(reply) => self.conn.send(&reply.to_line()),
                Handled::Wait(pending) => match wait_result(&pending, supervisor, now) {
                    Some(reply) => self.conn.send(&reply.to_line()),
                    None => self.pending = Some(pending),
                },
                Handled::Shutdown(reply) => {
                    self.conn.send(&reply.to_line());
                    outcome.shutdown = true;
                }
            }
        }
        if self.conn.input.len() > MAX_LINE {
            self.conn.input.clear();
            self.refuse(&Reply::fail(ErrorKind::BadRequest, format!("request line longer than {MAX_LINE} bytes")));
        }
    }

    /// Sends a last error reply; from then on input is dropped until the client closes.
    fn refuse(&mut self, reply: &Reply) {
        self.conn.send(&reply.to_line());
        self.refused = true;
        self.pending = None;
    }
}

enum Handled {
    Reply(Reply),
    Wait(Pending),
    Shutdown(Reply),
}

fn refused(error: SupervisorError) -> Reply {
    let kind = match error {
        SupervisorError::NoSuchSlot(_) => ErrorKind::NoSuchSlot,
        SupervisorError::AlreadyLoaded(_)
        | SupervisorError::NotRunning(_)
        | SupervisorError::ShuttingDown
        | SupervisorError::Standby(_) => ErrorKind::Conflict,
        SupervisorError::BadSlot(_) => ErrorKind::BadRequest,
        SupervisorError::System(_) => ErrorKind::System,
    };
    Reply::fail(kind, error.to_string())
}

/// Parses and carries out one request line.
fn handle(line: &[u8], supervisor: &mut Supervisor, now: Instant) -> Handled {
    let request = match parse_request(line) {
        Ok(request) => request,
        Err(message) => return Handled::Reply(Reply::fail(ErrorKind::BadRequest, message)),
    };
    let then_wait = |slot: &str, wait: Wait, message: String| match wait.wait {
        Some(until) => {
            Handled::Wait(Pending { slot: slot.to_string(), until: Until::State(until), deadline: now + wait.limit() })
        }
        None => Handled::Reply(Reply::ok(message, None)),
    };
    let result = match request {
        Request::Start { slot, wait } => supervisor
            .command(&slot, Event::Start, now)
            .map(|()| then_wait(&slot, wait, format!("slot {slot}: start requested"))),
        Request::Stop { slot, wait } => supervisor
            .command(&slot, Event::Stop, now)
            .map(|()| then_wait(&slot, wait, format!("slot {slot}: stop requested"))),
        Request::Restart { slot, wait } => supervisor
            .command(&slot, Event::Restart, now)
            .map(|()| then_wait(&slot, wait, format!("slot {slot}: restart requested"))),
        Request::Signal { slot, signal } => supervisor.signal(&slot, signal.0).map(|()| {
            Handled::Reply(Reply::ok(format!("slot {slot}: {} sent", crate::core::signal::name(signal.0)), None))
        }),
        Request::Status { slot: Some(slot) } => match supervisor.status(&slot) {
            Some(status) => {
                Ok(Handled::Reply(Reply::ok(format!("slot {slot}"), Some(ReplyData::Slot { slot: Box::new(status) }))))
            }
            None => Err(SupervisorError::NoSuchSlot(slot)),
        },
        Request::Status { slot: None } => {
            let all = supervisor.status_all();
            Ok(Handled::Reply(Reply::ok(format!("{} slots", all.len()), Some(ReplyData::Slots { slots: all }))))
        }
        Request::Load { path, slot, wait } => match path.or(slot) {
            None => Ok(Handled::Reply(Reply::fail(
                ErrorKind::BadRequest,
                "slot.load: give \"path\" (a directory) or \"slot\" (a name in the scan dir)",
            ))),
            Some(target) => {
                supervisor.load(&target, now).map(|name| match then_wait(&name, wait, format!("slot {name}: loaded")) {
                    Handled::Reply(reply) => Handled::Reply(reply.with_data(Some(ReplyData::Loaded { slot: name }))),
                    other => other,
                })
            }
        },
        Request::Unload { slot, remove, timeout_ms } => supervisor.unload(&slot, remove, now).map(|()| {
            let limit = Wait { wait: None, timeout_ms }.limit();
            Handled::Wait(Pending { slot, until: Until::Gone, deadline: now + limit })
        }),
        Request::Logs { slot, lines, after } => {
            supervisor.logs(&slot, lines.unwrap_or(20), after).map(|(lines, last)| {
                Handled::Reply(Reply::ok(
                    format!("slot {slot}: {} lines", lines.len()),
                    Some(ReplyData::Logs { lines, last }),
                ))
            })
        }
        Request::Scan => {
            let (loaded, unloaded) = supervisor.scan(true, now);
            Ok(Handled::Reply(Reply::ok(
                format!("scan: {} loaded, {} unloaded", loaded.len(), unloaded.len()),
                Some(ReplyData::Scanned { loaded, unloaded }),
            )))
        }
        Request::Shutdown => Ok(Handled::Shutdown(Reply::ok("shutting down", None))),
    };
    result.unwrap_or_else(|error| Handled::Reply(refused(error)))
}

/// The reply to a waiting request, once its condition holds, fails for good, or times out.
fn wait_result(pending: &Pending, supervisor: &Supervisor, now: Instant) -> Option<Reply> {
    let name = &pending.slot;
    let state = supervisor.state(name);
    use StateName as S;
    let reached: Option<Result<String, (ErrorKind, String)>> = match (pending.until, state) {
        (Until::Gone, None) => Some(Ok(format!("slot {name}: unloaded"))),
        (_, None) => Some(Err((ErrorKind::NoSuchSlot, format!("slot {name}: unloaded while waiting")))),
        (Until::State(WaitFor::Up), Some(S::Starting | S::Up)) => Some(Ok(format!("slot {name}: up"))),
        (Until::State(WaitFor::Ready), Some(S::Up)) => Some(Ok(format!("slot {name}: ready"))),
        (Until::State(WaitFor::Up | WaitFor::Ready), Some(S::Failed)) => {
            Some(Err((ErrorKind::Failed, format!("slot {name}: failed"))))
        }
        (Until::State(WaitFor::Down), Some(S::Down | S::Failed)) => Some(Ok(format!("slot {name}: down"))),
        _ => None,
    };
    let data = supervisor.status(name).map(|s| ReplyData::Slot { slot: Box::new(s) });
    match reached {
        Some(Ok(message)) => Some(Reply::ok(message, data)),
        Some(Err((kind, message))) => Some(Reply::fail(kind, message).with_data(data)),
        None if now >= pending.deadline => {
            let what = match pending.until {
                Until::State(state) => <&str>::from(state),
                Until::Gone => "gone",
            };
            Some(Reply::fail(ErrorKind::TimedOut, format!("slot {name}: timed out waiting for {what}")).with_data(data))
        }
        None => None,
    }
}
