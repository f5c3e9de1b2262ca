//! Black-box tests of slot supervision, the control socket and hermesctl, with the reaper
//! as PID 1 of a fresh PID namespace (and as a plain child where host uids matter).

mod common;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// Spawn times (ns) recorded by a run script that appends `date +%s%N` to `file`.
fn spawn_times(file: &std::path::Path) -> Vec<u128> {
    fs::read_to_string(file).unwrap_or_default().lines().filter_map(|l| l.trim().parse().ok()).collect()
}

fn record_and_exec(file: &std::path::Path, exec: &str) -> String {
    format!("date +%s%N >> {}\nexec {exec}", file.display())
}

#[test]
fn kill_9_gives_exactly_one_respawn_with_backoff() {
    if !namespaces_available() {
        return;
    }
    let mut sv = Supervised::new();
    let spawns = sv.scratch.path("spawns");
    sv.slot("svc", &record_and_exec(&spawns, "sleep 7101"), &[]);
    sv.boot(true, &[("HERMES_INIT_READY_AFTER_MS", "50")]);
    for killed in 1..=4 {
        sv.wait_state("svc", "up");
        let pids = pids_with("sleep 7101");
        assert_eq!(pids.len(), 1, "one process of the slot: {pids:?}");
        send_signal(pids[0], nix::sys::signal::Signal::SIGKILL);
        wait_for("the respawn", LONG, || spawn_times(&spawns).len() == killed + 1);
    }
    sv.wait_state("svc", "up");
    assert_eq!(pids_with("sleep 7101").len(), 1);
    let times = spawn_times(&spawns);
    assert_eq!(times.len(), 5, "exactly one respawn per kill");
    let gaps: Vec<f64> = times.windows(2).map(|w| (w[1] - w[0]) as f64 / 1e9).collect();
    // Backoff 0.5, 1, 2, 4 s after each death, never closer than 1 s between spawns.
    for (gap, min) in gaps.iter().zip([1.0, 1.0, 2.0, 4.0]) {
        assert!(*gap >= min - 0.02 && *gap < min + 1.5, "spawn gaps {gaps:?}");
    }
    assert_eq!(sv.status("svc")["restarts"], 4);
    sv.stop();
}

#[test]
fn concurrent_starts_make_one_process_and_start_during_stop_makes_one_after() {
    if !namespaces_available() {
        return;
    }
    let mut sv = Supervised::new();
    let log = sv.scratch.path("log");
    let run = format!(
        "echo start >> {log}\ntrap 'sleep 1; echo end >> {log}; exit 0' TERM\nwhile :; do sleep 7201 & wait $!; done",
        log = log.display()
    );
    sv.slot("svc", &run, &[("down", "")]);
    sv.boot(true, &[("HERMES_INIT_READY_AFTER_MS", "50")]);
    assert_eq!(sv.status("svc")["state"], "down");
    let socket = sv.socket();
    let threads: Vec<_> = (0..20)
        .map(|_| {
            let socket = socket.clone();
            std::thread::spawn(move || request(&socket, &json!({"event": "slot.start", "slot": "svc"})))
        })
        .collect();
    for thread in threads {
        assert_eq!(thread.join().unwrap()["success"], true);
    }
    sv.wait_state("svc", "up");
    assert_eq!(sv.scratch.read("log"), "start\n");
    assert_eq!(pids_with("sleep 7201").len(), 1);
    // Stop, and start again while it is still stopping (its TERM handler takes 1 s).
    assert_eq!(sv.send(json!({"event": "slot.stop", "slot": "svc"}))["success"], true);
    assert_eq!(sv.status("svc")["state"], "stopping");
    assert_eq!(sv.send(json!({"event": "slot.start", "slot": "svc", "wait": "ready"}))["success"], true);
    assert_eq!(sv.scratch.read("log"), "start\nend\nstart\n", "the new copy started only after the old one ended");
    wait_for("one process", LONG, || pids_with("sleep 7201").len() == 1);
    sv.stop();
}

#[test]
fn a_service_ignoring_sigterm_is_killed_with_its_group_at_timeout_kill() {
    if !namespaces_available() {
        return;
    }
    let mut sv = Supervised::new();
    sv.slot("stubborn", "trap '' TERM\nsleep 7301 &\nexec sleep 7302", &[("timeout-kill", "400")]);
    sv.boot(true, &[]);
    sv.wait_state("stubborn", "starting");
    wait_for("both processes", LONG, || pids_with("sleep 730").len() == 2);
    let started = Instant::now();
    let reply = sv.send(json!({"event": "slot.stop", "slot": "stubborn", "wait": "down"}));
    assert_eq!(reply["success"], true, "{reply}");
    assert!(started.elapsed() >= Duration::from_millis(400), "down before timeout-kill: {:?}", started.elapsed());
    assert_eq!(pids_with("sleep 730"), Vec::<i32>::new(), "the grandchild too");
    assert_eq!(reply["data"]["slot"]["last_exit"]["signal"], 9);
    sv.stop();
}

#[test]
fn a_crash_loop_ends_in_failed_and_stays_down() {
    if !namespaces_available() {
        return;
    }
    let mut sv = Supervised::new();
    let spawns = sv.scratch.path("spawns");
    sv.slot("crashy", &format!("date +%s%N >> {}\nexit 1", spawns.display()), &[]);
    let config_error = sv.scratch.path("config-spawns");
    sv.slot("misconfigured", &format!("date +%s%N >> {}\nexit 78", config_error.display()), &[]);
    sv.boot(true, &[("HERMES_INIT_CRASH_LIMIT", "3")]);
    let status = sv.wait_state("crashy", "failed");
    assert!(status["failure"].as_str().unwrap().starts_with("crash loop: 3 deaths"), "{status}");
    assert_eq!(status["wanted"], "down");
    let status = sv.wait_state("misconfigured", "failed");
    assert!(status["failure"].as_str().unwrap().contains("EX_CONFIG"), "{status}");
    // Stays down: a bounded look (the slot has no deadline left, so nothing may happen).
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(spawn_times(&spawns).len(), 3);
    assert_eq!(spawn_times(&config_error).len(), 1);
    assert_eq!(sv.status("crashy")["state"], "failed");
    // hermesctl shows why.
    let table = sv.ctl(&["status"]);
    let row = table.stdout.lines().find(|l| l.starts_with("crashy ")).unwrap_or_default();
    // The state column holds the state; the reason is the last column, after the last exit.
    assert!(row.contains(" failed "), "{}", table.stdout);
    let (exit, reason) = (row.find("exit 1").unwrap_or(usize::MAX), row.find("crash loop: 3 deaths").unwrap_or(0));
    assert!(exit < reason, "{}", table.stdout);
    sv.stop();
}

#[test]
fn down_files_load_at_runtime_and_unload() {
    if !namespaces_available() {
        return;
    }
    let mut sv = Supervised::new();
    sv.slot("one", "exec sleep 7401", &[]);
    sv.slot("two", "exec sleep 7402", &[]);
    sv.slot("held", "exec sleep 7403", &[("down", "")]);
    sv.boot(true, &[("HERMES_INIT_READY_AFTER_MS", "50")]);
    sv.wait_state("one", "up");
    sv.wait_state("two", "up");
    assert_eq!(sv.status("held")["state"], "down");
    assert!(pids_with("sleep 7403").is_empty(), "down file honoured");
    let before = (pids_with("sleep 7401"), pids_with("sleep 7402"));
    // Load a directory from outside the scan dir at runtime.
    let extra = sv.scratch.path("elsewhere");
    let dir = sv.slot_in(&extra, "late", "exec sleep 7404", &[]);
    let load = sv.ctl(&["load", dir.to_str().unwrap()]);
    assert_eq!(load.code, 0, "{load:?}");
    sv.wait_state("late", "up");
    assert_eq!((pids_with("sleep 7401"), pids_with("sleep 7402")), before, "the others were not touched");
    // Loading it again is an error reply, not a second copy.
    let again = sv.ctl(&["load", dir.to_str().unwrap()]);
    assert_eq!(again.code, 1);
    assert!(again.stderr.contains("already loaded"), "{}", again.stderr);
    assert_eq!(pids_with("sleep 7404").len(), 1);
    // Unload: no process of it is left, its directory stays.
    let unload = sv.ctl(&["unload", "late"]);
    assert_eq!(unload.code, 0, "{unload:?}");
    assert!(pids_with("sleep 7404").is_empty());
    assert!(dir.join("run").exists());
    assert_eq!(sv.status("late"), serde_json::Value::Null);
    // With --remove the directory goes too.
    assert_eq!(sv.ctl(&["unload", "two", "--remove"]).code, 0);
    assert!(!sv.scan_dir().join("two").exists());
    assert!(pids_with("sleep 7402").is_empty());
    // Scan picks up a new directory in the scan dir.
    sv.slot("fresh", "exec sleep 7405", &[]);
    let scan = sv.ctl(&["scan"]);
    assert!(scan.stdout.contains("1 loaded"), "{scan:?}");
    sv.wait_state("fresh", "up");
    // The published status file.
    let published: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(sv.scan_dir().join("fresh/supervise/status.json")).unwrap()).unwrap();
    assert_eq!(published["state"], "up");
    assert_eq!(published["wanted"], "up");
    sv.stop();
}

#[test]
fn a_thousand_load_unload_cycles_leak_nothing() {
    if !namespaces_available() {
        return;
    }
    let mut sv = Supervised::new();
    let dir = sv.slot_in(&sv.scratch.path("pool"), "cycler", "exec sleep 7501", &[]);
    sv.boot(true, &[]);
    let mut stream = UnixStream::connect(sv.socket()).unwrap();
    stream.set_read_timeout(Some(LONG)).unwrap();
    let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
    let mut cycle = |stream: &mut UnixStream| {
        for body in [
            json!({"event": "slot.load", "path": dir, "wait": "up"}),
            json!({"event": "slot.unload", "slot": "cycler"}),
        ] {
            writeln!(stream, "{body}").unwrap();
            let mut line = String::new();
            std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
            assert!(line.contains("\"success\":true"), "{body}: {line}");
        }
    };
    for _ in 0..20 {
        cycle(&mut stream);
    }
    let (fds_before, rss_before) = fds_and_rss(sv.reaper);
    for _ in 0..1000 {
        cycle(&mut stream);
    }
    let (fds_after, rss_after) = fds_and_rss(sv.reaper);
    assert_eq!(fds_after, fds_before, "descriptors leaked");
    assert!(rss_after <= rss_before + 512, "RSS grew from {rss_before} KiB to {rss_after} KiB");
    assert!(pids_with("sleep 7501").is_empty(), "a process was leaked");
    assert_eq!(zombie_children(sv.reaper), 0);
    sv.stop();
}

#[test]
fn garbage_on_the_control_socket_gets_errors_and_disturbs_nothing() {
    if !namespaces_available() {
        return;
    }
    let mut sv = Supervised::new();
    sv.slot("calm", "exec sleep 7601", &[]);
    sv.boot(true, &[("HERMES_INIT_CONTROL_IDLE_MS", "500")]);
    // A client that sends half a line and never finishes, and one that sends nothing.
    let mut trickler = UnixStream::connect(sv.socket()).unwrap();
    trickler.write_all(b"{\"event\": \"slot.sta").unwrap();
    let silent = UnixStream::connect(sv.socket()).unwrap();
    // (request line, text of the error)
    let cases = [
        ("not json", "not valid JSON"),
        ("[1,2,3]", "must be a JSON object"),
        ("\"text\"", "must be a JSON object"),
        ("{}", "missing \"event\""),
        ("{\"event\": 5}", "missing \"event\""),
        ("{\"event\": \"slot.explode\"}", "unknown event 'slot.explode'"),
        ("{\"event\": \"slot.start\"}", "missing \"slot\""),
        ("{\"event\": \"slot.start\", \"slot\": \"nope\"}", "no such slot 'nope'"),
        ("{\"event\": \"slot.start\", \"slot\": \"calm\", \"wait\": \"soon\"}", "\"wait\" must be"),
        ("{\"event\": \"slot.signal\", \"slot\": \"calm\", \"signal\": \"NOPE\"}", "signal"),
        ("{\"event\": \"slot.load\", \"path\": \"/nonexistent/x\"}", "/nonexistent/x"),
        ("{\"event\": \"slot.load\", \"path\": \"/tmp/Bad Name\"}", "not a valid slot name"),
        ("\u{feff}{\"event\": \"scan\"}", "not valid JSON"),
    ];
    for (line, error) in cases {
        let mut stream = UnixStream::connect(sv.socket()).unwrap();
        stream.set_read_timeout(Some(LONG)).unwrap();
        stream.write_all(line.as_bytes()).unwrap();
        stream.write_all(b"\n").unwrap();
        let mut reply = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(&stream), &mut reply).unwrap();
        let reply: serde_json::Value = serde_json::from_str(&reply).unwrap();
        assert_eq!(reply["success"], false, "{line}: {reply}");
        assert!(reply["message"].as_str().unwrap().contains(error), "{line}: {reply}");
    }
    // A huge line: an error reply, then the connection is closed.
    let mut huge = UnixStream::connect(sv.socket()).unwrap();
    huge.set_read_timeout(Some(LONG)).unwrap();
    let writer = {
        let mut huge = huge.try_clone().unwrap();
        std::thread::spawn(move || {
            let _ = huge.write_all(&vec![b'x'; 1 << 20]);
        })
    };
    let mut reply = String::new();
    huge.read_to_string(&mut reply).ok();
    writer.join().unwrap();
    assert!(reply.contains("request line longer than"), "{reply}");
    // Other clients are served meanwhile, and the slot was never disturbed.
    sv.wait_state("calm", "up");
    assert_eq!(sv.status("calm")["restarts"], 0);
    // The trickler and the silent client are cut off at the idle limit.
    for mut client in [trickler, silent] {
        client.set_read_timeout(Some(LONG)).unwrap();
        let mut rest = Vec::new();
        let n = client.read_to_end(&mut rest).unwrap_or(0);
        assert_eq!(n, 0, "closed without a reply");
    }
    sv.stop();
}

#[test]
fn only_root_the_own_uid_and_the_admin_group_are_served() {
    // Host uids matter here, so the reaper runs as a plain child (a subreaper).
    if std::process::Command::new("setpriv").arg("--version").output().is_err() {
        panic!("this test needs setpriv (util-linux)");
    }
    if nix::unistd::geteuid().as_raw() != 0 {
        eprintln!("SKIPPED: needs root to run a client as another uid");
        return;
    }
    let mut sv = Supervised::new();
    sv.slot("svc", "exec sleep 7701", &[]);
    sv.boot(false, &[("HERMES_INIT_ADMIN_GROUP", "4242")]);
    // Let other uids reach the socket file, so the peer-credential check is what decides.
    use std::os::unix::fs::PermissionsExt;
    for dir in [sv.scratch.dir.path().to_path_buf(), sv.scratch.path("run")] {
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let socket_mode = fs::metadata(sv.socket()).unwrap().permissions().mode() & 0o777;
    assert_eq!(socket_mode, 0o660, "admin group configured: mode 0660");
    fs::set_permissions(sv.socket(), fs::Permissions::from_mode(0o666)).unwrap();
    let as_user = |groups: &str| {
        let mut command = std::process::Command::new("setpriv");
        command.args(["--reuid=65534", "--regid=65534"]);
        if groups.is_empty() {
            command.arg("--clear-groups");
        } else {
            command.arg(format!("--groups={groups}"));
        }
        command.arg(CTL).arg("--socket").arg(sv.socket()).arg("status");
        start(command).wait(LONG)
    };
    let stranger = as_user("");
    assert_eq!(stranger.code, 1, "{stranger:?}");
    assert!(stranger.stderr.contains("permission denied"), "{}", stranger.stderr);
    let admin = as_user("4242");
    assert_eq!(admin.code, 0, "{admin:?}");
    assert!(admin.stdout.contains("svc"), "{}", admin.stdout);
    let log = sv.stop().stderr;
    assert!(log.contains("control socket: refused pid"), "{log}");
}

#[test]
fn shutdown_of_50_slots_runs_in_parallel() {
    if !namespaces_available() {
        return;
    }
    let mut sv = Supervised::new();
    for i in 0..50 {
        let delay = if i == 7 { "1.0" } else { "0.5" };
        sv.slot(
            &format!("s{i:02}"),
            &format!("trap 'sleep {delay}; exit 0' TERM\nwhile :; do sleep 7801 & wait $!; done"),
            &[],
        );
    }
    sv.boot(true, &[("HERMES_INIT_READY_AFTER_MS", "50"), ("HERMES_INIT_KILL_GRACETIME_MS", "20000")]);
    for i in 0..50 {
        sv.wait_state(&format!("s{i:02}"), "up");
    }
    let started = Instant::now();
    let done = sv.stop();
    let took = started.elapsed();
    assert_eq!(done.code, 0, "{done:?}");
    assert!(took >= Duration::from_millis(1000), "the slowest slot needs 1 s: {took:?}");
    assert!(took < Duration::from_millis(3000), "not parallel: {took:?} for 50 slots of 0.5 s");
    assert!(pids_with("sleep 7801").is_empty());
}

#[test]
fn notification_fd_readiness_and_finish() {
    if !namespaces_available() {
        return;
    }
    let mut sv = Supervised::new();
    let gate = sv.scratch.path("gate");
    let finished = sv.scratch.path("finished");
    // Ready only when the test opens the gate; finish records its arguments.
    sv.slot(
        "notify",
        &format!("while [ ! -e {} ]; do sleep 0.02; done\necho >&5\nexec sleep 7901", gate.display()),
        &[("notification-fd", "5"), ("finish", &format!("#!/bin/sh\necho \"$@\" >> {}\n", finished.display()))],
    );
    sv.boot(true, &[("HERMES_INIT_READY_AFTER_MS", "10")]);
    sv.wait_state("notify", "starting");
    // The 10 ms timer does not apply to a slot with notification-fd.
    let waiter = {
        let socket = sv.socket();
        std::thread::spawn(move || request(&socket, &json!({"event": "slot.start", "slot": "notify", "wait": "ready"})))
    };
    assert_eq!(sv.status("notify")["ready"], false);
    fs::write(&gate, "").unwrap();
    let reply = waiter.join().unwrap();
    assert_eq!(reply["success"], true, "{reply}");
    assert_eq!(reply["data"]["slot"]["ready"], true);
    assert_eq!(sv.ctl(&["stop", "notify", "--wait"]).code, 0);
    wait_for("finish to run", LONG, || sv.scratch.read("finished") == "256 15\n");
    sv.stop();
}

#[test]
fn hermesctl_exit_codes_and_messages() {
    if !namespaces_available() {
        return;
    }
    let mut sv = Supervised::new();
    sv.slot("svc", "exec sleep 8001", &[("down", "")]);
    sv.boot(true, &[("HERMES_INIT_READY_AFTER_MS", "50")]);
    // (arguments, exit code, text on stdout or stderr)
    let cases: [(&[&str], i32, &str); 9] = [
        (&["start", "svc", "--wait"], 0, "slot svc: ready"),
        (&["status"], 0, "svc"),
        (&["restart", "svc", "--wait", "--timeout", "5000"], 0, "slot svc: ready"),
        (&["signal", "HUP", "nope"], 1, "no such slot 'nope'"),
        (&["stop", "nope"], 1, "no such slot 'nope'"),
        (&["bogus"], 100, "unknown command 'bogus'"),
        (&["start"], 100, "needs at least one slot"),
        (&["send", "slot.status", "[1]"], 100, "not a JSON object"),
        (&["stop", "svc", "--wait"], 0, "slot svc: down"),
    ];
    for (args, code, text) in cases {
        let out = sv.ctl(args);
        assert_eq!(out.code, code, "{args:?}: {out:?}");
        assert!(out.stdout.contains(text) || out.stderr.contains(text), "{args:?}: {out:?}");
    }
    let status = sv.ctl(&["status", "svc", "--json"]);
    let reply: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(reply["data"]["slot"]["state"], "down");
    sv.stop();
    // No supervisor: 111.
    let gone = sv.ctl(&["status"]);
    assert_eq!(gone.code, 111, "{gone:?}");
    assert!(gone.stderr.contains("cannot connect"), "{}", gone.stderr);
}

#[test]
fn a_crash_takes_what_the_leader_left_in_its_group_before_the_respawn() {
    if !namespaces_available() {
        return;
    }
    let mut sv = Supervised::new();
    let spawns = sv.scratch.path("spawns");
    // A stray helper (think of a keepalive) beside the service in its group.
    sv.slot("svc", &format!("date +%s%N >> {}\nsleep 7111 &\nexec sleep 7112", spawns.display()), &[]);
    sv.boot(true, &[("HERMES_INIT_READY_AFTER_MS", "50")]);
    sv.wait_state("svc", "up");
    wait_for("the helper", LONG, || pids_with("sleep 7111").len() == 1);
    send_signal(pids_with("sleep 7112")[0], nix::sys::signal::Signal::SIGKILL);
    wait_for("the respawn", LONG, || spawn_times(&spawns).len() == 2);
    sv.wait_state("svc", "up");
    wait_for("the new helper", LONG, || !pids_with("sleep 7111").is_empty());
    assert_eq!(pids_with("sleep 7111").len(), 1, "the old helper outlived its leader");
    assert_eq!(pids_with("sleep 7112").len(), 1);
    sv.stop();
}

/// Issue 13, item 5: a slot whose `on-failure` says `shutdown` is essential: its permanent
/// failure stops the container, with its exit code; other slots' failures do not.
#[test]
fn an_essential_slot_that_fails_for_good_stops_the_container_with_its_code() {
    if !namespaces_available() {
        return;
    }
    let mut sv = Supervised::new();
    sv.slot("helper", "exit 78", &[]);
    sv.slot("calm", "exec sleep 9501", &[]);
    sv.slot_in(&sv.scratch.path("pool"), "vital", "exit 78", &[("on-failure", "shutdown")]);
    sv.boot(true, &[("HERMES_INIT_READY_AFTER_MS", "50")]);
    sv.wait_state("helper", "failed");
    sv.wait_state("calm", "up");
    // The container runs on after an ordinary failure; the essential one stops it.
    let load = sv.ctl(&["load", sv.scratch.path("pool/vital").to_str().unwrap()]);
    assert_eq!(load.code, 0, "{load:?}");
    let done = sv.running.take().expect("booted").wait(LONG);
    assert_eq!(done.code, 78, "{done:?}");
    assert!(done.stderr.contains("an essential slot failed"), "{}", done.stderr);
}

/// Issue 13, item 5: many slots crashing at once is a crash storm: one line says so, the
/// restarts of all slots together are spread out, and none is failed for it.
#[test]
fn a_crash_storm_spreads_the_restarts_out() {
    if !namespaces_available() {
        return;
    }
    let mut sv = Supervised::new();
    let spawns = sv.scratch.path("spawns");
    for i in 0..30 {
        sv.slot(&format!("c{i:02}"), &format!("date +%s%N >> {}\nsleep 1.1\nexit 1", spawns.display()), &[]);
    }
    sv.boot(true, &[("HERMES_INIT_CRASH_LIMIT", "1000")]);
    let log = || sv.running.as_ref().map(|r| r.stderr_now()).unwrap_or_default();
    wait_for("the storm to be said", LONG, || log().contains("crash storm:"));
    let storm_at = spawn_times(&spawns).len();
    // Thirty more spawns after the storm began: they came at most one per 100 ms.
    wait_for("thirty spawns in the storm", LONG, || spawn_times(&spawns).len() >= storm_at + 30);
    let times = spawn_times(&spawns);
    let during = &times[storm_at + 1..storm_at + 30];
    let spans: Vec<u128> = during.windows(2).map(|w| (w[1].saturating_sub(w[0])) / 1_000_000).collect();
    // (the times are taken by the services themselves: allow for their start-up jitter)
    let quick = spans.iter().filter(|ms| **ms < 50).count();
    assert!(quick <= 3, "spawns much less than 100 ms apart in a storm: {spans:?}");
    assert!(!log().contains("failed, not restarting"), "{}", log());
    sv.stop();
}

/// Issue 13, item 6: `hermesctl logs SLOT [-n N] [-f]` shows a slot's recent output from a
/// small in-memory ring, and follows it.
#[test]
fn hermesctl_logs_shows_and_follows_a_slots_output() {
    if !namespaces_available() {
        return;
    }
    let mut sv = Supervised::new();
    let go = sv.scratch.path("go");
    sv.slot(
        "talker",
        &format!(
            "i=0; while [ $i -lt 300 ]; do echo \"line $i\"; i=$((i+1)); done\nwhile [ ! -e {go} ]; do sleep 0.05; done\necho after\nexec sleep 9601",
            go = go.display()
        ),
        &[],
    );
    sv.boot(true, &[]);
    wait_for("the lines", LONG, || sv.ctl(&["logs", "talker", "-n", "1"]).stdout.trim() == "line 299");
    let last = sv.ctl(&["logs", "talker", "-n", "3"]);
    assert_eq!(last.stdout, "line 297\nline 298\nline 299\n", "{last:?}");
    // The ring keeps 200 lines, not all 300.
    let all = sv.ctl(&["logs", "talker", "-n", "1000"]);
    assert_eq!(all.stdout.lines().count(), 200, "{}", all.stdout.lines().next().unwrap_or(""));
    assert_eq!(all.stdout.lines().next(), Some("line 100"));
    // -f follows: once it has shown the last line, it sees the line printed after.
    let mut follow = std::process::Command::new(CTL);
    follow.arg("--socket").arg(sv.socket()).args(["logs", "talker", "-n", "1", "-f"]);
    let following = start(follow);
    wait_for("the follower's first lines", LONG, || following.stdout_now().contains("line 299"));
    std::fs::write(&go, "").unwrap();
    wait_for("the followed line", LONG, || following.stdout_now().contains("after"));
    assert_eq!(sv.ctl(&["logs", "nope"]).code, 1);
    assert_eq!(sv.ctl(&["logs", "talker", "--json"]).code, 100);
    drop(following);
    sv.stop();
}

#[test]
fn checks_restart_a_hung_service_and_decide_readiness() {
    if !namespaces_available() {
        return;
    }
    let mut sv = Supervised::new();
    let flag = sv.scratch.path("hung");
    let spawns = sv.scratch.path("spawns");
    // An alive check that fails while the flag exists: the service looks up but answers nothing.
    let alive =
        json!({"exec": ["sh", "-c", format!("test ! -e {}", flag.display())], "period_ms": 100, "threshold": 2});
    sv.slot("hangs", &record_and_exec(&spawns, "sleep 7601"), &[("check", &alive.to_string())]);
    // A ready check on a port nothing listens on yet.
    let listener_port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let ready = json!({"tcp": format!("127.0.0.1:{listener_port}"), "level": "ready", "period_ms": 100});
    sv.slot("waits", "exec sleep 7602", &[("check", &ready.to_string())]);
    sv.boot(true, &[("HERMES_INIT_READY_AFTER_MS", "50")]);

    let up = sv.wait_state("hangs", "up");
    wait_for("the alive check to pass", LONG, || sv.status("hangs")["checks"][0]["state"] == "passing");
    assert_eq!(up["restarts"], 0);
    let first = pids_with("sleep 7601");
    assert_eq!(first.len(), 1);

    // Not ready while the port is closed, however long it runs.
    wait_for("the ready check to fail", LONG, || sv.status("waits")["checks"][0]["failures"].as_u64() >= Some(3));
    assert_eq!(sv.status("waits")["state"], "starting", "a ready check that fails keeps the slot starting");
    // The failing check shows in hermesctl status, /api/slots and /metrics (the health
    // document is republished when a check's state changes).
    let table = sv.ctl(&["status"]);
    assert!(table.stdout.contains(&format!("check tcp 127.0.0.1:{listener_port} failing")), "{}", table.stdout);
    let health_get = |path: &str| {
        let mut stream = UnixStream::connect(sv.scratch.path("run/health.sock")).unwrap();
        stream.set_read_timeout(Some(LONG)).unwrap();
        write!(stream, "GET {path} HTTP/1.1\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    };
    let detail = health_get("/api/slots/waits");
    let body: serde_json::Value = serde_json::from_str(detail.split("\r\n\r\n").nth(1).unwrap_or_default()).unwrap();
    assert_eq!(body["checks"][0]["state"], "failing", "{detail}");
    assert!(body["checks"][0]["last_error"].as_str().unwrap_or_default().contains("cannot connect"), "{detail}");
    let file: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(sv.scan_dir().join("waits/supervise/status.json")).unwrap()).unwrap();
    assert_eq!(file["checks"][0]["state"], "failing", "status.json follows the checks: {file}");
    let metrics = health_get("/metrics");
    let failures = metrics
        .lines()
        .find_map(|l| l.strip_prefix("hermes_init_slot_check_failures{slot=\"waits\"} "))
        .and_then(|v| v.parse::<u64>().ok());
    assert!(failures >= Some(3), "{metrics}");
    let listener = std::net::TcpListener::bind(("127.0.0.1", listener_port)).unwrap();
    sv.wait_state("waits", "up");
    drop(listener);

    // The hang: the check fails twice, the group is killed, the slot restarts as after a crash.
    fs::write(&flag, "").unwrap();
    wait_for("the restart", LONG, || spawn_times(&spawns).len() == 2);
    fs::remove_file(&flag).unwrap();
    sv.wait_state("hangs", "up");
    wait_for("the alive check to pass again", LONG, || sv.status("hangs")["checks"][0]["state"] == "passing");
    let after = sv.status("hangs");
    assert_eq!(after["restarts"], 1, "{after}");
    assert_eq!(after["last_exit"]["signal"], 9, "the whole group killed: {after}");
    let second = pids_with("sleep 7601");
    assert_eq!(second.len(), 1, "one process after the restart: {second:?}");
    assert_ne!(first, second);

    // A malformed check file is refused, naming the file.
    let bad = sv.slot_in(&sv.scratch.path("pool"), "badcheck", "exec sleep 7603", &[("check", "{\"tcp\": 5}")]);
    let reply = sv.send(json!({"event": "slot.load", "path": bad}));
    assert_eq!(reply["success"], false, "{reply}");
    let message = reply["message"].as_str().unwrap_or_default();
    assert!(message.contains("badcheck/check") && message.contains("not a valid check"), "{reply}");
    assert!(pids_with("sleep 7603").is_empty());
    let finished = sv.stop();
    assert!(finished.stderr.contains("failed 2 times"), "the restart is logged with its cause: {}", finished.stderr);
}
