//! `hermesctl`: the operator's command line. Slot commands go through the control socket;
//! profile and gateway commands also write the volume (the intent in the state file, the
//! slot directory in the scan dir) before they act on the slot through the socket.
//!
//! Invariants: every outcome maps to one exit code of `core::exit::code` (0 ok, 1 negative
//! answer, 100 usage, 111 no supervisor reachable or system error) and one clear line on
//! stderr when it is not 0; every subcommand takes only its own options (and the global
//! ones), as `--opt value` or `--opt=value`, and refuses any other.

pub mod client;
pub mod gateway;
pub mod health;
pub mod slots;
pub mod table;

use std::path::PathBuf;
use std::time::Duration;

use lexopt::prelude::*;

use crate::core::exit::code;
use crate::core::paths;
use client::{Client, CtlError};

/// The default wait limit of `--wait`, as the control protocol's.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;

pub const HELP: &str = "\
hermesctl: control the hermes-init supervisor of this container

USAGE:
    hermesctl [GLOBAL OPTIONS] COMMAND [ARGS...] [OPTIONS]

COMMANDS:
    status [SLOT] [--json]               Gateways and slots (state, pid, uptime, restarts,
                                         wanted, last exit, failure reason), or one slot;
                                         --json prints the raw reply
    start SLOT... [--wait] [--timeout MS]
                                         Start slots; --wait waits until each is ready
    stop SLOT... [--wait] [--timeout MS] Stop slots; --wait waits until each is down
    restart SLOT... [--wait] [--timeout MS]
                                         Restart slots; --wait waits until each is ready
    signal SIG SLOT                      Send a signal (name or number) to a slot's process
    load DIR                             Load a slot directory (a path, or a name in the
                                         scan dir) and start it unless it has a down file
    unload SLOT [--remove] [--timeout MS]
                                         Stop a slot, wait until its processes are gone, and
                                         forget it; --remove also deletes its directory
    scan                                 Load new slot directories, unload vanished ones
    logs SLOT [-n N] [-f]                The slot's last N lines of output [20] (the reaper
                                         keeps 200 lines or 32 KiB per slot); -f follows
    send EVENT [JSON]                    Send any control event (JSON object of fields) and
                                         print the raw reply
    profile create NAME [--start] [--wait] [--timeout MS]
                                         Create a profile (directory, SOUL.md, a port from
                                         9200-9799 in gateway.port), register its gateway
                                         slot and load it; down unless --start
    profile delete NAME --yes [--timeout MS]
                                         Stop its gateway, wait until its processes are
                                         gone, remove the slot and the profile directory
    gateway start|stop|restart [-p NAME | --all] [--wait] [--timeout MS]
                                         Record desired_state (running or stopped) in the
                                         profile's gateway_state.json, then act on its slot;
                                         no -p means the default profile; --all tries every
                                         profile and prints a summary
    gateway register NAME                Register and load the slot of a profile created
                                         outside the container
    health [--json] [--level alive|ready]
                                         Ask the health API: exit 0 when healthy at that
                                         level, 1 when not, 111 when no reaper answers
                                         (for HEALTHCHECK and Kubernetes exec probes)

GLOBAL OPTIONS (anywhere on the line):
    --socket PATH    The control socket [$HERMES_INIT_RUNTIME_DIR/control.sock, default
                     /run/hermes-init/control.sock]
    --health-socket PATH
                     The health socket [health.sock beside the control socket]
    --home DIR       The profile home [$HERMES_HOME, default /opt/data]; the scan dir is
                     $HERMES_INIT_SCAN_DIR [/run/service]
    -h, --help       Print this help
    -V, --version    Print the version

OPTIONS:
    --wait           Wait until the slot reaches the state asked for
    --timeout MS     Limit for --wait [30000]

EXIT CODES:
    0      done
    1      the answer was negative (no such slot, failed, timed out)
    100    usage error
    111    no supervisor reachable, or a system error
";

/// The options any subcommand may use.
#[derive(Debug, Clone)]
pub struct Globals {
    pub socket: PathBuf,
    pub health_socket: Option<PathBuf>,
    pub home: Option<PathBuf>,
}

/// The flags a subcommand accepts; anything else is a usage error.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    pub json: bool,
    pub wait: bool,
    pub timeout_ms: Option<u64>,
    pub remove: bool,
    pub all: bool,
    pub start: bool,
    pub yes: bool,
    pub profile: Option<String>,
    pub level: Option<String>,
    pub lines: Option<usize>,
    pub follow: bool,
}

impl Flags {
    pub fn wait_limit(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS))
    }
}

/// Which flags each command takes (global options are always taken).
fn allowed_flags(command: &str) -> &'static [&'static str] {
    match command {
        "status" => &["json"],
        "start" | "stop" | "restart" => &["wait", "timeout"],
        "unload" => &["remove", "timeout"],
        "profile" => &["start", "wait", "timeout", "yes"],
        "gateway" => &["profile", "all", "wait", "timeout"],
        "health" => &["json", "level"],
        "logs" => &["lines", "follow"],
        _ => &[],
    }
}

/// What the command line asks for.
#[derive(Debug)]
enum Invocation {
    Help,
    Version,
    Run { globals: Globals, command: String, words: Vec<String>, flags: Box<Flags> },
}

fn parse(args: Vec<String>, env: &impl Fn(&str) -> Option<String>) -> Result<Invocation, CtlError> {
    let mut globals = Globals { socket: paths::runtime_dir(env).join("control.sock"), health_socket: None, home: None };
    let mut flags = Flags::default();
    let mut command: Option<String> = None;
    let mut words = Vec::new();
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next()? {
        let flag = match &arg {
            Short('h') | Long("help") => return Ok(Invocation::Help),
            Short('V') | Long("version") => return Ok(Invocation::Version),
            Long("socket") => {
                globals.socket = parser.value()?.string()?.into();
                continue;
            }
            Long("health-socket") => {
                globals.health_socket = Some(parser.value()?.string()?.into());
                continue;
            }
            Long("home") => {
                globals.home = Some(parser.value()?.string()?.into());
                continue;
            }
            Value(value) => {
                let value = value.clone().string()?;
                if command.is_none() {
                    command = Some(value);
                } else {
                    words.push(value);
                }
                continue;
            }
            Long("json") => "json",
            Long("wait") => "wait",
            Long("timeout") => "timeout",
            Long("remove") => "remove",
            Long("all") => "all",
            Long("start") => "start",
            Long("yes") => "yes",
            Short('p') | Long("profile") => "profile",
            Long("level") => "level",
            Short('n') | Long("lines") => "lines",
            Short('f') | Long("follow") => "follow",
            Short(c) if c.is_ascii_digit() && command.as_deref() == Some("signal") => {
                return Err(CtlError::usage(format!("-{c}...: not a signal (a name, or a number from 1 to 64)")));
            }
            _ => return Err(arg.unexpected().into()),
        };
        let Some(name) = command.as_deref() else {
            return Err(CtlError::usage(format!("--{flag} must follow a command")));
        };
        if !allowed_flags(name).contains(&flag) {
            return Err(CtlError::usage(format!("'{name}' takes no --{flag}")));
        }
        match flag {
            "json" => flags.json = true,
            "wait" => flags.wait = true,
            "remove" => flags.remove = true,
            "all" => flags.all = true,
            "start" => flags.start = true,
            "yes" => flags.yes = true,
            "timeout" => {
                let value = parser.value()?.string()?;
                flags.timeout_ms = Some(
                    value
                        .parse()
                        .map_err(|_| CtlError::usage(format!("--timeout: not a number of milliseconds: '{value}'")))?,
                );
            }
            "profile" => flags.profile = Some(parser.value()?.string()?),
            "level" => flags.level = Some(parser.value()?.string()?),
            "follow" => flags.follow = true,
            "lines" => {
                let value = parser.value()?.string()?;
                flags.lines =
                    Some(value.parse().map_err(|_| CtlError::usage(format!("-n: not a number of lines: '{value}'")))?);
            }
            _ => {}
        }
    }
    let command = command.ok_or_else(|| CtlError::usage("no command given"))?;
    Ok(Invocation::Run { globals, command, words, flags: Box::new(flags) })
}

/// Runs `hermesctl` with the arguments after the program name; returns the exit code.
pub fn run(args: Vec<String>, env: impl Fn(&str) -> Option<String>) -> i32 {
    let result = parse(args, &env).and_then(|invocation| match invocation {
        Invocation::Help => {
            print!("{HELP}");
            Ok(code::OK)
        }
        Invocation::Version => {
            println!("hermesctl {}", env!("CARGO_PKG_VERSION"));
            Ok(code::OK)
        }
        Invocation::Run { globals, command, words, flags } => dispatch(&globals, &command, &words, &flags, &env),
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("hermesctl: {error}");
            error.code()
        }
    }
}

fn dispatch(
    globals: &Globals,
    command: &str,
    words: &[String],
    flags: &Flags,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<i32, CtlError> {
    let client = Client { socket: globals.socket.clone(), wait: flags.wait_limit() };
    match command {
        "status" => slots::status(&client, words, flags),
        "start" | "stop" | "restart" => slots::change(&client, command, words, flags),
        "signal" => slots::signal(&client, words),
        "load" => slots::load(&client, words),
        "unload" => slots::unload(&client, words, flags),
        "scan" => slots::scan(&client, words),
        "logs" => slots::logs(&client, words, flags),
        "send" => slots::send(&client, words),
        "profile" | "gateway" => {
            let mut pass = crate::cont_init::Pass::from_env(env, crate::volume::slot_writer::helper_path());
            if let Some(home) = &globals.home {
                pass.home = crate::volume::Home::new(home);
            }
            let ctx = gateway::Context { client, pass, wait: flags.wait };
            if command == "profile" {
                gateway::profile(&ctx, words, flags)
            } else {
                gateway::gateway(&ctx, words, flags)
            }
        }
        "health" => health::health(globals, words, flags),
        other => Err(CtlError::usage(format!("unknown command '{other}'"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(args: &[&str]) -> Result<Invocation, CtlError> {
        parse(args.iter().map(|a| a.to_string()).collect(), &|_| None)
    }

    #[test]
    fn arguments() {
        let Ok(Invocation::Run { globals, command, words, flags }) =
            parsed(&["stop", "a", "b", "--wait", "--timeout=5000", "--socket", "/s"])
        else {
            panic!("not parsed");
        };
        assert_eq!((command.as_str(), words.len()), ("stop", 2));
        assert!(flags.wait);
        assert_eq!(flags.timeout_ms, Some(5000));
        assert_eq!(globals.socket, PathBuf::from("/s"));
        let Ok(Invocation::Run { flags, .. }) = parsed(&["gateway", "start", "-p", "work", "--all"]) else {
            panic!("not parsed");
        };
        assert_eq!(flags.profile.as_deref(), Some("work"));
        assert!(matches!(parsed(&["--version"]), Ok(Invocation::Version)));
        // --wait waits 30 s by default, as the protocol and the README say.
        let Ok(Invocation::Run { flags, .. }) = parsed(&["start", "a", "--wait"]) else { panic!("not parsed") };
        assert_eq!(flags.wait_limit(), Duration::from_secs(30));
        assert!(matches!(parsed(&["status", "-h"]), Ok(Invocation::Help)));
        // (arguments, part of the usage error)
        let bad: [(&[&str], &str); 7] = [
            (&[], "no command"),
            (&["status", "--wait"], "'status' takes no --wait"),
            (&["signal", "--json", "HUP", "a"], "'signal' takes no --json"),
            (&["--wait", "start", "a"], "--wait must follow a command"),
            (&["start", "a", "--bogus"], "--bogus"),
            (&["start", "a", "--timeout", "soon"], "not a number"),
            (&["start", "a", "--timeout"], "--timeout"),
        ];
        for (args, needle) in bad {
            match parsed(args) {
                Err(CtlError::Usage(message)) => assert!(message.contains(needle), "{args:?}: {message}"),
                other => panic!("{args:?}: {other:?}"),
            }
        }
    }
}
