//! The reaper's settings, from its command line and environment, with the help text that
//! documents every one of them.
//!
//! Invariants: parsing is pure (arguments and a variable lookup go in, a `Config` or an error
//! naming the offending option or variable comes out); a set but invalid variable is an
//! error, never silently replaced by its default.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use crate::core::hooks::HookFailurePolicy;
use crate::core::slot::SlotSettings;

/// Every setting of `hermes-reaper`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The main command and its arguments; empty means "run until told to stop".
    pub command: Vec<OsString>,
    /// Forward signals to the main command's whole process group.
    pub signal_group: bool,
    /// Directory of boot hooks.
    pub cont_init_dir: PathBuf,
    /// Per-hook time limit; `None` means no limit.
    pub hook_timeout: Option<Duration>,
    /// What a failed hook does to the boot.
    pub hook_failure: HookFailurePolicy,
    /// How long the shutdown waits after SIGTERM before SIGKILL.
    pub kill_grace: Duration,
    /// The most verbose log level shown.
    pub log_level: tracing::Level,
    /// Directory of slot directories.
    pub scan_dir: PathBuf,
    /// Directory of the control socket.
    pub runtime_dir: PathBuf,
    /// Group (name or gid) allowed to use the control socket besides root and the init's user.
    pub admin_group: Option<String>,
    /// How service output lines are written to stdout.
    pub output_format: crate::reaper::output::Format,
    /// The profile home, for gateway log files.
    pub home: PathBuf,
    /// TCP address of the health API, besides its unix socket.
    pub health_addr: Option<String>,
    /// A control client that completes no request for this long is disconnected.
    pub control_idle: Duration,
    /// Per-slot defaults that slot directories may override.
    pub slot_defaults: SlotSettings,
    /// Test-only: reap only the pids the init started itself, leaving orphans as zombies.
    pub reap_orphans: bool,
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    Run(Box<Config>),
    Help,
    Version,
}

/// A configuration error, with the option or variable it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

pub use crate::core::paths::{DEFAULT_CONT_INIT_DIR, DEFAULT_RUNTIME_DIR, DEFAULT_SCAN_DIR};
pub const DEFAULT_KILL_GRACETIME_MS: u64 = 3000;

/// Parses the arguments after the program name, reading variables through `env`.
pub fn parse(
    args: impl IntoIterator<Item = OsString>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Invocation, ConfigError> {
    let mut args = args.into_iter();
    let mut signal_group = flag(&env, "HERMES_INIT_SIGNAL_GROUP")?.unwrap_or(false);
    let mut command = Vec::new();
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("-h" | "--help") => return Ok(Invocation::Help),
            Some("-V" | "--version") => return Ok(Invocation::Version),
            Some("-g" | "--group") => signal_group = true,
            Some("--") => {
                command.extend(args.by_ref());
                break;
            }
            Some(option) if option.starts_with('-') && option.len() > 1 => {
                return Err(ConfigError(format!("unknown option '{option}' (see --help)")));
            }
            _ => {
                command.push(arg);
                command.extend(args.by_ref());
                break;
            }
        }
    }
    let hook_timeout_ms = millis(&env, "HERMES_INIT_HOOK_TIMEOUT_MS")?.unwrap_or(0);
    let hook_failure = match env("HERMES_INIT_BEHAVIOUR_IF_HOOK_FAILS") {
        None => HookFailurePolicy::default(),
        Some(value) => HookFailurePolicy::parse(&value).ok_or_else(|| {
            ConfigError(format!("HERMES_INIT_BEHAVIOUR_IF_HOOK_FAILS must be 0, 1 or 2, not '{value}'"))
        })?,
    };
    let log_level = match env("HERMES_INIT_LOG_LEVEL") {
        None => tracing::Level::INFO,
        Some(value) => value.trim().parse().map_err(|_| {
            ConfigError(format!("HERMES_INIT_LOG_LEVEL must be one of error, warn, info, debug, trace, not '{value}'"))
        })?,
    };
    let mut slot_defaults = SlotSettings::default();
    if let Some(ms) = millis(&env, "HERMES_INIT_READY_AFTER_MS")? {
        slot_defaults.ready_after = Duration::from_millis(ms);
    }
    if let Some(ms) = millis(&env, "HERMES_INIT_CRASH_WINDOW_MS")? {
        slot_defaults.crash_window = Duration::from_millis(ms);
    }
    if let Some(value) = env("HERMES_INIT_CRASH_LIMIT") {
        slot_defaults.crash_limit = value.trim().parse().ok().filter(|n| (1..=1000).contains(n)).ok_or_else(|| {
            ConfigError(format!("HERMES_INIT_CRASH_LIMIT must be a whole number from 1 to 1000, not '{value}'"))
        })?;
    }
    let dir = |name: &str, default: &str| -> PathBuf {
        env(name).filter(|v| !v.is_empty()).unwrap_or_else(|| default.into()).into()
    };
    Ok(Invocation::Run(Box::new(Config {
        scan_dir: dir("HERMES_INIT_SCAN_DIR", DEFAULT_SCAN_DIR),
        runtime_dir: dir("HERMES_INIT_RUNTIME_DIR", DEFAULT_RUNTIME_DIR),
        admin_group: env("HERMES_INIT_ADMIN_GROUP").filter(|v| !v.trim().is_empty()),
        slot_defaults,
        output_format: crate::reaper::output::Format::from_env(
            env("HERMES_INIT_LOG_FORMAT").as_deref(),
            env("HERMES_INIT_LOG_PREFIX").as_deref(),
        )
        .map_err(ConfigError)?,
        home: dir("HERMES_HOME", "/opt/data"),
        health_addr: env("HERMES_INIT_HEALTH_ADDR").filter(|v| !v.trim().is_empty()),
        control_idle: Duration::from_millis(millis(&env, "HERMES_INIT_CONTROL_IDLE_MS")?.unwrap_or(30_000).max(1)),
        command,
        signal_group,
        cont_init_dir: env("HERMES_INIT_CONT_INIT_DIR")
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| DEFAULT_CONT_INIT_DIR.into())
            .into(),
        hook_timeout: (hook_timeout_ms > 0).then(|| Duration::from_millis(hook_timeout_ms)),
        hook_failure,
        kill_grace: Duration::from_millis(
            millis(&env, "HERMES_INIT_KILL_GRACETIME_MS")?.unwrap_or(DEFAULT_KILL_GRACETIME_MS),
        ),
        log_level,
        reap_orphans: !flag(&env, "HERMES_INIT_TESTONLY_NO_REAP")?.unwrap_or(false),
    })))
}

fn millis(env: &impl Fn(&str) -> Option<String>, name: &str) -> Result<Option<u64>, ConfigError> {
    match env(name) {
        None => Ok(None),
        Some(value) => {
            value.trim().parse::<u64>().ok().filter(|ms| *ms <= 24 * 3600 * 1000).map(Some).ok_or_else(|| {
                ConfigError(format!("{name} must be a whole number of milliseconds (0 to 86400000), not '{value}'"))
            })
        }
    }
}

fn flag(env: &impl Fn(&str) -> Option<String>, name: &str) -> Result<Option<bool>, ConfigError> {
    match env(name).as_deref().map(str::trim) {
        None => Ok(None),
        Some("1" | "true" | "yes") => Ok(Some(true)),
        Some("0" | "false" | "no" | "") => Ok(Some(false)),
        Some(other) => Err(ConfigError(format!("{name} must be 0 or 1, not '{other}'"))),
    }
}

/// The `--help` text.
pub const HELP: &str = "\
hermes-reaper: the container init of hermes-init (PID 1, installed as /init)

USAGE:
    hermes-reaper [OPTIONS] [--] [CMD [ARGS...]]

Runs the boot hooks, then CMD as the main program; reaps every zombie; forwards signals to
CMD; exits with CMD's exit code. Without CMD it runs until SIGTERM or SIGINT. When it is not
PID 1 it becomes a child subreaper, so orphans below it are still reaped.

OPTIONS:
    -g, --group      Forward signals to CMD's whole process group, not only to CMD
                     (same as HERMES_INIT_SIGNAL_GROUP=1)
    -h, --help       Print this help
    -V, --version    Print the version

ENVIRONMENT (default in brackets):
    HERMES_INIT_CONT_INIT_DIR            Directory of boot hooks, run one at a time in byte
                                         order of their names before CMD; only executable
                                         regular files run; a missing directory means no
                                         hooks [/etc/cont-init.d]
    HERMES_INIT_HOOK_TIMEOUT_MS          Time limit for each hook; at the limit the hook's
                                         process group is killed (0 = no limit) [0]
    HERMES_INIT_BEHAVIOUR_IF_HOOK_FAILS  0: log and go on; 1: log a warning banner and go on;
                                         2: stop the container with the hook's exit code [0]
    HERMES_INIT_KILL_GRACETIME_MS        At shutdown, how long to wait after SIGTERM before
                                         SIGKILL of whatever is left [3000]
    HERMES_INIT_SIGNAL_GROUP             1: as --group [0]
    HERMES_INIT_SCAN_DIR                 Directory of slot directories (s6 layout: run, finish,
                                         down, timeout-kill, timeout-finish, down-signal,
                                         notification-fd), all loaded after the hooks
                                         [/run/service]
    HERMES_INIT_RUNTIME_DIR              Directory of the sockets control.sock and
                                         health.sock [/run/hermes-init]
    HERMES_INIT_ADMIN_GROUP              Group (name or gid) whose members may use the control
                                         socket besides root and the init's own user; makes
                                         the socket mode 0660 [none: mode 0600]
    HERMES_INIT_LOG_PREFIX               0: pass service output lines through without the
                                         [slot] prefix [1]
    HERMES_INIT_LOG_FORMAT               text, or json: one JSON object per service line
                                         with time, slot, stream and message [text]
    HERMES_HOME                          The profile home; gateway output is also appended
                                         to HERMES_HOME/logs/gateways/<profile>/current,
                                         rotated at 1 MB keeping 10 archives [/opt/data]
    HERMES_INIT_HEALTH_ADDR              Also serve the health API over TCP at this address,
                                         e.g. 0.0.0.0:9198 (always on health.sock in the
                                         runtime dir) [none]
    HERMES_INIT_CONTROL_IDLE_MS          A control client that sends no complete request for
                                         this long is disconnected [30000]
    HERMES_INIT_READY_AFTER_MS           A slot without notification-fd is ready after this
                                         long up [1000]
    HERMES_INIT_CRASH_LIMIT              Deaths before ready, within the crash window, that
                                         put a slot in failed [5]
    HERMES_INIT_CRASH_WINDOW_MS          The crash window [60000]
    HERMES_INIT_LOG_LEVEL                error, warn, info, debug or trace [info]
    HERMES_INIT_TESTONLY_NO_REAP         1: reap only the processes the init started itself,
                                         leaving orphans as zombies. For the test suite's
                                         proof that its zombie checks can fail; never in
                                         production [0]

SIGNALS:
    SIGTERM                       Shut down: every slot gets its down-signal (SIGKILL at its
                                  timeout-kill), CMD's process group and every other process
                                  SIGTERM; SIGKILL to all after the grace time; exit as soon
                                  as nothing is left
    SIGINT                        Forwarded to CMD; without CMD, shut down as for SIGTERM
    SIGHUP SIGQUIT SIGUSR1        Forwarded to CMD
    SIGUSR2 SIGWINCH
    SIGTTIN SIGTTOU               Ignored by the init (CMD gets the terminal when stdin is one)

EXIT CODES:
    N        CMD exited with code N
    128+N    CMD was killed by signal N (143 for SIGTERM, 137 for SIGKILL), or the init was
             told to stop by signal N before CMD started
    0        no CMD, stopped by SIGTERM or SIGINT
    H        a boot hook failed with code H under HERMES_INIT_BEHAVIOUR_IF_HOOK_FAILS=2
    100      bad option or environment variable
    111      system error (the init could not set itself up)
    126      CMD could not be executed (permission denied, not an executable)
    127      CMD was not found
";

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn run(args: &[&str], vars: &[(&str, &str)]) -> Result<Invocation, ConfigError> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        parse(args.iter().map(OsString::from), |name| vars.get(name).cloned())
    }

    fn config(args: &[&str], vars: &[(&str, &str)]) -> Config {
        match run(args, vars) {
            Ok(Invocation::Run(config)) => *config,
            other => panic!("{args:?} {vars:?}: {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let c = config(&[], &[]);
        assert!(c.command.is_empty());
        assert!(!c.signal_group);
        assert_eq!(c.cont_init_dir, PathBuf::from("/etc/cont-init.d"));
        assert_eq!(c.hook_timeout, None);
        assert_eq!(c.hook_failure, HookFailurePolicy::Continue);
        assert_eq!(c.kill_grace, Duration::from_millis(3000));
        assert_eq!(c.log_level, tracing::Level::INFO);
        assert!(c.reap_orphans);
    }

    #[test]
    fn command_line_table() {
        let os = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        let cases: [(&[&str], Vec<OsString>, bool); 5] = [
            (&["sh", "-c", "exit 7"], os(&["sh", "-c", "exit 7"]), false),
            (&["--", "-weird", "--group"], os(&["-weird", "--group"]), false),
            (&["-g", "sleep", "1"], os(&["sleep", "1"]), true),
            (&["--group", "--", "ls", "-l"], os(&["ls", "-l"]), true),
            (&["cmd", "--help"], os(&["cmd", "--help"]), false),
        ];
        for (args, command, group) in cases {
            let c = config(args, &[]);
            assert_eq!(c.command, command, "{args:?}");
            assert_eq!(c.signal_group, group, "{args:?}");
        }
        assert_eq!(run(&["--help"], &[]), Ok(Invocation::Help));
        assert_eq!(run(&["-V"], &[]), Ok(Invocation::Version));
    }

    #[test]
    fn environment_table() {
        let c = config(
            &[],
            &[
                ("HERMES_INIT_HOOK_TIMEOUT_MS", "250"),
                ("HERMES_INIT_BEHAVIOUR_IF_HOOK_FAILS", "2"),
                ("HERMES_INIT_KILL_GRACETIME_MS", "0"),
                ("HERMES_INIT_SIGNAL_GROUP", "1"),
                ("HERMES_INIT_CONT_INIT_DIR", "/x"),
                ("HERMES_INIT_LOG_LEVEL", "debug"),
                ("HERMES_INIT_TESTONLY_NO_REAP", "1"),
            ],
        );
        assert_eq!(c.hook_timeout, Some(Duration::from_millis(250)));
        assert_eq!(c.hook_failure, HookFailurePolicy::Stop);
        assert_eq!(c.kill_grace, Duration::ZERO);
        assert!(c.signal_group);
        assert_eq!(c.cont_init_dir, PathBuf::from("/x"));
        assert_eq!(c.log_level, tracing::Level::DEBUG);
        assert!(!c.reap_orphans);
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let cases: [(&[&str], (&str, &str), &str); 6] = [
            (&["--bogus"], ("X", ""), "--bogus"),
            (&[], ("HERMES_INIT_KILL_GRACETIME_MS", "3s"), "HERMES_INIT_KILL_GRACETIME_MS"),
            (&[], ("HERMES_INIT_HOOK_TIMEOUT_MS", "-1"), "HERMES_INIT_HOOK_TIMEOUT_MS"),
            (&[], ("HERMES_INIT_BEHAVIOUR_IF_HOOK_FAILS", "9"), "HERMES_INIT_BEHAVIOUR_IF_HOOK_FAILS"),
            (&[], ("HERMES_INIT_SIGNAL_GROUP", "maybe"), "HERMES_INIT_SIGNAL_GROUP"),
            (&[], ("HERMES_INIT_LOG_LEVEL", "loud"), "HERMES_INIT_LOG_LEVEL"),
        ];
        for (args, var, needle) in cases {
            match run(args, &[var]) {
                Err(ConfigError(message)) => assert!(message.contains(needle), "{message}"),
                other => panic!("{args:?} {var:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn help_documents_every_variable() {
        for name in [
            "HERMES_INIT_CONT_INIT_DIR",
            "HERMES_INIT_HOOK_TIMEOUT_MS",
            "HERMES_INIT_BEHAVIOUR_IF_HOOK_FAILS",
            "HERMES_INIT_KILL_GRACETIME_MS",
            "HERMES_INIT_SIGNAL_GROUP",
            "HERMES_INIT_LOG_LEVEL",
            "HERMES_INIT_TESTONLY_NO_REAP",
            "HERMES_INIT_SCAN_DIR",
            "HERMES_INIT_RUNTIME_DIR",
            "HERMES_INIT_ADMIN_GROUP",
            "HERMES_INIT_READY_AFTER_MS",
            "HERMES_INIT_CRASH_LIMIT",
            "HERMES_INIT_CRASH_WINDOW_MS",
            "HERMES_INIT_CONTROL_IDLE_MS",
            "HERMES_INIT_HEALTH_ADDR",
            "HERMES_INIT_LOG_PREFIX",
            "HERMES_INIT_LOG_FORMAT",
            "HERMES_HOME",
            "--group",
        ] {
            assert!(HELP.contains(name), "{name} missing from --help");
        }
    }
}
