//! Regression tests named by their issue: each failed on the code before its fix.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// CPU time (user + system) a host pid has used so far.
fn cpu_time(pid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.get(stat.rfind(')').map_or(0, |i| i + 2)..).unwrap_or("").split(' ').collect();
    let ticks: u64 = fields.get(11..13).map_or(0, |f| f.iter().filter_map(|t| t.parse::<u64>().ok()).sum());
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(ticks * 1000 / per_second)
}

/// Issue 9, bug 1: the leader dies at the stop signal but a member of its group ignores it;
/// the group must still get SIGKILL at `timeout-kill`, and the slot reach `down`.
#[test]
fn issue9_a_stop_kills_the_group_when_the_leader_died_first() {
    if !namespaces_available() {
        return;
    }
    let mut sv = Supervised::new();
    sv.slot("split", "(trap '' TERM; exec sleep 7401) &\nexec sleep 7400", &[("timeout-kill", "1000")]);
    sv.boot(true, &[("HERMES_INIT_READY_AFTER_MS", "50")]);
    sv.wait_state("split", "up");
    wait_for("both processes", LONG, || pids_with("sleep 740").len() == 2);
    let stop = sv.ctl(&["stop", "split", "--wait", "--timeout", "5000"]);
    assert_eq!(stop.code, 0, "{stop:?}");
    assert_eq!(sv.status("split")["state"], "down");
    assert_eq!(pids_with("sleep 7401"), Vec::<i32>::new(), "the TERM-ignoring member of the group");
    let start = sv.ctl(&["start", "split", "--wait", "--timeout", "5000"]);
    assert_eq!(start.code, 0, "a later start works: {start:?}");
    sv.stop();
}

/// Issue 9, bug 2: the SIGKILL at the end of the container's grace time reaches the slots
/// too, even when their own `timeout-kill` is longer; nothing is left behind.
#[test]
fn issue9_the_grace_time_sigkill_reaches_the_slots() {
    let mut sv = Supervised::new();
    sv.slot("stubborn", "trap '' TERM\nexec sleep 7501", &[("timeout-kill", "10000")]);
    sv.slot("child", "trap '' TERM\nsleep 7502 &\nwait", &[("timeout-kill", "10000")]);
    // As a subreaper (not in a namespace), so whatever survives is still visible after the exit.
    sv.boot(false, &[("HERMES_INIT_KILL_GRACETIME_MS", "1000"), ("HERMES_INIT_READY_AFTER_MS", "50")]);
    sv.wait_state("stubborn", "up");
    sv.wait_state("child", "up");
    wait_for("the services", LONG, || pids_with("sleep 750").len() == 2);
    let sent = Instant::now();
    let done = sv.stop();
    let took = sent.elapsed();
    assert_eq!(done.code, 0, "{done:?}");
    assert!(!done.stderr.contains("survived SIGKILL"), "{}", done.stderr);
    assert!(took < Duration::from_secs(10), "the grace time did not cap the slots' timeout-kill: {took:?}");
    assert_eq!(pids_with("sleep 750"), Vec::<i32>::new(), "a slot process outlived the init");
}

/// Issue 9, bug 3: a signal given by number is accepted wherever a signal is.
#[test]
fn issue9_signals_by_number_are_accepted() {
    if !namespaces_available() {
        return;
    }
    let mut sv = Supervised::new();
    let got = sv.scratch.path("got");
    let run = format!(
        "trap 'echo usr1 >> {got}' USR1\ntrap 'echo usr2 >> {got}' USR2\nwhile :; do sleep 7601 & wait $!; done",
        got = got.display()
    );
    sv.slot("listener", &run, &[("down-signal", "15")]);
    sv.boot(true, &[("HERMES_INIT_READY_AFTER_MS", "50")]);
    sv.wait_state("listener", "up");
    let by_number = sv.ctl(&["signal", "10", "listener"]);
    assert_eq!(by_number.code, 0, "{by_number:?}");
    wait_for("SIGUSR1", LONG, || sv.scratch.read("got") == "usr1\n");
    for name in ["USR2", "SIGUSR2", "usr2"] {
        let by_name = sv.ctl(&["signal", name, "listener"]);
        assert_eq!(by_name.code, 0, "{name}: {by_name:?}");
    }
    wait_for("SIGUSR2 three times", LONG, || sv.scratch.read("got") == "usr1\nusr2\nusr2\nusr2\n");
    for bad in ["0", "65", "-1", "NOPE", "SIG"] {
        let refused = sv.ctl(&["signal", bad, "listener"]);
        assert_ne!(refused.code, 0, "{bad} was accepted");
        assert!(refused.stderr.contains("signal"), "{bad}: {}", refused.stderr);
    }
    let reply = sv.send(json!({"event": "slot.signal", "slot": "listener", "signal": "12"}));
    assert_eq!(reply["success"], true, "a number in a string over the socket: {reply}");
    sv.stop();
}

/// Issue 9, bug 4: a health client that half-closes in the middle of its request gets an
/// answer at once, and costs PID 1 no CPU while it waits.
#[test]
fn issue9_a_half_closed_health_request_is_answered_and_costs_nothing() {
    if !namespaces_available() {
        return;
    }
    let mut sv = Supervised::new();
    sv.boot(true, &[]);
    let before = cpu_time(sv.reaper);
    let mut stream = UnixStream::connect(sv.scratch.path("run/health.sock")).expect("connect");
    stream.set_read_timeout(Some(LONG)).unwrap();
    stream.write_all(b"GET /api/he").unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let spent = cpu_time(sv.reaper).saturating_sub(before);
    assert!(response.starts_with("HTTP/1.1 400 "), "an incomplete request that ended: {response:?}");
    assert!(spent < Duration::from_millis(500), "PID 1 spun on the half-closed connection: {spent:?} of CPU");
    // The control socket's half-closed clients are answered as before.
    let mut control = UnixStream::connect(sv.socket()).unwrap();
    control.set_read_timeout(Some(LONG)).unwrap();
    control.write_all(b"{\"event\": \"slot.status\"}").unwrap();
    control.shutdown(std::net::Shutdown::Write).unwrap();
    let mut reply = String::new();
    let _ = control.read_to_string(&mut reply);
    assert!(reply.is_empty() || reply.contains("\"success\""), "{reply:?}");
    sv.stop();
}

/// Bytes waiting in a pipe (FIONREAD).
fn queued(fd: &std::os::fd::OwnedFd) -> usize {
    use std::os::fd::AsRawFd;
    let mut n: nix::libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    unsafe { nix::libc::ioctl(fd.as_raw_fd(), nix::libc::FIONREAD, &mut n) };
    n.max(0) as usize
}

/// Issue 10, part 2: with its stdout and stderr a pipe that nobody reads (a stalled log
/// driver) and a slot printing as fast as it can, PID 1 still respawns a killed slot,
/// answers the health API, and ends on SIGTERM within its grace time.
#[test]
fn issue10_a_stalled_log_reader_never_blocks_pid_1() {
    if !namespaces_available() {
        return;
    }
    let sv = Supervised::new();
    sv.slot("flood", "exec yes 'a line of a service that floods its output'", &[]);
    sv.slot("victim", "exec sleep 7701", &[]);
    let (read, write) = nix::unistd::pipe().unwrap();
    let mut command = reaper_in_namespace(&[]);
    command
        .env("HERMES_INIT_SCAN_DIR", sv.scan_dir())
        .env("HERMES_INIT_RUNTIME_DIR", sv.scratch.path("run"))
        .env("HERMES_INIT_READY_AFTER_MS", "50")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::from(write.try_clone().unwrap()))
        .stderr(std::process::Stdio::from(write));
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut guard = KillOnDrop(command.spawn().unwrap());
    let child = &mut guard.0;
    let mut reaper = 0;
    wait_for("unshare to fork the reaper", LONG, || {
        reaper = children(child.id() as i32).first().copied().unwrap_or(0);
        reaper != 0
    });
    wait_for("the control socket", LONG, || UnixStream::connect(sv.socket()).is_ok());
    // The pipe fills up and stays full: nobody reads it from here on.
    wait_for("the log pipe to be full", LONG, || queued(&read) >= 60_000);
    let victim = sv.wait_state("victim", "up")["pid"].as_i64().unwrap();
    let host_pid = pids_with("sleep 7701");
    assert_eq!(host_pid.len(), 1);
    send_signal(host_pid[0], nix::sys::signal::Signal::SIGKILL);
    wait_for("the respawn", LONG, || {
        let status = sv.status("victim");
        status["state"] == "up" && status["pid"].as_i64().is_some_and(|p| p != victim)
    });
    let mut health = UnixStream::connect(sv.scratch.path("run/health.sock")).unwrap();
    health.set_read_timeout(Some(LONG)).unwrap();
    health.write_all(b"GET /api/health HTTP/1.1\r\n\r\n").unwrap();
    let mut response = String::new();
    let _ = health.read_to_string(&mut response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response:?}");
    let sent = Instant::now();
    send_signal(reaper, nix::sys::signal::Signal::SIGTERM);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status:?}");
            break;
        }
        assert!(sent.elapsed() < LONG, "the container could not be stopped");
        std::thread::sleep(Duration::from_millis(10));
    }
    // The grace time is 3 s; with a margin for a loaded machine, it ended well inside it
    // (a blocked PID 1 never ends at all).
    assert!(sent.elapsed() < Duration::from_secs(6), "{:?}", sent.elapsed());
    assert!(queued(&read) >= 60_000, "the pipe was never read");
}

/// Issue 14, item 9: with the reaper's descriptors exhausted by clients, a pending client is
/// accepted and closed at once (not left pending while the loop spins on a readable
/// listener), and a slot that cannot be spawned for want of descriptors is not failed.
#[test]
fn issue14_descriptor_exhaustion_neither_spins_nor_fails_slots() {
    if !namespaces_available() {
        return;
    }
    let sv = Supervised::new();
    let mut command = std::process::Command::new(UNSHARE[0]);
    command.args(&UNSHARE[1..]).args(["sh", "-c", "ulimit -n 40 && exec \"$0\"", REAPER]);
    command
        .env("HERMES_INIT_CONT_INIT_DIR", "/nonexistent")
        .env("HERMES_INIT_SCAN_DIR", sv.scan_dir())
        .env("HERMES_INIT_RUNTIME_DIR", sv.scratch.path("run"))
        .env("HERMES_INIT_CONTROL_IDLE_MS", "600000")
        .env("HERMES_INIT_CRASH_LIMIT", "3");
    let running = start(command);
    let reaper = running.reaper_pid(true);
    wait_for("the control socket", LONG, || UnixStream::connect(sv.socket()).is_ok());
    // Idle clients until the reaper has no descriptor left.
    let mut held = Vec::new();
    for _ in 0..60 {
        held.push(UnixStream::connect(sv.socket()).unwrap());
    }
    wait_for("the descriptors to run out", LONG, || running.stderr_now().contains("out of descriptors"));
    let before = cpu_time(reaper);
    let mut late = UnixStream::connect(sv.socket()).unwrap();
    late.set_read_timeout(Some(LONG)).unwrap();
    let _ = late.write_all(b"{\"event\": \"slot.status\"}\n");
    // Closed at once (no descriptor for it), or served: never left pending.
    let mut line = String::new();
    let started = Instant::now();
    let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(&late), &mut line);
    assert!(started.elapsed() < LONG, "the late client was left pending");
    assert!(cpu_time(reaper).saturating_sub(before) < Duration::from_millis(500), "the loop spun");
    drop(held);
}

/// Issue 14, item 9: a slot that cannot be spawned for want of descriptors waits and tries
/// again; it is never put in `failed` for it (the crash limit here is 3).
#[test]
fn issue14_slots_starved_of_descriptors_wait_and_do_not_fail() {
    if !namespaces_available() {
        return;
    }
    let sv = Supervised::new();
    for i in 0..20 {
        sv.slot(&format!("s{i:02}"), &format!("exec sleep 88{i:02}"), &[]);
    }
    let mut command = std::process::Command::new(UNSHARE[0]);
    command.args(&UNSHARE[1..]).args(["sh", "-c", "ulimit -n 28 && exec \"$0\"", REAPER]);
    command
        .env("HERMES_INIT_CONT_INIT_DIR", "/nonexistent")
        .env("HERMES_INIT_SCAN_DIR", sv.scan_dir())
        .env("HERMES_INIT_RUNTIME_DIR", sv.scratch.path("run"))
        .env("HERMES_INIT_CRASH_LIMIT", "3");
    let running = start(command);
    let deferred = || running.stderr_now().matches("cannot start now").count();
    let deadline = Instant::now() + LONG;
    while deferred() < 20 {
        assert!(Instant::now() < deadline, "no deferred spawns: {}", running.stderr_now());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!running.stderr_now().contains("failed, not restarting"), "{}", running.stderr_now());
    assert!(!pids_with("sleep 880").is_empty(), "some slots run");
}
