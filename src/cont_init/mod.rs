//! `hermes-cont-init`: the boot pass that rebuilds every gateway slot from the state saved
//! on the volume, run as a boot hook before the reaper loads the slots.
//!
//! Invariants: one profile's problem (a hostile state file, an invalid name, a failed
//! write) is that profile's warning and outcome, and the pass goes on; only an unwritable
//! scan dir fails the pass (exit 111); `--dry-run` touches nothing.

pub mod exec_as;

use std::io::Write;
use std::path::{Path, PathBuf};

use lexopt::prelude::*;
use serde_json::{Value, json};

use crate::core::exit::code;
use crate::core::paths;
use crate::core::reconcile::{self, Decision};
use crate::sys::beneath::Dir;
use crate::volume::slot_writer::{self, GatewaySlot};
use crate::volume::{Found, Home, boot_log, intent, state};

pub const HELP: &str = "\
hermes-cont-init: rebuild the gateway slots from the state saved on the volume

USAGE:
    hermes-cont-init [--home DIR] [--scan-dir DIR] [--dry-run] [--json]
    hermes-cont-init exec-as USER -- CMD [ARGS...]
    hermes-cont-init --help | --version

The default profile (HERMES_HOME itself) comes first, then every directory of
HERMES_HOME/profiles holding SOUL.md, sorted by name. Each gets the slot gateway-<profile>
in the scan dir, started at boot when its gateway_state.json says so:
    desired_state running                      -> start
    desired_state stopped                      -> down
    no desired_state, gateway_state running,
      draining or degraded                     -> start (and record desired_state running)
    anything else, or an unreadable file       -> down, with a warning

OPTIONS:
    --home DIR       The profile home [$HERMES_HOME, default /opt/data]
    --scan-dir DIR   Where slots are written [$HERMES_INIT_SCAN_DIR, default /run/service]
    --dry-run        Print the plan; change nothing
    --json           Print the plan as JSON
    -h, --help       Print this help
    -V, --version    Print the version

ENVIRONMENT:
    HERMES_INIT_GATEWAY_CMD    A shell command line replacing the gateway command
                               (default: hermes gateway run --replace for the default
                               profile, hermes -p <name> gateway run --replace otherwise);
                               run with HERMES_PROFILE and HERMES_PROFILE_DIR exported
    HERMES_INIT_GATEWAY_USER   The user gateways run as, when it exists and the init runs
                               as root [hermes]

exec-as USER -- CMD: runs CMD as USER (with USER's groups) when running as root and USER
exists, else as is; the gateway slots' run files use it to drop privileges.

EXIT CODES:
    0      every profile was handled (some may have been skipped)
    100    usage error
    111    the scan dir cannot be written
";

/// The settings of one pass.
#[derive(Debug, Clone)]
pub struct Pass {
    pub home: Home,
    pub scan_dir: PathBuf,
    pub dry_run: bool,
    pub json: bool,
    pub gateway_command: Option<String>,
    pub gateway_user: String,
    pub helper: PathBuf,
    /// Another container holds the volume (`HERMES_INIT_VOLUME=standby`, set by the reaper
    /// for its hooks): every gateway is registered down, and nothing on the volume changes
    /// but the boot log.
    pub standby: bool,
}

impl Pass {
    /// Settings from the environment alone (for callers other than the command line).
    pub fn from_env(env: &impl Fn(&str) -> Option<String>, helper: PathBuf) -> Pass {
        Pass {
            home: Home::new(paths::home(env)),
            scan_dir: paths::scan_dir(env),
            dry_run: false,
            json: false,
            gateway_command: env("HERMES_INIT_GATEWAY_CMD").filter(|v| !v.trim().is_empty()),
            gateway_user: env("HERMES_INIT_GATEWAY_USER").filter(|v| !v.is_empty()).unwrap_or_else(|| "hermes".into()),
            helper,
            standby: env("HERMES_INIT_VOLUME").as_deref() == Some("standby"),
        }
    }

    /// The slot description of a profile (at `path`, opened as `dir`).
    pub fn gateway_slot(&self, name: &str, path: &Path, dir: &Dir) -> GatewaySlot {
        GatewaySlot {
            profile: name.to_string(),
            profile_dir: path.to_path_buf(),
            home: self.home.root.clone(),
            port: crate::volume::read_port(dir),
            command: self.gateway_command.clone(),
            user: self.gateway_user.clone(),
            helper: self.helper.clone(),
        }
    }
}

/// A name as it may be printed: as is when it is a valid profile name, escaped otherwise
/// (a directory name with a newline must not inject a line into a log).
pub fn shown(name: &str) -> String {
    if name == "default" || reconcile::valid_profile_name(name) || RUNNING_WORDS.contains(&name) {
        name.to_string()
    } else {
        format!("{name:?}")
    }
}

/// The `gateway_state` words printed as they are.
const RUNNING_WORDS: [&str; 6] = ["starting", "running", "degraded", "draining", "stopped", "startup_failed"];

/// The outcome for one profile.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub profile: String,
    pub prior_state: Option<String>,
    pub action: &'static str,
    pub desired: Option<String>,
    pub reason: Option<String>,
    /// The slot could not be written (the scan dir is full or read-only).
    pub slot_failed: bool,
}

impl Outcome {
    fn log_line(&self, timestamp: &str) -> String {
        let mut line = format!(
            "{timestamp} profile={} prior_state={} action={}",
            shown(&self.profile),
            self.prior_state.as_deref().map_or("-".into(), shown),
            self.action
        );
        if let Some(desired) = &self.desired {
            line.push_str(&format!(" desired={desired}"));
        }
        if let Some(reason) = &self.reason {
            line.push_str(&format!(" reason={:?}", reason));
        }
        line
    }

    fn to_json(&self) -> Value {
        json!({
            "profile": self.profile,
            "slot": reconcile::slot_name(&self.profile),
            "prior_state": self.prior_state,
            "action": self.action,
            "desired": self.desired,
            "reason": self.reason,
        })
    }
}

/// Runs the pass; returns the exit code.
pub fn run(pass: &Pass) -> i32 {
    if !pass.dry_run {
        if let Err(e) = fs_err::create_dir_all(&pass.scan_dir).and_then(|_| probe_writable(&pass.scan_dir)) {
            eprintln!("hermes-cont-init: cannot write the scan dir {}: {e}", pass.scan_dir.display());
            return code::SYSTEM;
        }
        let swept = slot_writer::sweep_staging(&pass.scan_dir);
        if swept > 0 {
            eprintln!("hermes-cont-init: removed {swept} stale staging directories");
        }
    }
    let mut outcomes = Vec::new();
    for found in pass.home.walk() {
        let outcome = match found {
            Found::Skipped { name, reason } => {
                eprintln!("hermes-cont-init: warning: profile {}: skipped: {reason}", shown(&name));
                Outcome {
                    profile: name,
                    prior_state: None,
                    action: "skipped",
                    desired: None,
                    reason: Some(reason),
                    slot_failed: false,
                }
            }
            Found::Profile { name, dir } => reconcile_one(pass, &name, &dir),
        };
        outcomes.push(outcome);
    }
    if !pass.dry_run {
        let kept: Vec<String> = outcomes.iter().map(|o| reconcile::slot_name(&o.profile)).collect();
        for removed in slot_writer::sweep_orphan_slots(&pass.scan_dir, &kept) {
            eprintln!("hermes-cont-init: removed slot {removed}: its profile is gone");
        }
    }
    let timestamp = crate::sys::files::local_timestamp();
    if pass.json {
        let plan: Vec<Value> = outcomes.iter().map(Outcome::to_json).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"dry_run": pass.dry_run, "profiles": plan})).unwrap_or_default()
        );
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut log = String::new();
    for outcome in &outcomes {
        if !pass.json {
            let _ = writeln!(
                out,
                "reconcile: profile={} prior_state={} action={}",
                shown(&outcome.profile),
                outcome.prior_state.as_deref().map_or("-".into(), shown),
                outcome.action,
            );
        }
        log.push_str(&outcome.log_line(&timestamp));
        log.push('\n');
    }
    let _ = out.flush();
    if !pass.dry_run
        && let Err(e) = boot_log::append_boot_log(&pass.home, &log)
    {
        eprintln!("hermes-cont-init: warning: cannot append to the boot log: {e}");
    }
    let without: Vec<String> = outcomes.iter().filter(|o| o.slot_failed).map(|o| shown(&o.profile)).collect();
    if !without.is_empty() {
        // Nothing half-written stays behind for the reaper to trip over.
        slot_writer::sweep_staging(&pass.scan_dir);
        eprintln!(
            "hermes-cont-init: {} of {} profiles are without a slot (the scan dir {} could not be written): {}",
            without.len(),
            outcomes.len(),
            pass.scan_dir.display(),
            without.join(" ")
        );
        return code::SYSTEM;
    }
    code::OK
}

fn probe_writable(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".probe-{}", std::process::id()));
    fs_err::write(&probe, b"")?;
    fs_err::remove_file(&probe)
}

fn reconcile_one(pass: &Pass, name: &str, path: &Path) -> Outcome {
    let profile = match pass.home.open_profile(name) {
        Ok(profile) => profile,
        Err(e) => {
            eprintln!("hermes-cont-init: warning: profile {name}: skipped: {e}");
            return Outcome {
                profile: name.to_string(),
                prior_state: None,
                action: "skipped",
                desired: None,
                reason: Some(e.to_string()),
                slot_failed: false,
            };
        }
    };
    let state = state::read_state(&profile);
    let intent = match intent::read(&profile) {
        Ok(intent) => intent,
        Err(reason) => {
            eprintln!("hermes-cont-init: warning: profile {name}: intent ignored: {reason}");
            None
        }
    };
    let Decision { start, prior_state, desired, record_running, adopt, warning, .. } =
        reconcile::decide(state.as_ref().map_err(String::as_str), intent);
    if let Some(warning) = &warning {
        eprintln!("hermes-cont-init: warning: profile {name}: down: {warning}");
    }
    let mut outcome = Outcome {
        profile: name.to_string(),
        prior_state,
        action: if start { "started" } else { "registered" },
        desired: desired.clone(),
        reason: warning,
        slot_failed: false,
    };
    if pass.standby {
        outcome.action = "registered";
        outcome.reason = Some("the volume is held by another container: down here".into());
        if let Err(e) = slot_writer::write_slot(&pass.scan_dir, &pass.gateway_slot(name, path, &profile), true) {
            eprintln!("hermes-cont-init: warning: profile {}: cannot write its slot: {e}", shown(name));
            outcome.action = "skipped";
            outcome.slot_failed = true;
        }
        return outcome;
    }
    if pass.dry_run {
        outcome.action = if start { "would-start" } else { "would-register" };
        if record_running {
            outcome.desired = Some("running".into());
        }
        return outcome;
    }
    for removed in state::sweep_stale_files(&profile) {
        eprintln!("hermes-cont-init: profile {name}: removed stale {removed}");
    }
    if record_running {
        match state::record_desired(&profile, "running") {
            Ok(()) => outcome.desired = Some("running".into()),
            Err(e) => eprintln!("hermes-cont-init: warning: profile {name}: cannot record the intent: {e}"),
        }
    } else if let Some(adopted) = adopt {
        // Another tool said it in the state file, later: that is the intent from now on.
        let at = crate::sys::files::utc_timestamp_ms();
        if let Err(e) = intent::write(&profile, adopted.running, &at) {
            eprintln!("hermes-cont-init: warning: profile {name}: cannot record the intent: {e}");
        }
    }
    if let Err(e) = slot_writer::write_slot(&pass.scan_dir, &pass.gateway_slot(name, path, &profile), !start) {
        eprintln!("hermes-cont-init: warning: profile {name}: cannot write its slot: {e}");
        outcome.action = "skipped";
        outcome.reason = Some(format!("cannot write the slot: {e}"));
        outcome.slot_failed = true;
    }
    outcome
}

/// What the command line asks for.
enum Invocation {
    Help,
    Version,
    Run(Box<Pass>),
}

fn parse(args: Vec<String>, env: &impl Fn(&str) -> Option<String>) -> Result<Invocation, lexopt::Error> {
    let mut pass = Pass::from_env(env, slot_writer::helper_path());
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Invocation::Help),
            Short('V') | Long("version") => return Ok(Invocation::Version),
            Long("dry-run") => pass.dry_run = true,
            Long("json") => pass.json = true,
            Long("home") => pass.home = Home::new(PathBuf::from(parser.value()?)),
            Long("scan-dir") => pass.scan_dir = parser.value()?.into(),
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(Invocation::Run(Box::new(pass)))
}

/// The command line of `hermes-cont-init`; returns the exit code.
pub fn main(args: Vec<String>, env: impl Fn(&str) -> Option<String>) -> i32 {
    if args.first().map(String::as_str) == Some("exec-as") {
        return exec_as::main(&args[1..]);
    }
    match parse(args, &env) {
        Ok(Invocation::Help) => {
            print!("{HELP}");
            code::OK
        }
        Ok(Invocation::Version) => {
            println!("hermes-cont-init {}", env!("CARGO_PKG_VERSION"));
            code::OK
        }
        Ok(Invocation::Run(pass)) => run(&pass),
        Err(e) => {
            eprintln!("hermes-cont-init: {e} (see --help)");
            code::USAGE
        }
    }
}
