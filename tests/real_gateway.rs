//! The real gateway: `hermes-agent` from PyPI, installed into a virtualenv (kept in
//! `target/hermes-venv`), run under the reaper as PID 1 of a namespace. Readiness comes
//! from its own state file, a profile made by `hermes profile create` is discovered live,
//! and a simulated docker restart brings back exactly the running set. Where PyPI does not
//! answer, the tier says SKIPPED and why (it never fails for that alone).

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use common::container::*;
use common::*;

/// The virtualenv's `bin`, installing `hermes-agent` into it when needed.
fn hermes_bin() -> Option<PathBuf> {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/hermes-venv");
    let bin = venv.join("bin");
    if bin.join("hermes").is_file() {
        return Some(bin);
    }
    let made = Command::new("python3").args(["-m", "venv"]).arg(&venv).status().is_ok_and(|s| s.success());
    let installed = made
        && Command::new("timeout")
            .args(["600"])
            .arg(bin.join("pip"))
            .args(["install", "-q", "hermes-agent"])
            .status()
            .is_ok_and(|s| s.success());
    if installed && bin.join("hermes").is_file() {
        Some(bin)
    } else {
        eprintln!("SKIPPED: the real gateway could not be installed from PyPI (pip install hermes-agent failed)");
        None
    }
}

#[test]
fn real_gateways_under_the_reaper() {
    if !namespaces_available() {
        return;
    }
    let Some(bin) = hermes_bin() else { return };
    let mut c = Container::new();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    c.extra_env.retain(|(k, _)| k != "HERMES_INIT_GATEWAY_CMD");
    c.extra_env.push(("PATH".into(), path.clone()));
    // The real command line, not the fake gateway: `hermes -p NAME gateway run --replace`.
    c.extra_env.push(("HERMES_INIT_GATEWAY_CMD".into(), String::new()));
    c.extra_env.push(("HERMES_INIT_READY_AFTER_MS".into(), "600000".into()));
    c.boot();
    // A profile made by the gateway's own CLI while the container runs: discovered, down.
    let create = Command::new(bin.join("hermes"))
        .args(["profile", "create", "alpha"])
        .env("HERMES_HOME", c.fx.home())
        .env("PATH", &path)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(create.status.success(), "{}", String::from_utf8_lossy(&create.stderr));
    wait_for("alpha to be discovered", LONG, || c.sv.status("gateway-alpha")["state"] == "down");
    // Started: ready only once the gateway itself writes `running` (the timer is 10 min).
    let start = c.ctl(&["gateway", "start", "-p", "alpha", "--wait", "--timeout", "60000"]);
    assert_eq!(start.code, 0, "{start:?}");
    assert_eq!(c.sv.status("gateway-alpha")["state"], "up");
    assert_eq!(c.fx.state("alpha")["gateway_state"], "running");
    // A simulated docker restart brings back exactly the running set.
    let running = |c: &Container| -> BTreeSet<String> { c.running_set() };
    let before = running(&c);
    assert!(before.contains("alpha"), "{before:?}");
    assert_eq!(c.sv.stop().code, 0);
    c.boot();
    wait_for("alpha to be ready again", LONG, || c.sv.status("gateway-alpha")["state"] == "up");
    assert_eq!(running(&c), before);
    // Stopped by the operator, it stays stopped across a restart.
    assert_eq!(c.ctl(&["gateway", "stop", "-p", "alpha", "--wait", "--timeout", "60000"]).code, 0);
    assert_eq!(c.sv.stop().code, 0);
    c.boot();
    assert_eq!(c.sv.status("gateway-alpha")["state"], "down");
    c.sv.stop();
}
