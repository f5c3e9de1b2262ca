//! The init's own life as a state machine: boot hooks one at a time, then the main command,
//! then the shutdown, then the exit code.
//!
//! Phases: `Boot` (hooks in byte order, each with an optional deadline) -> `Main` (the
//! command runs, or the init just waits) -> `Stopping` (everything was sent SIGTERM; at
//! the grace deadline everything left gets SIGKILL) -> finished once no child is left.
//!
//! Invariants: the exit code is decided by the first thing that decides it (the command's
//! exit, a hook under policy 2, a failed spawn) and never overwritten; a deadline that
//! fires late checks the phase first and does nothing if it no longer applies; the
//! shutdown ends as soon as nothing is left, never waiting out the grace time for nothing.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::Pid;
use super::exit::ExitStatus;
use super::hooks::{HookFailurePolicy, HookVerdict, verdict};
use super::signal;

/// After SIGKILL, how long to wait for the last children before exiting anyway (a process
/// stuck in uninterruptible sleep must not hold the container forever).
pub const KILL_REAP_LIMIT: Duration = Duration::from_secs(2);

/// The settings the lifecycle needs.
#[derive(Debug, Clone)]
pub struct LifecycleConfig {
    pub has_command: bool,
    pub signal_group: bool,
    pub hook_timeout: Option<Duration>,
    pub hook_failure: HookFailurePolicy,
    pub kill_grace: Duration,
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start the hook with this file name; answer with `hook_started` or `hook_spawn_failed`.
    RunHook(String),
    /// Start the main command; answer with `command_started` or `command_spawn_failed`.
    StartCommand,
    /// Send a signal to one process.
    SignalProcess(Pid, i32),
    /// Send a signal to a process group.
    SignalGroup(Pid, i32),
    /// Send a signal to every descendant except the members of these groups; with
    /// `spare_slots`, the shell also spares the supervised slots' groups, which stop by
    /// their own signal and deadline (the SIGTERM at the start of the shutdown). The SIGKILL
    /// at the end of the grace time spares nothing: the grace time caps everything.
    SignalRest { signal: i32, skip: Vec<Pid>, spare_slots: bool },
    /// Load the supervised slots (the boot hooks are done).
    LoadServices,
    /// Stop every supervised slot, each by its own stop signal and deadline.
    StopServices,
}

#[derive(Debug)]
struct RunningHook {
    name: String,
    pid: Pid,
    started: Instant,
    deadline: Option<Instant>,
    timed_out: bool,
}

#[derive(Debug)]
enum Phase {
    Boot { pending: VecDeque<String>, current: Option<RunningHook> },
    Main,
    Stopping { kill_at: Instant, killed_at: Option<Instant> },
}

/// The reason a shutdown began, for the log and the fallback exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Signal(i32),
    CommandExited,
    Requested,
    HookFailed,
    SpawnFailed,
}

/// The lifecycle state. Feed it events; execute the actions it returns.
#[derive(Debug)]
pub struct Lifecycle {
    config: LifecycleConfig,
    phase: Phase,
    command: Option<Pid>,
    command_started: bool,
    exit_code: Option<i32>,
    fallback_code: i32,
}

impl Lifecycle {
    /// A lifecycle that will run `hooks` (already in the order to run them).
    pub fn new(config: LifecycleConfig, hooks: Vec<String>) -> Lifecycle {
        Lifecycle {
            config,
            phase: Phase::Boot { pending: hooks.into(), current: None },
            command: None,
            command_started: false,
            exit_code: None,
            fallback_code: 0,
        }
    }

    /// Begins the boot: the first hook, or the main command if there is no hook.
    pub fn start(&mut self) -> Vec<Action> {
        self.next_boot_step()
    }

    /// The pid of the running main command, if any.
    pub fn command(&self) -> Option<Pid> {
        self.command
    }

    /// The pid of the running hook, if any.
    pub fn running_hook(&self) -> Option<Pid> {
        match &self.phase {
            Phase::Boot { current: Some(hook), .. } => Some(hook.pid),
            _ => None,
        }
    }

    /// Whether the shutdown has begun.
    pub fn stopping(&self) -> bool {
        matches!(self.phase, Phase::Stopping { .. })
    }

    /// The hook just spawned.
    pub fn hook_started(&mut self, pid: Pid, now: Instant) {
        if let Phase::Boot { current, pending } = &mut self.phase
            && let Some(name) = pending.pop_front()
        {
            let deadline = self.config.hook_timeout.map(|t| now + t);
            *current = Some(RunningHook { name, pid, started: now, deadline, timed_out: false });
        }
    }

    /// The hook could not be spawned; counts as a failure with exit code 126.
    pub fn hook_spawn_failed(&mut self, now: Instant, error: &str) -> Vec<Action> {
        let Phase::Boot { pending, .. } = &mut self.phase else { return Vec::new() };
        let name = pending.pop_front().unwrap_or_default();
        tracing::error!("hook {name}: could not start: {error}");
        self.after_hook(&name, ExitStatus::Code(super::exit::code::CANNOT_EXECUTE), now)
    }

    /// The main command just spawned.
    pub fn command_started(&mut self, pid: Pid) {
        self.command = Some(pid);
        self.command_started = true;
    }

    /// The main command could not be spawned; the container stops with `code`.
    pub fn command_spawn_failed(&mut self, code: i32, now: Instant) -> Vec<Action> {
        self.exit_code.get_or_insert(code);
        self.begin_stop(StopReason::SpawnFailed, now)
    }

    /// A signal reached the init.
    pub fn on_signal(&mut self, sig: i32, now: Instant) -> Vec<Action> {
        let shuts_down = match sig {
            signal::TERM => true,
            // With a main command, SIGINT is the command's to handle (an interactive
            // program may catch it and go on); without one it stops the container.
            signal::INT => self.command.is_none() && !self.stopping(),
            _ => false,
        };
        if shuts_down && !self.stopping() {
            tracing::info!("{} received: shutting down", signal::name(sig));
            return self.begin_stop(StopReason::Signal(sig), now);
        }
        match self.command {
            Some(pid) if signal::forwarded(sig) => {
                tracing::debug!("forwarding {} to the main command (pid {pid})", signal::name(sig));
                if self.config.signal_group {
                    vec![Action::SignalGroup(pid, sig)]
                } else {
                    vec![Action::SignalProcess(pid, sig)]
                }
            }
            _ => {
                if sig != signal::CHLD {
                    tracing::debug!("{} received: nothing to forward it to", signal::name(sig));
                }
                Vec::new()
            }
        }
    }

    /// A shutdown asked for over the control socket.
    pub fn request_shutdown(&mut self, now: Instant) -> Vec<Action> {
        tracing::info!("shutdown requested over the control socket");
        self.begin_stop(StopReason::Requested, now)
    }

    /// An essential slot failed for good: the container stops with `code` (unless CMD's
    /// own code comes first).
    pub fn fail(&mut self, code: i32, now: Instant) -> Vec<Action> {
        if self.stopping() {
            return Vec::new();
        }
        self.exit_code.get_or_insert(code);
        self.begin_stop(StopReason::Requested, now)
    }

    /// A child was reaped.
    pub fn on_exit(&mut self, pid: Pid, status: ExitStatus, now: Instant) -> Vec<Action> {
        if self.command == Some(pid) {
            self.command = None;
            tracing::info!("main command (pid {pid}) ended: {status}");
            self.exit_code.get_or_insert(status.code());
            return self.begin_stop(StopReason::CommandExited, now);
        }
        let ended_hook = match &mut self.phase {
            Phase::Boot { current, .. } if current.as_ref().is_some_and(|h| h.pid == pid) => current.take(),
            _ => None,
        };
        match ended_hook {
            Some(hook) => {
                let elapsed = now.saturating_duration_since(hook.started);
                if hook.timed_out {
                    tracing::warn!(
                        "hook {}: timed out after {} ms, process group killed ({status})",
                        hook.name,
                        elapsed.as_millis()
                    );
                } else if status.success() {
                    tracing::info!("hook {}: {status} in {} ms", hook.name, elapsed.as_millis());
                } else {
                    tracing::warn!("hook {}: failed, {status} in {} ms", hook.name, elapsed.as_millis());
                }
                self.after_hook(&hook.name, status, now)
            }
            None => {
                tracing::debug!("reaped pid {pid}: {status}");
                Vec::new()
            }
        }
    }

    /// Time passed: fire the deadlines that are due.
    pub fn on_tick(&mut self, now: Instant) -> Vec<Action> {
        match &mut self.phase {
            Phase::Boot { current: Some(hook), .. } => match hook.deadline {
                Some(deadline) if now >= deadline && !hook.timed_out => {
                    hook.timed_out = true;
                    vec![Action::SignalGroup(hook.pid, signal::KILL)]
                }
                _ => Vec::new(),
            },
            Phase::Stopping { kill_at, killed_at: killed_at @ None } if now >= *kill_at => {
                tracing::warn!("grace time over: sending SIGKILL to everything left");
                *killed_at = Some(now);
                vec![Action::SignalRest { signal: signal::KILL, skip: Vec::new(), spare_slots: false }]
            }
            _ => Vec::new(),
        }
    }

    /// The nearest moment `on_tick` has something to do, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Boot { current: Some(hook), .. } if !hook.timed_out => hook.deadline,
            Phase::Stopping { kill_at, killed_at: None } => Some(*kill_at),
            Phase::Stopping { killed_at: Some(at), .. } => Some(*at + KILL_REAP_LIMIT),
            _ => None,
        }
    }

    /// The exit code, once the shutdown is complete: nothing is left, or the last SIGKILL
    /// was sent long enough ago.
    pub fn finished(&self, children_left: bool, now: Instant) -> Option<i32> {
        let Phase::Stopping { killed_at, .. } = &self.phase else { return None };
        let gave_up = killed_at.is_some_and(|at| now >= at + KILL_REAP_LIMIT);
        if children_left && !gave_up {
            return None;
        }
        if gave_up && children_left {
            tracing::error!("processes survived SIGKILL for {} ms; exiting anyway", KILL_REAP_LIMIT.as_millis());
        }
        Some(self.exit_code.unwrap_or(self.fallback_code))
    }

    fn after_hook(&mut self, name: &str, status: ExitStatus, now: Instant) -> Vec<Action> {
        match verdict(self.config.hook_failure, status) {
            HookVerdict::Next => self.next_boot_step(),
            HookVerdict::NextWithBanner => {
                tracing::warn!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
                tracing::warn!("!!! boot hook {name} FAILED ({status}); continuing anyway");
                tracing::warn!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
                self.next_boot_step()
            }
            HookVerdict::StopContainer(code) => {
                tracing::error!(
                    "hook {name} failed and HERMES_INIT_BEHAVIOUR_IF_HOOK_FAILS=2: stopping with exit code {code}"
                );
                self.exit_code.get_or_insert(code);
                self.begin_stop(StopReason::HookFailed, now)
            }
        }
    }

    fn next_boot_step(&mut self) -> Vec<Action> {
        let Phase::Boot { pending, current: None } = &self.phase else { return Vec::new() };
        if let Some(name) = pending.front() {
            return vec![Action::RunHook(name.clone())];
        }
        self.phase = Phase::Main;
        let mut actions = vec![Action::LoadServices];
        if self.config.has_command {
            actions.push(Action::StartCommand);
        }
        actions
    }

    fn begin_stop(&mut self, reason: StopReason, now: Instant) -> Vec<Action> {
        if self.stopping() {
            return Vec::new();
        }
        // A requested stop before the command ever ran still reports the signal, so the
        // container does not look like a clean run of a command that never happened.
        self.fallback_code = match reason {
            StopReason::Signal(sig) if self.config.has_command && !self.command_started => 128 + sig,
            _ => 0,
        };
        let mut actions = vec![Action::StopServices];
        let mut skip = Vec::new();
        // SIGCONT after SIGTERM: a stopped process must wake up to handle it, or it would
        // only ever end by the SIGKILL at the end of the grace time.
        for pid in self.command.into_iter().chain(self.running_hook()) {
            actions.push(Action::SignalGroup(pid, signal::TERM));
            actions.push(Action::SignalGroup(pid, signal::CONT));
            skip.push(pid);
        }
        actions.push(Action::SignalRest { signal: signal::TERM, skip: skip.clone(), spare_slots: true });
        actions.push(Action::SignalRest { signal: signal::CONT, skip, spare_slots: true });
        self.phase = Phase::Stopping { kill_at: now + self.config.kill_grace, killed_at: None };
        actions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(has_command: bool) -> LifecycleConfig {
        LifecycleConfig {
            has_command,
            signal_group: false,
            hook_timeout: Some(Duration::from_millis(500)),
            hook_failure: HookFailurePolicy::Continue,
            kill_grace: Duration::from_secs(3),
        }
    }

    fn ms(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_millis(n)
    }

    /// What a shutdown does: the slots stop; the groups of CMD or a running hook, then
    /// everything else get SIGTERM, each followed by SIGCONT (a stopped process wakes up).
    fn stop_all(groups: &[Pid]) -> Vec<Action> {
        let mut actions = vec![Action::StopServices];
        for pid in groups {
            actions.push(Action::SignalGroup(*pid, signal::TERM));
            actions.push(Action::SignalGroup(*pid, signal::CONT));
        }
        actions.push(Action::SignalRest { signal: signal::TERM, skip: groups.to_vec(), spare_slots: true });
        actions.push(Action::SignalRest { signal: signal::CONT, skip: groups.to_vec(), spare_slots: true });
        actions
    }

    #[test]
    fn boot_runs_hooks_in_turn_then_the_command() {
        let t0 = Instant::now();
        let mut life = Lifecycle::new(config(true), vec!["01-a".into(), "02-b".into()]);
        assert_eq!(life.start(), vec![Action::RunHook("01-a".into())]);
        life.hook_started(Pid(10), t0);
        assert_eq!(life.running_hook(), Some(Pid(10)));
        assert_eq!(life.on_exit(Pid(10), ExitStatus::Code(0), ms(t0, 5)), vec![Action::RunHook("02-b".into())]);
        life.hook_started(Pid(11), ms(t0, 6));
        assert_eq!(
            life.on_exit(Pid(11), ExitStatus::Code(1), ms(t0, 7)),
            vec![Action::LoadServices, Action::StartCommand]
        );
        life.command_started(Pid(12));
        assert_eq!(life.command(), Some(Pid(12)));
        assert_eq!(life.finished(true, ms(t0, 8)), None);
    }

    #[test]
    fn hook_failure_policies() {
        // (policy, hook status, expected actions after the hook, exit code when finished)
        let cases = [
            (HookFailurePolicy::Continue, ExitStatus::Code(4), vec![Action::LoadServices, Action::StartCommand], None),
            (HookFailurePolicy::Warn, ExitStatus::Code(4), vec![Action::LoadServices, Action::StartCommand], None),
            (HookFailurePolicy::Stop, ExitStatus::Code(4), stop_all(&[]), Some(4)),
            (HookFailurePolicy::Stop, ExitStatus::Signaled(9), stop_all(&[]), Some(137)),
            (HookFailurePolicy::Stop, ExitStatus::Code(0), vec![Action::LoadServices, Action::StartCommand], None),
        ];
        for (policy, status, want, code) in cases {
            let t0 = Instant::now();
            let mut life = Lifecycle::new(LifecycleConfig { hook_failure: policy, ..config(true) }, vec!["h".into()]);
            life.start();
            life.hook_started(Pid(5), t0);
            assert_eq!(life.on_exit(Pid(5), status, t0), want, "{policy:?} {status}");
            assert_eq!(life.finished(false, t0), code, "{policy:?} {status}");
        }
    }

    #[test]
    fn hook_deadline_kills_its_group_once_and_late_ticks_do_nothing() {
        let t0 = Instant::now();
        let mut life = Lifecycle::new(config(true), vec!["slow".into()]);
        life.start();
        life.hook_started(Pid(7), t0);
        assert_eq!(life.next_deadline(), Some(ms(t0, 500)));
        assert_eq!(life.on_tick(ms(t0, 499)), vec![]);
        assert_eq!(life.on_tick(ms(t0, 500)), vec![Action::SignalGroup(Pid(7), signal::KILL)]);
        assert_eq!(life.next_deadline(), None);
        assert_eq!(life.on_tick(ms(t0, 900)), vec![]);
        assert_eq!(
            life.on_exit(Pid(7), ExitStatus::Signaled(9), ms(t0, 501)),
            vec![Action::LoadServices, Action::StartCommand]
        );
        // A late tick after the hook is gone finds nothing to do.
        assert_eq!(life.on_tick(ms(t0, 2000)), vec![]);
    }

    #[test]
    fn hook_spawn_failure_counts_as_exit_126() {
        let t0 = Instant::now();
        let cfg = LifecycleConfig { hook_failure: HookFailurePolicy::Stop, ..config(true) };
        let mut life = Lifecycle::new(cfg, vec!["bad".into(), "never".into()]);
        life.start();
        assert_eq!(life.hook_spawn_failed(t0, "exec format error"), stop_all(&[]));
        assert_eq!(life.finished(false, t0), Some(126));
    }

    #[test]
    fn signal_table_with_a_running_command() {
        // (signal, group forwarding, expected actions)
        let cases = [
            (signal::HUP, false, vec![Action::SignalProcess(Pid(9), signal::HUP)]),
            (signal::INT, false, vec![Action::SignalProcess(Pid(9), signal::INT)]),
            (signal::QUIT, true, vec![Action::SignalGroup(Pid(9), signal::QUIT)]),
            (signal::USR1, false, vec![Action::SignalProcess(Pid(9), signal::USR1)]),
            (signal::USR2, true, vec![Action::SignalGroup(Pid(9), signal::USR2)]),
            (signal::WINCH, false, vec![Action::SignalProcess(Pid(9), signal::WINCH)]),
            (signal::CHLD, false, vec![]),
            (signal::TERM, false, stop_all(&[Pid(9)])),
        ];
        for (sig, group, want) in cases {
            let mut life = Lifecycle::new(LifecycleConfig { signal_group: group, ..config(true) }, vec![]);
            life.start();
            life.command_started(Pid(9));
            assert_eq!(life.on_signal(sig, Instant::now()), want, "{}", signal::name(sig));
        }
    }

    #[test]
    fn without_a_command_term_and_int_stop_and_the_code_is_zero() {
        for sig in [signal::TERM, signal::INT] {
            let t0 = Instant::now();
            let mut life = Lifecycle::new(config(false), vec![]);
            assert_eq!(life.start(), vec![Action::LoadServices]);
            assert_eq!(life.on_signal(signal::HUP, t0), vec![]);
            assert_eq!(life.on_signal(sig, t0), stop_all(&[]));
            assert_eq!(life.finished(false, t0), Some(0));
        }
    }

    #[test]
    fn term_during_boot_stops_the_hook_and_reports_the_signal() {
        let t0 = Instant::now();
        let mut life = Lifecycle::new(config(true), vec!["h".into()]);
        life.start();
        life.hook_started(Pid(3), t0);
        assert_eq!(life.on_signal(signal::TERM, t0), stop_all(&[Pid(3)]));
        // The hook's exit during the shutdown does not start the command.
        assert_eq!(life.on_exit(Pid(3), ExitStatus::Signaled(15), t0), vec![]);
        assert_eq!(life.finished(false, t0), Some(143));
    }

    #[test]
    fn shutdown_ends_at_once_when_nothing_is_left_and_escalates_otherwise() {
        let t0 = Instant::now();
        let mut life = Lifecycle::new(config(true), vec![]);
        life.start();
        life.command_started(Pid(4));
        life.on_signal(signal::TERM, t0);
        assert_eq!(life.finished(true, ms(t0, 1)), None);
        assert_eq!(life.next_deadline(), Some(ms(t0, 3000)));
        // A second SIGTERM does not restart the grace period.
        assert_eq!(life.on_signal(signal::TERM, ms(t0, 10)), vec![Action::SignalProcess(Pid(4), signal::TERM)]);
        assert_eq!(life.on_tick(ms(t0, 2999)), vec![]);
        assert_eq!(
            life.on_tick(ms(t0, 3000)),
            vec![Action::SignalRest { signal: signal::KILL, skip: vec![], spare_slots: false }]
        );
        assert_eq!(life.on_tick(ms(t0, 3001)), vec![]);
        assert_eq!(life.on_exit(Pid(4), ExitStatus::Signaled(9), ms(t0, 3002)), vec![]);
        assert_eq!(life.finished(false, ms(t0, 3002)), Some(137));
    }

    #[test]
    fn command_exit_code_wins_and_leftovers_are_terminated() {
        let t0 = Instant::now();
        let mut life = Lifecycle::new(config(true), vec![]);
        life.start();
        life.command_started(Pid(4));
        assert_eq!(life.on_exit(Pid(4), ExitStatus::Code(7), t0), stop_all(&[]));
        assert_eq!(life.finished(true, t0), None);
        assert_eq!(life.finished(false, ms(t0, 1)), Some(7));
    }

    #[test]
    fn gives_up_after_the_kill_reap_limit() {
        let t0 = Instant::now();
        let mut life = Lifecycle::new(config(false), vec![]);
        life.start();
        life.on_signal(signal::TERM, t0);
        life.on_tick(ms(t0, 3000));
        assert_eq!(life.next_deadline(), Some(ms(t0, 3000) + KILL_REAP_LIMIT));
        assert_eq!(life.finished(true, ms(t0, 3500)), None);
        assert_eq!(life.finished(true, ms(t0, 3000) + KILL_REAP_LIMIT), Some(0));
    }

    #[test]
    fn command_spawn_failure_stops_with_its_code() {
        let t0 = Instant::now();
        let mut life = Lifecycle::new(config(true), vec![]);
        assert_eq!(life.start(), vec![Action::LoadServices, Action::StartCommand]);
        assert_eq!(life.command_spawn_failed(127, t0), stop_all(&[]));
        assert_eq!(life.finished(false, t0), Some(127));
    }
}
