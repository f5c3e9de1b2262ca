//! Shared helpers of the black-box tests: run the real binaries, as PID 1 of a fresh PID
//! namespace (`unshare` as a command, never in-process: the harness is multithreaded) or
//! as a plain child, and wait on conditions with deadlines.
#![allow(dead_code)]

pub mod container;

use std::fs;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const REAPER: &str = env!("CARGO_BIN_EXE_hermes-reaper");

/// Set by CI: a missing namespace facility fails the test instead of skipping it.
pub const REQUIRE_NS: &str = "HERMES_INIT_REQUIRE_NS";

/// The `unshare` prefix that makes the next program PID 1 of a new PID namespace with its
/// own /proc, killed with its namespace when the test drops it.
pub const UNSHARE: [&str; 7] =
    ["unshare", "--user", "--map-root-user", "--pid", "--fork", "--mount-proc", "--kill-child"];

/// Whether PID namespaces can be made here. Prints why not and returns false (a skip),
/// unless `HERMES_INIT_REQUIRE_NS=1`, which turns the skip into a failure.
pub fn namespaces_available() -> bool {
    static AVAILABLE: OnceLock<Result<(), String>> = OnceLock::new();
    let result = AVAILABLE.get_or_init(|| {
        match Command::new(UNSHARE[0]).args(&UNSHARE[1..]).arg("true").stderr(Stdio::piped()).output() {
            Ok(out) if out.status.success() => Ok(()),
            Ok(out) => Err(format!("unshare failed: {}", String::from_utf8_lossy(&out.stderr).trim())),
            Err(e) => Err(format!("cannot run unshare: {e}")),
        }
    });
    match result {
        Ok(()) => true,
        Err(why) if std::env::var(REQUIRE_NS).as_deref() == Ok("1") => {
            panic!("PID namespaces are required ({REQUIRE_NS}=1) but unavailable: {why}")
        }
        Err(why) => {
            eprintln!("SKIPPED: no PID namespace here ({why}); set {REQUIRE_NS}=1 to fail instead");
            false
        }
    }
}

/// A scratch directory with helpers to write scripts into it.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Scratch {
        Scratch { dir: tempfile::tempdir().expect("tempdir") }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes an executable `#!/bin/sh` script and returns its path.
    pub fn script(&self, name: &str, body: &str) -> PathBuf {
        let path = self.path(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("mkdir");
        }
        fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
        make_executable(&path);
        path
    }

    pub fn read(&self, name: &str) -> String {
        fs::read_to_string(self.path(name)).unwrap_or_default()
    }
}

pub fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// A running program whose output goes to files, so nothing blocks on a full pipe.
pub struct Running {
    pub child: Child,
    out: PathBuf,
    err: PathBuf,
    pub started: Instant,
    _dir: tempfile::TempDir,
}

/// What a finished program left.
#[derive(Debug)]
pub struct Finished {
    /// The exit code, or 128+signal.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// Starts `command` with stdin from /dev/null and output captured.
pub fn start(mut command: Command) -> Running {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("stdout");
    let err = dir.path().join("stderr");
    command
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out).expect("stdout file"))
        .stderr(fs::File::create(&err).expect("stderr file"));
    let started = Instant::now();
    let child = command.spawn().expect("spawn");
    Running { child, out, err, started, _dir: dir }
}

impl Running {
    pub fn stdout_now(&self) -> String {
        fs::read_to_string(&self.out).unwrap_or_default()
    }

    pub fn stderr_now(&self) -> String {
        fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Waits for the exit, killing the program and failing the test at the deadline.
    pub fn wait(mut self, deadline: Duration) -> Finished {
        loop {
            match self.child.try_wait().expect("try_wait") {
                Some(status) => {
                    let elapsed = self.started.elapsed();
                    let code = status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
                    return Finished {
                        code,
                        stdout: fs::read_to_string(&self.out).unwrap_or_default(),
                        stderr: fs::read_to_string(&self.err).unwrap_or_default(),
                        elapsed,
                    };
                }
                None if self.started.elapsed() > deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    panic!(
                        "still running after {deadline:?}\nstdout:\n{}\nstderr:\n{}",
                        fs::read_to_string(&self.out).unwrap_or_default(),
                        fs::read_to_string(&self.err).unwrap_or_default()
                    );
                }
                None => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }

    /// The host pid of the reaper: the program itself, or the child of `unshare --fork`.
    pub fn reaper_pid(&self, in_namespace: bool) -> i32 {
        let pid = self.child.id() as i32;
        if !in_namespace {
            return pid;
        }
        let mut found = None;
        wait_for("unshare to fork the reaper", Duration::from_secs(10), || {
            found = children(pid).first().copied();
            found.is_some()
        });
        found.unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The direct children of a host pid.
pub fn children(pid: i32) -> Vec<i32> {
    fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// Polls `condition` until it holds, failing the test at the deadline.
pub fn wait_for(what: &str, deadline: Duration, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < deadline, "timed out after {deadline:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A command that runs the reaper as PID 1 of a fresh namespace with `args` after it.
pub fn reaper_in_namespace(args: &[&str]) -> Command {
    let mut command = Command::new(UNSHARE[0]);
    command.args(&UNSHARE[1..]).arg(REAPER).args(args);
    isolate(&mut command);
    command
}

/// A command that runs the reaper directly, as a child subreaper of the test.
pub fn reaper_as_child(args: &[&str]) -> Command {
    let mut command = Command::new(REAPER);
    command.args(args);
    isolate(&mut command);
    command
}

/// Keeps a test independent of the host: no host hooks, and its own scan and runtime dirs
/// (a test that needs them sets them again).
fn isolate(command: &mut Command) {
    let dir = tempfile::Builder::new().prefix("hermes-init-test").tempdir().expect("tempdir").keep();
    command
        .env("HERMES_INIT_CONT_INIT_DIR", "/nonexistent/cont-init.d")
        .env("HERMES_INIT_SCAN_DIR", dir.join("service"))
        .env("HERMES_INIT_RUNTIME_DIR", dir.join("run"));
}

/// Sends a signal to a host pid.
pub fn send_signal(pid: i32, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).expect("kill");
}

/// Appends a line to a file (for scripts that record what happened).
pub fn append(path: &Path, line: &str) {
    let mut file = fs::OpenOptions::new().create(true).append(true).open(path).expect("open");
    writeln!(file, "{line}").expect("write");
}

pub const CTL: &str = env!("CARGO_BIN_EXE_hermesctl");

/// A reaper with a scan dir and a control socket of its own, as PID 1 of a namespace
/// (or as a plain child), for the supervision tests.
pub struct Supervised {
    pub scratch: Scratch,
    pub running: Option<Running>,
    pub reaper: i32,
}

impl Supervised {
    /// Writes nothing yet: add slots with `slot`, then `boot`.
    pub fn new() -> Supervised {
        let scratch = Scratch::new();
        fs::create_dir_all(scratch.path("service")).unwrap();
        fs::create_dir_all(scratch.path("run")).unwrap();
        Supervised { scratch, running: None, reaper: 0 }
    }

    pub fn scan_dir(&self) -> PathBuf {
        self.scratch.path("service")
    }

    pub fn socket(&self) -> PathBuf {
        self.scratch.path("run/control.sock")
    }

    /// Writes a slot directory with a `run` script and optional extra files.
    pub fn slot(&self, name: &str, run: &str, files: &[(&str, &str)]) -> PathBuf {
        self.slot_in(&self.scan_dir(), name, run, files)
    }

    pub fn slot_in(&self, parent: &Path, name: &str, run: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir = parent.join(name);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("run"), format!("#!/bin/sh\n{run}\n")).unwrap();
        make_executable(&dir.join("run"));
        for (file, body) in files {
            fs::write(dir.join(file), body).unwrap();
            if *file == "finish" {
                make_executable(&dir.join(file));
            }
        }
        dir
    }

    /// Boots the reaper (in a namespace when `namespace`), with extra environment, and
    /// waits until its control socket answers.
    pub fn boot(&mut self, namespace: bool, env: &[(&str, &str)]) {
        let mut command = if namespace { reaper_in_namespace(&[]) } else { reaper_as_child(&[]) };
        command.env("HERMES_INIT_SCAN_DIR", self.scan_dir()).env("HERMES_INIT_RUNTIME_DIR", self.scratch.path("run"));
        for (k, v) in env {
            command.env(k, v);
        }
        let running = start(command);
        self.reaper = running.reaper_pid(namespace);
        self.running = Some(running);
        for socket in [self.socket(), self.scratch.path("run/health.sock")] {
            wait_for("the sockets", LONG, || std::os::unix::net::UnixStream::connect(&socket).is_ok());
        }
    }

    /// Runs hermesctl against this reaper.
    pub fn ctl(&self, args: &[&str]) -> Finished {
        let mut command = Command::new(CTL);
        command.arg("--socket").arg(self.socket()).args(args);
        start(command).wait(LONG)
    }

    /// One request over the socket, parsed.
    pub fn send(&self, body: serde_json::Value) -> serde_json::Value {
        request(&self.socket(), &body)
    }

    /// The status object of one slot (Null if it is not loaded).
    pub fn status(&self, slot: &str) -> serde_json::Value {
        self.send(serde_json::json!({"event": "slot.status", "slot": slot}))["data"]["slot"].clone()
    }

    pub fn wait_state(&self, slot: &str, state: &str) -> serde_json::Value {
        let mut last = serde_json::Value::Null;
        wait_for(&format!("slot {slot} to be {state}"), LONG, || {
            last = self.status(slot);
            last["state"] == state
        });
        last
    }

    /// SIGTERM to the reaper and the result of its exit.
    pub fn stop(&mut self) -> Finished {
        send_signal(self.reaper, nix::sys::signal::Signal::SIGTERM);
        self.running.take().expect("booted").wait(LONG)
    }
}

pub const LONG: Duration = Duration::from_secs(60);

/// One request over a control socket, parsed.
pub fn request(socket: &Path, body: &serde_json::Value) -> serde_json::Value {
    use std::io::{BufRead, BufReader};
    let mut stream = std::os::unix::net::UnixStream::connect(socket).expect("connect");
    stream.set_read_timeout(Some(LONG)).unwrap();
    writeln!(stream, "{body}").expect("send");
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line).expect("reply");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad reply {line:?}: {e}"))
}

/// Host pids of processes whose command line contains `marker`.
pub fn pids_with(marker: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else { continue };
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let zombie = fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "));
        if text.contains(marker) && !zombie {
            found.push(pid);
        }
    }
    found
}

/// Zombie children of a host pid.
pub fn zombie_children(pid: i32) -> usize {
    children(pid)
        .iter()
        .filter(|c| fs::read_to_string(format!("/proc/{c}/stat")).is_ok_and(|s| s.contains(") Z ")))
        .count()
}

/// Open descriptors and resident memory (KiB) of a host pid.
pub fn fds_and_rss(pid: i32) -> (usize, u64) {
    let fds = fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0);
    let rss = fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    (fds, rss)
}
