//! The event loop of PID 1: one thread, one `poll(2)` over the signal pipe, the control and
//! health sockets, the slots' readiness and output pipes, with the nearest deadline as its
//! timeout. Each turn drains signals, reaps every dead child, fires due
//! deadlines, carries out what the core decided, and exits once the core says it is done.
//!
//! Invariants: reaping runs on every turn whether or not SIGCHLD was seen (signals
//! coalesce); a pid is recorded by the core as soon as `spawn` returns, before the loop can
//! reap it, because this one thread does both; with no deadline pending the loop sleeps
//! until a signal arrives (zero wake-ups when idle); no error here ends the process except
//! a failure to set up the signal pipe.

use std::collections::VecDeque;
use std::io;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::core::exit::code;
use crate::core::hooks::HookFailurePolicy;
use crate::core::lifecycle::{Action, Lifecycle, LifecycleConfig};
use crate::core::{Pid, signal};
use crate::reaper::config::Config;
use crate::reaper::control::ControlServer;
use crate::reaper::health::{HealthServer, InitState};
use crate::reaper::supervisor::Supervisor;
use crate::sys::signals::SignalPipe;
use crate::sys::spawn::{SpawnOptions, spawn_clean};
use crate::sys::{self, Interest, Role};

struct Runtime {
    config: Config,
    role: Role,
    life: Lifecycle,
    supervisor: Supervisor,
    control: Option<ControlServer>,
    health: Option<HealthServer>,
    /// Pids the init started itself; only used when orphan reaping is switched off.
    started: Vec<Pid>,
    /// The directory the init was started in: hooks and CMD start there, while the init
    /// itself moves to `/` so that it pins no mount.
    start_dir: Option<std::path::PathBuf>,
    /// Processes reaped and loop turns, for `/metrics`.
    reaped: u64,
    wakeups: u64,
    /// The volume's lock, while this container holds it.
    volume_lock: Option<sys::FileLock>,
    /// While another container holds the volume: when to try the lock again.
    lock_retry_at: Option<Instant>,
    /// Profiles created or removed while the container runs.
    discovery: crate::reaper::discovery::Discovery,
}

/// How often a container on standby tries to take the volume's lock over.
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// Runs the init until the shutdown is complete and returns the exit code.
pub fn run(mut config: Config) -> i32 {
    // Relative directories are taken from where the init starts, before it moves to `/`.
    let start_dir = std::env::current_dir().ok();
    if let Some(dir) = &start_dir {
        for path in [&mut config.scan_dir, &mut config.runtime_dir, &mut config.cont_init_dir, &mut config.home] {
            if path.is_relative() {
                *path = dir.join(&*path);
            }
        }
    }
    if let Err(e) = std::env::set_current_dir("/") {
        tracing::warn!("cannot move to /: {e}; the init keeps its working directory");
    }
    let role = sys::take_reaper_role();
    match role {
        Role::Pid1 => tracing::info!("hermes-reaper {} starting as PID 1", env!("CARGO_PKG_VERSION")),
        Role::Subreaper => tracing::info!(
            "hermes-reaper {} starting as a child subreaper (pid {})",
            env!("CARGO_PKG_VERSION"),
            std::process::id()
        ),
        Role::Plain => tracing::warn!(
            "not PID 1 and could not become a child subreaper: orphans below this process will not be reaped"
        ),
    }
    if !config.reap_orphans {
        tracing::warn!("HERMES_INIT_TESTONLY_NO_REAP=1: orphans are NOT reaped (test mode)");
    }
    let mut signals = match SignalPipe::install() {
        Ok(signals) => signals,
        Err(e) => {
            tracing::error!("cannot install signal handlers: {e}");
            return code::SYSTEM;
        }
    };
    let hooks = match crate::reaper::hooks::list(&config.cont_init_dir) {
        Ok(hooks) => hooks,
        Err(e) if config.hook_failure == HookFailurePolicy::Stop => {
            tracing::error!("cannot read the hook directory {}: {e}", config.cont_init_dir.display());
            return code::SYSTEM;
        }
        Err(e) => {
            tracing::error!("cannot read the hook directory {}: {e}; running no hooks", config.cont_init_dir.display());
            Vec::new()
        }
    };
    let life = Lifecycle::new(
        LifecycleConfig {
            has_command: !config.command.is_empty(),
            signal_group: config.signal_group,
            hook_timeout: config.hook_timeout,
            hook_failure: config.hook_failure,
            kill_grace: config.kill_grace,
        },
        hooks,
    );
    let supervisor = Supervisor::new(
        config.scan_dir.clone(),
        config.slot_defaults.clone(),
        config.output_format,
        config.home.clone(),
    );
    let control = bind_control(&config);
    let health = match HealthServer::bind(&config.runtime_dir, config.health_addr.as_deref()) {
        Ok(server) => Some(server),
        Err(e) => {
            runtime_dir_banner(&config, "the health API", &e);
            None
        }
    };
    let discovery = crate::reaper::discovery::Discovery::new(&config, |name| std::env::var(name).ok());
    let mut runtime = Runtime {
        config,
        role,
        life,
        supervisor,
        control,
        health,
        started: Vec::new(),
        start_dir,
        reaped: 0,
        wakeups: 0,
        volume_lock: None,
        lock_retry_at: None,
        discovery,
    };
    runtime.try_volume_lock(Instant::now());
    let first = runtime.life.start();
    runtime.execute(first, Instant::now());
    runtime.run_loop(&mut signals)
}

impl Runtime {
    fn run_loop(&mut self, signals: &mut SignalPipe) -> i32 {
        loop {
            let now = Instant::now();
            for sig in signals.drain() {
                let actions = self.life.on_signal(sig, now);
                self.execute(actions, now);
            }
            let only = (!self.config.reap_orphans).then_some(self.started.as_slice());
            self.wakeups += 1;
            let reaped = sys::reap::reap(only);
            self.reaped += reaped.exited.len() as u64;
            for (pid, status) in reaped.exited {
                self.started.retain(|p| *p != pid);
                if !self.supervisor.on_exit(pid, status, now) {
                    let actions = self.life.on_exit(pid, status, now);
                    self.execute(actions, now);
                }
            }
            self.supervisor.check_groups(now);
            self.supervisor.on_tick(now);
            self.supervisor.run_checks(now);
            if self.lock_retry_at.is_some_and(|at| now >= at) {
                self.try_volume_lock(now);
            }
            self.discovery.on_tick(&mut self.supervisor, now);
            if let Some(code) = self.supervisor.take_essential_failure() {
                let actions = self.life.fail(code, now);
                self.execute(actions, now);
            }
            let due = self.life.on_tick(now);
            self.execute(due, now);
            if let Some(control) = &mut self.control {
                control.housekeeping(&self.supervisor, now);
            }
            if let Some(health) = &mut self.health {
                health.housekeeping(now);
            }
            self.supervisor.publish();
            if let Some(code) = self.life.finished(reaped.children_left, Instant::now()) {
                tracing::info!("shutdown complete, exit code {code}");
                // The last lines, if the log reader takes them soon; never a wait beyond that.
                crate::reaper::sink::drain(Duration::from_millis(500));
                return code;
            }
            self.wait_for_events(signals);
        }
    }

    /// Sleeps in poll(2) until a signal, a control client, a readiness pipe or the nearest
    /// deadline, and serves the descriptors that became ready.
    fn wait_for_events(&mut self, signals: &SignalPipe) {
        let deadline = [
            self.lock_retry_at,
            self.discovery.next_deadline(),
            self.life.next_deadline(),
            self.supervisor.next_deadline(),
            self.control.as_ref().and_then(|c| c.next_deadline()),
            self.health.as_ref().and_then(|h| h.next_deadline()),
        ]
        .into_iter()
        .flatten()
        .min();
        let timeout = deadline.map(|at| at.saturating_duration_since(Instant::now()));
        let control_fds = self.control.as_ref().map(|c| c.poll_fds()).unwrap_or_default();
        let health_fds = self.health.as_ref().map(|h| h.poll_fds()).unwrap_or_default();
        let notify = self.supervisor.notify_fds();
        let output = self.supervisor.output_fds();
        let watch = self.supervisor.watch_fd();
        let checks = self.supervisor.check_fds();
        let mut fds = vec![(signals.fd(), Interest::READ)];
        fds.extend(control_fds.iter().map(|(_, fd, interest)| (*fd, *interest)));
        fds.extend(health_fds.iter().map(|(_, fd, interest)| (*fd, *interest)));
        fds.extend(notify.iter().map(|(_, fd)| (*fd, Interest::READ)));
        fds.extend(output.iter().map(|(_, _, fd)| (*fd, Interest::READ)));
        fds.extend(watch.map(|fd| (fd, Interest::READ)));
        fds.extend(checks.iter().map(|(_, _, fd, interest)| (*fd, *interest)));
        // The init's own stdout and stderr, while lines wait for a slow log reader.
        fds.extend(crate::reaper::sink::waiting().into_iter().map(|fd| (fd, Interest { read: false, write: true })));
        let ready = match sys::wait_ready(&fds, timeout) {
            Ok(ready) => ready,
            Err(e) => {
                // poll(2) fails only on bad arguments or no memory: log it, and let the
                // next turn's deadlines and reaping run.
                tracing::error!("poll failed: {e}");
                return;
            }
        };
        let mut ready = ready.into_iter().skip(1);
        let control_ready: Vec<_> =
            control_fds.iter().zip(ready.by_ref()).map(|((index, _, _), (r, w))| (*index, r, w)).collect();
        let health_ready: Vec<_> =
            health_fds.iter().zip(ready.by_ref()).map(|((source, _, _), (r, w))| (*source, r, w)).collect();
        let ready_notify: Vec<String> =
            notify.iter().zip(ready.by_ref()).filter(|(_, (r, _))| *r).map(|((name, _), _)| name.clone()).collect();
        let ready_output: Vec<(String, u64)> = output
            .iter()
            .zip(ready.by_ref())
            .filter(|(_, (r, _))| *r)
            .map(|((name, id, _), _)| (name.clone(), *id))
            .collect();
        let watch_ready = watch.is_some() && ready.next().is_some_and(|(r, _)| r);
        let checks_ready: Vec<(String, usize)> = checks
            .iter()
            .zip(ready.by_ref())
            .filter(|(_, (r, w))| *r || *w)
            .map(|((name, i, _, _), _)| (name.clone(), *i))
            .collect();
        drop(checks);
        drop(output);
        drop(notify);
        drop(control_fds);
        drop(health_fds);
        crate::reaper::sink::flush();
        let now = Instant::now();
        for (name, index) in checks_ready {
            self.supervisor.on_check_ready(&name, index, now);
        }
        if watch_ready {
            let others = self.supervisor.on_watch_readable(now);
            self.discovery.on_events(others, &mut self.supervisor, now);
        }
        for name in ready_notify {
            self.supervisor.on_notify_readable(&name, now);
        }
        for (name, id) in ready_output {
            self.supervisor.on_output_readable(&name, id);
        }
        if let Some(health) = &mut self.health {
            let init = InitState { stopping: self.life.stopping(), reaped: self.reaped, wakeups: self.wakeups };
            health.serve(&health_ready, &self.supervisor, init, now);
        }
        if let Some(control) = &mut self.control {
            let outcome = control.serve(&control_ready, &mut self.supervisor, now);
            if outcome.shutdown {
                let actions = self.life.request_shutdown(now);
                self.execute(actions, now);
            }
            if let Some(code) = self.supervisor.take_essential_failure() {
                let actions = self.life.fail(code, now);
                self.execute(actions, now);
            }
        }
    }

    /// Carries out the core's actions; spawn results go back to the core at once, and the
    /// actions they produce are carried out in turn.
    fn execute(&mut self, actions: Vec<Action>, now: Instant) {
        let mut queue: VecDeque<Action> = actions.into();
        while let Some(action) = queue.pop_front() {
            match action {
                Action::RunHook(name) => match self.spawn_hook(&name) {
                    Ok(pid) => {
                        tracing::debug!("hook {name}: started (pid {pid})");
                        self.started.push(pid);
                        self.life.hook_started(pid, now);
                    }
                    Err(e) => queue.extend(self.life.hook_spawn_failed(now, &e.to_string())),
                },
                Action::StartCommand => match self.spawn_command() {
                    Ok(pid) => {
                        tracing::info!("main command started (pid {pid}): {}", self.command_line());
                        self.started.push(pid);
                        self.life.command_started(pid);
                    }
                    Err(e) => {
                        let code =
                            if e.kind() == io::ErrorKind::NotFound { code::NOT_FOUND } else { code::CANNOT_EXECUTE };
                        tracing::error!("cannot run the main command {}: {e}", self.command_line());
                        queue.extend(self.life.command_spawn_failed(code, now));
                    }
                },
                Action::SignalProcess(pid, sig) => report(sys::kill::signal_process(pid, sig), sig, pid),
                Action::SignalGroup(pid, sig) => report(sys::kill::signal_group(pid, sig), sig, pid),
                Action::LoadServices => {
                    if let Err(e) = fs_err::create_dir_all(&self.config.scan_dir) {
                        tracing::error!("cannot create the scan dir {}: {e}", self.config.scan_dir.display());
                    }
                    if sys::mounted_noexec(&self.config.scan_dir) {
                        banner(&[
                            &format!(
                                "the scan dir {} is on a filesystem mounted noexec: no slot's run file can be executed",
                                self.config.scan_dir.display()
                            ),
                            "mount /run with exec: docker run --tmpfs /run:exec (compose: tmpfs: [\"/run:exec\"])",
                        ]);
                    }
                    // The hooks may have remapped the admin group's gid (HERMES_GID).
                    if let (Some(control), Some(group)) = (self.control.as_mut(), self.config.admin_group.as_deref()) {
                        control.refresh_admin_group(group);
                    }
                    let (loaded, _) = self.supervisor.scan(false, now);
                    tracing::info!("slots loaded from {}: {}", self.config.scan_dir.display(), loaded.len());
                    self.discovery.start(&mut self.supervisor);
                }
                Action::StopServices => self.supervisor.shutdown(now),
                Action::SignalRest { signal: sig, mut skip, spare_slots } => {
                    // The slots stop by their own signal and deadline; the grace time's
                    // SIGKILL spares nothing.
                    if spare_slots {
                        skip.extend(self.supervisor.live_groups());
                    }
                    match sys::kill::signal_descendants(sig, &skip, self.role == Role::Pid1) {
                        Ok(_) => {}
                        Err(e) => tracing::error!("cannot send {} to the remaining processes: {e}", signal::name(sig)),
                    }
                }
            }
        }
    }

    /// Takes the volume's lock, or stays on standby (gateway slots down) while another
    /// container holds it, trying again every second; takes the gateways over once it has it.
    fn try_volume_lock(&mut self, now: Instant) {
        if self.life.stopping() {
            self.lock_retry_at = None;
            return;
        }
        let home = crate::volume::Home::new(&self.config.home);
        match crate::volume::lock::try_take(&home) {
            Ok(crate::volume::lock::Tried::Held(lock)) => {
                self.volume_lock = Some(lock);
                self.lock_retry_at = None;
                if self.supervisor.standby().is_some() {
                    tracing::info!("the volume's lock is free: this container takes its gateways over");
                    self.supervisor.take_over(now);
                }
            }
            Ok(crate::volume::lock::Tried::Busy(holder)) => {
                if self.supervisor.standby().is_none() {
                    tracing::warn!(
                        "the volume {} is held by another container ({holder}): its gateways stay down here until it lets go",
                        self.config.home.display()
                    );
                    self.supervisor.set_standby(Some(holder));
                }
                self.lock_retry_at = Some(now + LOCK_RETRY);
            }
            Err(e) => {
                tracing::warn!("cannot lock the volume {}: {e}; running without its lock", self.config.home.display());
                self.lock_retry_at = None;
            }
        }
    }

    fn spawn_hook(&self, name: &str) -> io::Result<Pid> {
        let mut command = Command::new(self.config.cont_init_dir.join(name));
        // The boot pass registers every gateway down, and changes nothing on the volume,
        // while another container holds it.
        command.env("HERMES_INIT_VOLUME", if self.supervisor.standby().is_some() { "standby" } else { "held" });
        if let Some(dir) = &self.start_dir {
            command.current_dir(dir);
        }
        spawn_clean(command, SpawnOptions::default())
    }

    fn spawn_command(&self) -> io::Result<Pid> {
        let (program, args) = self.config.command.split_first().ok_or(io::ErrorKind::InvalidInput)?;
        let mut command = Command::new(program);
        command.args(args);
        if let Some(dir) = &self.start_dir {
            command.current_dir(dir);
        }
        spawn_clean(command, SpawnOptions { take_terminal: true, ..SpawnOptions::default() })
    }

    fn command_line(&self) -> String {
        self.config.command.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ")
    }
}

fn bind_control(config: &Config) -> Option<ControlServer> {
    let admin_gid = match config.admin_group.as_deref().map(sys::group_id) {
        None => None,
        Some(Ok(gid)) => Some(gid),
        Some(Err(e)) => {
            tracing::error!("HERMES_INIT_ADMIN_GROUP: {e}; the control socket stays root-only");
            None
        }
    };
    match ControlServer::bind(&config.runtime_dir, admin_gid, config.control_idle) {
        Ok(server) => {
            tracing::debug!("control socket at {}", server.path().display());
            Some(server)
        }
        Err(e) => {
            runtime_dir_banner(config, "the control socket", &e);
            None
        }
    }
}

/// Lines that must not be missed in `docker logs`.
fn banner(lines: &[&str]) {
    tracing::error!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
    for line in lines {
        tracing::error!("!!! {line}");
    }
    tracing::error!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
}

/// The runtime directory cannot hold a socket: say so loudly, with the fix. Without its
/// sockets the init is unhealthy (the HEALTHCHECK cannot reach it), never silently headless.
fn runtime_dir_banner(config: &Config, what: &str, error: &io::Error) {
    let uid = sys::effective_uid();
    let fix = if uid == 0 {
        "make it writable (it is a tmpfs normally: --tmpfs /run:exec)".to_string()
    } else {
        format!("as uid {uid}, give /run to that user: docker run --user {uid} --tmpfs /run:exec,uid={uid}")
    };
    banner(&[
        &format!("cannot open {what} in {}: {error}", config.runtime_dir.display()),
        "running without it: hermesctl and the health API cannot reach this init, and it is unhealthy",
        &fix,
    ]);
}

fn report(result: io::Result<()>, sig: i32, pid: Pid) {
    if let Err(e) = result {
        tracing::warn!("cannot send {} to {pid}: {e}", signal::name(sig));
    }
}
