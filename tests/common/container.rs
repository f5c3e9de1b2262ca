//! The volume fixtures of the black-box tests: a profile home with a scan dir beside it
//! (`HomeFixture`), and a container over it (`Container`): the reaper as PID 1 of fresh
//! namespaces over a tmpfs scan dir, `hermes-cont-init` as its boot hook, the fake gateway
//! as every gateway, and hermesctl run inside its namespaces.

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};

use super::*;

pub const CONT_INIT: &str = env!("CARGO_BIN_EXE_hermes-cont-init");

pub fn fake_gateway() -> String {
    format!("{}/scripts/fake-gateway", env!("CARGO_MANIFEST_DIR"))
}

pub struct HomeFixture {
    pub scratch: Scratch,
}

impl HomeFixture {
    pub fn new() -> HomeFixture {
        let scratch = Scratch::new();
        fs::create_dir_all(scratch.path("home/profiles")).unwrap();
        fs::create_dir_all(scratch.path("scan")).unwrap();
        HomeFixture { scratch }
    }

    pub fn home(&self) -> PathBuf {
        self.scratch.path("home")
    }

    pub fn scan(&self) -> PathBuf {
        self.scratch.path("scan")
    }

    pub fn profile_dir(&self, name: &str) -> PathBuf {
        if name == "default" { self.home() } else { self.home().join("profiles").join(name) }
    }

    /// A named profile with SOUL.md and, if given, a state file body.
    pub fn profile(&self, name: &str, state: Option<&str>) -> PathBuf {
        let dir = self.profile_dir(name);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("SOUL.md"), "soul\n").unwrap();
        if let Some(state) = state {
            fs::write(dir.join("gateway_state.json"), state).unwrap();
        }
        dir
    }

    pub fn cont_init(&self, args: &[&str]) -> Finished {
        let mut command = Command::new(CONT_INIT);
        command.arg("--home").arg(self.home()).arg("--scan-dir").arg(self.scan()).args(args);
        command.env_remove("HERMES_INIT_GATEWAY_CMD");
        start(command).wait(LONG)
    }

    pub fn slot(&self, profile: &str) -> PathBuf {
        self.scan().join(format!("gateway-{profile}"))
    }

    pub fn is_down(&self, profile: &str) -> bool {
        assert!(self.slot(profile).join("run").exists(), "slot of {profile} missing");
        self.slot(profile).join("down").exists()
    }

    pub fn state(&self, profile: &str) -> Value {
        serde_json::from_str(&fs::read_to_string(self.profile_dir(profile).join("gateway_state.json")).unwrap())
            .unwrap()
    }

    pub fn boot_log(&self) -> String {
        fs::read_to_string(self.home().join("logs/container-boot.log")).unwrap_or_default()
    }
}

pub struct Container {
    pub fx: HomeFixture,
    pub sv: Supervised,
    /// Run in a user namespace (as its root); without it the reaper is the real root.
    pub userns: bool,
    /// Extra environment for the reaper and hermesctl.
    pub extra_env: Vec<(String, String)>,
    /// Options of the tmpfs mounted on the scan dir (`noexec`, as Docker's default).
    pub scan_mount_options: String,
}

impl Container {
    pub fn new() -> Container {
        let fx = HomeFixture::new();
        let sv = Supervised::new();
        sv.scratch.script("cont-init.d/02-reconcile-profiles", &format!("exec {CONT_INIT}"));
        Container { fx, sv, userns: true, extra_env: Vec::new(), scan_mount_options: "mode=0755".into() }
    }

    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("HERMES_HOME".into(), self.fx.home().display().to_string()),
            ("HERMES_INIT_CONT_INIT_DIR".into(), self.sv.scratch.path("cont-init.d").display().to_string()),
            ("HERMES_INIT_GATEWAY_CMD".into(), format!("exec {}", fake_gateway())),
            ("HERMES_INIT_READY_AFTER_MS".into(), "50".into()),
            ("HERMES_INIT_CRASH_LIMIT".into(), "2".into()),
            ("HERMES_INIT_SCAN_DIR".into(), self.sv.scan_dir().display().to_string()),
            ("HERMES_INIT_RUNTIME_DIR".into(), self.sv.scratch.path("run").display().to_string()),
        ]
        .into_iter()
        .chain(self.extra_env.iter().cloned())
        .collect()
    }

    /// Boots over a fresh tmpfs scan dir, as PID 1 of a new PID and mount namespace.
    pub fn boot(&mut self) {
        let scan = self.sv.scan_dir();
        let mut command = Command::new(UNSHARE[0]);
        command.args(&UNSHARE[1..]).args([
            "sh",
            "-c",
            "mount -t tmpfs -o \"$3\" tmpfs \"$1\" && exec \"$2\"",
            "sh",
            scan.to_str().unwrap(),
            REAPER,
            &self.scan_mount_options,
        ]);
        if !self.userns {
            // The real root: a PID and mount namespace only.
            command = Command::new(UNSHARE[0]);
            command.args(["--mount", "--pid", "--fork", "--mount-proc", "--kill-child"]).args([
                "sh",
                "-c",
                "mount -t tmpfs -o \"$3\" tmpfs \"$1\" && exec \"$2\"",
                "sh",
                scan.to_str().unwrap(),
                REAPER,
                &self.scan_mount_options,
            ]);
        }
        for (k, v) in self.env() {
            command.env(k, v);
        }
        let running = start(command);
        self.sv.reaper = running.reaper_pid(true);
        self.sv.running = Some(running);
        let socket = self.sv.socket();
        wait_for("the control socket", LONG, || std::os::unix::net::UnixStream::connect(&socket).is_ok());
        // The socket answers during the boot hooks; the slots load after them.
        wait_for("the boot pass", LONG, || !self.sv.status("gateway-default").is_null());
    }

    /// hermesctl inside the container's namespaces, where the tmpfs scan dir is visible.
    pub fn ctl(&self, args: &[&str]) -> Finished {
        let mut command = Command::new("nsenter");
        command.arg(format!("--target={}", self.sv.reaper));
        if self.userns {
            command.arg("--user");
        }
        command.args(["--mount", "--pid", "--"]);
        command.arg(CTL).arg("--socket").arg(self.sv.socket()).args(args);
        for (k, v) in self.env() {
            command.env(k, v);
        }
        start(command).wait(LONG)
    }

    /// Gateways whose slot runs (starting or up), once every gateway slot has settled.
    pub fn running_set(&self) -> BTreeSet<String> {
        let mut set = BTreeSet::new();
        wait_for("gateway slots to settle", LONG, || {
            let reply = self.sv.send(json!({"event": "slot.status"}));
            let slots = reply["data"]["slots"].as_array().cloned().unwrap_or_default();
            set = slots
                .iter()
                .filter(|s| s["state"] == "up")
                .filter_map(|s| s["slot"].as_str()?.strip_prefix("gateway-").map(str::to_string))
                .collect();
            slots.iter().all(|s| s["state"] == "up" || s["state"] == "down" || s["state"] == "failed")
        });
        set
    }
}
