//! One supervised slot as a pure state machine.
//!
//! States: `down`, `starting` (spawned, not ready yet), `up` (ready), `stopping` (the group
//! was signalled, or the leader died and the rest of its group is being killed),
//! `finishing` (the `finish` script runs), `backoff` (waiting to respawn), `failed`
//! (permanent failure: stays down until an explicit start). `wanted` (up or down) is kept
//! apart from the state, as s6 keeps wanted-up apart from up.
//!
//! Invariants:
//! - at most one live process group per slot: a spawn happens only when no earlier group of
//!   the slot is left (`group` is `None`) and the state allows it;
//! - a slot is `down`, `backoff` or `failed` only after its whole group is gone; the verdict
//!   on a death is taken once the group is gone and `finish` has run;
//! - every deadline checks the state first: a late one does nothing;
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

/// The state of a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Down,
    Starting,
    Up,
    Stopping,
    Finishing,
    Backoff,
    Failed,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Down => "down",
            State::Starting => "starting",
            State::Up => "up",
            State::Stopping => "stopping",
            State::Finishing => "finishing",
            State::Backoff => "backoff",
            State::Failed => "failed",
        }
    }
}

/// What the shell must do for the slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotAction {
    /// Spawn `run`; answer with `spawned` or `spawn_failed`.
    Spawn,
    /// Spawn `finish CODE SIGNAL`; answer with `finish_started` or `finish_ended`.
    RunFinish {
        code: i32,
        signal: i32,
    },
    SignalGroup(Pid, i32),
    SignalProcess(Pid, i32),
    /// The slot is unloaded and fully gone: drop it from the table.
    Forget,
    /// The slot failed for good (crash loop, EX_CONFIG, finish 125), with the reason.
    PermanentFailure(String),
}

/// A death whose verdict waits until the group is gone and `finish` has run.
#[derive(Debug, Clone, Copy)]
struct PendingExit {
    status: ExitStatus,
    /// The death was asked for (a stop), not a crash.
    requested: bool,
}

/// A supervised slot.
#[derive(Debug, Clone)]
pub struct Slot {
    pub settings: SlotSettings,
    state: State,
    wanted_up: bool,
    leader: Option<Pid>,
    /// The process group of the last spawn, until every member is gone.
    group: Option<Pid>,
    finish: Option<Pid>,
    since: Instant,
    restarts: u32,
    last_exit: Option<ExitStatus>,
    last_spawn: Option<Instant>,
    attempt: u32,
    early_deaths: VecDeque<Instant>,
    deadline: Option<Instant>,
    pending: Option<PendingExit>,
    unloading: bool,
    shutting_down: bool,
    failure: Option<String>,
}

/// A read-only view of a slot, for status replies and the published status file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub state: State,
    pub wanted_up: bool,
    pub pid: Option<Pid>,
    pub since: Instant,
    pub ready: bool,
    pub restarts: u32,
    pub last_exit: Option<ExitStatus>,
    pub failure: Option<String>,
}

impl Slot {
    /// A loaded slot, down and wanted down; the loader calls `start` unless `down` exists.
    pub fn new(settings: SlotSettings, now: Instant) -> Slot {
        Slot {
            settings,
            state: State::Down,
            wanted_up: false,
            leader: None,
            group: None,
            finish: None,
            since: now,
            restarts: 0,
            last_exit: None,
            last_spawn: None,
            attempt: 0,
            early_deaths: VecDeque::new(),
            deadline: None,
            pending: None,
            unloading: false,
            shutting_down: false,
            failure: None,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn leader(&self) -> Option<Pid> {
        self.leader
    }

    pub fn finish_pid(&self) -> Option<Pid> {
        self.finish
    }

    /// The process group that may still have members (`None` once it is known empty).
    pub fn group(&self) -> Option<Pid> {
        self.group
    }

    /// Whether the leader is dead but its group has not been seen empty yet.
    pub fn draining(&self) -> bool {
        self.leader.is_none() && self.group.is_some()
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            state: self.state,
            wanted_up: self.wanted_up,
            pid: self.leader,
            since: self.since,
            ready: self.state == State::Up,
            restarts: self.restarts,
            last_exit: self.last_exit,
            failure: self.failure.clone(),
        }
    }

    /// An explicit start: wanted up; a failed slot gets a fresh crash count.
    pub fn start(&mut self, now: Instant) -> Vec<SlotAction> {
        if self.unloading || self.shutting_down {
            return Vec::new();
        }
        self.wanted_up = true;
        match self.state {
            State::Down | State::Failed => {
                self.failure = None;
                self.attempt = 0;
                self.early_deaths.clear();
                self.try_spawn(now)
            }
            // Start now, keeping only the spacing between spawns.
            State::Backoff => {
                self.deadline = Some(self.spacing_floor(now));
                self.on_tick(now)
            }
            State::Starting | State::Up | State::Stopping | State::Finishing => Vec::new(),
        }
    }

    /// An explicit stop: wanted down.
    pub fn stop(&mut self, now: Instant) -> Vec<SlotAction> {
        self.wanted_up = false;
        self.bring_down(now)
    }

    /// Stop, then start again once the group is gone.
    pub fn restart(&mut self, now: Instant) -> Vec<SlotAction> {
        match self.state {
            State::Starting | State::Up => {
                let actions = self.bring_down(now);
                self.wanted_up = true;
                actions
            }
            _ => self.start(now),
        }
    }

    /// Sends a signal to the service's leader process, if it runs.
    pub fn signal(&self, sig: i32) -> Option<SlotAction> {
        self.leader.map(|pid| SlotAction::SignalProcess(pid, sig))
    }

    /// Container shutdown: bring the slot down without changing what is wanted.
    pub fn shutdown(&mut self, now: Instant) -> Vec<SlotAction> {
        self.shutting_down = true;
        self.bring_down(now)
    }

    /// Stop and forget the slot once its processes are gone.
    pub fn unload(&mut self, now: Instant) -> Vec<SlotAction> {
        self.unloading = true;
        self.wanted_up = false;
        let mut actions = self.bring_down(now);
        if self.idle() {
            actions.push(SlotAction::Forget);
        }
        actions
    }

    pub fn spawned(&mut self, pid: Pid, now: Instant) {
        self.leader = Some(pid);
        self.group = Some(pid);
        self.enter(State::Starting, now);
        self.deadline = (!self.settings.notification).then(|| now + self.settings.ready_after);
    }

    /// `run` could not be spawned: a death before ready with the shell's code for it.
    pub fn spawn_failed(&mut self, code: i32, now: Instant) -> Vec<SlotAction> {
        self.pending = Some(PendingExit { status: ExitStatus::Code(code), requested: false });
        self.last_exit = Some(ExitStatus::Code(code));
        self.note_early_death(now);
        self.after_group_gone(now)
    }

    /// The service said it is ready (a newline on its notification fd).
    pub fn ready(&mut self, now: Instant) {
        if self.state == State::Starting {
            self.enter(State::Up, now);
            self.deadline = None;
        }
    }

    /// The leader of the slot's group was reaped.
    pub fn leader_exited(&mut self, status: ExitStatus, now: Instant) -> Vec<SlotAction> {
        let Some(group) = self.leader.take() else { return Vec::new() };
        self.last_exit = Some(status);
        let requested = self.state == State::Stopping;
        let mut actions = Vec::new();
        if !requested {
            if self.state == State::Starting {
                self.note_early_death(now);
            } else if self.last_spawn.is_some_and(|at| now.saturating_duration_since(at) >= backoff::RESET_AFTER) {
                self.attempt = 0;
            }
            // Whatever the dead leader left in its group must not outlive it: a second
            // copy of the service would otherwise start beside it.
            actions.push(SlotAction::SignalGroup(group, signal::KILL));
            self.enter(State::Stopping, now);
        }
        self.deadline = None;
        self.pending = Some(PendingExit { status, requested });
        actions
    }

    /// No process of the slot's group is left.
    pub fn group_gone(&mut self, now: Instant) -> Vec<SlotAction> {
        if self.leader.is_some() {
            return Vec::new();
        }
        self.group = None;
        self.after_group_gone(now)
    }

    pub fn finish_started(&mut self, pid: Pid, now: Instant) {
        self.finish = Some(pid);
        self.deadline = Some(now + self.settings.timeout_finish);
    }

    /// `finish` ended (or could not start: pass `None`).
    pub fn finish_ended(&mut self, status: Option<ExitStatus>, now: Instant) -> Vec<SlotAction> {
        self.finish = None;
        self.deadline = None;
        self.decide(status, now)
    }

    /// Fires the slot's deadline if it is due.
    pub fn on_tick(&mut self, now: Instant) -> Vec<SlotAction> {
        match self.deadline {
            Some(at) if now >= at => {}
            _ => return Vec::new(),
        }
        match self.state {
            State::Starting if !self.settings.notification => {
                self.ready(now);
                Vec::new()
            }
            State::Stopping => {
                self.deadline = None;
                self.leader.map(|pid| SlotAction::SignalGroup(pid, signal::KILL)).into_iter().collect()
            }
            State::Finishing => {
                self.deadline = None;
                self.finish.map(|pid| SlotAction::SignalGroup(pid, signal::KILL)).into_iter().collect()
            }
            State::Backoff => {
                self.deadline = None;
                self.try_spawn(now)
            }
            _ => {
                self.deadline = None;
                Vec::new()
            }
        }
    }

    /// No process, no pending verdict: the slot holds only its table entry.
    fn idle(&self) -> bool {
        self.leader.is_none() && self.group.is_none() && self.finish.is_none() && self.pending.is_none()
    }

    fn bring_down(&mut self, now: Instant) -> Vec<SlotAction> {
        match self.state {
            State::Starting | State::Up => {
                let Some(pid) = self.leader else { return Vec::new() };
                self.enter(State::Stopping, now);
                self.deadline = Some(now + self.settings.timeout_kill);
                // SIGCONT too, so a stopped service can act on the stop signal.
                vec![
                    SlotAction::SignalGroup(pid, self.settings.down_signal),
                    SlotAction::SignalGroup(pid, signal::CONT),
                ]
            }
            State::Backoff => {
                self.deadline = None;
                self.enter(State::Down, now);
                Vec::new()
            }
            State::Down | State::Stopping | State::Finishing | State::Failed => Vec::new(),
        }
    }

    fn after_group_gone(&mut self, now: Instant) -> Vec<SlotAction> {
        let Some(pending) = self.pending else {
            if self.unloading && self.idle() {
                return vec![SlotAction::Forget];
            }
            if self.state == State::Backoff {
                return self.on_tick(now);
            }
            return Vec::new();
        };
        if self.settings.has_finish {
            let (code, sig) = match pending.status {
                ExitStatus::Code(code) => (code, 0),
                ExitStatus::Signaled(sig) => (256, sig),
            };
            self.enter(State::Finishing, now);
            return vec![SlotAction::RunFinish { code, signal: sig }];
        }
        self.decide(None, now)
    }

    fn decide(&mut self, finish: Option<ExitStatus>, now: Instant) -> Vec<SlotAction> {
        let Some(pending) = self.pending.take() else { return Vec::new() };
        if self.unloading {
            self.enter(State::Down, now);
            return vec![SlotAction::Forget];
        }
        let reason = if pending.requested {
            None
        } else if pending.status == ExitStatus::Code(EXIT_CONFIG) {
            Some(format!("exit code {EXIT_CONFIG} (EX_CONFIG): configuration error"))
        } else if finish == Some(ExitStatus::Code(FINISH_PERMANENT)) {
            Some(format!("finish exited {FINISH_PERMANENT}: permanent failure"))
        } else if self.early_deaths.len() as u32 >= self.settings.crash_limit {
            Some(format!(
                "crash loop: {} deaths before ready within {} s (last: {})",
                self.early_deaths.len(),
                self.settings.crash_window.as_secs(),
                pending.status
            ))
        } else {
            None
        };
        if let Some(reason) = reason {
            self.wanted_up = false;
            self.failure = Some(reason.clone());
            self.enter(State::Failed, now);
            return vec![SlotAction::PermanentFailure(reason)];
        }
        if !self.wanted_up || self.shutting_down {
            self.enter(State::Down, now);
            return Vec::new();
        }
        if pending.requested {
            // A restart: no crash, no backoff step, only the spacing between spawns.
            return self.try_spawn(now);
        }
        self.attempt += 1;
        self.restarts += 1;
        self.enter(State::Backoff, now);
        let at = backoff::next_spawn(now, self.attempt, self.last_spawn);
        self.deadline = Some(at);
        if at <= now { self.on_tick(now) } else { Vec::new() }
    }

    fn try_spawn(&mut self, now: Instant) -> Vec<SlotAction> {
        let floor = self.spacing_floor(now);
        if self.group.is_some() || self.finish.is_some() || floor > now {
            self.enter(State::Backoff, now);
            self.deadline = Some(floor);
            return Vec::new();
        }
        self.last_spawn = Some(now);
        self.enter(State::Starting, now);
        self.deadline = None;
        vec![SlotAction::Spawn]
    }

    fn spacing_floor(&self, now: Instant) -> Instant {
        self.last_spawn.map_or(now, |at| (at + backoff::MIN_SPAWN_SPACING).max(now))
    }

    fn note_early_death(&mut self, now: Instant) {
        let window = self.settings.crash_window;
        self.early_deaths.retain(|at| now.saturating_duration_since(*at) < window);
        self.early_deaths.push_back(now);
    }

    fn enter(&mut self, state: State, now: Instant) {
        if self.state != state {
            self.state = state;
            self.since = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SlotAction::*;

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    /// A slot that was started at t0 and is running as pid 100.
    fn running(t0: Instant, settings: SlotSettings) -> Slot {
        let mut slot = Slot::new(settings, t0);
        assert_eq!(slot.start(t0), vec![Spawn]);
        slot.spawned(Pid(100), t0);
        slot
    }

    #[test]
    fn start_spawns_once_and_repeated_starts_do_nothing() {
        let t0 = Instant::now();
        let mut slot = running(t0, SlotSettings::default());
        for _ in 0..20 {
            assert_eq!(slot.start(at(t0, 5)), vec![]);
        }
        assert_eq!(slot.state(), State::Starting);
    }

    #[test]
    fn readiness_by_timer_or_by_notification() {
        let t0 = Instant::now();
        let mut timer = running(t0, SlotSettings::default());
        assert_eq!(timer.deadline(), Some(at(t0, 1000)));
        timer.on_tick(at(t0, 999));
        assert_eq!(timer.state(), State::Starting);
        timer.on_tick(at(t0, 1000));
        assert_eq!(timer.state(), State::Up);
        assert!(timer.snapshot().ready);

        let mut notified = running(t0, SlotSettings { notification: true, ..SlotSettings::default() });
        assert_eq!(notified.deadline(), None);
        notified.on_tick(at(t0, 60_000));
        assert_eq!(notified.state(), State::Starting);
        notified.ready(at(t0, 10));
        assert_eq!(notified.state(), State::Up);
    }

    #[test]
    fn stop_signals_the_group_then_kills_it_at_timeout_kill() {
        let t0 = Instant::now();
        let mut slot = running(t0, SlotSettings { down_signal: signal::INT, ..SlotSettings::default() });
        assert_eq!(
            slot.stop(at(t0, 10)),
            vec![SignalGroup(Pid(100), signal::INT), SignalGroup(Pid(100), signal::CONT)]
        );
        assert_eq!(slot.state(), State::Stopping);
        assert_eq!(slot.on_tick(at(t0, 3009)), vec![]);
        assert_eq!(slot.on_tick(at(t0, 3010)), vec![SignalGroup(Pid(100), signal::KILL)]);
        // A late second tick does nothing.
        assert_eq!(slot.on_tick(at(t0, 4000)), vec![]);
        assert_eq!(slot.leader_exited(ExitStatus::Signaled(9), at(t0, 3011)), vec![]);
        // Not down until the group is gone.
        assert_eq!(slot.state(), State::Stopping);
        assert!(slot.draining());
        assert_eq!(slot.group_gone(at(t0, 3012)), vec![]);
        assert_eq!(slot.state(), State::Down);
        assert!(!slot.snapshot().wanted_up);
    }

    #[test]
    fn start_during_stop_respawns_once_after_the_group_is_gone() {
        let t0 = Instant::now();
        let mut slot = running(t0, SlotSettings::default());
        slot.stop(at(t0, 1500));
        assert_eq!(slot.start(at(t0, 1501)), vec![]);
        assert_eq!(slot.start(at(t0, 1502)), vec![]);
        assert_eq!(slot.leader_exited(ExitStatus::Signaled(15), at(t0, 1600)), vec![]);
        assert_eq!(slot.group_gone(at(t0, 1600)), vec![Spawn]);
        slot.spawned(Pid(101), at(t0, 1600));
        assert_eq!(slot.snapshot().restarts, 0, "an asked-for restart is not a crash");
    }

    #[test]
    fn a_crash_kills_the_rest_of_the_group_and_waits_for_it_before_respawning() {
        let t0 = Instant::now();
        let mut slot = running(t0, SlotSettings::default());
        slot.on_tick(at(t0, 1000)); // up
        assert_eq!(
            slot.leader_exited(ExitStatus::Signaled(9), at(t0, 5000)),
            vec![SignalGroup(Pid(100), signal::KILL)]
        );
        assert_eq!(slot.state(), State::Stopping);
        // Nothing spawns while a member of the old group lives, whatever is asked.
        assert_eq!(slot.start(at(t0, 5001)), vec![]);
        assert_eq!(slot.on_tick(at(t0, 9000)), vec![]);
        // The group is gone: first restart after 0.5 s.
        assert_eq!(slot.group_gone(at(t0, 5002)), vec![]);
        assert_eq!(slot.state(), State::Backoff);
        assert_eq!(slot.deadline(), Some(at(t0, 5502)));
        assert_eq!(slot.on_tick(at(t0, 5501)), vec![]);
        assert_eq!(slot.on_tick(at(t0, 5502)), vec![Spawn]);
        assert_eq!(slot.snapshot().restarts, 1);
    }

    #[test]
    fn backoff_doubles_on_repeated_deaths_after_ready_and_resets_after_30_s_up() {
        let t0 = Instant::now();
        let mut slot = running(t0, SlotSettings::default());
        let mut now = t0;
        let mut delays = Vec::new();
        for _ in 0..5 {
            now += Duration::from_millis(1500);
            slot.on_tick(now); // ready
            slot.leader_exited(ExitStatus::Code(1), now);
            slot.group_gone(now);
            let spawn_at = slot.deadline().unwrap();
            delays.push(spawn_at.duration_since(now).as_millis());
            assert_eq!(slot.on_tick(spawn_at), vec![Spawn]);
            slot.spawned(Pid(200), spawn_at);
            now = spawn_at;
        }
        assert_eq!(delays, [500, 1000, 2000, 4000, 8000]);
        // Up for 30 s: the next death starts over at 0.5 s.
        slot.on_tick(now + Duration::from_secs(1));
        now += Duration::from_secs(31);
        slot.leader_exited(ExitStatus::Code(1), now);
        slot.group_gone(now);
        assert_eq!(slot.deadline().unwrap().duration_since(now).as_millis(), 500);
    }

    #[test]
    fn crash_loop_guard_fails_the_slot_after_the_limit() {
        let t0 = Instant::now();
        let mut slot = running(t0, SlotSettings { crash_limit: 3, ..SlotSettings::default() });
        let mut now = t0;
        let mut last = Vec::new();
        for _ in 0..3 {
            now += Duration::from_millis(100);
            slot.leader_exited(ExitStatus::Code(1), now);
            last = slot.group_gone(now);
            if let Some(spawn_at) = slot.deadline() {
                now = spawn_at;
                assert_eq!(slot.on_tick(now), vec![Spawn]);
                slot.spawned(Pid(300), now);
            }
        }
        assert_eq!(slot.state(), State::Failed);
        assert!(matches!(&last[..], [PermanentFailure(reason)] if reason.starts_with("crash loop: 3 deaths")));
        assert!(!slot.snapshot().wanted_up);
        // It stays down: no deadline, ticks do nothing.
        assert_eq!(slot.deadline(), None);
        assert_eq!(slot.on_tick(now + Duration::from_secs(600)), vec![]);
        // An explicit start gives it a fresh chance (keeping the spawn spacing).
        let later = now + Duration::from_secs(5);
        assert_eq!(slot.start(later), vec![Spawn]);
    }

    #[test]
    fn permanent_failures() {
        // (exit status, finish status, failed at once)
        let cases = [
            (ExitStatus::Code(78), None, true),
            (ExitStatus::Code(1), Some(ExitStatus::Code(125)), true),
            (ExitStatus::Code(1), Some(ExitStatus::Code(0)), false),
            (ExitStatus::Signaled(9), None, false),
        ];
        for (status, finish, failed) in cases {
            let t0 = Instant::now();
            let settings = SlotSettings { has_finish: finish.is_some(), ..SlotSettings::default() };
            let mut slot = running(t0, settings);
            slot.leader_exited(status, at(t0, 10));
            let actions = slot.group_gone(at(t0, 10));
            let actions = match finish {
                Some(finish_status) => {
                    let code = match status {
                        ExitStatus::Code(c) => c,
                        ExitStatus::Signaled(_) => 256,
                    };
                    assert_eq!(actions, vec![RunFinish { code, signal: 0 }]);
                    slot.finish_started(Pid(400), at(t0, 11));
                    slot.finish_ended(Some(finish_status), at(t0, 20))
                }
                None => actions,
            };
            assert_eq!(slot.state() == State::Failed, failed, "{status} {finish:?}: {actions:?}");
            assert_eq!(matches!(actions.first(), Some(PermanentFailure(_))), failed, "{status} {finish:?}");
        }
    }

    #[test]
    fn finish_gets_256_and_the_signal_and_is_killed_at_its_timeout() {
        let t0 = Instant::now();
        let mut slot = running(t0, SlotSettings { has_finish: true, ..SlotSettings::default() });
        slot.leader_exited(ExitStatus::Signaled(15), at(t0, 10));
        assert_eq!(slot.group_gone(at(t0, 10)), vec![RunFinish { code: 256, signal: 15 }]);
        slot.finish_started(Pid(500), at(t0, 10));
        assert_eq!(slot.state(), State::Finishing);
        assert_eq!(slot.on_tick(at(t0, 5010)), vec![SignalGroup(Pid(500), signal::KILL)]);
        assert_eq!(slot.finish_ended(Some(ExitStatus::Signaled(9)), at(t0, 5011)), vec![]);
        assert_eq!(slot.state(), State::Backoff);
    }

    #[test]
    fn spawns_are_at_least_one_second_apart() {
        let t0 = Instant::now();
        let mut slot = running(t0, SlotSettings::default());
        slot.stop(at(t0, 10));
        slot.leader_exited(ExitStatus::Signaled(15), at(t0, 20));
        slot.group_gone(at(t0, 20));
        assert_eq!(slot.start(at(t0, 30)), vec![]);
        assert_eq!(slot.state(), State::Backoff);
        assert_eq!(slot.deadline(), Some(at(t0, 1000)));
        assert_eq!(slot.on_tick(at(t0, 1000)), vec![Spawn]);
    }

    #[test]
    fn unload_forgets_only_when_everything_is_gone() {
        let t0 = Instant::now();
        let mut down = Slot::new(SlotSettings::default(), t0);
        assert_eq!(down.unload(t0), vec![Forget]);

        let mut slot = running(t0, SlotSettings::default());
        assert_eq!(
            slot.unload(at(t0, 1)),
            vec![SignalGroup(Pid(100), signal::TERM), SignalGroup(Pid(100), signal::CONT)]
        );
        assert_eq!(slot.start(at(t0, 2)), vec![], "an unloading slot never starts again");
        assert_eq!(slot.leader_exited(ExitStatus::Signaled(15), at(t0, 3)), vec![]);
        assert_eq!(slot.group_gone(at(t0, 4)), vec![Forget]);
    }

    #[test]
    fn shutdown_brings_down_without_changing_what_is_wanted() {
        let t0 = Instant::now();
        let mut slot = running(t0, SlotSettings::default());
        assert_eq!(slot.shutdown(at(t0, 1)).len(), 2);
        slot.leader_exited(ExitStatus::Signaled(15), at(t0, 2));
        assert_eq!(slot.group_gone(at(t0, 2)), vec![]);
        assert_eq!(slot.state(), State::Down);
        assert!(slot.snapshot().wanted_up);
        assert_eq!(slot.start(at(t0, 3)), vec![], "no spawn during a shutdown");
    }

    #[test]
    fn spawn_failure_counts_toward_the_crash_loop() {
        let t0 = Instant::now();
        let mut slot = Slot::new(SlotSettings { crash_limit: 2, ..SlotSettings::default() }, t0);
        assert_eq!(slot.start(t0), vec![Spawn]);
        assert_eq!(slot.spawn_failed(126, t0), vec![]);
        assert_eq!(slot.state(), State::Backoff);
        assert_eq!(slot.on_tick(at(t0, 1000)), vec![Spawn]);
        assert!(matches!(&slot.spawn_failed(126, at(t0, 1000))[..], [PermanentFailure(_)]));
    }
}
