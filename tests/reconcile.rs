//! Black-box tests of `hermes-cont-init` (the boot pass over a real profile home) and of
//! the profile and gateway commands of hermesctl, ending with the docker-restart
//! simulation: boot, change, stop, wipe the tmpfs, boot again, twenty times.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::container::*;
use common::*;
use serde_json::{Value, json};

#[test]
fn every_row_of_the_boot_decision_table() {
    let fx = HomeFixture::new();
    fs::write(fx.home().join("gateway_state.json"), r#"{"gateway_state": "running"}"#).unwrap();
    // (profile, state file, started, desired afterwards)
    let cases = [
        ("d-running", r#"{"desired_state": "running", "gateway_state": "stopped"}"#, true, Some("running")),
        ("d-stopped", r#"{"desired_state": "stopped", "gateway_state": "running"}"#, false, Some("stopped")),
        ("g-running", r#"{"gateway_state": "running", "extra": 1}"#, true, Some("running")),
        ("g-draining", r#"{"gateway_state": "draining"}"#, true, Some("running")),
        ("g-degraded", r#"{"gateway_state": "degraded"}"#, true, Some("running")),
        ("g-stopped", r#"{"gateway_state": "stopped"}"#, false, None),
        ("g-starting", r#"{"gateway_state": "starting"}"#, false, None),
        ("g-failed", r#"{"gateway_state": "startup_failed"}"#, false, None),
        ("g-number", r#"{"gateway_state": 3}"#, false, None),
        ("d-number", r#"{"desired_state": 1, "gateway_state": "running"}"#, false, None),
    ];
    for (name, state, _, _) in cases {
        fx.profile(name, Some(state));
    }
    let out = fx.cont_init(&[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(!fx.is_down("default"), "the default profile started on gateway_state running");
    assert_eq!(fx.state("default")["desired_state"], "running");
    for (name, _, started, desired) in cases {
        assert_eq!(!fx.is_down(name), started, "{name}: {out:?}");
        assert_eq!(fx.state(name).get("desired_state").and_then(Value::as_str), desired, "{name}");
        let action = if started { "started" } else { "registered" };
        assert!(out.stdout.contains(&format!("reconcile: profile={name} prior_state=")), "{name}");
        assert!(
            out.stdout.lines().any(|l| l.contains(&format!("profile={name} ")) && l.ends_with(action)),
            "{name}: {}",
            out.stdout
        );
    }
    assert_eq!(fx.state("g-running")["extra"], 1, "other fields kept");
    assert!(out.stderr.contains("invalid gateway_state 3"), "{}", out.stderr);
    assert!(out.stderr.contains("invalid desired_state 1"), "{}", out.stderr);
}

#[test]
fn the_default_slot_is_registered_on_an_empty_home() {
    let fx = HomeFixture::new();
    fs::remove_dir_all(fx.home().join("profiles")).unwrap();
    let out = fx.cont_init(&[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(fx.is_down("default"));
    assert_eq!(out.stdout.trim(), "reconcile: profile=default prior_state=- action=registered");
}

#[test]
fn hostile_state_files_mean_down_with_a_warning_naming_file_and_reason() {
    let fx = HomeFixture::new();
    let outside = fx.scratch.path("outside.json");
    fs::write(&outside, r#"{"desired_state": "running"}"#).unwrap();
    // (profile, how to make its state file, text of the warning)
    type Make = Box<dyn Fn(&Path)>;
    let file = |body: &'static [u8]| -> Make { Box::new(move |p: &Path| fs::write(p, body).unwrap()) };
    let cases: Vec<(&str, Make, &str)> = vec![
        ("missing", Box::new(|_: &Path| {}), "missing"),
        ("empty", file(b""), "empty"),
        ("blank", file(b"  \n"), "empty"),
        ("corrupt", file(b"{\"gateway_state\": \"runn"), "corrupt JSON"),
        ("array", file(b"[\"running\"]"), "not an object (an array)"),
        ("string", file(b"\"running\""), "not an object (a string)"),
        ("number", file(b"42"), "not an object (a number)"),
        ("null", file(b"null"), "not an object (null)"),
        ("bom", file(b"\xEF\xBB\xBF{\"desired_state\": \"running\"}"), "byte order mark"),
        ("binary", file(b"\x00\xff\xfe garbage"), "corrupt JSON"),
        ("directory", Box::new(|p: &Path| fs::create_dir(p).unwrap()), "is a directory"),
        (
            "fifo",
            Box::new(|p: &Path| nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap()),
            "not a regular file",
        ),
        (
            "symlink",
            {
                let target = outside.clone();
                Box::new(move |p: &Path| std::os::unix::fs::symlink(&target, p).unwrap())
            },
            "symlink",
        ),
        (
            "huge",
            Box::new(|p: &Path| {
                let mut body = br#"{"desired_state": "running", "pad": ""#.to_vec();
                body.extend(std::iter::repeat_n(b'x', 1024 * 1024));
                body.extend(b"\"}");
                fs::write(p, body).unwrap()
            }),
            "larger than 1 MiB",
        ),
    ];
    for (name, make, _) in &cases {
        let dir = fx.profile(name, None);
        make(&dir.join("gateway_state.json"));
    }
    // A FIFO must not hang the pass: `wait` fails the test at its deadline.
    let out = fx.cont_init(&[]);
    assert_eq!(out.code, 0, "{out:?}");
    for (name, _, reason) in &cases {
        assert!(fx.is_down(name), "{name} must stay down");
        let file = fx.profile_dir(name).join("gateway_state.json");
        let warning = out.stderr.lines().find(|l| l.contains(&format!("profile {name}: down:"))).unwrap_or_else(|| {
            panic!("no warning for {name}: {}", out.stderr);
        });
        assert!(warning.contains(&file.display().to_string()) && warning.contains(reason), "{name}: {warning}");
        assert!(fx.boot_log().contains(&format!("profile={name} prior_state=- action=registered")), "{name}");
    }
    // The symlink's target was neither followed nor changed.
    assert_eq!(fs::read_to_string(&outside).unwrap(), r#"{"desired_state": "running"}"#);
}

#[test]
fn an_unreadable_state_file_means_down() {
    if nix::unistd::geteuid().as_raw() != 0 {
        eprintln!("SKIPPED: needs root to run the pass as another uid");
        return;
    }
    let fx = HomeFixture::new();
    let dir = fx.profile("locked", Some(r#"{"desired_state": "running"}"#));
    fs::set_permissions(dir.join("gateway_state.json"), fs::Permissions::from_mode(0o000)).unwrap();
    for path in [fx.scratch.dir.path().to_path_buf(), fx.home(), fx.home().join("profiles"), dir.clone(), fx.scan()] {
        fs::set_permissions(&path, fs::Permissions::from_mode(0o777)).unwrap();
    }
    let mut command = Command::new("setpriv");
    command.args(["--reuid=65534", "--regid=65534", "--clear-groups", CONT_INIT]);
    command.arg("--home").arg(fx.home()).arg("--scan-dir").arg(fx.scan());
    let out = start(command).wait(LONG);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(fx.is_down("locked"));
    assert!(out.stderr.contains("unreadable: Permission denied"), "{}", out.stderr);
}

#[test]
fn order_skips_and_non_profiles() {
    let fx = HomeFixture::new();
    for name in ["zeta", "alpha", "m-1", "Bad", "with space", "evil\nroot2::0:0::root:sh"] {
        fx.profile(name, Some(r#"{"gateway_state": "stopped"}"#));
    }
    fs::create_dir_all(fx.home().join("profiles/default")).unwrap();
    fs::write(fx.home().join("profiles/default/SOUL.md"), "").unwrap();
    fs::create_dir_all(fx.home().join("profiles/no-soul")).unwrap();
    fs::write(fx.home().join("profiles/a-file"), "").unwrap();
    std::os::unix::fs::symlink(fx.profile_dir("alpha"), fx.home().join("profiles/linked")).unwrap();
    let out = fx.cont_init(&[]);
    assert_eq!(out.code, 0, "{out:?}");
    let order: Vec<&str> =
        out.stdout.lines().map(|l| l.split_whitespace().nth(1).unwrap().trim_start_matches("profile=")).collect();
    assert_eq!(
        order,
        ["default", "\"Bad\"", "alpha", "default", "\"evil\\nroot2::0:0::root:sh\"", "linked", "m-1", "\"with", "zeta"],
        "{}",
        out.stdout
    );
    // A name that fails validation is printed escaped: it injects no line (issue 14).
    for text in [&out.stdout, &out.stderr, &fx.boot_log()] {
        assert!(!text.lines().any(|l| l.starts_with("root2")), "{text}");
    }
    assert!(out.stderr.contains("profile linked: skipped: a symlink (not followed)"), "{}", out.stderr);
    assert!(out.stderr.contains("profile \"Bad\": skipped: invalid profile name"), "{}", out.stderr);
    assert!(out.stderr.contains("profile default: skipped: profiles/default/ is reserved"), "{}", out.stderr);
    assert!(fx.boot_log().contains("profile=\"Bad\" prior_state=- action=skipped reason=\""), "{}", fx.boot_log());
    let slots: BTreeSet<String> =
        fs::read_dir(fx.scan()).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    let want: BTreeSet<String> =
        ["gateway-default", "gateway-alpha", "gateway-m-1", "gateway-zeta"].iter().map(|s| s.to_string()).collect();
    assert_eq!(slots, want);
}

#[test]
fn stale_files_staging_dirs_idempotence_log_format_and_rotation() {
    let fx = HomeFixture::new();
    let dir = fx.profile("work", Some(r#"{"gateway_state": "running"}"#));
    for stale in ["gateway.pid", "processes.json", "gateway.lock", ".clean_shutdown"] {
        fs::write(dir.join(stale), "x").unwrap();
    }
    fs::create_dir_all(fx.scan().join(".staging-gateway-work-999/junk")).unwrap();
    let first = fx.cont_init(&[]);
    assert_eq!(first.code, 0, "{first:?}");
    assert!(!dir.join("gateway.pid").exists() && !dir.join("processes.json").exists());
    assert!(dir.join("gateway.lock").exists() && dir.join(".clean_shutdown").exists());
    assert!(!fx.scan().join(".staging-gateway-work-999").exists(), "stale staging dir removed");
    let run_before = fs::read(fx.slot("work").join("run")).unwrap();
    assert!(!fx.is_down("work"));
    // Second pass, after an operator stop: same run file, new down decision.
    // (written by another tool, with the time it said it: newer than the recorded intent)
    let later =
        r#"{"desired_state": "stopped", "desired_state_at": "2999-01-01T00:00:00Z", "gateway_state": "running"}"#;
    fs::write(dir.join("gateway_state.json"), later).unwrap();
    let second = fx.cont_init(&[]);
    assert_eq!(second.code, 0);
    assert_eq!(fs::read(fx.slot("work").join("run")).unwrap(), run_before, "run rewritten byte for byte");
    assert!(fx.is_down("work"));
    let leftovers: Vec<String> = fs::read_dir(fx.scan())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // Log lines: `<ts> profile=<p> prior_state=<s> action=<a>[ desired=<d>][ reason="..."]`.
    let log = fx.boot_log();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 4, "{log}");
    let line = lines.iter().find(|l| l.contains("profile=work") && l.contains("desired=stopped")).unwrap();
    let ts = line.split(' ').next().unwrap();
    assert_eq!(ts.len(), 24, "{ts}");
    assert!(ts.as_bytes()[10] == b'T' && matches!(ts.as_bytes()[19], b'+' | b'-'), "{ts}");
    assert!(line.ends_with("profile=work prior_state=running action=registered desired=stopped"), "{line}");
    // Rotation at 256 KiB.
    fs::write(fx.home().join("logs/container-boot.log"), vec![b'x'; 256 * 1024]).unwrap();
    fx.cont_init(&[]);
    assert_eq!(fs::metadata(fx.home().join("logs/container-boot.log.1")).unwrap().len(), 256 * 1024);
    assert_eq!(fx.boot_log().lines().count(), 2);
}

#[test]
fn slots_of_vanished_profiles_are_removed_and_foreign_slots_kept() {
    let fx = HomeFixture::new();
    fx.profile("gone", Some(r#"{"desired_state": "running"}"#));
    fx.profile("stays", None);
    assert_eq!(fx.cont_init(&[]).code, 0);
    fs::remove_dir_all(fx.profile_dir("gone")).unwrap();
    // A slot someone else put in the scan dir, with no profile metadata.
    fs::create_dir_all(fx.scan().join("gateway-handmade")).unwrap();
    fs::write(fx.scan().join("gateway-handmade/run"), "#!/bin/sh\n").unwrap();
    let out = fx.cont_init(&[]);
    assert!(out.stderr.contains("removed slot gateway-gone: its profile is gone"), "{}", out.stderr);
    assert!(!fx.slot("gone").exists());
    assert!(fx.slot("stays").exists() && fx.scan().join("gateway-handmade/run").exists());
}

#[test]
fn dry_run_touches_nothing_and_json_prints_the_plan() {
    let fx = HomeFixture::new();
    let dir = fx.profile("work", Some(r#"{"gateway_state": "running"}"#));
    fs::write(dir.join("gateway.pid"), "1").unwrap();
    let out = fx.cont_init(&["--dry-run", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let plan: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(plan["dry_run"], true);
    assert_eq!(
        plan["profiles"][1],
        json!({"profile": "work", "slot": "gateway-work", "prior_state": "running", "action": "would-start", "desired": "running", "reason": null})
    );
    assert_eq!(fs::read_dir(fx.scan()).unwrap().count(), 0);
    assert!(dir.join("gateway.pid").exists());
    assert_eq!(fx.state("work"), json!({"gateway_state": "running"}));
    assert!(!fx.home().join("logs").exists());
    let text = fx.cont_init(&["--dry-run"]);
    assert!(text.stdout.contains("reconcile: profile=work prior_state=running action=would-start"), "{}", text.stdout);
}

#[test]
fn an_unwritable_scan_dir_exits_111() {
    let fx = HomeFixture::new();
    let not_a_dir = fx.scratch.path("file");
    fs::write(&not_a_dir, "").unwrap();
    let out = start({
        let mut c = Command::new(CONT_INIT);
        c.arg("--home").arg(fx.home()).arg("--scan-dir").arg(&not_a_dir);
        c
    })
    .wait(LONG);
    assert_eq!(out.code, 111, "{out:?}");
    assert!(out.stderr.contains(&not_a_dir.display().to_string()), "{}", out.stderr);
    assert_eq!(fx.cont_init(&["--bogus"]).code, 100);
}

#[test]
fn the_run_file_exports_the_profile_and_runs_the_configured_command() {
    let fx = HomeFixture::new();
    let dir = fx.profile("work", Some(r#"{"desired_state": "running"}"#));
    fs::write(dir.join("gateway.port"), "9321\n").unwrap();
    let out = start({
        let mut c = Command::new(CONT_INIT);
        c.arg("--home").arg(fx.home()).arg("--scan-dir").arg(fx.scan());
        c.env(
            "HERMES_INIT_GATEWAY_CMD",
            "echo \"$HERMES_PROFILE|$HERMES_PROFILE_DIR|$HERMES_HOME|$HOME|$HERMES_GATEWAY_PORT\"",
        );
        c.env("HERMES_INIT_GATEWAY_USER", "no-such-user-here");
        c
    })
    .wait(LONG);
    assert_eq!(out.code, 0, "{out:?}");
    let ran = start({
        let mut c = Command::new(fx.slot("work").join("run"));
        c.env_clear().env("PATH", "/usr/bin:/bin");
        c
    })
    .wait(LONG);
    let home = fx.home().display().to_string();
    assert_eq!(ran.stdout.trim(), format!("work|{}|{home}|{home}|9321", dir.display()), "{ran:?}");
    // Without the variable: the hermes command line, with the profile for named ones.
    fx.cont_init(&[]);
    let run = fs::read_to_string(fx.slot("work").join("run")).unwrap();
    assert!(run.contains("'hermes' '-p' 'work' 'gateway' 'run' '--replace'"), "{run}");
    let run = fs::read_to_string(fx.slot("default").join("run")).unwrap();
    assert!(run.contains("'hermes' 'gateway' 'run' '--replace'") && !run.contains("'-p'"), "{run}");
}

/// A reaper booted over a profile home, with `hermes-cont-init` as its boot hook and a
/// tmpfs scan dir (fresh at every boot, as /run is in a container).
#[test]
fn profile_and_gateway_commands() {
    if !namespaces_available() {
        return;
    }
    let mut c = Container::new();
    c.boot();
    // (arguments, exit code, text in the output)
    let cases: [(&[&str], i32, &str); 14] = [
        (&["profile", "create", "alpha"], 0, "profile alpha created"),
        (&["profile", "create", "alpha"], 1, "profile 'alpha' already exists"),
        (&["profile", "create", "Bad!"], 100, "invalid profile name \"Bad!\""),
        (&["profile", "create", "root"], 100, "'root' is a reserved name"),
        (&["profile", "create", "beta", "--start", "--wait"], 0, "gateway started"),
        (&["gateway", "start", "-p", "alpha", "--wait"], 0, "gateway alpha: started"),
        (&["gateway", "stop", "-p", "beta", "--wait"], 0, "gateway beta: stopped"),
        (
            &["gateway", "start", "-p", "ghost"],
            1,
            "no such gateway 'ghost': register it with hermesctl profile create ghost",
        ),
        (&["gateway", "restart", "--wait"], 0, "gateway default: started"),
        (&["gateway", "stop", "--all", "--wait"], 0, "gateway stop --all: 3 ok, 0 failed"),
        (&["profile", "delete", "default", "--yes"], 1, "cannot be deleted"),
        (&["profile", "delete", "alpha"], 100, "add --yes"),
        (&["profile", "delete", "alpha", "--yes"], 0, "profile alpha deleted"),
        (&["profile", "delete", "alpha", "--yes"], 1, "no such gateway 'alpha'"),
    ];
    for (args, code, text) in cases {
        let out = c.ctl(args);
        assert_eq!(out.code, code, "{args:?}: {out:?}");
        assert!(out.stdout.contains(text) || out.stderr.contains(text), "{args:?}: {out:?}");
    }
    assert!(!c.fx.profile_dir("alpha").exists());
    assert!(c.sv.status("gateway-alpha").is_null());
    assert_eq!(c.fx.state("beta")["desired_state"], "stopped");
    // A profile made outside the container: register, then start.
    c.fx.profile("outside", Some(r#"{"gateway_state": "stopped"}"#));
    let out = c.ctl(&["gateway", "register", "outside"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(c.sv.status("gateway-outside")["state"], "down");
    assert_eq!(c.ctl(&["gateway", "start", "-p", "outside", "--wait"]).code, 0);
    wait_for("the gateway to write running", LONG, || c.fx.state("outside")["gateway_state"] == "running");
    // gateway start registers a profile whose slot does not exist yet (unless the reaper
    // has discovered it already: either way it runs).
    c.fx.profile("later", None);
    let out = c.ctl(&["gateway", "start", "-p", "later", "--wait"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("gateway later: registered and started") || out.stdout.contains("gateway later: started"),
        "{out:?}"
    );
    c.sv.wait_state("gateway-later", "up");
    // A gateway that exits 78 fails for good, and says why in its profile.
    c.fx.profile("broken", Some(r#"{"gateway_state": "stopped"}"#));
    fs::write(c.fx.profile_dir("broken").join("config-error"), "").unwrap();
    assert_eq!(c.ctl(&["gateway", "start", "-p", "broken"]).code, 0);
    c.sv.wait_state("gateway-broken", "failed");
    // --all with one failure (a state file that cannot be written): exit 1 and a summary.
    fs::create_dir_all(c.fx.profile_dir("jammed").join("gateway_state.json")).unwrap();
    fs::write(c.fx.profile_dir("jammed").join("SOUL.md"), "").unwrap();
    let out = c.ctl(&["gateway", "start", "--all"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.contains("gateway start --all: 5 ok, 1 failed"), "{out:?}");
    assert!(out.stderr.contains("jammed"), "{out:?}");
    c.sv.wait_state("gateway-broken", "failed");
    // status: the manager line and one row per gateway with its saved state.
    let status = c.ctl(&["status"]);
    assert!(status.stdout.starts_with("Manager: hermes-init (container supervisor)"), "{}", status.stdout);
    let row = status.stdout.lines().find(|l| l.starts_with("broken ")).unwrap();
    assert!(row.contains("failed") && row.contains("startup_failed") && row.contains("EX_CONFIG"), "{row}");
    c.sv.stop();
}

#[test]
fn ports_are_deterministic_and_never_shared() {
    use sha2::{Digest, Sha256};
    if !namespaces_available() {
        return;
    }
    let preferred = |name: &str| {
        let d = Sha256::digest(name.as_bytes());
        9200 + (u32::from_be_bytes([d[0], d[1], d[2], d[3]]) % 600) as u16
    };
    // Two names that want the same port.
    let mut seen = std::collections::HashMap::new();
    let (first, second) = (0..10_000)
        .map(|i| format!("p{i}"))
        .find_map(|name| seen.insert(preferred(&name), name.clone()).map(|other| (other, name)))
        .unwrap();
    let mut c = Container::new();
    c.boot();
    for name in [&first, &second] {
        assert_eq!(c.ctl(&["profile", "create", name]).code, 0);
    }
    let port = |name: &str| {
        fs::read_to_string(c.fx.profile_dir(name).join("gateway.port")).unwrap().trim().parse::<u16>().unwrap()
    };
    assert_eq!(port(&first), preferred(&first));
    let want = if preferred(&first) == 9799 { 9200 } else { preferred(&first) + 1 };
    assert_eq!(port(&second), want, "probed upward past the taken port");
    // The run file exports it.
    let out = c.ctl(&["gateway", "start", "-p", &second, "--wait"]);
    assert_eq!(out.code, 0, "{out:?}");
    c.sv.stop();
}

/// The docker-restart simulation: twenty boots on one home, with random starts and stops
/// between them, one gateway crashed into `failed`; after every boot exactly the gateways
/// that were running before run again.
#[test]
fn docker_restart_brings_back_exactly_what_ran() {
    if !namespaces_available() {
        return;
    }
    let mut c = Container::new();
    let names = ["alpha", "beta", "gamma", "delta", "epsilon"];
    // A volume from before hermes-init: states written by the gateway alone.
    c.fx.profile("alpha", Some(r#"{"gateway_state": "running"}"#));
    c.fx.profile("beta", Some(r#"{"gateway_state": "stopped"}"#));
    c.fx.profile("gamma", None);
    c.fx.profile("delta", Some("{corrupt"));
    c.fx.profile("epsilon", Some(r#"{"desired_state": "running"}"#));
    // Its gateway exits 78 (a configuration error): a permanent failure at once, whatever
    // the timing (the crash-loop guard itself is tested in tests/supervision.rs).
    c.fx.profile("crashy", Some(r#"{"gateway_state": "running"}"#));
    fs::write(c.fx.profile_dir("crashy").join("config-error"), "").unwrap();
    let mut expected: BTreeSet<String> = ["alpha", "epsilon"].iter().map(|s| s.to_string()).collect();
    let mut seed: u64 = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    eprintln!("random seed {seed}");
    let mut random = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for cycle in 0..20 {
        c.boot();
        // A permanent failure is recorded, and never overwrites the intent: the gateway the
        // operator wanted is tried again at every boot, and fails again, visibly.
        c.sv.wait_state("gateway-crashy", "failed");
        // (recorded by a short-lived writer, off the loop)
        wait_for("the failure to be recorded", LONG, || c.fx.state("crashy")["gateway_state"] == "startup_failed");
        assert_eq!(c.fx.state("crashy")["desired_state"], "running");
        assert_eq!(c.running_set(), expected, "boot {cycle}: the running set");
        for name in &expected {
            wait_for(&format!("{name} to write running"), LONG, || c.fx.state(name)["gateway_state"] == "running");
        }
        // The first restart changes nothing: the legacy states alone must carry over.
        for &name in names.iter().filter(|_| cycle > 0) {
            match random() % 3 {
                0 => {
                    assert_eq!(c.ctl(&["gateway", "start", "-p", name, "--wait"]).code, 0);
                    expected.insert(name.to_string());
                }
                1 => {
                    assert_eq!(c.ctl(&["gateway", "stop", "-p", name, "--wait"]).code, 0);
                    expected.remove(name);
                }
                _ => {}
            }
        }
        assert_eq!(c.running_set(), expected, "cycle {cycle}: after the changes");
        // Each running gateway has handled its start (and set up its SIGTERM handler).
        for name in &expected {
            wait_for(&format!("{name} to write running"), LONG, || c.fx.state(name)["gateway_state"] == "running");
        }
        // docker stop: SIGTERM; the fake gateways write `stopped` as they go.
        let done = c.sv.stop();
        assert_eq!(done.code, 0, "{done:?}");
        for name in &expected {
            assert_eq!(c.fx.state(name)["gateway_state"], "stopped", "{name} wrote stopped on SIGTERM");
        }
    }
    let log = c.fx.boot_log();
    assert_eq!(log.lines().filter(|l| l.contains("profile=crashy")).count(), 20);
    assert!(
        log.lines().filter(|l| l.contains("profile=crashy")).all(|l| l.contains("action=started desired=running")),
        "{log}"
    );
}

/// Issue 9, bug 5: a temp file left behind by an earlier boot (PID 1 is pid 1 at every
/// boot) must not block PID 1's state writes; stale temp files are swept.
#[test]
fn issue9_a_stale_temp_file_does_not_block_state_writes() {
    if !namespaces_available() {
        return;
    }
    let mut c = Container::new();
    let dir = c.fx.profile("broken", Some(r#"{"desired_state": "running"}"#));
    fs::write(dir.join("config-error"), "").unwrap();
    fs::write(dir.join(".gateway_state.json.tmp-1"), "left by a crash").unwrap();
    fs::write(c.fx.home().join(".gateway_state.json.tmp-1"), "left by a crash").unwrap();
    c.boot();
    c.sv.wait_state("gateway-broken", "failed");
    wait_for("the failure to be recorded", LONG, || c.fx.state("broken")["gateway_state"] == "startup_failed");
    assert!(c.fx.state("broken")["exit_reason"].as_str().is_some_and(|r| r.contains("78")));
    assert!(!dir.join(".gateway_state.json.tmp-1").exists(), "the stale temp file was swept");
    assert!(!c.fx.home().join(".gateway_state.json.tmp-1").exists(), "in the default profile too");
    c.sv.stop();
}

/// The saved states in the status follow the gateway's own writes of its state file,
/// through the watch on the profile directory (not a read per request).
#[test]
fn the_status_follows_the_state_file_through_the_watch() {
    if !namespaces_available() {
        return;
    }
    let mut c = Container::new();
    let dir = c.fx.profile("watched", Some(r#"{"desired_state": "running"}"#));
    c.boot();
    wait_for("the gateway's own state in the status", LONG, || {
        c.sv.status("gateway-watched")["gateway_state"] == "running"
    });
    // The gateway reports itself degraded, replacing its file as it always does.
    let state = c.fx.state("watched");
    let mut changed = state.clone();
    changed["gateway_state"] = json!("degraded");
    fs::write(dir.join("gateway_state.json.new"), changed.to_string()).unwrap();
    fs::rename(dir.join("gateway_state.json.new"), dir.join("gateway_state.json")).unwrap();
    wait_for("the status to follow", LONG, || c.sv.status("gateway-watched")["gateway_state"] == "degraded");
    c.sv.stop();
}

/// Issue 10, part 3: with the scan dir mounted noexec (Docker's default for --tmpfs) every
/// run file fails; the failure names the cause, the intent is not overwritten, and once
/// the mount is fixed the gateway the operator wanted runs again.
#[test]
fn issue10_a_noexec_scan_dir_names_the_cause_and_loses_no_intent() {
    if !namespaces_available() {
        return;
    }
    let mut c = Container::new();
    c.fx.profile("work", Some(r#"{"desired_state": "running"}"#));
    c.scan_mount_options = "noexec".into();
    c.boot();
    let status = c.sv.wait_state("gateway-work", "failed");
    // Said at boot, loudly, with the fix (issue 11).
    let log = c.sv.running.as_ref().map(|r| r.stderr_now()).unwrap_or_default();
    assert!(log.contains("mounted noexec") && log.contains("--tmpfs /run:exec"), "{log}");
    let failure = status["failure"].as_str().unwrap_or_default().to_string();
    assert!(failure.contains("noexec") && failure.contains("/run:exec"), "{failure}");
    wait_for("the failure in the state file", LONG, || c.fx.state("work")["gateway_state"] == "startup_failed");
    assert!(c.fx.state("work")["exit_reason"].as_str().is_some_and(|r| r.contains("noexec")));
    assert_eq!(c.fx.state("work")["desired_state"], "running", "the intent is not overwritten");
    c.sv.stop();
    // The mount is fixed: the next boot runs the gateway again.
    c.scan_mount_options = "mode=0755".into();
    c.boot();
    c.sv.wait_state("gateway-work", "up");
    wait_for("the gateway to run", LONG, || c.fx.state("work")["gateway_state"] == "running");
    c.sv.stop();
}

/// Issue 10, part 3: a gateway that rewrites its state file from scratch every few
/// milliseconds (erasing `desired_state`, as older gateways did) while the operator stops
/// and starts it 200 times across simulated restarts: after every restart the gateway runs
/// exactly when the operator last said so.
#[test]
fn issue10_no_intent_is_lost_to_a_gateway_rewriting_its_state_file() {
    if !namespaces_available() {
        return;
    }
    let mut c = Container::new();
    c.fx.profile("churn", Some(r#"{"gateway_state": "stopped"}"#));
    let script = c.fx.scratch.script(
        "rewriter",
        "state=\"$HERMES_PROFILE_DIR/gateway_state.json\"\n\
         write() { printf '{\"gateway_state\": \"%s\", \"pid\": %s}\\n' \"$1\" $$ > \"$state.w$$\" && mv -f \"$state.w$$\" \"$state\"; }\n\
         trap 'write stopped; exit 0' TERM\n\
         while :; do write running; sleep 0.003; done",
    );
    c.extra_env.push(("HERMES_INIT_GATEWAY_CMD".into(), format!("exec {}", script.display())));
    let mut seed: u64 = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    eprintln!("random seed {seed}");
    let mut random = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut wanted;
    let mut lost = Vec::new();
    c.boot();
    for op in 0..200 {
        let start = random() % 2 == 0;
        let verb = if start { "start" } else { "stop" };
        let out = c.ctl(&["gateway", verb, "-p", "churn", "--wait"]);
        assert_eq!(out.code, 0, "op {op}: {out:?}");
        wanted = start;
        if op % 20 == 19 {
            // docker restart: the gateway writes its own `stopped`, from scratch, on SIGTERM.
            assert_eq!(c.sv.stop().code, 0);
            c.boot();
            let running = c.running_set().contains("churn");
            if running != wanted {
                lost.push(format!("op {op}: wanted {wanted}, after the restart running {running}"));
            }
        }
    }
    c.sv.stop();
    assert!(lost.is_empty(), "lost intents: {lost:?}");
}

/// Issue 14, item 10: a scan dir that fills up (a tiny tmpfs, 200 profiles) makes the pass
/// fail, says how many profiles are without a slot, and leaves no staging directory.
#[test]
fn issue14_a_full_scan_dir_fails_the_pass_and_leaves_no_staging() {
    if !namespaces_available() {
        return;
    }
    let fx = HomeFixture::new();
    for i in 0..200 {
        fx.profile(&format!("p{i:03}"), Some(r#"{"desired_state": "running"}"#));
    }
    let mut command = Command::new("unshare");
    command.args(["--user", "--map-root-user", "--mount", "sh", "-c"]).arg(
        "mount -t tmpfs -o size=64k tmpfs \"$1\" && \"$2\" --home \"$3\" --scan-dir \"$1\"; code=$?; ls -a \"$1\" | grep -c '^\\.staging' ; exit $code",
    );
    command.arg("sh").arg(fx.scan()).arg(CONT_INIT).arg(fx.home());
    command.env_remove("HERMES_INIT_GATEWAY_CMD");
    let out = start(command).wait(LONG);
    assert_eq!(out.code, 111, "{out:?}");
    assert!(out.stderr.contains("profiles are without a slot"), "{}", out.stderr);
    assert_eq!(out.stdout.lines().last(), Some("0"), "staging directories left: {}", out.stdout);
}

/// Issue 13, item 2: a gateway slot is ready when its gateway says `running` in its state
/// file (seen through the watch), not when a timer runs out; `degraded` makes the health
/// degraded.
#[test]
fn a_gateway_is_ready_when_its_state_file_says_running() {
    if !namespaces_available() {
        return;
    }
    let mut c = Container::new();
    let dir = c.fx.profile("slow", Some(r#"{"desired_state": "running"}"#));
    let script = c.fx.scratch.script(
        "slow-gateway",
        "state=\"$HERMES_PROFILE_DIR/gateway_state.json\"\n\
         write() { printf '{\"gateway_state\": \"%s\"}\\n' \"$1\" > \"$state.w\" && mv -f \"$state.w\" \"$state\"; }\n\
         write starting\n\
         while [ ! -e \"$HERMES_PROFILE_DIR/go\" ]; do sleep 0.05; done\n\
         write running\n\
         while [ ! -e \"$HERMES_PROFILE_DIR/degrade\" ]; do sleep 0.05; done\n\
         write degraded\n\
         exec sleep 9301",
    );
    c.extra_env.push(("HERMES_INIT_GATEWAY_CMD".into(), format!("exec {}", script.display())));
    c.boot();
    wait_for("the gateway to say starting", LONG, || c.sv.status("gateway-slow")["gateway_state"] == "starting");
    // READY_AFTER_MS is 50 here: a timer would have made it ready long ago.
    let status = c.sv.status("gateway-slow");
    assert_eq!(status["state"], "starting", "{status}");
    assert_eq!(c.ctl(&["health", "--level", "ready"]).code, 1);
    fs::write(dir.join("go"), "").unwrap();
    c.sv.wait_state("gateway-slow", "up");
    assert_eq!(c.ctl(&["health", "--level", "ready"]).code, 0);
    fs::write(dir.join("degrade"), "").unwrap();
    wait_for("the status to say degraded", LONG, || c.sv.status("gateway-slow")["gateway_state"] == "degraded");
    let health = c.ctl(&["health"]);
    assert_eq!(health.code, 1, "{health:?}");
    assert!(health.stdout.contains("degraded"), "{health:?}");
    c.sv.stop();
}

/// Issue 13, item 4: two containers on one volume never both run its gateways. The second
/// registers every gateway down, says who holds the volume, is degraded, refuses to start a
/// gateway, and takes the gateways over once the first is gone.
#[test]
fn one_owner_per_volume() {
    if !namespaces_available() {
        return;
    }
    let mut first = Container::new();
    first.fx.profile("shared", Some(r#"{"desired_state": "running"}"#));
    first.boot();
    first.sv.wait_state("gateway-shared", "up");
    let mut second = Container::new();
    second.extra_env.push(("HERMES_HOME".into(), first.fx.home().display().to_string()));
    second.boot();
    let status = second.sv.status("gateway-shared");
    assert_eq!(status["state"], "down", "{status}");
    let health = second.ctl(&["health"]);
    assert_eq!(health.code, 1, "{health:?}");
    assert!(health.stdout.contains("held by another container") && health.stdout.contains("pid="), "{health:?}");
    let start = second.ctl(&["gateway", "start", "-p", "shared"]);
    assert_eq!(start.code, 1, "{start:?}");
    assert!(start.stderr.contains("held by another container"), "{start:?}");
    // The first container goes away: the second takes its gateways over.
    assert_eq!(first.sv.stop().code, 0);
    second.sv.wait_state("gateway-shared", "up");
    assert_eq!(second.ctl(&["health", "--level", "ready"]).code, 0);
    second.sv.stop();
}

/// Issue 13, item 3: profiles created on the volume while the container runs get their
/// gateway slot at once (down unless their intent says running, with the boot's
/// validation), and a profile directory that disappears has its gateway stopped and its slot
/// unloaded.
#[test]
fn profiles_are_discovered_live() {
    if !namespaces_available() {
        return;
    }
    let mut c = Container::new();
    c.boot();
    let profiles = c.fx.home().join("profiles");
    // Made in steps, as a tool would: the directory first, SOUL.md and the state a bit later.
    fs::create_dir(profiles.join("late")).unwrap();
    fs::write(profiles.join("late/gateway_state.json"), r#"{"desired_state": "running"}"#).unwrap();
    fs::write(profiles.join("late/SOUL.md"), "soul\n").unwrap();
    c.sv.wait_state("gateway-late", "up");
    // Without an intent: registered, down.
    fs::create_dir(profiles.join("quiet")).unwrap();
    fs::write(profiles.join("quiet/SOUL.md"), "soul\n").unwrap();
    wait_for("the quiet profile's slot", LONG, || c.sv.status("gateway-quiet")["state"] == "down");
    // Refused as at boot: a link, an invalid name, a directory without SOUL.md.
    std::os::unix::fs::symlink(profiles.join("late"), profiles.join("linked")).unwrap();
    fs::create_dir(profiles.join("Bad")).unwrap();
    fs::write(profiles.join("Bad/SOUL.md"), "soul\n").unwrap();
    fs::create_dir(profiles.join("nosoul")).unwrap();
    // A marker profile made last: once it is registered, the ones before were considered.
    fs::create_dir(profiles.join("marker")).unwrap();
    fs::write(profiles.join("marker/SOUL.md"), "soul\n").unwrap();
    wait_for("the marker", LONG, || !c.sv.status("gateway-marker").is_null());
    for refused in ["gateway-linked", "gateway-Bad", "gateway-nosoul"] {
        assert!(c.sv.status(refused).is_null(), "{refused} was loaded");
    }
    // The running profile disappears: its gateway is stopped, its slot unloaded and removed.
    wait_for("late to run", LONG, || c.fx.state("late")["gateway_state"] == "running");
    fs::remove_dir_all(profiles.join("late")).unwrap();
    wait_for("the slot to be unloaded", LONG, || c.sv.status("gateway-late").is_null());
    c.sv.stop();
}
