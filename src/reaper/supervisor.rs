//! The table of loaded slots and the shell around their pure state machines: spawning
//! `run` and `finish`, signalling groups, readiness pipes, publishing each slot's status
//! atomically to `<slot>/supervise/status.json`.
//!
//! Invariants: a slot name is loaded at most once; a down slot holds no process, pipe or
//! descriptor; every change to a slot is published before the loop sleeps again; an error
//! of one slot (bad directory, failed spawn) is that slot's state and a log line, never an
//! error of the init.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::core::Pid;
use crate::core::exit::{ExitStatus, code};
use crate::core::slot::{Event, Slot, SlotAction, SlotSettings, Snapshot, StateName};
use crate::proto::control::LogLine;
use crate::proto::status::{SlotStatus, Wanted};
use crate::reaper::checks::{Check, Consequence};
use crate::reaper::gateway::Gateway;
use crate::reaper::output::{self, LineSplitter};
use crate::reaper::slotdir;
use crate::sys;
use crate::sys::beneath::Dir;
use crate::sys::spawn::{SpawnOptions, spawn_clean};
use crate::volume::atomic;

/// Why a request about slots was not carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SupervisorError {
    NoSuchSlot(String),
    AlreadyLoaded(String),
    NotRunning(String),
    ShuttingDown,
    /// A slot directory that cannot be loaded, with the reason naming the path.
    BadSlot(String),
    /// Another container holds the volume: its gateways run there.
    Standby(String),
    /// A system call failed, with the reason naming the target.
    System(String),
}

impl std::fmt::Display for SupervisorError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SupervisorError::NoSuchSlot(name) => write!(f, "no such slot '{name}'"),
            SupervisorError::AlreadyLoaded(name) => write!(f, "slot '{name}' is already loaded"),
            SupervisorError::NotRunning(name) => write!(f, "slot '{name}' is not running"),
            SupervisorError::ShuttingDown => f.write_str("the container is shutting down"),
            SupervisorError::BadSlot(reason) | SupervisorError::System(reason) => f.write_str(reason),
            SupervisorError::Standby(holder) => write!(
                f,
                "the volume is held by another container ({holder}): its gateways run there; this one takes over when it lets go"
            ),
        }
    }
}

impl std::error::Error for SupervisorError {}

type Result<T> = std::result::Result<T, SupervisorError>;

/// One end of a service's stdout or stderr.
struct OutputPipe {
    id: u64,
    stream: &'static str,
    file: std::fs::File,
    splitter: LineSplitter,
}

/// One loaded slot.
struct Entry {
    dir: PathBuf,
    loaded_at: SystemTime,
    slot: Slot,
    notification_fd: Option<i32>,
    /// Read end of the readiness pipe while the service runs and has not said it is ready.
    notify: Option<std::fs::File>,
    /// Output pipes still open (an exited service's pipe stays until its last writer is gone).
    output: Vec<OutputPipe>,
    /// The gateway behind the slot, when it is one.
    gateway: Option<Gateway>,
    remove_dir_when_gone: bool,
    /// Its permanent failure stops the container (`on-failure` is `shutdown`).
    essential: bool,
    /// Its last lines of output, for `hermesctl logs` (at most [`RECENT_LINES`] lines and
    /// [`RECENT_BYTES`] bytes).
    recent: VecDeque<LogLine>,
    recent_bytes: usize,
    /// Its checks, and the leader they were armed for.
    checks: Vec<Check>,
    checks_armed_for: Option<Pid>,
}

/// The most lines of output kept per slot.
pub const RECENT_LINES: usize = 200;
/// The most bytes of output kept per slot.
pub const RECENT_BYTES: usize = 32 * 1024;

/// Converts the loop's monotonic instants into wall-clock times for status output.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    instant: Instant,
    system: SystemTime,
}

impl Clock {
    pub fn now() -> Clock {
        Clock { instant: Instant::now(), system: SystemTime::now() }
    }

    /// Seconds since the epoch at `at`.
    pub fn epoch_secs(&self, at: Instant) -> f64 {
        let wall =
            if at >= self.instant { self.system + (at - self.instant) } else { self.system - (self.instant - at) };
        wall.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
    }
}

/// All loaded slots.
pub struct Supervisor {
    scan_dir: PathBuf,
    output_format: output::Format,
    home: PathBuf,
    next_pipe: u64,
    /// Reused for every read of service output (the hot path of a flooding service).
    read_buf: Vec<u8>,
    defaults: SlotSettings,
    slots: BTreeMap<String, Entry>,
    dirty: BTreeSet<String>,
    shutting_down: bool,
    clock: Clock,
    /// Watches the profile directories of gateway slots (`None`: no inotify here; the
    /// saved states are then read when a slot changes).
    watcher: Option<crate::sys::watch::Watcher>,
    /// An essential slot failed for good: the container must stop with this code.
    essential_failure: Option<i32>,
    /// Crashes of every slot in the last [`STORM_WINDOW`], and whether a storm is on.
    recent_crashes: VecDeque<Instant>,
    storm: bool,
    /// During a storm, the next moment any slot may be spawned.
    storm_next_spawn: Instant,
    /// Another container holds the volume (who, as its lock file says): gateway slots stay
    /// down until this one takes the lock over.
    standby: Option<String>,
    /// The sequence number of the last service line kept.
    line_seq: u64,
}

/// More than this many crashes of slots (of all slots together) within [`STORM_WINDOW`] is a
/// crash storm: while it lasts, no slot is started more than once a second, so a broken
/// dependency shared by many slots does not turn the machine into a fork loop.
/// While a storm lasts, at most one spawn of any slot happens per [`STORM_SPACING`].
pub const STORM_CRASHES: usize = 20;
pub const STORM_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);
pub const STORM_SPACING: std::time::Duration = std::time::Duration::from_millis(100);

impl Supervisor {
    pub fn new(scan_dir: PathBuf, defaults: SlotSettings, output_format: output::Format, home: PathBuf) -> Supervisor {
        Supervisor {
            scan_dir,
            output_format,
            home,
            next_pipe: 0,
            read_buf: vec![0u8; output::READ_BUDGET],
            defaults,
            slots: BTreeMap::new(),
            dirty: BTreeSet::new(),
            shutting_down: false,
            clock: Clock::now(),
            essential_failure: None,
            recent_crashes: VecDeque::new(),
            storm: false,
            storm_next_spawn: Instant::now(),
            standby: None,
            line_seq: 0,
            watcher: match crate::sys::watch::Watcher::new() {
                Ok(watcher) => Some(watcher),
                Err(e) => {
                    tracing::warn!("no inotify ({e}): gateway states are read when their slots change");
                    None
                }
            },
        }
    }

    pub fn names(&self) -> Vec<String> {
        self.slots.keys().cloned().collect()
    }

    pub fn state(&self, name: &str) -> Option<StateName> {
        self.slots.get(name).map(|e| e.slot.state().name())
    }

    /// Another container holds the volume: who.
    pub fn standby(&self) -> Option<&str> {
        self.standby.as_deref()
    }

    /// Gateway slots stay down while another container holds the volume (`Some(who)`).
    pub fn set_standby(&mut self, holder: Option<String>) {
        self.standby = holder;
    }

    /// This container took the volume's lock over: every gateway slot whose intent says
    /// running starts, by the same decision as at boot.
    pub fn take_over(&mut self, now: Instant) {
        self.standby = None;
        let gateways: Vec<(String, bool)> = self
            .slots
            .iter()
            .filter_map(|(name, e)| e.gateway.as_ref().map(|g| (name.clone(), g.intends_running())))
            .collect();
        for (name, running) in gateways {
            if running {
                self.act(&name, Event::Start, now);
            }
        }
    }

    /// Whether every slot wanted up is up and ready, none has failed for good (a failed
    /// slot is down and no longer wanted, yet the container is not healthy until an operator
    /// starts or stops it), and no gateway says it is `degraded`.
    pub fn all_wanted_ready(&self) -> bool {
        self.slots.values().all(|e| {
            let s = e.slot.snapshot();
            let degraded = e.gateway.as_ref().is_some_and(Gateway::says_degraded)
                || (e.gateway.is_some() && self.standby.is_some());
            s.state != StateName::Failed && !degraded && (!s.wanted_up || (s.state == StateName::Up && s.ready))
        })
    }

    /// Loads a slot from a directory path, or from a bare name in the scan dir.
    pub fn load(&mut self, target: &str, now: Instant) -> Result<String> {
        if self.shutting_down {
            return Err(SupervisorError::ShuttingDown);
        }
        let dir = if target.contains('/') { PathBuf::from(target) } else { self.scan_dir.join(target) };
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
            .ok_or_else(|| SupervisorError::BadSlot(format!("{}: no slot name in this path", dir.display())))?;
        if !slotdir::valid_name(&name) {
            return Err(SupervisorError::BadSlot(format!(
                "{name:?} is not a valid slot name (lowercase letters, digits, '_', '.', '-'; starting with a letter or digit; no '..')"
            )));
        }
        if self.slots.contains_key(&name) {
            return Err(SupervisorError::AlreadyLoaded(name));
        }
        if !self.in_scan_dir(&dir) {
            trusted(&dir).map_err(SupervisorError::BadSlot)?;
        }
        let mut read = slotdir::read(&dir, &self.defaults).map_err(SupervisorError::BadSlot)?;
        let gateway = Gateway::detect(&name, &dir, &self.home);
        let mut watched = false;
        if let (Some(gateway), Some(watcher)) = (&gateway, self.watcher.as_mut()) {
            match watcher.watch_dir(&name, &gateway.profile_dir()) {
                Ok(()) => watched = true,
                Err(e) => tracing::warn!(slot = %name, "cannot watch {}: {e}", gateway.profile_dir().display()),
            }
        }
        // A watched gateway says itself when it is ready (`gateway_state: running` in its
        // state file): the readiness timer is only the fallback for slots with no signal.
        read.settings.notification |= watched;
        let entry = Entry {
            output: Vec::new(),
            gateway,
            dir,
            loaded_at: SystemTime::now(),
            slot: Slot::new(read.settings, now),
            notification_fd: read.notification_fd,
            notify: None,
            remove_dir_when_gone: false,
            essential: read.essential,
            recent: VecDeque::new(),
            recent_bytes: 0,
            checks: read.checks.iter().cloned().filter_map(Check::new).collect(),
            checks_armed_for: None,
        };
        let held_elsewhere = entry.gateway.is_some() && self.standby.is_some();
        self.slots.insert(name.clone(), entry);
        tracing::info!(
            slot = %name,
            "loaded{}",
            if read.down {
                " (down file: not started)"
            } else if held_elsewhere {
                " (the volume is held by another container: not started)"
            } else {
                ""
            }
        );
        self.dirty.insert(name.clone());
        if !read.down && !held_elsewhere {
            self.act(&name, Event::Start, now);
        }
        Ok(name)
    }

    /// Loads every valid slot directory of the scan dir not loaded yet; with `unload_vanished`,
    /// unloads loaded slots whose directory is gone. Returns (loaded, unloaded) names.
    pub fn scan(&mut self, unload_vanished: bool, now: Instant) -> (Vec<String>, Vec<String>) {
        let mut loaded = Vec::new();
        let entries = match fs_err::read_dir(&self.scan_dir) {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!("cannot read the scan dir {}: {e}", self.scan_dir.display());
                return (loaded, Vec::new());
            }
        };
        let mut names: Vec<String> = Vec::new();
        for entry in entries.flatten() {
            let raw = entry.file_name();
            let Some(name) = raw.to_str() else {
                tracing::info!("scan: {:?} ignored: not a valid slot name", raw);
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            if !slotdir::valid_name(name) {
                tracing::info!("scan: {name:?} ignored: not a valid slot name");
                continue;
            }
            if entry.path().is_dir() {
                names.push(name.to_string());
            }
        }
        names.sort();
        for name in &names {
            if self.slots.contains_key(name) {
                continue;
            }
            match self.load(name, now) {
                Ok(name) => loaded.push(name),
                Err(e) => tracing::warn!(slot = %name, "not loaded: {e}"),
            }
        }
        let mut unloaded = Vec::new();
        if unload_vanished {
            let gone: Vec<String> =
                self.slots.iter().filter(|(_, e)| !e.dir.join("run").exists()).map(|(n, _)| n.clone()).collect();
            for name in gone {
                if self.unload(&name, false, now).is_ok() {
                    unloaded.push(name);
                }
            }
        }
        (loaded, unloaded)
    }

    /// Applies an operator's event (`Start`, `Stop`, `Restart`) to a loaded slot.
    pub fn command(&mut self, name: &str, event: Event, now: Instant) -> Result<()> {
        if self.shutting_down && event != Event::Stop {
            return Err(SupervisorError::ShuttingDown);
        }
        self.known(name)?;
        if let Some(holder) = &self.standby
            && event != Event::Stop
            && self.slots.get(name).is_some_and(|e| e.gateway.is_some())
        {
            return Err(SupervisorError::Standby(holder.clone()));
        }
        self.act(name, event, now);
        Ok(())
    }

    /// Sends a signal to the slot's leader.
    pub fn signal(&mut self, name: &str, sig: i32) -> Result<()> {
        let entry = self.slots.get(name).ok_or_else(|| SupervisorError::NoSuchSlot(name.to_string()))?;
        let pid = entry.slot.leader().ok_or_else(|| SupervisorError::NotRunning(name.to_string()))?;
        sys::kill::signal_process(pid, sig).map_err(|e| SupervisorError::System(format!("slot {name}: {e}")))
    }

    /// Whether `dir` is a directory directly in the scan dir.
    fn in_scan_dir(&self, dir: &Path) -> bool {
        dir.parent() == Some(self.scan_dir.as_path())
    }

    /// Stops the slot, forgets it once its processes are gone, and removes its directory
    /// then if `remove` is set (only a directory of the scan dir is ever removed).
    pub fn unload(&mut self, name: &str, remove: bool, now: Instant) -> Result<()> {
        let scan_dir = self.scan_dir.clone();
        let entry = self.slots.get_mut(name).ok_or_else(|| SupervisorError::NoSuchSlot(name.to_string()))?;
        if remove && entry.dir.parent() != Some(scan_dir.as_path()) {
            return Err(SupervisorError::BadSlot(format!(
                "{}: only a slot directory of the scan dir is removed; unload it without remove",
                entry.dir.display()
            )));
        }
        entry.remove_dir_when_gone |= remove;
        self.act(name, Event::Unload, now);
        Ok(())
    }

    /// Container shutdown: every slot goes down, in parallel, each by its own deadlines.
    pub fn shutdown(&mut self, now: Instant) {
        self.shutting_down = true;
        for name in self.names() {
            self.act(&name, Event::Shutdown, now);
        }
    }

    /// The exit code an essential slot's permanent failure asks the container to stop with,
    /// once.
    pub fn take_essential_failure(&mut self) -> Option<i32> {
        self.essential_failure.take()
    }

    /// The process groups of every slot that still has processes.
    pub fn live_groups(&self) -> Vec<Pid> {
        self.slots.values().flat_map(|e| e.slot.group().into_iter().chain(e.slot.finish_pid())).collect()
    }

    /// A reaped child: returns true if it belonged to a slot.
    pub fn on_exit(&mut self, pid: Pid, status: ExitStatus, now: Instant) -> bool {
        let check = self
            .slots
            .iter()
            .find_map(|(name, e)| e.checks.iter().position(|c| c.exec_pid() == Some(pid)).map(|i| (name.clone(), i)));
        if let Some((name, index)) = check {
            if let Some(check) = self.slots.get_mut(&name).and_then(|e| e.checks.get_mut(index)) {
                let consequence = check.on_exit(status, now);
                self.check_consequence(&name, consequence, now);
            }
            return true;
        }
        let found = self.slots.iter().find_map(|(name, e)| {
            if e.slot.leader() == Some(pid) {
                Some((name.clone(), true))
            } else if e.slot.finish_pid() == Some(pid) {
                Some((name.clone(), false))
            } else {
                None
            }
        });
        let Some((name, leader)) = found else { return false };
        if leader {
            if let Some(entry) = self.slots.get_mut(&name) {
                entry.notify = None;
                if matches!(entry.slot.state().name(), StateName::Starting | StateName::Up) {
                    self.note_crash(now);
                }
            }
            tracing::info!(slot = %name, "exited: {status}");
            self.act(&name, Event::LeaderExited(status), now);
        } else {
            tracing::info!(slot = %name, "finish ended: {status}");
            self.act(&name, Event::FinishEnded(Some(status)), now);
        }
        true
    }

    /// After reaping: tells each slot whose leader is dead whether its group is gone.
    pub fn check_groups(&mut self, now: Instant) {
        let gone: Vec<String> = self
            .slots
            .iter()
            .filter(|(_, e)| e.slot.draining() && e.slot.group().is_some_and(|g| !sys::kill::group_exists(g)))
            .map(|(n, _)| n.clone())
            .collect();
        for name in gone {
            self.act(&name, Event::GroupGone, now);
        }
    }

    /// Counts a crash toward the container-wide storm guard, saying once when a storm begins
    /// and once when it is over.
    fn note_crash(&mut self, now: Instant) {
        self.recent_crashes.retain(|at| now.saturating_duration_since(*at) < STORM_WINDOW);
        self.recent_crashes.push_back(now);
        if !self.storm && self.recent_crashes.len() > STORM_CRASHES {
            self.storm = true;
            tracing::warn!(
                "crash storm: {} slot crashes within {} s; every restart is spread out (at most once a second per slot) until it calms down",
                self.recent_crashes.len(),
                STORM_WINDOW.as_secs()
            );
        }
    }

    /// Whether a crash storm is on (ending it once the window holds few enough crashes).
    fn in_storm(&mut self, now: Instant) -> bool {
        if self.storm {
            self.recent_crashes.retain(|at| now.saturating_duration_since(*at) < STORM_WINDOW);
            if self.recent_crashes.len() <= STORM_CRASHES / 2 {
                self.storm = false;
                tracing::info!("crash storm over: restarts as usual again");
            }
        }
        self.storm
    }

    /// Fires the deadlines that are due.
    pub fn on_tick(&mut self, now: Instant) {
        let due: Vec<String> = self
            .slots
            .iter()
            .filter(|(_, e)| e.slot.deadline().is_some_and(|d| d <= now))
            .map(|(n, _)| n.clone())
            .collect();
        for name in due {
            self.act(&name, Event::Tick, now);
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        let slots = self.slots.values().filter_map(|e| e.slot.deadline());
        let checks = self.slots.values().flat_map(|e| e.checks.iter().filter_map(Check::deadline));
        slots.chain(checks).min()
    }

    /// Arms the checks of slots whose service (re)started, disarms those of slots whose
    /// service is gone, and runs what is due.
    pub fn run_checks(&mut self, now: Instant) {
        let mut consequences = Vec::new();
        for (name, entry) in self.slots.iter_mut().filter(|(_, e)| !e.checks.is_empty()) {
            let leader = entry.slot.leader();
            if leader != entry.checks_armed_for {
                for check in &mut entry.checks {
                    if leader.is_some() { check.arm(now) } else { check.disarm() }
                }
                entry.checks_armed_for = leader;
            }
            let before = Self::checks_generation(entry);
            for check in &mut entry.checks {
                consequences.push((name.clone(), check.on_tick(&entry.dir, now)));
            }
            if Self::checks_generation(entry) != before {
                self.dirty.insert(name.clone());
            }
        }
        for (name, consequence) in consequences {
            self.check_consequence(&name, consequence, now);
        }
    }

    /// The descriptors of network checks in flight: (slot, check index, fd, interest).
    pub fn check_fds(&self) -> Vec<(String, usize, BorrowedFd<'_>, crate::sys::Interest)> {
        self.slots
            .iter()
            .flat_map(|(name, e)| {
                e.checks
                    .iter()
                    .enumerate()
                    .filter_map(move |(i, c)| c.poll_fd().map(|(fd, int)| (name.clone(), i, fd, int)))
            })
            .collect()
    }

    /// A network check's descriptor is ready.
    pub fn on_check_ready(&mut self, name: &str, index: usize, now: Instant) {
        let Some(check) = self.slots.get_mut(name).and_then(|e| e.checks.get_mut(index)) else { return };
        let consequence = check.on_ready(now);
        self.check_consequence(name, consequence, now);
    }

    fn checks_generation(entry: &Entry) -> u64 {
        entry.checks.iter().map(|c| c.generation).sum()
    }

    fn check_consequence(&mut self, name: &str, consequence: Consequence, now: Instant) {
        // Every call follows a finished run: what the status shows may have changed.
        self.dirty.insert(name.to_string());
        match consequence {
            Consequence::Nothing => {}
            Consequence::Ready => {
                if self.state(name) == Some(StateName::Starting) {
                    tracing::info!(slot = %name, "ready (its check passes)");
                    self.act(name, Event::Ready, now);
                }
            }
            Consequence::Restart(why) => {
                let Some(group) = self.slots.get(name).and_then(|e| e.slot.group()) else { return };
                tracing::warn!(slot = %name, "restarting: {why}");
                // Killed as a whole: the slot machine sees the crash, restarts the service
                // and counts it toward the crash loop.
                if let Err(e) = sys::kill::signal_group(group, crate::core::signal::KILL) {
                    tracing::warn!(slot = %name, "cannot kill group {group}: {e}");
                }
            }
        }
    }

    /// The watch descriptor to poll, if any.
    pub fn watch_fd(&self) -> Option<BorrowedFd<'_>> {
        self.watcher.as_ref().map(|w| w.fd())
    }

    /// The watch reported changes: the gateways whose state file changed read it again, and
    /// one that is starting and now says `running` is ready. Only a write seen after the
    /// spawn counts: a `running` left in the file by an earlier run does not.
    ///
    /// Returns the events of watches that are not a slot's (see [`Supervisor::watch`]).
    pub fn on_watch_readable(&mut self, now: Instant) -> Vec<(String, Option<std::ffi::OsString>)> {
        let Some(watcher) = self.watcher.as_mut() else { return Vec::new() };
        let mut ready = Vec::new();
        let mut others = Vec::new();
        for (slot, name) in watcher.events() {
            if !self.slots.contains_key(&slot) {
                others.push((slot, name));
                continue;
            }
            if !Gateway::concerns(name.as_deref()) {
                continue;
            }
            let Some(entry) = self.slots.get_mut(&slot) else { continue };
            let Some(gateway) = entry.gateway.as_mut() else { continue };
            gateway.refresh();
            if gateway.says_running() && entry.slot.state().name() == StateName::Starting {
                ready.push(slot);
            }
        }
        for slot in ready {
            tracing::info!(slot = %slot, "ready (its state file says running)");
            self.act(&slot, Event::Ready, now);
        }
        others
    }

    /// Watches a directory for a caller other than a slot, under `key` (not a slot name);
    /// its events come back from [`Supervisor::on_watch_readable`].
    pub fn watch(&mut self, key: &str, dir: &Path) -> io::Result<()> {
        match self.watcher.as_mut() {
            Some(watcher) => watcher.watch_dir(key, dir),
            None => Err(io::Error::new(io::ErrorKind::Unsupported, "no inotify")),
        }
    }

    /// Whether a loaded slot is a gateway slot.
    pub fn is_gateway(&self, name: &str) -> bool {
        self.slots.get(name).is_some_and(|e| e.gateway.is_some())
    }

    /// The readiness pipes to poll, with their slot names.
    pub fn notify_fds(&self) -> Vec<(String, BorrowedFd<'_>)> {
        self.slots.iter().filter_map(|(n, e)| e.notify.as_ref().map(|fd| (n.clone(), fd.as_fd()))).collect()
    }

    /// A readiness pipe is readable: a newline means ready; end of file means the service
    /// closed it without saying so.
    pub fn on_notify_readable(&mut self, name: &str, now: Instant) {
        let Some(entry) = self.slots.get_mut(name) else { return };
        let Some(fd) = entry.notify.as_ref() else { return };
        let mut buf = [0u8; 512];
        let (ready, closed) = match (&*fd).read(&mut buf) {
            Ok(0) => (false, true),
            Ok(n) => (buf[..n].contains(&b'\n'), false),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => (false, false),
            Err(_) => (false, true),
        };
        if ready || closed {
            entry.notify = None;
        }
        if ready {
            tracing::info!(slot = %name, "ready");
            self.act(name, Event::Ready, now);
        }
    }

    /// The output pipes to poll: (slot, pipe id, descriptor).
    pub fn output_fds(&self) -> Vec<(String, u64, BorrowedFd<'_>)> {
        self.slots.iter().flat_map(|(n, e)| e.output.iter().map(move |p| (n.clone(), p.id, p.file.as_fd()))).collect()
    }

    /// An output pipe is readable: pass at most one read budget of lines on.
    pub fn on_output_readable(&mut self, name: &str, id: u64) {
        let format = self.output_format;
        let buf = &mut self.read_buf;
        let Some(entry) = self.slots.get_mut(name) else { return };
        let Some(index) = entry.output.iter().position(|p| p.id == id) else { return };
        let pipe = &mut entry.output[index];
        let (read, closed) = match (&pipe.file).read(buf) {
            Ok(0) => (0, true),
            Ok(n) => (n, false),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => (0, false),
            Err(_) => (0, true),
        };
        let time = crate::sys::files::utc_timestamp();
        let mut out = String::new();
        let mut file_lines = String::new();
        let stream = pipe.stream;
        let to_file = entry.gateway.is_some();
        let recent = &mut entry.recent;
        let recent_bytes = &mut entry.recent_bytes;
        let seq = &mut self.line_seq;
        let mut emit = |line: &[u8], cut: bool| {
            out.push_str(&output::render(format, name, stream, line, cut, &time));
            let plain = output::render(output::Format::Plain, name, stream, line, cut, &time);
            if to_file {
                file_lines.push_str(&plain);
            }
            *seq += 1;
            let text = plain.trim_end_matches('\n').to_string();
            *recent_bytes += text.len();
            recent.push_back(LogLine { seq: *seq, stream: stream.to_string(), text });
            while recent.len() > RECENT_LINES || *recent_bytes > RECENT_BYTES {
                match recent.pop_front() {
                    Some(old) => *recent_bytes -= old.text.len(),
                    None => break,
                }
            }
        };
        pipe.splitter.feed(&buf[..read], &mut emit);
        if closed {
            pipe.splitter.finish(&mut emit);
            entry.output.remove(index);
        }
        if !out.is_empty() {
            crate::reaper::sink::write_lines(crate::reaper::sink::Stream::Stdout, out.as_bytes());
        }
        if let Some(gateway) = entry.gateway.as_mut().filter(|_| !file_lines.is_empty()) {
            gateway.log_lines(&file_lines);
        }
    }

    /// A slot's recent output: its last `lines` lines, or those after `after`; and the
    /// sequence number to follow from.
    pub fn logs(&self, name: &str, lines: usize, after: Option<u64>) -> Result<(Vec<LogLine>, u64)> {
        let entry = self.slots.get(name).ok_or_else(|| SupervisorError::NoSuchSlot(name.to_string()))?;
        let selected: Vec<LogLine> = match after {
            Some(after) => entry.recent.iter().filter(|l| l.seq > after).cloned().collect(),
            None => entry.recent.iter().skip(entry.recent.len().saturating_sub(lines)).cloned().collect(),
        };
        Ok((selected, self.line_seq))
    }

    /// The status of one slot, with its gateway fields.
    pub fn status(&self, name: &str) -> Option<SlotStatus> {
        self.slots.get(name).map(|e| self.status_of(name, e, true))
    }

    /// The status of every slot, sorted by name, with their gateway fields.
    pub fn status_all(&self) -> Vec<SlotStatus> {
        self.slots.iter().map(|(n, e)| self.status_of(n, e, true)).collect()
    }

    /// Writes the status file of every slot that changed.
    pub fn publish(&mut self) {
        for name in std::mem::take(&mut self.dirty) {
            let Some(entry) = self.slots.get(&name) else { continue };
            let status = self.status_of(&name, entry, false);
            if let Err(e) = write_status(&entry.dir, &status) {
                tracing::warn!(slot = %name, "cannot publish status: {e}");
            }
        }
    }

    fn status_of(&self, name: &str, entry: &Entry, with_gateway: bool) -> SlotStatus {
        let Snapshot { state, wanted_up, pid, since, ready, restarts, last_exit, failure } = entry.slot.snapshot();
        SlotStatus {
            slot: name.to_string(),
            path: entry.dir.display().to_string(),
            loaded_at: entry.loaded_at.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            state,
            wanted: if wanted_up { Wanted::Up } else { Wanted::Down },
            pid: pid.map(|p| p.0),
            since: (self.clock.epoch_secs(since) * 1000.0).round() / 1000.0,
            ready,
            restarts,
            last_exit: last_exit.map(Into::into),
            failure,
            gateway: entry.gateway.as_ref().filter(|_| with_gateway).map(Gateway::fields),
            checks: entry.checks.iter().map(Check::status).collect(),
        }
    }

    fn known(&self, name: &str) -> Result<()> {
        if self.slots.contains_key(name) { Ok(()) } else { Err(SupervisorError::NoSuchSlot(name.to_string())) }
    }

    /// Feeds one event to a slot and carries out its actions, feeding the shell's answers
    /// (spawned, spawn failed, finish started) back until nothing is left to do.
    fn act(&mut self, name: &str, event: Event, now: Instant) {
        let watched = self.watcher.is_some();
        let Some(entry) = self.slots.get_mut(name) else { return };
        if !watched && let Some(gateway) = entry.gateway.as_mut() {
            gateway.refresh();
        }
        let mut queue: VecDeque<SlotAction> = entry.slot.handle(event, now).into();
        self.dirty.insert(name.to_string());
        while let Some(action) = queue.pop_front() {
            // In a storm, spawns of all slots together are spread out, one per STORM_SPACING;
            // the others wait a second (no death counted) and try again.
            let storm = matches!(action, SlotAction::Spawn) && self.in_storm(now) && {
                let held = now < self.storm_next_spawn;
                if !held {
                    self.storm_next_spawn = now + STORM_SPACING;
                }
                held
            };
            let Some(entry) = self.slots.get_mut(name) else { return };
            match action {
                SlotAction::Spawn if storm => {
                    queue.extend(entry.slot.handle(Event::SpawnDeferred("crash storm".into()), now));
                }
                SlotAction::Spawn => match spawn_run(entry, &mut self.next_pipe) {
                    Ok(pid) => {
                        tracing::info!(slot = %name, "started (pid {pid})");
                        queue.extend(entry.slot.handle(Event::Spawned(pid), now));
                    }
                    Err(e) if sys::resource_exhausted(&e) => {
                        // Out of descriptors, processes or memory: not the service's fault,
                        // no crash is counted; it is tried again in a second.
                        tracing::warn!(slot = %name, "cannot start now: {e}; trying again");
                        queue.extend(entry.slot.handle(Event::SpawnDeferred(e.to_string()), now));
                    }
                    Err(e) => {
                        let code =
                            if e.kind() == io::ErrorKind::NotFound { code::NOT_FOUND } else { code::CANNOT_EXECUTE };
                        let cause = spawn_cause(&entry.dir, &e);
                        tracing::error!(slot = %name, "cannot start {}: {cause}", entry.dir.join("run").display());
                        queue.extend(entry.slot.handle(Event::SpawnFailed(code, cause), now));
                    }
                },
                SlotAction::RunFinish { code, signal } => match spawn_finish(&entry.dir, code, signal) {
                    Ok(pid) => queue.extend(entry.slot.handle(Event::FinishStarted(pid), now)),
                    Err(e) => {
                        tracing::warn!(slot = %name, "cannot run finish: {e}");
                        queue.extend(entry.slot.handle(Event::FinishEnded(None), now));
                    }
                },
                SlotAction::SignalGroup(pid, sig) => {
                    if let Err(e) = sys::kill::signal_group(pid, sig) {
                        tracing::warn!(slot = %name, "cannot signal group {pid}: {e}");
                    }
                }
                SlotAction::PermanentFailure(reason) => {
                    tracing::error!(slot = %name, "failed, not restarting: {reason}");
                    if entry.essential && self.essential_failure.is_none() {
                        let code = entry.slot.snapshot().last_exit.map_or(1, |s| s.code());
                        tracing::error!(slot = %name, "an essential slot failed: stopping the container with code {code}");
                        self.essential_failure = Some(code);
                    }
                    // A gateway slot records it in its profile.
                    if let Some(gateway) = &entry.gateway {
                        let _ = gateway.record_permanent_failure(name, &reason);
                    }
                }
                SlotAction::Forget => {
                    if let Some(entry) = self.slots.remove(name) {
                        if let Some(watcher) = self.watcher.as_mut() {
                            watcher.unwatch(name);
                        }
                        tracing::info!(slot = %name, "unloaded");
                        self.dirty.remove(name);
                        if entry.remove_dir_when_gone {
                            // Through the scan dir's descriptor: the name is removed where it
                            // is, never through a link.
                            let removed = Dir::open_root(&self.scan_dir).and_then(|scan| scan.remove_dir_all(name));
                            if let Err(e) = removed {
                                tracing::warn!(slot = %name, "cannot remove {}: {e}", entry.dir.display());
                            }
                        } else {
                            let _ = fs_err::remove_file(entry.dir.join("supervise/status.json"));
                        }
                    }
                    return;
                }
            }
        }
    }
}

/// Why `run` could not be executed, naming the likely cause.
fn spawn_cause(dir: &Path, error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::PermissionDenied => format!(
            "{error}: the run file is not executable, or {} is on a filesystem mounted noexec \
             (Docker mounts --tmpfs noexec unless told: use --tmpfs /run:exec)",
            dir.display()
        ),
        io::ErrorKind::NotFound => {
            format!("{error}: the run file, or the interpreter named on its #! line, does not exist")
        }
        _ => error.to_string(),
    }
}

fn spawn_run(entry: &mut Entry, next_pipe: &mut u64) -> io::Result<Pid> {
    let mut command = Command::new(entry.dir.join("run"));
    command.current_dir(&entry.dir).stdin(Stdio::null());
    let (out_read, out_write) = sys::cloexec_pipe()?;
    let (err_read, err_write) = sys::cloexec_pipe()?;
    command.stdout(Stdio::from(out_write)).stderr(Stdio::from(err_write));
    let mut options = SpawnOptions::default();
    let mut write_end = None;
    if let Some(target) = entry.notification_fd {
        let (read, write) = sys::cloexec_pipe()?;
        options.pass_fd = Some((write.as_raw_fd(), target));
        entry.notify = Some(read.into());
        write_end = Some(write);
    }
    let result = spawn_clean(command, options);
    // The parent's copies of the write ends must go, or the pipes never report end of file
    // (`Command` holds the output ends and drops them with itself, here).
    drop(write_end);
    if result.is_err() {
        entry.notify = None;
    } else {
        for (stream, fd) in [("stdout", out_read), ("stderr", err_read)] {
            *next_pipe += 1;
            entry.output.push(OutputPipe { id: *next_pipe, stream, file: fd.into(), splitter: Default::default() });
        }
    }
    result
}

fn spawn_finish(dir: &Path, code: i32, signal: i32) -> io::Result<Pid> {
    let mut command = Command::new(dir.join("finish"));
    command.args([code.to_string(), signal.to_string()]).current_dir(dir).stdin(Stdio::null());
    spawn_clean(command, SpawnOptions::default())
}

/// Writes `<dir>/supervise/status.json` through a uniquely named temporary file and a
/// rename, so a reader sees the old or the new status, never a mix; reached through the
/// slot directory's descriptor, following no link.
fn write_status(dir: &Path, status: &SlotStatus) -> io::Result<()> {
    let slot = Dir::open_root(dir)?;
    let supervise = slot.create_dir("supervise", 0o755, None)?;
    let mut text = serde_json::to_vec_pretty(status).map_err(io::Error::other)?;
    text.push(b'\n');
    atomic::replace_with(&supervise, "status.json", ".status.json.tmp-", &text, 0o644, false, || true).map(drop)
}

/// Whether a slot directory outside the scan dir may be loaded: root runs its `run`, so it
/// and its `run` must belong to root (or to the init's own user) and be writable by no one
/// else.
fn trusted(dir: &Path) -> std::result::Result<(), String> {
    let own = sys::effective_uid();
    let check = |path: &Path, meta: std::fs::Metadata| {
        use std::os::unix::fs::MetadataExt;
        if meta.file_type().is_symlink() {
            return Err(format!("{}: a symlink (not followed)", path.display()));
        }
        if meta.uid() != 0 && meta.uid() != own {
            return Err(format!("{}: owned by uid {}, not by root: not loaded", path.display(), meta.uid()));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(format!("{}: writable by group or others: not loaded", path.display()));
        }
        Ok(())
    };
    let meta = std::fs::symlink_metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    check(dir, meta)?;
    let run = dir.join("run");
    let meta = std::fs::symlink_metadata(&run).map_err(|e| format!("{}: {e}", run.display()))?;
    check(&run, meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader racing the writer must only ever see a whole status document.
    #[test]
    fn status_files_are_replaced_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("supervise/status.json");
        let padding = "x".repeat(64 * 1024);
        let status = |n: u32| SlotStatus {
            slot: "s".into(),
            path: padding.clone(),
            loaded_at: 0,
            state: StateName::Up,
            wanted: Wanted::Up,
            pid: Some(1),
            since: 0.0,
            ready: true,
            restarts: n,
            last_exit: None,
            failure: None,
            gateway: None,
            checks: Vec::new(),
        };
        write_status(dir.path(), &status(0)).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let stop = stop.clone();
            let path = path.clone();
            std::thread::spawn(move || {
                let mut reads = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let text = std::fs::read(&path).unwrap();
                    serde_json::from_slice::<SlotStatus>(&text).expect("a torn status file");
                    reads += 1;
                }
                reads
            })
        };
        for n in 1..500 {
            write_status(dir.path(), &status(n)).unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0);
    }
}
