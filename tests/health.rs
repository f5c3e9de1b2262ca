//! Black-box tests of the health API, `hermesctl health`, and service output, with the
//! reaper as PID 1 of a fresh PID namespace.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// Sends raw bytes to the health socket; returns (status code, body).
fn http(sv: &Supervised, request: &[u8]) -> (u16, String) {
    let mut stream = UnixStream::connect(sv.scratch.path("run/health.sock")).expect("connect");
    stream.set_read_timeout(Some(LONG)).unwrap();
    let _ = stream.write_all(request);
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let code = response.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map_or(String::new(), |(_, b)| b.to_string());
    (code, body)
}

fn get(sv: &Supervised, path: &str) -> (u16, Value) {
    let (code, body) = http(sv, format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    (code, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn detail<'a>(doc: &'a Value, slot: &str) -> Option<&'a Value> {
    doc["slots"]["details"].get(slot).filter(|d| d["slot"] == slot)
}

#[test]
fn health_document_follows_starts_kills_loads_and_unloads_at_once() {
    if !namespaces_available() {
        return;
    }
    let mut sv = Supervised::new();
    sv.slot("web", "exec sleep 8101", &[]);
    // Ready only when the test opens the gate, so "starting" lasts as long as needed.
    let gate = sv.scratch.path("gate");
    sv.slot(
        "idle",
        &format!("while [ ! -e {} ]; do sleep 0.02; done\necho >&5\nexec sleep 8102", gate.display()),
        &[("down", ""), ("notification-fd", "5")],
    );
    sv.boot(true, &[("HERMES_INIT_READY_AFTER_MS", "100")]);
    sv.wait_state("web", "up");
    let (code, doc) = get(&sv, "/api/health");
    assert_eq!(code, 200);
    assert_eq!(doc["status"], "healthy", "{doc}");
    assert_eq!(doc["init"], "hermes-init");
    assert!(doc["version"].is_string() && doc["uptime"].is_number() && doc["started_at"].is_u64(), "{doc}");
    assert_eq!(doc["slots"]["count"], 2);
    assert_eq!(doc["slots"]["loaded"], json!(["idle", "web"]));
    let web = detail(&doc, "web").unwrap();
    for field in ["slot", "path", "loaded_at", "state", "wanted", "ready", "pid", "since", "restarts", "last_exit"] {
        assert!(web.get(field).is_some(), "{field} missing: {web}");
    }
    assert_eq!(
        (web["state"].as_str(), web["wanted"].as_str(), web["ready"].as_bool()),
        (Some("up"), Some("up"), Some(true))
    );
    // Start: at once, starting and not ready, so the container is degraded.
    sv.send(json!({"event": "slot.start", "slot": "idle"}));
    let (code, doc) = get(&sv, "/api/health?level=ready");
    assert_eq!(code, 503);
    assert_eq!(doc["status"], "degraded");
    assert_eq!(detail(&doc, "idle").unwrap()["state"], "starting");
    fs::write(&gate, "").unwrap();
    sv.wait_state("idle", "up");
    assert_eq!(get(&sv, "/api/health?level=ready").0, 200);
    // kill -9: the death shows at the next request (restart count, last exit).
    let pid = pids_with("sleep 8101")[0];
    send_signal(pid, nix::sys::signal::Signal::SIGKILL);
    wait_for("the death to show", LONG, || {
        let (_, doc) = get(&sv, "/api/slots/web");
        doc["last_exit"]["signal"] == 9 && doc["restarts"] == 1
    });
    // Load and unload.
    let dir = sv.slot_in(&sv.scratch.path("more"), "extra", "exec sleep 8103", &[]);
    sv.send(json!({"event": "slot.load", "path": dir}));
    assert!(detail(&get(&sv, "/api/health").1, "extra").is_some());
    assert_eq!(get(&sv, "/api/slots/extra").0, 200);
    sv.send(json!({"event": "slot.unload", "slot": "extra"}));
    assert!(detail(&get(&sv, "/api/health").1, "extra").is_none());
    assert_eq!(get(&sv, "/api/slots/extra").0, 404);
    assert_eq!(get(&sv, "/api/health?level=alive").0, 200);
    let (code, slots) = get(&sv, "/api/slots");
    assert_eq!(code, 200);
    assert_eq!(slots.as_object().map(|o| o.len()), Some(2), "keyed by slot name: {slots}");
    sv.stop();
}

#[test]
fn malformed_requests_get_their_status_codes_and_silent_clients_are_cut_off() {
    if !namespaces_available() {
        return;
    }
    let mut sv = Supervised::new();
    sv.slot("web", "exec sleep 8201", &[]);
    sv.boot(true, &[]);
    let silent = UnixStream::connect(sv.scratch.path("run/health.sock")).unwrap();
    let big = format!("GET /api/health HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(10_000));
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (b"garbage\x00\x01\r\n\r\n".to_vec(), 400),
        (b"GET /api/health HTTP/1.1\r\nBad Header\r\n\r\n".to_vec(), 400),
        (big.into_bytes(), 431),
        (b"GET /api/health HTTP/1.1\r\nContent-Length: 100000\r\n\r\n".to_vec(), 413),
        (b"GET /nowhere HTTP/1.1\r\n\r\n".to_vec(), 404),
        (b"POST /api/health HTTP/1.1\r\nContent-Length: 0\r\n\r\n".to_vec(), 405),
        (b"PUT /api/slots/web HTTP/1.1\r\n\r\n".to_vec(), 405),
        (b"GET /api/health?level=sideways HTTP/1.1\r\n\r\n".to_vec(), 400),
    ];
    for (request, want) in cases {
        let (code, body) = http(&sv, &request);
        assert_eq!(code, want, "{:?}: {body}", String::from_utf8_lossy(&request[..request.len().min(40)]));
    }
    // A trickling client: half a request, then nothing.
    let mut trickle = UnixStream::connect(sv.scratch.path("run/health.sock")).unwrap();
    trickle.write_all(b"GET /api/hea").unwrap();
    // Others are served meanwhile.
    assert_eq!(get(&sv, "/api/health").0, 200);
    let started = Instant::now();
    for mut client in [silent, trickle] {
        client.set_read_timeout(Some(LONG)).unwrap();
        let mut rest = Vec::new();
        assert_eq!(client.read_to_end(&mut rest).unwrap_or(0), 0, "cut off without a response");
    }
    assert!(started.elapsed() < Duration::from_secs(30));
    sv.stop();
}

#[test]
fn two_hundred_concurrent_clients_while_slots_restart() {
    if !namespaces_available() {
        return;
    }
    let mut sv = Supervised::new();
    sv.slot("flappy", "sleep 0.2; exit 1", &[]);
    sv.slot("steady", "exec sleep 8301", &[]);
    // A port that was free a moment ago.
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    sv.boot(
        true,
        &[
            ("HERMES_INIT_CRASH_LIMIT", "1000"),
            ("HERMES_INIT_READY_AFTER_MS", "50"),
            ("HERMES_INIT_HEALTH_ADDR", &addr),
        ],
    );
    // The TCP listener answers too.
    let mut tcp = std::net::TcpStream::connect(&addr).expect("health over TCP");
    tcp.write_all(b"GET /api/health?level=alive HTTP/1.1\r\n\r\n").unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    let socket = sv.scratch.path("run/health.sock");
    let threads: Vec<_> = (0..200)
        .map(|i| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let mut stream = UnixStream::connect(&socket).unwrap();
                stream.set_read_timeout(Some(LONG)).unwrap();
                let path = if i % 2 == 0 { "/api/health" } else { "/api/slots/flappy" };
                stream.write_all(format!("GET {path} HTTP/1.1\r\n\r\n").as_bytes()).unwrap();
                let mut response = String::new();
                stream.read_to_string(&mut response).unwrap();
                response.get(9..12).unwrap_or("").to_string()
            })
        })
        .collect();
    for thread in threads {
        assert_eq!(thread.join().unwrap(), "200");
    }
    // Supervision went on: the flapping slot kept restarting, the steady one never did.
    wait_for("restarts", LONG, || sv.status("flappy")["restarts"].as_u64().unwrap_or(0) >= 2);
    assert_eq!(sv.status("steady")["restarts"], 0);
    sv.stop();
}

#[test]
fn hermesctl_health_exit_codes() {
    if !namespaces_available() {
        return;
    }
    let mut sv = Supervised::new();
    sv.slot("web", "exec sleep 8401", &[]);
    sv.slot("broken", "exit 78", &[]);
    // Never says it is ready.
    sv.slot("mute", "exec sleep 8402", &[("down", ""), ("notification-fd", "5")]);
    sv.boot(true, &[("HERMES_INIT_READY_AFTER_MS", "50")]);
    sv.wait_state("web", "up");
    sv.wait_state("broken", "failed");
    // A slot failed for good makes the container degraded, and not ready (issue 11), ...
    let out = sv.ctl(&["health"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.contains(": degraded, uptime") && out.stdout.contains("not ready: broken (failed)"), "{out:?}");
    assert_eq!(sv.ctl(&["health", "--level", "ready"]).code, 1);
    assert_eq!(sv.ctl(&["health", "--level", "alive"]).code, 0, "still alive");
    // ... until the operator has seen it: stopped, it no longer counts.
    assert_eq!(sv.ctl(&["stop", "broken"]).code, 0);
    let out = sv.ctl(&["health"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains(": healthy, uptime"), "{}", out.stdout);
    // Wanted up but not ready: degraded at level ready, still alive.
    sv.send(json!({"event": "slot.start", "slot": "mute"}));
    let ready = sv.ctl(&["health", "--level", "ready"]);
    assert_eq!(ready.code, 1, "{ready:?}");
    assert!(ready.stdout.contains("not ready: mute (starting)"), "{ready:?}");
    assert_eq!(sv.ctl(&["health", "--level", "alive"]).code, 0);
    let json_out = sv.ctl(&["health", "--json"]);
    let doc: Value = serde_json::from_str(&json_out.stdout).unwrap();
    assert!(doc["slots"]["details"].is_object(), "details keyed by slot name");
    assert_eq!(sv.ctl(&["health", "--level", "maybe"]).code, 100);
    sv.stop();
    let gone = sv.ctl(&["health"]);
    assert_eq!(gone.code, 111, "{gone:?}");
}

#[test]
fn service_output_prefixed_json_gateway_files_long_lines() {
    if !namespaces_available() {
        return;
    }
    let mut sv = Supervised::new();
    let home = sv.scratch.path("home");
    let profile_dir = home.join("profiles/alpha");
    fs::create_dir_all(&profile_dir).unwrap();
    sv.slot(
        "talker",
        "echo hello from talker; echo oops >&2; printf 'no newline'; head -c 100000 /dev/zero | tr '\\0' y; echo; printf '\\377bin\\n'; exec sleep 8501",
        &[],
    );
    sv.slot(
        "gateway-alpha",
        "echo gateway line; exec sleep 8502",
        &[("profile", &format!("{}\n", profile_dir.display()))],
    );
    sv.boot(true, &[("HERMES_HOME", home.to_str().unwrap())]);
    let running = sv.running.as_ref().unwrap();
    wait_for("the lines", LONG, || running.stdout_now().contains("[talker] \u{fffd}bin"));
    let out = running.stdout_now();
    assert!(out.contains("[talker] hello from talker\n"), "{out}");
    assert!(out.contains("[talker] oops\n"));
    assert!(out.contains("[talker] no newlineyyyy"), "a partial line is joined with what follows");
    assert!(out.contains("[line cut at 64 KiB]\n[talker] yyyy"), "long line cut and marked");
    assert!(out.contains("[gateway-alpha] gateway line\n"));
    let current = home.join("logs/gateways/alpha/current");
    wait_for("the gateway log file", LONG, || fs::read_to_string(&current).is_ok_and(|t| t == "gateway line\n"));
    sv.stop();

    // Rotation at 1 MB through a real gateway slot: 2.5 MB of output, 1 KB lines.
    let mut sv = Supervised::new();
    let home = sv.scratch.path("home");
    let profile_dir = home.join("profiles/big");
    fs::create_dir_all(&profile_dir).unwrap();
    let line = "z".repeat(999);
    sv.slot(
        "gateway-big",
        &format!("i=0; while [ $i -lt 2500 ]; do echo {line}; i=$((i+1)); done; echo done; exec sleep 8504"),
        &[("profile", &format!("{}\n", profile_dir.display()))],
    );
    sv.boot(true, &[("HERMES_HOME", home.to_str().unwrap()), ("HERMES_INIT_LOG_PREFIX", "0")]);
    let logs = home.join("logs/gateways/big");
    wait_for("the last line", LONG, || fs::read_to_string(logs.join("current")).is_ok_and(|t| t.ends_with("done\n")));
    let mut sizes: Vec<(String, u64)> = fs::read_dir(&logs)
        .unwrap()
        .flatten()
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.metadata().unwrap().len()))
        .collect();
    sizes.sort();
    let archives: Vec<&(String, u64)> = sizes.iter().filter(|(n, _)| n.starts_with('@')).collect();
    assert_eq!(archives.len(), 2, "{sizes:?}");
    assert!(sizes.iter().all(|(_, len)| *len <= 1_000_000), "{sizes:?}");
    let total: u64 = sizes.iter().map(|(_, len)| len).sum();
    assert_eq!(total, 2500 * 1000 + 5, "nothing lost in rotation");
    sv.stop();

    // JSON lines, and no prefix.
    for (env, check) in [(("HERMES_INIT_LOG_FORMAT", "json"), "json"), (("HERMES_INIT_LOG_PREFIX", "0"), "plain")] {
        let mut sv = Supervised::new();
        sv.slot("talker", "echo hello; echo err >&2; exec sleep 8503", &[]);
        sv.boot(true, &[env]);
        let running = sv.running.as_ref().unwrap();
        wait_for("two lines", LONG, || running.stdout_now().lines().count() >= 2);
        let out = running.stdout_now();
        if check == "json" {
            let lines: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
            let err = lines.iter().find(|l| l["stream"] == "stderr").unwrap();
            assert_eq!((err["slot"].as_str(), err["message"].as_str()), (Some("talker"), Some("err")));
            assert!(err["time"].as_str().unwrap().ends_with('Z'));
        } else {
            assert!(out.lines().any(|l| l == "hello") && out.lines().any(|l| l == "err"), "{out}");
        }
        sv.stop();
    }
}

#[test]
fn a_flooding_service_does_not_starve_a_quiet_one() {
    if !namespaces_available() {
        return;
    }
    let mut sv = Supervised::new();
    sv.slot(
        "flood",
        "while :; do echo xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx; done",
        &[],
    );
    sv.slot("quiet", "for i in 1 2 3 4 5; do echo tick $i; sleep 0.1; done; exec sleep 8601", &[]);
    sv.boot(true, &[]);
    let running = sv.running.as_ref().unwrap();
    wait_for("every quiet line", LONG, || running.stdout_now().contains("[quiet] tick 5"));
    let out = running.stdout_now();
    for i in 1..=5 {
        assert!(out.contains(&format!("[quiet] tick {i}\n")), "tick {i}");
    }
    assert!(out.matches("[flood] ").count() > 1000, "the flood did run");
    // The control socket stayed responsive throughout.
    sv.wait_state("quiet", "up");
    sv.stop();
}

/// Issue 13, item 6: `GET /metrics` in the Prometheus text format, parsed by a real client
/// (the `prometheus_client` parser from PyPI; .ci/run installs it).
#[test]
fn metrics_parse_with_a_real_prometheus_client() {
    if !namespaces_available() {
        return;
    }
    let mut sv = Supervised::new();
    sv.slot("web", "exec sleep 9401", &[]);
    sv.slot("idle", "exec sleep 9402", &[("down", "")]);
    sv.boot(true, &[("HERMES_INIT_READY_AFTER_MS", "50")]);
    sv.wait_state("web", "up");
    let (code, body) = http(&sv, b"GET /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(code, 200, "{body}");
    let parser = "import sys\n\
                  from prometheus_client.parser import text_string_to_metric_families\n\
                  for family in text_string_to_metric_families(sys.stdin.read()):\n\
                  \x20   for s in family.samples:\n\
                  \x20       print(s.name, ','.join(f'{k}={v}' for k, v in sorted(s.labels.items())), f'{float(s.value):g}')\n";
    let mut python = std::process::Command::new("python3")
        .args(["-c", parser])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    python.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = python.wait_with_output().unwrap();
    assert!(out.status.success(), "the parser refused it: {}\n{body}", String::from_utf8_lossy(&out.stderr));
    let samples = String::from_utf8_lossy(&out.stdout).to_string();
    for line in [
        "hermes_init_slot_up slot=web 1",
        "hermes_init_slot_up slot=idle 0",
        "hermes_init_slot_ready slot=web 1",
        "hermes_init_slot_state slot=web,state=up 1",
        "hermes_init_slot_state slot=idle,state=down 1",
        "hermes_init_slot_restarts_total slot=web 0",
        "hermes_init_slots  2",
    ] {
        assert!(samples.lines().any(|l| l == line), "{line}:\n{samples}");
    }
    assert!(samples.contains("hermes_init_build_info version="), "{samples}");
    assert!(samples.contains("hermes_init_loop_wakeups_total"), "{samples}");
    sv.stop();
}
