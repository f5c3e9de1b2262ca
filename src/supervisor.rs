//! The table of loaded slots and the shell around their pure state machines: spawning
//! `run` and `finish`, signalling groups, readiness pipes, publishing each slot's status
//! atomically to `<slot>/supervise/status.json`.
//!
//! Invariants: a slot name is loaded at most once; a down slot holds no process, pipe or
//! descriptor; every change to a slot is published before the loop sleeps again; an error
//! of one slot (bad directory, failed spawn) is that slot's state and a log line, never an
//! error of the init.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::core::Pid;
use crate::core::exit::ExitStatus;
use crate::core::slot::{Slot, SlotAction, SlotSettings, Snapshot, State};
use crate::slotdir;
use crate::sys;
use crate::sys::spawn::{SpawnOptions, spawn_clean};

/// One end of a service's stdout or stderr.
struct OutputPipe {
    id: u64,
    stream: &'static str,
    file: std::fs::File,
    splitter: crate::logs::LineSplitter,
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
    /// For gateway slots: `$HERMES_HOME/logs/gateways/<profile>/current`.
    gateway_log: Option<crate::logs::RotatingLog>,
    remove_dir_when_gone: bool,
}

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
    output_format: crate::logs::Format,
    home: PathBuf,
    next_pipe: u64,
    /// Reused for every read of service output (the hot path of a flooding service).
    read_buf: Vec<u8>,
    defaults: SlotSettings,
    slots: BTreeMap<String, Entry>,
    dirty: BTreeSet<String>,
    shutting_down: bool,
    clock: Clock,
}

impl Supervisor {
    pub fn new(
        scan_dir: PathBuf,
        defaults: SlotSettings,
        output_format: crate::logs::Format,
        home: PathBuf,
    ) -> Supervisor {
        Supervisor {
            scan_dir,
            output_format,
            home,
            next_pipe: 0,
            read_buf: vec![0u8; crate::logs::READ_BUDGET],
            defaults,
            slots: BTreeMap::new(),
            dirty: BTreeSet::new(),
            shutting_down: false,
            clock: Clock::now(),
        }
    }

    pub fn names(&self) -> Vec<String> {
        self.slots.keys().cloned().collect()
    }

    pub fn state(&self, name: &str) -> Option<State> {
        self.slots.get(name).map(|e| e.slot.state())
    }

    /// Loads a slot from a directory path, or from a bare name in the scan dir.
    pub fn load(&mut self, target: &str, now: Instant) -> Result<String, String> {
        if self.shutting_down {
            return Err("the container is shutting down".into());
        }
        let dir = if target.contains('/') { PathBuf::from(target) } else { self.scan_dir.join(target) };
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
            .ok_or_else(|| format!("{}: no slot name in this path", dir.display()))?;
        if !slotdir::valid_name(&name) {
            return Err(format!(
                "'{name}' is not a valid slot name (lowercase letters, digits, '_', '.', '-'; starting with a letter or digit; no '..')"
            ));
        }
        if self.slots.contains_key(&name) {
            return Err(format!("slot '{name}' is already loaded"));
        }
        let read = slotdir::read(&dir, &self.defaults)?;
        let gateway_log = match (name.strip_prefix("gateway-"), crate::profile::slot_profile_dir(&dir)) {
            (Some(profile), Some(_)) => {
                Some(crate::logs::RotatingLog::new(crate::logs::gateway_log_dir(&self.home, profile)))
            }
            _ => None,
        };
        let entry = Entry {
            output: Vec::new(),
            gateway_log,
            dir,
            loaded_at: SystemTime::now(),
            slot: Slot::new(read.settings, now),
            notification_fd: read.notification_fd,
            notify: None,
            remove_dir_when_gone: false,
        };
        self.slots.insert(name.clone(), entry);
        tracing::info!("slot {name}: loaded{}", if read.down { " (down file: not started)" } else { "" });
        self.dirty.insert(name.clone());
        if !read.down {
            self.act(&name, now, |slot, now| slot.start(now));
        }
        Ok(name)
    }

    /// Loads every valid slot directory of the scan dir not loaded yet; with `unload_vanished`,
    /// unloads loaded slots whose directory is gone. Returns (loaded, unloaded) names.
    pub fn scan(&mut self, unload_vanished: bool, now: Instant) -> (Vec<String>, Vec<String>) {
        let mut loaded = Vec::new();
        let entries = match std::fs::read_dir(&self.scan_dir) {
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
                tracing::info!("scan: '{name}' ignored: not a valid slot name");
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
                Err(e) => tracing::warn!("slot {name}: not loaded: {e}"),
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

    pub fn start(&mut self, name: &str, now: Instant) -> Result<(), String> {
        if self.shutting_down {
            return Err("the container is shutting down".into());
        }
        self.known(name)?;
        self.act(name, now, |slot, now| slot.start(now));
        Ok(())
    }

    pub fn stop(&mut self, name: &str, now: Instant) -> Result<(), String> {
        self.known(name)?;
        self.act(name, now, |slot, now| slot.stop(now));
        Ok(())
    }

    pub fn restart(&mut self, name: &str, now: Instant) -> Result<(), String> {
        if self.shutting_down {
            return Err("the container is shutting down".into());
        }
        self.known(name)?;
        self.act(name, now, |slot, now| slot.restart(now));
        Ok(())
    }

    pub fn signal(&mut self, name: &str, sig: i32) -> Result<(), String> {
        let entry = self.slots.get(name).ok_or_else(|| no_such_slot(name))?;
        match entry.slot.signal(sig) {
            Some(SlotAction::SignalProcess(pid, sig)) => {
                sys::kill::signal_process(pid, sig).map_err(|e| format!("slot {name}: {e}"))
            }
            _ => Err(format!("slot '{name}' is not running")),
        }
    }

    /// Stops the slot, forgets it once its processes are gone, and removes its directory
    /// then if `remove` is set.
    pub fn unload(&mut self, name: &str, remove: bool, now: Instant) -> Result<(), String> {
        let entry = self.slots.get_mut(name).ok_or_else(|| no_such_slot(name))?;
        entry.remove_dir_when_gone |= remove;
        self.act(name, now, |slot, now| slot.unload(now));
        Ok(())
    }

    /// Container shutdown: every slot goes down, in parallel, each by its own deadlines.
    pub fn shutdown(&mut self, now: Instant) {
        self.shutting_down = true;
        for name in self.names() {
            self.act(&name, now, |slot, now| slot.shutdown(now));
        }
    }

    /// The process groups of every slot that still has processes.
    pub fn live_groups(&self) -> Vec<Pid> {
        self.slots.values().flat_map(|e| e.slot.group().into_iter().chain(e.slot.finish_pid())).collect()
    }

    /// A reaped child: returns true if it belonged to a slot.
    pub fn on_exit(&mut self, pid: Pid, status: ExitStatus, now: Instant) -> bool {
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
            }
            log_exit(&name, status);
            self.act(&name, now, |slot, now| slot.leader_exited(status, now));
        } else {
            tracing::info!("slot {name}: finish ended: {status}");
            self.act(&name, now, |slot, now| slot.finish_ended(Some(status), now));
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
            self.act(&name, now, |slot, now| slot.group_gone(now));
        }
    }

    pub fn on_tick(&mut self, now: Instant) {
        let due: Vec<String> = self
            .slots
            .iter()
            .filter(|(_, e)| e.slot.deadline().is_some_and(|d| d <= now))
            .map(|(n, _)| n.clone())
            .collect();
        for name in due {
            self.act(&name, now, |slot, now| slot.on_tick(now));
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.slots.values().filter_map(|e| e.slot.deadline()).min()
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
            tracing::info!("slot {name}: ready");
            entry.slot.ready(now);
            self.dirty.insert(name.to_string());
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
        let mut emit = |line: &[u8], cut: bool| {
            out.push_str(&crate::logs::render(format, name, stream, line, cut, &time));
            if entry.gateway_log.is_some() {
                file_lines.push_str(&crate::logs::render(crate::logs::Format::Plain, name, stream, line, cut, &time));
            }
        };
        pipe.splitter.feed(&buf[..read], &mut emit);
        if closed {
            pipe.splitter.finish(&mut emit);
            entry.output.remove(index);
        }
        if !out.is_empty() {
            let mut stdout = io::stdout().lock();
            let _ = stdout.write_all(out.as_bytes());
            let _ = stdout.flush();
        }
        if let Some(log) = entry.gateway_log.as_mut().filter(|_| !file_lines.is_empty()) {
            log.append(&file_lines);
        }
    }

    /// Status of one slot as JSON.
    pub fn status(&self, name: &str) -> Option<Value> {
        self.slots.get(name).map(|e| self.status_json(name, e))
    }

    /// Status of every slot, sorted by name.
    pub fn status_all(&self) -> Vec<Value> {
        self.slots.iter().map(|(n, e)| self.status_json(n, e)).collect()
    }

    /// Writes the status file of every slot that changed.
    pub fn publish(&mut self) {
        for name in std::mem::take(&mut self.dirty) {
            let Some(entry) = self.slots.get(&name) else { continue };
            let status = self.status_json(&name, entry);
            if let Err(e) = write_status(&entry.dir, &status) {
                tracing::warn!("slot {name}: cannot publish status: {e}");
            }
        }
    }

    fn status_json(&self, name: &str, entry: &Entry) -> Value {
        let Snapshot { state, wanted_up, pid, since, ready, restarts, last_exit, failure } = entry.slot.snapshot();
        json!({
            "slot": name,
            "path": entry.dir.display().to_string(),
            "loaded_at": entry.loaded_at.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            "state": state.name(),
            "wanted": if wanted_up { "up" } else { "down" },
            "pid": pid.map(|p| p.0),
            "since": (self.clock.epoch_secs(since) * 1000.0).round() / 1000.0,
            "ready": ready,
            "restarts": restarts,
            "last_exit": last_exit.map(|s| match s {
                ExitStatus::Code(code) => json!({"code": code}),
                ExitStatus::Signaled(sig) => json!({"signal": sig}),
            }),
            "failure": failure,
        })
    }

    fn known(&self, name: &str) -> Result<(), String> {
        if self.slots.contains_key(name) { Ok(()) } else { Err(no_such_slot(name)) }
    }

    /// Runs a transition of one slot and carries out its actions, feeding spawn results
    /// back until nothing is left to do.
    fn act(&mut self, name: &str, now: Instant, transition: impl FnOnce(&mut Slot, Instant) -> Vec<SlotAction>) {
        let Some(entry) = self.slots.get_mut(name) else { return };
        let mut queue: std::collections::VecDeque<SlotAction> = transition(&mut entry.slot, now).into();
        self.dirty.insert(name.to_string());
        while let Some(action) = queue.pop_front() {
            let Some(entry) = self.slots.get_mut(name) else { return };
            match action {
                SlotAction::Spawn => match spawn_run(entry, &mut self.next_pipe) {
                    Ok(pid) => {
                        tracing::info!("slot {name}: started (pid {pid})");
                        entry.slot.spawned(pid, now);
                    }
                    Err(e) => {
                        let code = if e.kind() == io::ErrorKind::NotFound { 127 } else { 126 };
                        tracing::error!("slot {name}: cannot start {}: {e}", entry.dir.join("run").display());
                        queue.extend(entry.slot.spawn_failed(code, now));
                    }
                },
                SlotAction::RunFinish { code, signal } => match spawn_finish(&entry.dir, code, signal) {
                    Ok(pid) => entry.slot.finish_started(pid, now),
                    Err(e) => {
                        tracing::warn!("slot {name}: cannot run finish: {e}");
                        queue.extend(entry.slot.finish_ended(None, now));
                    }
                },
                SlotAction::SignalGroup(pid, sig) => {
                    if let Err(e) = sys::kill::signal_group(pid, sig) {
                        tracing::warn!("slot {name}: cannot signal group {pid}: {e}");
                    }
                }
                SlotAction::SignalProcess(pid, sig) => {
                    if let Err(e) = sys::kill::signal_process(pid, sig) {
                        tracing::warn!("slot {name}: cannot signal {pid}: {e}");
                    }
                }
                SlotAction::PermanentFailure(reason) => {
                    tracing::error!("slot {name}: failed, not restarting: {reason}");
                    // A gateway slot records it in its profile, so it stays down after a restart.
                    if let Some(profile_dir) = crate::profile::slot_profile_dir(&entry.dir) {
                        match crate::profile::record_permanent_failure(&profile_dir, &reason) {
                            Ok(()) => {
                                tracing::info!("slot {name}: recorded startup_failed in {}", profile_dir.display())
                            }
                            Err(e) => tracing::error!(
                                "slot {name}: cannot record the failure in {}: {e}",
                                profile_dir.join(crate::profile::STATE_FILE).display()
                            ),
                        }
                    }
                }
                SlotAction::Forget => {
                    if let Some(entry) = self.slots.remove(name) {
                        tracing::info!("slot {name}: unloaded");
                        self.dirty.remove(name);
                        if entry.remove_dir_when_gone {
                            if let Err(e) = std::fs::remove_dir_all(&entry.dir) {
                                tracing::warn!("slot {name}: cannot remove {}: {e}", entry.dir.display());
                            }
                        } else {
                            let _ = std::fs::remove_file(entry.dir.join("supervise/status.json"));
                        }
                    }
                    return;
                }
            }
        }
    }
}

fn no_such_slot(name: &str) -> String {
    format!("no such slot '{name}'")
}

fn log_exit(name: &str, status: ExitStatus) {
    tracing::info!("slot {name}: exited: {status}");
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

/// Writes `<dir>/supervise/status.json` through a temporary file and a rename, so a reader
/// sees the old or the new status, never a mix.
fn write_status(dir: &Path, status: &Value) -> io::Result<()> {
    let supervise = dir.join("supervise");
    std::fs::create_dir_all(&supervise)?;
    let tmp = supervise.join(".status.json.tmp");
    let mut text = serde_json::to_vec_pretty(status).map_err(io::Error::other)?;
    text.push(b'\n');
    std::fs::write(&tmp, &text)?;
    std::fs::rename(&tmp, supervise.join("status.json"))
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
        write_status(dir.path(), &json!({"n": 0, "padding": padding})).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let stop = stop.clone();
            let path = path.clone();
            std::thread::spawn(move || {
                let mut reads = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let text = std::fs::read(&path).unwrap();
                    serde_json::from_slice::<Value>(&text).expect("a torn status file");
                    reads += 1;
                }
                reads
            })
        };
        for n in 1..500 {
            write_status(dir.path(), &json!({"n": n, "padding": padding})).unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0);
    }
}
