//! The hostile volume owner: the unprivileged user who owns `HERMES_HOME` plants symlinks
//! and hard links at every path root touches there (log files and their rotation, the boot
//! log and its rotation, state files, their temporary and `.corrupt-*` names, the intent
//! directory, `gateway.pid`, `processes.json`, `profiles/`, `profiles/<p>`, `logs/`,
//! `logs/gateways/<p>`), then root boots, starts, stops and restarts gateways, creates and
//! deletes profiles and rotates logs. Nothing outside the volume may be created, changed
//! or removed (checksums of the victims), and what root created on the volume belongs to
//! its owner.
//!
//! The reaper runs as the real root (a PID and mount namespace, no user namespace), so the
//! tier needs root; elsewhere it says SKIPPED (and fails under HERMES_INIT_REQUIRE_NS=1).

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use common::container::*;
use common::*;
use sha2::{Digest, Sha256};

/// The volume owner (and the gateways' user): `nobody`.
const OWNER: u32 = 65534;

fn root_available() -> bool {
    if nix::unistd::geteuid().is_root() && namespaces_available() {
        return true;
    }
    if std::env::var(REQUIRE_NS).as_deref() == Ok("1") {
        panic!("the hostile-volume tier needs root ({REQUIRE_NS}=1)");
    }
    eprintln!("SKIPPED: the hostile-volume tier needs root");
    false
}

/// Everything below `dir`: path -> (kind, owner, mode, size, sha256 of the content).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(meta) = fs::symlink_metadata(&path) else { continue };
        let digest = if meta.is_file() {
            Sha256::digest(fs::read(&path).unwrap_or_default()).iter().map(|b| format!("{b:02x}")).collect::<String>()
        } else if meta.file_type().is_symlink() {
            fs::read_link(&path).map(|t| t.display().to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        out.insert(path.clone(), format!("{:o} {}:{} {} {digest}", meta.mode(), meta.uid(), meta.gid(), meta.len()));
        if meta.is_dir() {
            for entry in fs::read_dir(&path).unwrap().flatten() {
                stack.push(entry.path());
            }
        }
    }
    out
}

/// The victims: files and directories outside the volume, owned by root.
struct Victims {
    dir: PathBuf,
}

impl Victims {
    fn new(parent: &Path) -> Victims {
        let dir = parent.join("victims");
        fs::create_dir_all(dir.join("logdir")).unwrap();
        fs::create_dir_all(dir.join("intentdir")).unwrap();
        fs::create_dir_all(dir.join("outside-profile")).unwrap();
        fs::create_dir_all(dir.join("profiles-dir/evil")).unwrap();
        fs::create_dir_all(dir.join("deleted-dir")).unwrap();
        fs::write(dir.join("passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
        fs::write(dir.join("hard"), "hard-linked victim\n").unwrap();
        fs::write(dir.join("hard2"), "another hard-linked victim\n").unwrap();
        fs::write(dir.join("state"), "{\"desired_state\": \"running\"}\n").unwrap();
        fs::write(dir.join("deleted-dir/keep"), "must survive a profile delete\n").unwrap();
        fs::write(dir.join("outside-profile/SOUL.md"), "soul\n").unwrap();
        fs::write(dir.join("outside-profile/gateway_state.json"), "{\"desired_state\": \"running\"}\n").unwrap();
        fs::write(dir.join("profiles-dir/evil/SOUL.md"), "soul\n").unwrap();
        fs::write(dir.join("profiles-dir/evil/gateway_state.json"), "{\"gateway_state\": \"running\"}\n").unwrap();
        Victims { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// A container whose home belongs to `nobody`, with gateways running as `nobody`, the
/// reaper as the real root.
fn hostile_container() -> Container {
    let mut c = Container::new();
    c.userns = false;
    c.extra_env.push(("HERMES_INIT_GATEWAY_USER".into(), "nobody".into()));
    // The scratch directories are private to root by default; the gateways must reach
    // their profiles and the fake gateway.
    for dir in [c.fx.scratch.dir.path(), c.sv.scratch.dir.path()] {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    }
    c
}

fn give_home_to_owner(home: &Path) {
    let status =
        std::process::Command::new("chown").args(["-hR", &format!("{OWNER}:{OWNER}")]).arg(home).status().unwrap();
    assert!(status.success());
}

/// Every file and directory root may have made under the home belongs to the owner
/// (links planted by the test and hard links to the victims excepted).
fn assert_owned_by_the_owner(home: &Path, victims: &Victims) {
    let victim_inodes: Vec<u64> =
        ["hard", "hard2"].iter().map(|n| fs::metadata(victims.path(n)).unwrap().ino()).collect();
    for (path, _) in snapshot(home) {
        let meta = fs::symlink_metadata(&path).unwrap();
        if meta.file_type().is_symlink() || victim_inodes.contains(&meta.ino()) {
            continue;
        }
        assert_eq!(meta.uid(), OWNER, "{} belongs to uid {}, not to the volume's owner", path.display(), meta.uid());
    }
}

#[test]
fn links_planted_everywhere_root_touches_change_nothing_outside_the_volume() {
    if !root_available() {
        return;
    }
    let mut c = hostile_container();
    let victims = Victims::new(c.fx.scratch.dir.path());
    let home = c.fx.home();
    for name in ["alpha", "beta", "gamma", "rot", "zeta"] {
        c.fx.profile(name, Some(r#"{"gateway_state": "running"}"#));
    }
    // The gateway of `rot` floods its log past the rotation size before it settles.
    let flood =
        "if [ -e \"$HERMES_PROFILE_DIR/flood\" ]; then head -c 1300000 /dev/zero | tr '\\0' x | fold -w 200; fi";
    c.extra_env.push(("HERMES_INIT_GATEWAY_CMD".into(), format!("{flood}; exec {}", fake_gateway())));
    fs::write(home.join("profiles/rot/flood"), "").unwrap();
    // The boot log and its rotation, and the gateway logs.
    fs::create_dir_all(home.join("logs/gateways/alpha")).unwrap();
    fs::create_dir_all(home.join("logs/gateways/gamma")).unwrap();
    fs::create_dir_all(home.join("logs/gateways/rot")).unwrap();
    symlink(victims.path("passwd"), home.join("logs/container-boot.log")).unwrap();
    symlink(victims.path("boot1"), home.join("logs/container-boot.log.1")).unwrap();
    symlink(victims.path("passwd"), home.join("logs/gateways/alpha/current")).unwrap();
    symlink(victims.path("logdir"), home.join("logs/gateways/beta")).unwrap();
    fs::hard_link(victims.path("hard"), home.join("logs/gateways/gamma/current")).unwrap();
    for i in 0..3 {
        symlink(victims.path("passwd"), home.join(format!("logs/gateways/rot/@0000000000000000000{i}.s"))).unwrap();
    }
    // State files, their temporary and corrupt names, the intent directory, runtime files.
    fs::remove_file(home.join("profiles/beta/gateway_state.json")).unwrap();
    symlink(victims.path("state"), home.join("profiles/beta/gateway_state.json")).unwrap();
    symlink(victims.path("tmp1"), home.join("profiles/alpha/.gateway_state.json.tmp-1")).unwrap();
    symlink(victims.path("intentdir"), home.join("profiles/alpha/.hermes-init")).unwrap();
    symlink(victims.path("passwd"), home.join("profiles/alpha/gateway.pid")).unwrap();
    fs::hard_link(victims.path("hard2"), home.join("profiles/alpha/processes.json")).unwrap();
    fs::write(home.join("profiles/gamma/gateway_state.json"), "{corrupt").unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    for second in now..now + 40 {
        let stamp = chrono_free_utc(second);
        symlink(victims.path("passwd"), home.join(format!("profiles/gamma/gateway_state.json.corrupt-{stamp}")))
            .unwrap();
    }
    symlink(victims.path("passwd"), home.join("gateway_state.json")).unwrap();
    // Profiles that are links, and a profile name planted before `profile create`.
    symlink(victims.path("outside-profile"), home.join("profiles/delta")).unwrap();
    symlink(victims.path("logdir"), home.join("profiles/epsilon")).unwrap();
    // A link inside a profile that is deleted.
    symlink(victims.path("deleted-dir"), home.join("profiles/zeta/link")).unwrap();
    // A FIFO as a port file: reading it would hang the boot pass and `profile create`.
    nix::unistd::mkfifo(&home.join("profiles/gamma/gateway.port"), nix::sys::stat::Mode::from_bits_truncate(0o644))
        .unwrap();
    give_home_to_owner(&home);
    let before = snapshot(&victims.dir);

    c.boot();
    wait_for("the flood to rotate the log", LONG, || {
        fs::read_dir(home.join("logs/gateways/rot"))
            .map(|d| {
                d.flatten().any(|e| {
                    e.file_name().to_string_lossy().starts_with('@') && e.file_type().is_ok_and(|t| t.is_file())
                })
            })
            .unwrap_or(false)
    });
    // alpha's intent directory is a link: the intent cannot be recorded, the stop is still
    // carried out, and the failure is reported.
    let alpha = c.ctl(&["gateway", "stop", "-p", "alpha", "--wait"]);
    assert_eq!(alpha.code, 111, "{alpha:?}");
    assert!(alpha.stderr.contains(".hermes-init"), "{alpha:?}");
    assert_eq!(c.sv.status("gateway-alpha")["state"], "down");
    assert_eq!(c.ctl(&["gateway", "start", "-p", "beta", "--wait"]).code, 0);
    assert_eq!(c.ctl(&["gateway", "restart", "-p", "gamma", "--wait"]).code, 0);
    let delta = c.ctl(&["gateway", "start", "-p", "delta"]);
    assert_eq!(delta.code, 1, "a profile that is a link is no gateway: {delta:?}");
    let epsilon = c.ctl(&["profile", "create", "epsilon"]);
    assert_ne!(epsilon.code, 0, "{epsilon:?}");
    assert_eq!(c.ctl(&["profile", "create", "eta", "--start", "--wait"]).code, 0);
    assert_eq!(c.ctl(&["profile", "delete", "zeta", "--yes"]).code, 0);
    assert!(!home.join("profiles/zeta").exists());
    let done = c.sv.stop();
    assert_eq!(done.code, 0, "{done:?}");
    // A second boot over the same volume: the boot log, state and intent files again.
    c.boot();
    c.running_set();
    c.sv.stop();

    let after = snapshot(&victims.dir);
    assert_eq!(before, after, "a file outside the volume was created, changed or removed");
    // The links are still links (or were removed as links); nothing was followed.
    assert!(fs::symlink_metadata(home.join("logs/gateways/beta")).unwrap().file_type().is_symlink());
    assert!(!home.join("profiles/alpha/gateway.pid").exists(), "stale runtime files are removed, as links");
    assert!(!home.join("profiles/alpha/processes.json").exists());
    // The gateways that were not behind a link kept working: their state is on the volume.
    assert_eq!(c.fx.state("eta")["gateway_state"], "stopped");
    assert_owned_by_the_owner(&home, &victims);
}

#[test]
fn profiles_and_logs_as_links_are_refused() {
    if !root_available() {
        return;
    }
    let mut c = hostile_container();
    let victims = Victims::new(c.fx.scratch.dir.path());
    let home = c.fx.home();
    fs::remove_dir_all(home.join("profiles")).unwrap();
    symlink(victims.path("profiles-dir"), home.join("profiles")).unwrap();
    symlink(victims.path("logdir"), home.join("logs")).unwrap();
    fs::write(home.join("gateway_state.json"), r#"{"desired_state": "running"}"#).unwrap();
    give_home_to_owner(&home);
    let before = snapshot(&victims.dir);
    c.boot();
    assert!(c.sv.status("gateway-evil").is_null(), "a profile behind a linked profiles/ is not loaded");
    assert_eq!(c.running_set(), ["default".to_string()].into_iter().collect());
    let create = c.ctl(&["profile", "create", "newone"]);
    assert_ne!(create.code, 0, "{create:?}");
    assert_eq!(c.ctl(&["gateway", "stop", "--wait"]).code, 0);
    c.sv.stop();
    assert_eq!(before, snapshot(&victims.dir), "a file outside the volume was created, changed or removed");
    assert_owned_by_the_owner(&home, &victims);
}

#[test]
fn files_root_creates_belong_to_the_volume_owner_and_its_gateway_can_use_them() {
    if !root_available() {
        return;
    }
    let mut c = hostile_container();
    let victims = Victims::new(c.fx.scratch.dir.path());
    // A FIFO as the boot log: opening it for writing would hang the boot pass.
    fs::create_dir_all(c.fx.home().join("logs")).unwrap();
    nix::unistd::mkfifo(&c.fx.home().join("logs/container-boot.log"), nix::sys::stat::Mode::from_bits_truncate(0o644))
        .unwrap();
    give_home_to_owner(&c.fx.home());
    c.boot();
    // Root creates the profile; the gateway, as the owner, writes its state there.
    assert_eq!(c.ctl(&["profile", "create", "work", "--start", "--wait"]).code, 0);
    wait_for("the gateway to write its state", LONG, || c.fx.state("work")["gateway_state"] == "running");
    assert_eq!(c.ctl(&["gateway", "stop", "-p", "work", "--wait"]).code, 0);
    assert_eq!(c.fx.state("work")["gateway_state"], "stopped", "the gateway wrote stopped as the owner");
    c.sv.stop();
    assert_owned_by_the_owner(&c.fx.home(), &victims);
}

/// `YYYY-MM-DDTHH:MM:SSZ` of an epoch second (the names of `.corrupt-*` files).
fn chrono_free_utc(secs: u64) -> String {
    let out =
        std::process::Command::new("date").args(["-u", "-d", &format!("@{secs}"), "+%Y-%m-%dT%H:%M:%SZ"]).output();
    String::from_utf8_lossy(&out.unwrap().stdout).trim().to_string()
}

/// Issue 14, items 1 and 2: the gateway user cannot make root run its code through the
/// control socket or the scan dir: a slot directory it owns (or one anyone may write) is
/// not loaded, `remove` deletes only slot directories of the scan dir, a planted link at
/// the status file's temporary name is not followed, and a FIFO as a gateway slot's
/// `profile` marker freezes nothing.
#[test]
fn slot_directories_the_gateway_user_controls_are_refused() {
    if !root_available() {
        return;
    }
    let mut sv = Supervised::new();
    let scratch = sv.scratch.dir.path().to_path_buf();
    let victims = Victims::new(&scratch);
    // The gateway user's own slot directory, with a run that would run as root.
    let owned = sv.slot_in(&scratch.join("pool"), "mine", "touch /tmp/pwned-by-gateway; exec sleep 8601", &[]);
    give_home_to_owner(&owned);
    // A root-owned one that anyone may write.
    let open = sv.slot_in(&scratch.join("pool"), "open", "exec sleep 8602", &[]);
    fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
    // A trusted one outside the scan dir, and one in the scan dir with planted files.
    let trusted = sv.slot_in(&scratch.join("pool"), "fine", "exec sleep 8603", &[]);
    let planted = sv.slot("gateway-planted", "exec sleep 8604", &[]);
    fs::create_dir_all(planted.join("supervise")).unwrap();
    for i in 0..8 {
        symlink(victims.path("passwd"), planted.join(format!("supervise/.status.json.tmp-{i}"))).unwrap();
    }
    symlink(victims.path("passwd"), planted.join("supervise/.status.json.tmp")).unwrap();
    nix::unistd::mkfifo(&planted.join("profile"), nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let before = snapshot(&victims.dir);
    sv.boot(true, &[("HERMES_INIT_READY_AFTER_MS", "50")]);
    sv.wait_state("gateway-planted", "up");
    for (dir, why) in [(&owned, "owned by uid 65534"), (&open, "writable by group or others")] {
        let load = sv.ctl(&["load", dir.to_str().unwrap()]);
        assert_eq!(load.code, 1, "{load:?}");
        assert!(load.stderr.contains(why), "{load:?}");
    }
    assert!(!Path::new("/tmp/pwned-by-gateway").exists());
    assert_eq!(sv.ctl(&["load", trusted.to_str().unwrap()]).code, 0);
    let remove = sv.ctl(&["unload", "fine", "--remove"]);
    assert_eq!(remove.code, 1, "{remove:?}");
    assert!(remove.stderr.contains("only a slot directory of the scan dir"), "{remove:?}");
    assert!(trusted.exists());
    // The health API answers, the status was published, the links are untouched.
    let (fds, _) = fds_and_rss(sv.reaper);
    assert!(fds > 0);
    assert_eq!(sv.ctl(&["health", "--level", "alive"]).code, 0);
    assert!(planted.join("supervise/status.json").is_file());
    sv.stop();
    assert_eq!(before, snapshot(&victims.dir), "a file outside was changed");
}

/// Issue 14, item 12: `exec-as` keeps the user's supplementary groups (the group database's),
/// and drops everything else.
#[test]
fn exec_as_gives_the_users_own_groups() {
    if !root_available() {
        return;
    }
    // A supplementary group for `nobody`, for the length of the test.
    let group = format!("hermes-t{}", std::process::id());
    struct Remove(String);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::process::Command::new("groupdel").arg(&self.0).status();
        }
    }
    assert!(std::process::Command::new("groupadd").arg(&group).status().unwrap().success());
    let _remove = Remove(group.clone());
    assert!(std::process::Command::new("usermod").args(["-aG", &group, "nobody"]).status().unwrap().success());
    let out = std::process::Command::new(CONT_INIT)
        .args(["exec-as", "nobody", "--", "sh", "-c", "id -u; id -G"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("65534"), "{text}");
    let groups: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    let expected =
        String::from_utf8_lossy(&std::process::Command::new("id").args(["-G", "nobody"]).output().unwrap().stdout)
            .trim()
            .to_string();
    let mut want: Vec<&str> = expected.split_whitespace().collect();
    let mut got = groups.clone();
    want.sort();
    got.sort();
    assert_eq!(got, want, "the user's own groups, and not root's");
    assert!(!groups.contains(&"0"), "root's group was kept: {text}");
    assert!(want.len() >= 2, "nobody is in the test's group: {want:?}");
}

/// Issue 14, item 8: 600 idle connections to the health socket from one local user (it is
/// mode 0666) cannot starve the HEALTHCHECK, which runs as root.
#[test]
fn idle_health_connections_of_one_user_do_not_starve_the_healthcheck() {
    if !root_available() {
        return;
    }
    let mut sv = Supervised::new();
    fs::set_permissions(sv.scratch.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    sv.boot(true, &[]);
    let socket = sv.scratch.path("run/health.sock");
    let holder = "import socket, sys, time\n\
                  held = []\n\
                  for _ in range(600):\n\
                  \x20   s = socket.socket(socket.AF_UNIX)\n\
                  \x20   s.connect(sys.argv[1])\n\
                  \x20   held.append(s)\n\
                  print('held', flush=True)\n\
                  time.sleep(120)\n";
    let mut command = std::process::Command::new("setpriv");
    assert!(Path::new("/usr/bin/python3").exists(), "this test needs /usr/bin/python3");
    command.args(["--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c", holder]).arg(&socket);
    let held = start(command);
    wait_for("600 idle connections", LONG, || held.stdout_now().contains("held"));
    let health = sv.ctl(&["health", "--level", "alive"]);
    assert_eq!(health.code, 0, "{health:?}");
    let full = sv.ctl(&["health"]);
    assert!(full.stdout.contains("hermes-init"), "{full:?}");
    drop(held);
    sv.stop();
}
