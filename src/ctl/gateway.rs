//! `hermesctl profile ...` and `hermesctl gateway ...`: profiles and their gateways while
//! the container runs. The intent (`desired_state`) is written to the volume first, then
//! the slot is acted on through the control socket.
//!
//! Invariants: names are validated before any path is built from them; a profile is never
//! deleted while a process of its gateway runs (the unload waits until the group is gone).

use std::io::Write;

use sha2::{Digest, Sha256};

use super::Flags;
use super::client::{Client, CtlError};
use crate::cont_init::Pass;
use crate::core::exit::code;
use crate::core::reconcile::{self, RESERVED_NAMES, valid_profile_name};
use crate::proto::control::{ErrorKind, Request, Wait, WaitFor};
use crate::sys::beneath::Dir;
use crate::volume::{Found, PORT_FILE, SOUL_FILE, intent, owner_of, slot_writer, state};

/// What the gateway commands need.
pub struct Context {
    pub client: Client,
    pub pass: Pass,
    pub wait: bool,
}

impl Context {
    fn wait_for(&self, until: WaitFor) -> Wait {
        Wait { wait: Some(until), timeout_ms: Some(self.client.wait.as_millis() as u64) }
    }

    /// Loads a slot of the scan dir; `Ok(false)` when it is loaded already (the reaper
    /// discovers new profiles by itself, and may have been first).
    fn load(&self, slot: &str) -> Result<bool, CtlError> {
        let reply =
            self.client.request(&Request::Load { path: None, slot: Some(slot.to_string()), wait: Wait::default() })?;
        match reply.error {
            None if reply.success => Ok(true),
            Some(ErrorKind::Conflict) if reply.message.contains("already loaded") => Ok(false),
            _ => Err(CtlError::Negative(reply.message)),
        }
    }

    /// An existing profile, opened beneath the home, or the standard "no such gateway" failure.
    fn existing_profile(&self, name: &str) -> Result<Dir, CtlError> {
        let missing = || {
            CtlError::Negative(format!("no such gateway '{name}': register it with hermesctl profile create {name}"))
        };
        if !self.pass.home.is_profile(name) {
            return Err(missing());
        }
        self.pass.home.open_profile(name).map_err(|_| missing())
    }

    /// Writes the slot of an existing profile and loads it, down or not.
    fn register(&self, name: &str, dir: &Dir, down: bool) -> Result<(), CtlError> {
        let slot = reconcile::slot_name(name);
        let path = self.pass.home.profile_dir(name);
        slot_writer::write_slot(&self.pass.scan_dir, &self.pass.gateway_slot(name, &path, dir), down).map_err(|e| {
            CtlError::System(format!("cannot write slot {slot} in {}: {e}", self.pass.scan_dir.display()))
        })?;
        if !self.load(&slot)? && !down {
            // Discovered before its intent was written: start it now.
            self.client.expect(&Request::Start { slot: slot.clone(), wait: Wait::default() })?;
        }
        Ok(())
    }

    /// Starts a loaded slot and waits until it is ready.
    fn start_and_wait(&self, slot: &str) -> Result<(), CtlError> {
        self.client.expect(&Request::Start { slot: slot.to_string(), wait: self.wait_for(WaitFor::Ready) })?;
        Ok(())
    }
}

/// `profile create|delete ...`
pub fn profile(ctx: &Context, words: &[String], flags: &Flags) -> Result<i32, CtlError> {
    match words {
        [verb, name] if verb == "create" => create(ctx, name, flags.start),
        [verb, name] if verb == "delete" => delete(ctx, name, flags.yes),
        _ => Err(CtlError::usage("usage: hermesctl profile create NAME [--start] | profile delete NAME --yes")),
    }
}

fn create(ctx: &Context, name: &str, start: bool) -> Result<i32, CtlError> {
    if !valid_profile_name(name) {
        return Err(CtlError::usage(format!("invalid profile name {name:?}: use ^[a-z0-9][a-z0-9_-]{{0,63}}$")));
    }
    if RESERVED_NAMES.contains(&name) {
        return Err(CtlError::usage(format!("'{name}' is a reserved name ({})", RESERVED_NAMES.join(", "))));
    }
    let path = ctx.pass.home.profile_dir(name);
    let system = |e: std::io::Error| CtlError::System(format!("cannot create profile {name}: {e}"));
    // Everything is made beneath the home, without following links, and given to the
    // owner of the directory it is made in: the volume's owner, not root.
    let root = ctx.pass.home.open().map_err(system)?;
    let profiles = root.create_dir("profiles", 0o755, owner_of(&root)).map_err(system)?;
    let owner = owner_of(&profiles);
    let dir = match profiles.create_new_dir(name, 0o755, owner) {
        Ok(dir) => dir,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(CtlError::Negative(format!("profile '{name}' already exists at {}", path.display())));
        }
        Err(e) => return Err(system(e)),
    };
    let taken = ctx.pass.home.taken_ports();
    let digest: [u8; 32] = Sha256::digest(name.as_bytes()).into();
    let port = reconcile::allocate_port(reconcile::preferred_port(&digest), &taken)
        .ok_or_else(|| CtlError::Negative("no free gateway port left in 9200-9799".into()))?;
    let write = |file: &str, text: String| -> std::io::Result<()> {
        dir.create_new(file, 0o644, owner)?.write_all(text.as_bytes())
    };
    write(PORT_FILE, format!("{port}\n")).map_err(system)?;
    write(SOUL_FILE, format!("# {name}\n")).map_err(system)?;
    state::record_desired(&dir, if start { "running" } else { "stopped" }).map_err(system)?;
    ctx.register(name, &dir, !start)?;
    if start && ctx.wait {
        ctx.start_and_wait(&reconcile::slot_name(name))?;
    }
    println!(
        "profile {name} created at {} (port {port}); gateway {}",
        path.display(),
        if start { "started" } else { "stopped" }
    );
    Ok(code::OK)
}

fn delete(ctx: &Context, name: &str, yes: bool) -> Result<i32, CtlError> {
    if name == "default" {
        return Err(CtlError::Negative("the default profile cannot be deleted".into()));
    }
    if !yes {
        return Err(CtlError::usage(format!("deleting profile '{name}' removes its directory: add --yes")));
    }
    ctx.existing_profile(name)?;
    let slot = reconcile::slot_name(name);
    if ctx.client.loaded(&slot)? {
        let unload =
            Request::Unload { slot: slot.clone(), remove: true, timeout_ms: Some(ctx.client.wait.as_millis() as u64) };
        ctx.client.expect(&unload).map_err(|e| CtlError::Negative(format!("cannot unload {slot}: {e}")))?;
    } else {
        let slot_dir = ctx.pass.scan_dir.join(&slot);
        if slot_dir.is_dir() {
            let _ = fs_err::remove_dir_all(&slot_dir);
        }
    }
    // Removed through descriptors beneath the home: `profiles` swapped for a link during
    // the stop cannot redirect the removal.
    ctx.pass
        .home
        .open()
        .and_then(|root| root.open_dir("profiles"))
        .and_then(|profiles| profiles.remove_dir_all(name))
        .map_err(|e| CtlError::System(format!("cannot remove profile {name}: {e}")))?;
    println!("profile {name} deleted");
    Ok(code::OK)
}

/// `gateway start|stop|restart [-p NAME] [--all]` and `gateway register NAME`.
pub fn gateway(ctx: &Context, words: &[String], flags: &Flags) -> Result<i32, CtlError> {
    let Some((verb, rest)) = words.split_first() else {
        return Err(CtlError::usage(
            "usage: hermesctl gateway start|stop|restart [-p NAME] [--all] | gateway register NAME",
        ));
    };
    if verb == "register" {
        let [name] = rest else { return Err(CtlError::usage("usage: hermesctl gateway register NAME")) };
        let dir = ctx.existing_profile(name)?;
        if ctx.client.loaded(&reconcile::slot_name(name))? {
            // The reaper discovers new profiles by itself: registered is what was asked for.
            println!("gateway {name} is already registered");
            return Ok(code::OK);
        }
        let intent = intent::read(&dir).ok().flatten();
        let decision = reconcile::decide(state::read_state(&dir).as_ref().map_err(String::as_str), intent);
        ctx.register(name, &dir, !decision.start)?;
        println!("gateway {name} registered ({})", if decision.start { "started" } else { "down" });
        return Ok(code::OK);
    }
    if !matches!(verb.as_str(), "start" | "stop" | "restart") || !rest.is_empty() {
        return Err(CtlError::usage(format!("unknown gateway command '{}'", words.join(" "))));
    }
    if flags.all && flags.profile.is_some() {
        return Err(CtlError::usage("give -p NAME or --all, not both"));
    }
    if !flags.all {
        let message = act(ctx, verb, flags.profile.as_deref().unwrap_or("default"))?;
        println!("{message}");
        return Ok(code::OK);
    }
    let (mut ok, mut failed) = (0, 0);
    for found in ctx.pass.home.walk() {
        let Found::Profile { name, .. } = found else { continue };
        match act(ctx, verb, &name) {
            Ok(message) => {
                ok += 1;
                println!("{message}");
            }
            Err(error) => {
                failed += 1;
                eprintln!("hermesctl: {error}");
            }
        }
    }
    println!("gateway {verb} --all: {ok} ok, {failed} failed");
    Ok(if failed > 0 { code::NEGATIVE } else { code::OK })
}

fn act(ctx: &Context, verb: &str, name: &str) -> Result<String, CtlError> {
    let dir = ctx.existing_profile(name)?;
    let slot = reconcile::slot_name(name);
    let desired = if verb == "stop" { "stopped" } else { "running" };
    let recorded = state::record_desired(&dir, desired)
        .map_err(|e| CtlError::System(format!("cannot record the intent of gateway {name}: {e}")));
    // A stop is carried out even when the intent cannot be recorded (a full or read-only
    // volume must not keep a gateway running); the failure is still reported.
    if verb != "stop" {
        recorded.clone()?;
    }
    if !ctx.client.loaded(&slot)? {
        if verb == "stop" {
            recorded?;
            return Ok(format!("gateway {name}: stopped (not registered)"));
        }
        ctx.register(name, &dir, false)?;
        if ctx.wait {
            ctx.start_and_wait(&slot)?;
        }
        return Ok(format!("gateway {name}: registered and started"));
    }
    let wait = if ctx.wait {
        ctx.wait_for(if verb == "stop" { WaitFor::Down } else { WaitFor::Ready })
    } else {
        Wait::default()
    };
    let request = match verb {
        "stop" => Request::Stop { slot, wait },
        "restart" => Request::Restart { slot, wait },
        _ => Request::Start { slot, wait },
    };
    ctx.client.expect(&request).map_err(|e| CtlError::Negative(format!("gateway {name}: {e}")))?;
    recorded?;
    Ok(format!("gateway {name}: {}", if verb == "stop" { "stopped" } else { "started" }))
}
