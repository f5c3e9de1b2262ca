//! One supervised slot as a pure state machine: `handle(event, now) -> actions`.
//!
//! Each state carries the data that only it needs — the leader and its group, the
//! deadline, the exit that waits for its verdict — so no deadline or pid can outlive the
//! state it belongs to. What is *wanted* (up or down) is kept apart from the state, as s6
//! keeps wanted-up apart from up; unloading and the container's shutdown are modes that
//! hold across states.
//!
//! | state \ event | start | stop | leader exited | group gone | ready | tick (its deadline) |
//! |---|---|---|---|---|---|---|
//! | down | spawn | – | – | – | – | – |
//! | failed | spawn (a fresh crash count) | -> down | – | – | – | – |
//! | starting | – | group: stop signal -> stopping | group KILL -> stopping (crash) | – | -> up | ready-after -> up |
//! | up | – | group: stop signal -> stopping | group KILL -> stopping (crash) | – | – | – |
//! | stopping | want up | want down | keep the kill deadline | verdict (finish first) | – | group KILL |
//! | finishing | want up | want down | – | – | – | finish KILL |
//! | backoff | spawn (spacing kept) | -> down | – | – | – | spawn |
//!
//! Invariants:
//! - at most one live process group per slot: a spawn happens only from a state that holds
//!   no group (`down`, `failed`, `backoff`, or the verdict after the group is gone);
//! - a stop always ends: the group gets SIGKILL at `timeout-kill` whoever of it is left,
//!   whether or not the leader died first, and the slot is `down` only once the group is gone;
//! - the verdict on a death is taken once the group is gone and `finish` has run;
//! - an event that makes no sense in a state leaves the slot unchanged; a late deadline
//!   does nothing, because the deadline lives in the state it belongs to;
//! - two spawns of one slot are at least [`backoff::MIN_SPAWN_SPACING`] apart.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::Pid;
use super::backoff;
use super::exit::ExitStatus;
use super::signal;

/// The exit code that means "bad configuration, do not restart" (sysexits' EX_CONFIG).
pub const EXIT_CONFIG: i32 = 78;
/// The `finish` exit code that means "do not restart" (s6's convention).
pub const FINISH_PERMANENT: i32 = 125;

/// Per-slot settings, from the slot directory and the init's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotSettings {
    pub timeout_kill: Duration,
    pub timeout_finish: Duration,
    pub down_signal: i32,
    /// Readiness comes from the service on its notification fd, not from a timer.
    pub notification: bool,
    pub ready_after: Duration,
    pub has_finish: bool,
    /// Deaths before ready, within `crash_window`, that make the slot `failed`.
    pub crash_limit: u32,
    pub crash_window: Duration,
}

impl Default for SlotSettings {
    fn default() -> SlotSettings {
        SlotSettings {
            timeout_kill: Duration::from_millis(3000),
            timeout_finish: Duration::from_millis(5000),
            down_signal: signal::TERM,
            notification: false,
            ready_after: Duration::from_millis(1000),
            has_finish: false,
            crash_limit: 5,
            crash_window: Duration::from_secs(60),
        }
    }
}

/// A death waiting for its verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub status: ExitStatus,
    /// The death was asked for (a stop or a restart), not a crash.
    pub requested: bool,
}

/// The state of a slot, with the data that belongs to it alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Down,
    /// `run` is being spawned: the shell answers with `Spawned` or `SpawnFailed` at once.
    Spawning,
    /// Running, not ready yet; `ready_at` is the timer fallback (none with a notification fd).
    Starting {
        pid: Pid,
        ready_at: Option<Instant>,
    },
    /// Running and ready.
    Up {
        pid: Pid,
    },
    /// The group is being brought down: it got the stop signal (`requested`), or its leader
    /// died and the rest is being killed. `leader` is `None` once the leader was reaped;
    /// `kill_at` is when the group gets SIGKILL (`None` once it was sent); `exit` is the
    /// leader's death, once seen.
    Stopping {
        group: Pid,
        leader: Option<Pid>,
        kill_at: Option<Instant>,
        requested: bool,
        exit: Option<ExitStatus>,
    },
    /// `finish` runs for `exit` (`pid` is `None` until the shell has started it).
    Finishing {
        pid: Option<Pid>,
        kill_at: Option<Instant>,
        exit: Exit,
    },
    /// Waiting to respawn.
    Backoff {
        until: Instant,
    },
    /// Failed for good: down until an explicit start.
    Failed {
        reason: String,
    },
}

/// The name of a state, as status files and replies show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StateName {
    Down,
    Starting,
    Up,
    Stopping,
    Finishing,
    Backoff,
    Failed,
}

impl StateName {
    pub fn as_str(self) -> &'static str {
        match self {
            StateName::Down => "down",
            StateName::Starting => "starting",
            StateName::Up => "up",
            StateName::Stopping => "stopping",
            StateName::Finishing => "finishing",
            StateName::Backoff => "backoff",
            StateName::Failed => "failed",
        }
    }
}

impl State {
    pub fn name(&self) -> StateName {
        match self {
            State::Down => StateName::Down,
            State::Spawning | State::Starting { .. } => StateName::Starting,
            State::Up { .. } => StateName::Up,
            State::Stopping { .. } => StateName::Stopping,
            State::Finishing { .. } => StateName::Finishing,
            State::Backoff { .. } => StateName::Backoff,
            State::Failed { .. } => StateName::Failed,
        }
    }

    /// The one deadline of this state, if any.
    pub fn deadline(&self) -> Option<Instant> {
        match self {
            State::Starting { ready_at, .. } => *ready_at,
            State::Stopping { kill_at, .. } | State::Finishing { kill_at, .. } => *kill_at,
            State::Backoff { until } => Some(*until),
            State::Down | State::Spawning | State::Up { .. } | State::Failed { .. } => None,
        }
    }
}

/// What happens to a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The operator (or the loader) wants it up.
    Start,
    /// The operator wants it down.
    Stop,
    /// Down, then up again once the group is gone.
    Restart,
    /// The container shuts down: down, without changing what is wanted.
    Shutdown,
    /// Down, then forgotten.
    Unload,
    /// The shell spawned `run`.
    Spawned(Pid),
    /// The shell could not spawn `run`: the code a shell would give (126, 127) and why,
    /// in words that name the likely cause.
    SpawnFailed(i32, String),
    /// The shell could not spawn `run` for want of a resource (descriptors, processes,
    /// memory): not the service's fault, so no death is counted; it is tried again later.
    SpawnDeferred(String),
    /// The service said it is ready (a newline on its notification fd).
    Ready,
    /// The leader was reaped.
    LeaderExited(ExitStatus),
    /// No process of the slot's group is left.
    GroupGone,
    /// The shell started `finish`.
    FinishStarted(Pid),
    /// `finish` ended (`None`: it could not be started).
    FinishEnded(Option<ExitStatus>),
    /// Time passed: fire the state's deadline if it is due.
    Tick,
}

/// What the shell must do for the slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotAction {
    /// Spawn `run`; answer with `Spawned` or `SpawnFailed`.
    Spawn,
    /// Spawn `finish CODE SIGNAL`; answer with `FinishStarted` or `FinishEnded(None)`.
    RunFinish {
        code: i32,
        signal: i32,
    },
    SignalGroup(Pid, i32),
    /// The slot is unloaded and fully gone: drop it from the table.
    Forget,
    /// The slot failed for good (crash loop, EX_CONFIG, finish 125), with the reason.
    PermanentFailure(String),
}

/// A read-only view of a slot, for status replies and the published status file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub state: StateName,
    pub wanted_up: bool,
    pub pid: Option<Pid>,
    pub since: Instant,
    pub ready: bool,
    pub restarts: u32,
    pub last_exit: Option<ExitStatus>,
    pub failure: Option<String>,
}

/// A supervised slot.
#[derive(Debug, Clone)]
pub struct Slot {
    pub settings: SlotSettings,
    state: State,
    wanted_up: bool,
    unloading: bool,
    shutting_down: bool,
    /// When the state's name last changed.
    since: Instant,
    restarts: u32,
    last_exit: Option<ExitStatus>,
    last_spawn: Option<Instant>,
    /// Consecutive deaths, for the backoff step.
    attempt: u32,
    /// Unrequested deaths within the crash window, ready or not (a slow machine must not
    /// hide a crash loop behind a readiness timer).
    recent_deaths: VecDeque<Instant>,
    /// Why the last spawn failed, until a spawn succeeds.
    spawn_error: Option<String>,
    /// When the running leader was spawned.
    spawned_at: Option<Instant>,
    /// How long the last leader ran before it died (zero for a spawn that failed).
    last_run: Duration,
}

impl Slot {
    /// A loaded slot, down and wanted down; the loader sends `Start` unless `down` exists.
    pub fn new(settings: SlotSettings, now: Instant) -> Slot {
        Slot {
            settings,
            state: State::Down,
            wanted_up: false,
            unloading: false,
            shutting_down: false,
            since: now,
            restarts: 0,
            last_exit: None,
            last_spawn: None,
            attempt: 0,
            recent_deaths: VecDeque::new(),
            spawn_error: None,
            spawned_at: None,
            last_run: Duration::ZERO,
        }
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn wanted_up(&self) -> bool {
        self.wanted_up
    }

    /// The running leader, if any.
    pub fn leader(&self) -> Option<Pid> {
        match &self.state {
            State::Starting { pid, .. } | State::Up { pid } => Some(*pid),
            State::Stopping { leader, .. } => *leader,
            _ => None,
        }
    }

    /// The running `finish`, if any.
    pub fn finish_pid(&self) -> Option<Pid> {
        match &self.state {
            State::Finishing { pid, .. } => *pid,
            _ => None,
        }
    }

    /// The process group that may still have members.
    pub fn group(&self) -> Option<Pid> {
        match &self.state {
            State::Starting { pid, .. } | State::Up { pid } => Some(*pid),
            State::Stopping { group, .. } => Some(*group),
            _ => None,
        }
    }

    /// Whether the leader is dead but its group has not been seen empty yet: the shell
    /// checks the group after each reap and answers with `GroupGone`.
    pub fn draining(&self) -> bool {
        matches!(self.state, State::Stopping { leader: None, .. })
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.state.deadline()
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            state: self.state.name(),
            wanted_up: self.wanted_up,
            pid: self.leader(),
            since: self.since,
            ready: matches!(self.state, State::Up { .. }),
            restarts: self.restarts,
            last_exit: self.last_exit,
            failure: match &self.state {
                State::Failed { reason } => Some(reason.clone()),
                _ => None,
            },
        }
    }

    /// The one entry point: applies `event` at `now` and returns what the shell must do.
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<SlotAction> {
        let before = self.state.name();
        let actions = self.transition(event, now);
        if self.state.name() != before {
            self.since = now;
        }
        actions
    }

    fn transition(&mut self, event: Event, now: Instant) -> Vec<SlotAction> {
        match event {
            Event::Start => self.start(now),
            Event::Stop => {
                self.wanted_up = false;
                if matches!(self.state, State::Failed { .. }) {
                    // The operator has seen the failure and wants the slot down: it no
                    // longer counts against the health.
                    self.state = State::Down;
                    return Vec::new();
                }
                self.bring_down(now)
            }
            Event::Restart => match self.state {
                State::Starting { .. } | State::Up { .. } if !self.unloading && !self.shutting_down => {
                    let actions = self.bring_down(now);
                    self.wanted_up = true;
                    actions
                }
                _ => self.start(now),
            },
            Event::Shutdown => {
                self.shutting_down = true;
                self.bring_down(now)
            }
            Event::Unload => {
                self.unloading = true;
                self.wanted_up = false;
                let mut actions = self.bring_down(now);
                if matches!(self.state, State::Down | State::Failed { .. }) {
                    actions.push(SlotAction::Forget);
                }
                actions
            }
            Event::Spawned(pid) => {
                if self.state == State::Spawning {
                    self.spawn_error = None;
                    self.spawned_at = Some(now);
                    let ready_at = (!self.settings.notification).then(|| now + self.settings.ready_after);
                    self.state = State::Starting { pid, ready_at };
                }
                Vec::new()
            }
            Event::SpawnFailed(code, cause) => {
                if self.state != State::Spawning {
                    return Vec::new();
                }
                let status = ExitStatus::Code(code);
                self.last_exit = Some(status);
                self.spawn_error = Some(cause);
                self.last_run = Duration::ZERO;
                self.note_death(now);
                self.after_group_gone(Exit { status, requested: false })
                    .unwrap_or_else(|exit| self.decide(exit, None, now))
            }
            Event::SpawnDeferred(cause) => {
                if self.state == State::Spawning {
                    self.spawn_error = Some(cause);
                    self.state = State::Backoff { until: now + backoff::MIN_SPAWN_SPACING };
                }
                Vec::new()
            }
            Event::Ready => {
                if let State::Starting { pid, .. } = self.state {
                    self.state = State::Up { pid };
                }
                Vec::new()
            }
            Event::LeaderExited(status) => self.leader_exited(status, now),
            Event::GroupGone => match self.state {
                State::Stopping { leader: None, exit: Some(status), requested, .. } => self
                    .after_group_gone(Exit { status, requested })
                    .unwrap_or_else(|exit| self.decide(exit, None, now)),
                _ => Vec::new(),
            },
            Event::FinishStarted(pid) => {
                if let State::Finishing { pid: slot_pid @ None, kill_at, .. } = &mut self.state {
                    *slot_pid = Some(pid);
                    *kill_at = Some(now + self.settings.timeout_finish);
                }
                Vec::new()
            }
            Event::FinishEnded(finish) => match self.state {
                State::Finishing { exit, .. } => self.decide(exit, finish, now),
                _ => Vec::new(),
            },
            Event::Tick => self.tick(now),
        }
    }

    fn start(&mut self, now: Instant) -> Vec<SlotAction> {
        if self.unloading || self.shutting_down {
            return Vec::new();
        }
        self.wanted_up = true;
        match self.state {
            State::Down | State::Failed { .. } => {
                if matches!(self.state, State::Failed { .. }) {
                    // An explicit start gives a failed slot a fresh crash count.
                    self.attempt = 0;
                    self.recent_deaths.clear();
                }
                self.try_spawn(now)
            }
            // Start now, keeping only the spacing between spawns.
            State::Backoff { .. } => self.try_spawn(now),
            // Running already, or coming down: the verdict respawns, since it is wanted.
            State::Spawning | State::Starting { .. } | State::Up { .. } | State::Stopping { .. } => Vec::new(),
            State::Finishing { .. } => Vec::new(),
        }
    }

    fn bring_down(&mut self, now: Instant) -> Vec<SlotAction> {
        match self.state {
            State::Starting { pid, .. } | State::Up { pid } => {
                self.state = State::Stopping {
                    group: pid,
                    leader: Some(pid),
                    kill_at: Some(now + self.settings.timeout_kill),
                    requested: true,
                    exit: None,
                };
                vec![
                    SlotAction::SignalGroup(pid, self.settings.down_signal),
                    SlotAction::SignalGroup(pid, signal::CONT),
                ]
            }
            State::Backoff { .. } => {
                self.state = State::Down;
                Vec::new()
            }
            State::Down | State::Spawning | State::Stopping { .. } | State::Finishing { .. } | State::Failed { .. } => {
                Vec::new()
            }
        }
    }

    fn leader_exited(&mut self, status: ExitStatus, now: Instant) -> Vec<SlotAction> {
        match &mut self.state {
            State::Starting { pid, .. } | State::Up { pid } => {
                let group = *pid;
                self.last_run = self.spawned_at.map_or(Duration::ZERO, |at| now.saturating_duration_since(at));
                self.note_death(now);
                self.last_exit = Some(status);
                // Whatever the dead leader left in its group must not outlive it: a second
                // copy of the service would otherwise start beside it.
                self.state =
                    State::Stopping { group, leader: None, kill_at: None, requested: false, exit: Some(status) };
                vec![SlotAction::SignalGroup(group, signal::KILL)]
            }
            State::Stopping { leader: leader @ Some(_), exit, .. } => {
                // The kill deadline stays: the rest of the group may ignore the stop signal.
                *leader = None;
                *exit = Some(status);
                self.last_exit = Some(status);
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    fn tick(&mut self, now: Instant) -> Vec<SlotAction> {
        if self.state.deadline().is_none_or(|at| now < at) {
            return Vec::new();
        }
        match &mut self.state {
            State::Starting { pid, .. } => {
                self.state = State::Up { pid: *pid };
                Vec::new()
            }
            State::Stopping { group, kill_at, .. } => {
                *kill_at = None;
                vec![SlotAction::SignalGroup(*group, signal::KILL)]
            }
            State::Finishing { pid: Some(pid), kill_at, .. } => {
                *kill_at = None;
                vec![SlotAction::SignalGroup(*pid, signal::KILL)]
            }
            State::Backoff { .. } => self.try_spawn(now),
            _ => Vec::new(),
        }
    }

    /// The group is gone: run `finish` first if there is one (`Ok`), or hand the exit
    /// back for the verdict (`Err`).
    fn after_group_gone(&mut self, exit: Exit) -> Result<Vec<SlotAction>, Exit> {
        if !self.settings.has_finish {
            return Err(exit);
        }
        let (code, sig) = match exit.status {
            ExitStatus::Code(code) => (code, 0),
            ExitStatus::Signaled(sig) => (256, sig),
        };
        self.state = State::Finishing { pid: None, kill_at: None, exit };
        Ok(vec![SlotAction::RunFinish { code, signal: sig }])
    }

    /// The verdict on a death, once the group is gone and `finish` has run.
    fn decide(&mut self, exit: Exit, finish: Option<ExitStatus>, now: Instant) -> Vec<SlotAction> {
        if self.unloading {
            self.state = State::Down;
            return vec![SlotAction::Forget];
        }
        let reason = if exit.requested {
            None
        } else if exit.status == ExitStatus::Code(EXIT_CONFIG) {
            Some(format!("exit code {EXIT_CONFIG} (EX_CONFIG): configuration error"))
        } else if finish == Some(ExitStatus::Code(FINISH_PERMANENT)) {
            Some(format!("finish exited {FINISH_PERMANENT}: permanent failure"))
        } else if self.recent_deaths.len() as u32 >= self.settings.crash_limit {
            Some(format!(
                "crash loop: {} deaths within {} s (last: {})",
                self.recent_deaths.len(),
                self.settings.crash_window.as_secs(),
                describe(exit.status, self.spawn_error.as_deref())
            ))
        } else {
            None
        };
        if let Some(reason) = reason {
            self.wanted_up = false;
            self.state = State::Failed { reason: reason.clone() };
            return vec![SlotAction::PermanentFailure(reason)];
        }
        if !self.wanted_up || self.shutting_down {
            self.state = State::Down;
            return Vec::new();
        }
        if exit.requested {
            // A restart: no crash, no backoff step, only the spacing between spawns.
            return self.try_spawn(now);
        }
        self.restarts += 1;
        // A service that ran for at least the spawn spacing is started again at once, in
        // the same loop turn as the reap; only deaths in quick succession back off.
        if self.last_run >= backoff::MIN_SPAWN_SPACING {
            self.attempt = 0;
            return self.try_spawn(now);
        }
        self.attempt += 1;
        let until = backoff::next_spawn(now, self.attempt, self.last_spawn);
        if until <= now {
            return self.try_spawn(now);
        }
        self.state = State::Backoff { until };
        Vec::new()
    }

    /// Spawns now, or waits in `backoff` for the spacing between spawns.
    fn try_spawn(&mut self, now: Instant) -> Vec<SlotAction> {
        let floor = self.last_spawn.map_or(now, |at| (at + backoff::MIN_SPAWN_SPACING).max(now));
        if floor > now {
            self.state = State::Backoff { until: floor };
            return Vec::new();
        }
        self.last_spawn = Some(now);
        self.state = State::Spawning;
        vec![SlotAction::Spawn]
    }

    fn note_death(&mut self, now: Instant) {
        let window = self.settings.crash_window;
        self.recent_deaths.retain(|at| now.saturating_duration_since(*at) < window);
        self.recent_deaths.push_back(now);
    }
}

/// A death in words, with the likely cause when the run file itself could not be executed
/// (the shell's 126 and 127).
pub fn describe(status: ExitStatus, spawn_error: Option<&str>) -> String {
    match (status, spawn_error) {
        (_, Some(cause)) => format!("{status}: {cause}"),
        (ExitStatus::Code(126), None) => {
            format!("{status}: a command of the run file could not be executed (permission denied, or a noexec mount)")
        }
        (ExitStatus::Code(127), None) => format!("{status}: a command of the run file was not found"),
        _ => status.to_string(),
    }
}

#[cfg(test)]
#[path = "slot_tests.rs"]
mod tests;
