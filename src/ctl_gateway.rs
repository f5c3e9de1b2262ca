//! `hermesctl profile ...` and `hermesctl gateway ...`: profiles and their gateways while
//! the container runs. The intent (`desired_state`) is written to the volume first, then
//! the slot is acted on through the control socket.
//!
//! Invariants: names are validated before any path is built from them; a profile is never
//! deleted while a process of its gateway runs (the unload waits until the group is gone).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::cont_init::Pass;
use crate::core::reconcile::{self, RESERVED_NAMES, valid_profile_name};
use crate::ctl::{EXIT_NEGATIVE, EXIT_OK, EXIT_USAGE, Failure, request};
use crate::profile::{self, Found};

/// What the gateway commands need.
pub struct Context<'a> {
    pub socket: &'a Path,
    pub pass: Pass,
    pub timeout_ms: u64,
    pub wait: bool,
}

fn usage(message: impl Into<String>) -> Failure {
    Failure { code: EXIT_USAGE, message: format!("{} (see hermesctl --help)", message.into()) }
}

fn negative(message: impl Into<String>) -> Failure {
    Failure { code: EXIT_NEGATIVE, message: message.into() }
}

impl Context<'_> {
    fn ask(&self, body: Value) -> Result<Value, Failure> {
        let limit = Duration::from_millis(self.timeout_ms) + Duration::from_secs(5);
        request(self.socket, &body, limit.max(Duration::from_secs(35)))
    }

    fn slot_loaded(&self, slot: &str) -> Result<bool, Failure> {
        Ok(self.ask(json!({"event": "slot.status", "slot": slot}))?["success"] == true)
    }

    fn load(&self, slot: &str) -> Result<(), Failure> {
        let reply = self.ask(json!({"event": "slot.load", "slot": slot}))?;
        if reply["success"] == true { Ok(()) } else { Err(negative(reply_message(&reply))) }
    }

    /// The directory of an existing profile, or the standard "no such gateway" failure.
    fn existing_profile(&self, name: &str) -> Result<PathBuf, Failure> {
        let dir = self.pass.home.profile_dir(name);
        let exists =
            if name == "default" { dir.is_dir() } else { valid_profile_name(name) && dir.join("SOUL.md").is_file() };
        if exists {
            Ok(dir)
        } else {
            Err(negative(format!("no such gateway '{name}': register it with hermesctl profile create {name}")))
        }
    }

    /// Writes the slot of an existing profile and loads it, down or not.
    fn register(&self, name: &str, dir: &Path, down: bool) -> Result<(), Failure> {
        let slot = reconcile::slot_name(name);
        profile::write_slot(&self.pass.scan_dir, &self.pass.gateway_slot(name, dir), down).map_err(|e| Failure {
            code: crate::ctl::EXIT_SYSTEM,
            message: format!("cannot write slot {slot} in {}: {e}", self.pass.scan_dir.display()),
        })?;
        self.load(&slot)
    }
}

fn reply_message(reply: &Value) -> String {
    reply["message"].as_str().unwrap_or("no message").to_string()
}

/// `profile create|delete ...`
pub fn profile(ctx: &Context, words: &[String], start: bool, yes: bool) -> Result<i32, Failure> {
    match words {
        [verb, name] if verb == "create" => create(ctx, name, start),
        [verb, name] if verb == "delete" => delete(ctx, name, yes),
        _ => Err(usage("usage: hermesctl profile create NAME [--start] | profile delete NAME --yes")),
    }
}

fn create(ctx: &Context, name: &str, start: bool) -> Result<i32, Failure> {
    if !valid_profile_name(name) {
        return Err(usage(format!("invalid profile name '{name}': use ^[a-z0-9][a-z0-9_-]{{0,63}}$")));
    }
    if RESERVED_NAMES.contains(&name) {
        return Err(usage(format!("'{name}' is a reserved name ({})", RESERVED_NAMES.join(", "))));
    }
    let dir = ctx.pass.home.profile_dir(name);
    let system = |what: &str, e: std::io::Error| Failure {
        code: crate::ctl::EXIT_SYSTEM,
        message: format!("cannot {what} {}: {e}", dir.display()),
    };
    std::fs::create_dir_all(ctx.pass.home.root.join("profiles")).map_err(|e| system("create the parent of", e))?;
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(negative(format!("profile '{name}' already exists at {}", dir.display())));
        }
        Err(e) => return Err(system("create", e)),
    }
    let taken = ctx.pass.home.taken_ports();
    let digest: [u8; 32] = Sha256::digest(name.as_bytes()).into();
    let port = reconcile::allocate_port(reconcile::preferred_port(&digest), &taken)
        .ok_or_else(|| negative("no free gateway port left in 9200-9799"))?;
    std::fs::write(dir.join(profile::PORT_FILE), format!("{port}\n")).map_err(|e| system("write the port of", e))?;
    std::fs::write(dir.join("SOUL.md"), format!("# {name}\n")).map_err(|e| system("write SOUL.md in", e))?;
    profile::record_desired(&dir, if start { "running" } else { "stopped" })
        .map_err(|e| system("write the state of", e))?;
    ctx.register(name, &dir, !start)?;
    if start && ctx.wait {
        wait_for(ctx, &reconcile::slot_name(name), "ready")?;
    }
    println!(
        "profile {name} created at {} (port {port}); gateway {}",
        dir.display(),
        if start { "started" } else { "stopped" }
    );
    Ok(EXIT_OK)
}

fn delete(ctx: &Context, name: &str, yes: bool) -> Result<i32, Failure> {
    if name == "default" {
        return Err(negative("the default profile cannot be deleted"));
    }
    if !yes {
        return Err(usage(format!("deleting profile '{name}' removes its directory: add --yes")));
    }
    let dir = ctx.existing_profile(name)?;
    let slot = reconcile::slot_name(name);
    if ctx.slot_loaded(&slot)? {
        let reply =
            ctx.ask(json!({"event": "slot.unload", "slot": slot, "remove": true, "timeout_ms": ctx.timeout_ms}))?;
        if reply["success"] != true {
            return Err(negative(format!("cannot unload {slot}: {}", reply_message(&reply))));
        }
    } else {
        let slot_dir = ctx.pass.scan_dir.join(&slot);
        if slot_dir.is_dir() {
            let _ = std::fs::remove_dir_all(&slot_dir);
        }
    }
    std::fs::remove_dir_all(&dir).map_err(|e| Failure {
        code: crate::ctl::EXIT_SYSTEM,
        message: format!("cannot remove {}: {e}", dir.display()),
    })?;
    println!("profile {name} deleted");
    Ok(EXIT_OK)
}

fn wait_for(ctx: &Context, slot: &str, state: &str) -> Result<(), Failure> {
    let event = if state == "down" { "slot.stop" } else { "slot.start" };
    let reply = ctx.ask(json!({"event": event, "slot": slot, "wait": state, "timeout_ms": ctx.timeout_ms}))?;
    if reply["success"] == true { Ok(()) } else { Err(negative(reply_message(&reply))) }
}

/// `gateway start|stop|restart [-p NAME] [--all]` and `gateway register NAME`.
pub fn gateway(ctx: &Context, words: &[String], profile_name: Option<&str>, all: bool) -> Result<i32, Failure> {
    let Some((verb, rest)) = words.split_first() else {
        return Err(usage("usage: hermesctl gateway start|stop|restart [-p NAME] [--all] | gateway register NAME"));
    };
    if verb == "register" {
        let [name] = rest else { return Err(usage("usage: hermesctl gateway register NAME")) };
        let dir = ctx.existing_profile(name)?;
        if ctx.slot_loaded(&reconcile::slot_name(name))? {
            return Err(negative(format!("gateway '{name}' is already registered")));
        }
        let decision = reconcile::decide(profile::read_state(&dir).as_ref().map_err(String::as_str));
        ctx.register(name, &dir, !decision.start)?;
        println!("gateway {name} registered ({})", if decision.start { "started" } else { "down" });
        return Ok(EXIT_OK);
    }
    if !matches!(verb.as_str(), "start" | "stop" | "restart") || !rest.is_empty() {
        return Err(usage(format!("unknown gateway command '{}'", words.join(" "))));
    }
    if all && profile_name.is_some() {
        return Err(usage("give -p NAME or --all, not both"));
    }
    if !all {
        return act(ctx, verb, profile_name.unwrap_or("default")).map(|message| {
            println!("{message}");
            EXIT_OK
        });
    }
    let (mut ok, mut failed) = (0, 0);
    for found in ctx.pass.home.walk() {
        let Found::Profile { name, .. } = found else { continue };
        match act(ctx, verb, &name) {
            Ok(message) => {
                ok += 1;
                println!("{message}");
            }
            Err(failure) => {
                failed += 1;
                eprintln!("hermesctl: {}", failure.message);
            }
        }
    }
    println!("gateway {verb} --all: {ok} ok, {failed} failed");
    Ok(if failed > 0 { EXIT_NEGATIVE } else { EXIT_OK })
}

fn act(ctx: &Context, verb: &str, name: &str) -> Result<String, Failure> {
    let dir = ctx.existing_profile(name)?;
    let slot = reconcile::slot_name(name);
    let desired = if verb == "stop" { "stopped" } else { "running" };
    profile::record_desired(&dir, desired).map_err(|e| Failure {
        code: crate::ctl::EXIT_SYSTEM,
        message: format!("cannot record desired_state in {}: {e}", dir.join(profile::STATE_FILE).display()),
    })?;
    if !ctx.slot_loaded(&slot)? {
        if verb == "stop" {
            return Ok(format!("gateway {name}: stopped (not registered)"));
        }
        ctx.register(name, &dir, false)?;
        if ctx.wait {
            wait_for(ctx, &slot, "ready")?;
        }
        return Ok(format!("gateway {name}: registered and started"));
    }
    let mut body = json!({"event": format!("slot.{verb}"), "slot": slot});
    if ctx.wait {
        body["wait"] = json!(if verb == "stop" { "down" } else { "ready" });
        body["timeout_ms"] = json!(ctx.timeout_ms);
    }
    let reply = ctx.ask(body)?;
    if reply["success"] == true {
        Ok(format!("gateway {name}: {}", if verb == "stop" { "stopped" } else { "started" }))
    } else {
        Err(negative(format!("gateway {name}: {}", reply_message(&reply))))
    }
}

/// The gateway part of `hermesctl status`: one row per gateway slot.
pub fn gateway_rows(slots: &[Value]) -> String {
    let mut rows =
        vec![["PROFILE", "STATE", "PID", "DESIRED", "GATEWAY_STATE", "EXIT_REASON"].map(String::from).to_vec()];
    for slot in slots {
        let Some(name) = slot["slot"].as_str().and_then(|s| s.strip_prefix("gateway-")) else { continue };
        let path = PathBuf::from(slot["path"].as_str().unwrap_or(""));
        let state = profile::slot_profile_dir(&path).map(|dir| profile::read_state(&dir));
        let field = |key: &str| match &state {
            Some(Ok(object)) => object.get(key).and_then(Value::as_str).unwrap_or("-").to_string(),
            Some(Err(_)) => "?".into(),
            None => "-".into(),
        };
        rows.push(vec![
            name.to_string(),
            slot["state"].as_str().unwrap_or("?").to_string(),
            slot["pid"].as_i64().map_or("-".into(), |p| p.to_string()),
            field("desired_state"),
            field("gateway_state"),
            field("exit_reason"),
        ]);
    }
    crate::ctl::render_table(&rows)
}
