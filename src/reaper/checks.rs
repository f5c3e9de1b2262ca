//! A slot's checks (its `check` file), run from the loop without blocking it: TCP connects
//! and HTTP exchanges are non-blocking with a deadline, exec checks are children with a
//! deadline, killed at it. A check runs only while the slot's service runs; an `alive`
//! check that fails `threshold` times in a row has the slot's whole group killed, which the
//! slot machine treats as the crash it is (restarted, and counted toward the crash loop); a
//! `ready` check that passes makes the slot ready.
//!
//! Invariant: nothing here waits; a slot without checks costs nothing (no timer, no wake-up).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::core::Pid;
use crate::core::exit::ExitStatus;
use crate::proto::check::{CheckSpec, CheckStatus, Level, Probe};
use crate::sys::Interest;
use crate::sys::spawn::{SpawnOptions, spawn_clean};

/// One run of a check in flight.
enum Run {
    /// Connecting, then (for HTTP) sending the request and reading the status line.
    Net {
        stream: TcpStream,
        connected: bool,
        request: Vec<u8>,
        response: Vec<u8>,
        deadline: Instant,
    },
    Exec {
        pid: Pid,
        deadline: Instant,
    },
}

/// The outcome of a finished run.
pub enum Verdict {
    Pass,
    Fail(String),
}

/// One check of a slot.
pub struct Check {
    pub spec: CheckSpec,
    probe: Probe,
    next_at: Option<Instant>,
    failures: u32,
    passing: Option<bool>,
    last_error: Option<String>,
    run: Option<Run>,
    /// Bumped whenever what [`Check::status`] shows changes.
    pub generation: u64,
}

/// What a verdict asks of the slot.
#[derive(Debug, PartialEq, Eq)]
pub enum Consequence {
    Nothing,
    /// A `ready` check passed.
    Ready,
    /// An `alive` check reached its threshold: kill the group (a crash, restarted).
    Restart(String),
}

impl Check {
    pub fn new(spec: CheckSpec) -> Option<Check> {
        let probe = spec.probe().ok()?;
        Some(Check {
            spec,
            probe,
            next_at: None,
            failures: 0,
            passing: None,
            last_error: None,
            run: None,
            generation: 0,
        })
    }

    /// The service (re)started: the first run after the start delay.
    pub fn arm(&mut self, now: Instant) {
        self.cancel();
        self.failures = 0;
        self.passing = None;
        self.generation += 1;
        self.next_at = Some(now + Duration::from_millis(self.spec.start_delay_ms));
    }

    /// The service is gone: nothing runs until it is back.
    pub fn disarm(&mut self) {
        self.cancel();
        self.next_at = None;
    }

    fn cancel(&mut self) {
        if let Some(Run::Exec { pid, .. }) = self.run.take() {
            let _ = crate::sys::kill::signal_group(pid, crate::core::signal::KILL);
        }
    }

    pub fn deadline(&self) -> Option<Instant> {
        match &self.run {
            Some(Run::Net { deadline, .. } | Run::Exec { deadline, .. }) => Some(*deadline),
            None => self.next_at,
        }
    }

    /// The descriptor to poll while a network run is in flight.
    pub fn poll_fd(&self) -> Option<(BorrowedFd<'_>, Interest)> {
        match &self.run {
            Some(Run::Net { stream, connected, request, .. }) => {
                let write = !*connected || !request.is_empty();
                Some((stream.as_fd(), Interest { read: !write, write }))
            }
            _ => None,
        }
    }

    /// The pid of an exec run in flight.
    pub fn exec_pid(&self) -> Option<Pid> {
        match &self.run {
            Some(Run::Exec { pid, .. }) => Some(*pid),
            _ => None,
        }
    }

    /// Time passed: starts a due run, or fails one past its deadline.
    pub fn on_tick(&mut self, dir: &std::path::Path, now: Instant) -> Consequence {
        match &self.run {
            Some(Run::Net { deadline, .. } | Run::Exec { deadline, .. }) if now >= *deadline => {
                self.cancel();
                let timeout = self.spec.timeout_ms;
                return self.conclude(Verdict::Fail(format!("no answer within {timeout} ms")), now);
            }
            Some(_) => return Consequence::Nothing,
            None => {}
        }
        if self.next_at.is_none_or(|at| now < at) {
            return Consequence::Nothing;
        }
        self.next_at = None;
        let deadline = now + Duration::from_millis(self.spec.timeout_ms);
        let started = match &self.probe {
            Probe::Tcp(addr) => connect(addr).map(|stream| Run::Net {
                stream,
                connected: false,
                request: Vec::new(),
                response: Vec::new(),
                deadline,
            }),
            Probe::Http { host, port, path } => connect(&format!("{host}:{port}")).map(|stream| Run::Net {
                stream,
                connected: false,
                request: format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n").into_bytes(),
                response: Vec::new(),
                deadline,
            }),
            Probe::Exec(argv) => {
                let mut command = Command::new(&argv[0]);
                command
                    .args(&argv[1..])
                    .current_dir(dir)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
                spawn_clean(command, SpawnOptions::default())
                    .map(|pid| Run::Exec { pid, deadline })
                    .map_err(|e| format!("cannot run {}: {e}", argv[0]))
            }
        };
        match started {
            Ok(run) => {
                self.run = Some(run);
                Consequence::Nothing
            }
            Err(error) => self.conclude(Verdict::Fail(error), now),
        }
    }

    /// The network run's descriptor is ready.
    pub fn on_ready(&mut self, now: Instant) -> Consequence {
        let Some(Run::Net { stream, connected, request, response, .. }) = &mut self.run else {
            return Consequence::Nothing;
        };
        if !*connected {
            match stream.take_error() {
                Ok(None) => *connected = true,
                Ok(Some(e)) | Err(e) => {
                    self.run = None;
                    return self.conclude(Verdict::Fail(format!("cannot connect: {e}")), now);
                }
            }
            if request.is_empty() && response.is_empty() && matches!(self.probe, Probe::Tcp(_)) {
                self.run = None;
                return self.conclude(Verdict::Pass, now);
            }
        }
        if !request.is_empty() {
            match stream.write(request) {
                Ok(n) => drop(request.drain(..n)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    self.run = None;
                    return self.conclude(Verdict::Fail(format!("cannot send the request: {e}")), now);
                }
            }
            return Consequence::Nothing;
        }
        let mut buf = [0u8; 512];
        let ended = match stream.read(&mut buf) {
            Ok(0) => true,
            Ok(n) => {
                response.extend_from_slice(&buf[..n.min(1024usize.saturating_sub(response.len()))]);
                response.len() >= 1024
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
            Err(_) => true,
        };
        // The status line is all that is needed.
        let line_done = response.windows(2).any(|w| w == b"\r\n");
        if !ended && !line_done {
            return Consequence::Nothing;
        }
        let status_line =
            String::from_utf8_lossy(response.split(|b| *b == b'\r').next().unwrap_or_default()).to_string();
        self.run = None;
        let code = status_line.split_whitespace().nth(1).and_then(|c| c.parse::<u16>().ok());
        match code {
            Some(code) if (200..300).contains(&code) => self.conclude(Verdict::Pass, now),
            Some(code) => self.conclude(Verdict::Fail(format!("HTTP status {code}")), now),
            None => self.conclude(Verdict::Fail(format!("not an HTTP answer: {status_line:?}")), now),
        }
    }

    /// An exec run ended.
    pub fn on_exit(&mut self, status: ExitStatus, now: Instant) -> Consequence {
        self.run = None;
        if status.success() {
            self.conclude(Verdict::Pass, now)
        } else {
            self.conclude(Verdict::Fail(status.to_string()), now)
        }
    }

    fn conclude(&mut self, verdict: Verdict, now: Instant) -> Consequence {
        self.next_at = Some(now + Duration::from_millis(self.spec.period_ms));
        self.generation += 1;
        match verdict {
            Verdict::Pass => {
                self.failures = 0;
                self.passing = Some(true);
                self.last_error = None;
                if self.spec.level == Level::Ready { Consequence::Ready } else { Consequence::Nothing }
            }
            Verdict::Fail(error) => {
                self.failures += 1;
                self.passing = Some(false);
                self.last_error = Some(error.clone());
                if self.spec.restarts() && self.failures >= self.spec.threshold {
                    self.failures = 0;
                    Consequence::Restart(format!(
                        "{} failed {} times: {error}",
                        self.spec.describe(),
                        self.spec.threshold
                    ))
                } else {
                    Consequence::Nothing
                }
            }
        }
    }

    pub fn status(&self) -> CheckStatus {
        CheckStatus {
            check: self.spec.describe(),
            level: self.spec.level,
            state: match self.passing {
                None => "pending",
                Some(true) => "passing",
                Some(false) => "failing",
            }
            .into(),
            failures: self.failures,
            last_error: self.last_error.clone(),
        }
    }
}

/// A non-blocking connect to `host:port`: an IP address, or `localhost` (no name is looked
/// up: that would block the loop).
fn connect(target: &str) -> Result<TcpStream, String> {
    let (host, port) = target.rsplit_once(':').ok_or_else(|| format!("{target:?}: expected host:port"))?;
    let host = if host == "localhost" { "127.0.0.1" } else { host.trim_start_matches('[').trim_end_matches(']') };
    let ip: std::net::IpAddr = host
        .parse()
        .map_err(|_| format!("{target:?}: an IP address is needed (no name is looked up from the loop)"))?;
    let port: u16 = port.parse().map_err(|_| format!("{target:?}: bad port"))?;
    let addr = SocketAddr::new(ip, port);
    crate::sys::connect_nonblocking(addr).map_err(|e| format!("cannot connect to {target}: {e}"))
}
