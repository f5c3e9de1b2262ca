//! `hermesctl`: the operator's command line over the control socket.
//!
//! Invariants: every outcome maps to one exit code (0 ok, 1 negative answer, 100 usage,
//! 111 no supervisor reachable or system error) and one clear line on stderr when it is not
//! 0; the tool never changes anything except through the socket.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

pub const EXIT_OK: i32 = 0;
pub const EXIT_NEGATIVE: i32 = 1;
pub const EXIT_USAGE: i32 = 100;
pub const EXIT_SYSTEM: i32 = 111;

/// The default wait limit of `--wait`.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;

pub const HELP: &str = "\
hermesctl: control the hermes-init supervisor of this container

USAGE:
    hermesctl [--socket PATH] COMMAND [ARGS...]

COMMANDS:
    status [SLOT] [--json]               Table of slots (slot, state, pid, uptime, restarts,
                                         wanted, last exit), or one slot; --json prints the
                                         raw reply
    start SLOT... [--wait] [--timeout MS]
                                         Start slots; --wait waits until each is ready
    stop SLOT... [--wait] [--timeout MS] Stop slots; --wait waits until each is down
    restart SLOT... [--wait] [--timeout MS]
                                         Restart slots; --wait waits until each is ready
    signal SIG SLOT                      Send a signal (name or number) to a slot's process
    load DIR                             Load a slot directory (a path, or a name in the
                                         scan dir) and start it unless it has a down file
    unload SLOT [--remove]               Stop a slot, wait until its processes are gone, and
                                         forget it; --remove also deletes its directory
    scan                                 Load new slot directories, unload vanished ones
    send EVENT [JSON]                    Send any control event (JSON object of fields) and
                                         print the raw reply
    profile create NAME [--start] [--wait]
                                         Create a profile (directory, SOUL.md, a port from
                                         9200-9799 in gateway.port), register its gateway
                                         slot and load it; down unless --start
    profile delete NAME --yes            Stop its gateway, wait until its processes are
                                         gone, remove the slot and the profile directory
    gateway start|stop|restart [-p NAME] [--all] [--wait]
                                         Record desired_state (running or stopped) in the
                                         profile's gateway_state.json, then act on its slot;
                                         no -p means the default profile; --all tries every
                                         profile and prints a summary
    gateway register NAME                Register and load the slot of a profile created
                                         outside the container
    health [--json] [--level alive|ready]
                                         Ask the health API: exit 0 when healthy at that
                                         level, 1 when not, 111 when no reaper answers
                                         (for HEALTHCHECK and Kubernetes exec probes)

OPTIONS:
    --socket PATH    The control socket [$HERMES_INIT_RUNTIME_DIR/control.sock, default
                     /run/hermes-init/control.sock]
    --timeout MS     Limit for --wait [10000]
    --health-socket PATH
                     The health socket [health.sock beside the control socket]
    --home DIR       The profile home [$HERMES_HOME, default /opt/data]; the scan dir is
                     $HERMES_INIT_SCAN_DIR [/run/service]
    -h, --help       Print this help

EXIT CODES:
    0      done
    1      the answer was negative (no such slot, failed, timed out)
    100    usage error
    111    no supervisor reachable, or a system error
";

/// A failure with its exit code and the line for stderr.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub message: String,
}

fn usage(message: impl Into<String>) -> Failure {
    Failure { code: EXIT_USAGE, message: format!("{} (see hermesctl --help)", message.into()) }
}

/// Sends one request and reads one reply line.
pub fn request(socket: &std::path::Path, body: &Value, timeout: Duration) -> Result<Value, Failure> {
    let system = |what: &str, e: std::io::Error| Failure {
        code: EXIT_SYSTEM,
        message: format!("{what} {}: {e} (is hermes-init running?)", socket.display()),
    };
    let mut stream = UnixStream::connect(socket).map_err(|e| system("cannot connect to", e))?;
    stream.set_read_timeout(Some(timeout)).map_err(|e| system("cannot use", e))?;
    let mut line = serde_json::to_vec(body).map_err(|e| Failure { code: EXIT_SYSTEM, message: e.to_string() })?;
    line.push(b'\n');
    stream.write_all(&line).map_err(|e| system("cannot write to", e))?;
    let mut reply = String::new();
    BufReader::new(&stream).read_line(&mut reply).map_err(|e| system("no reply from", e))?;
    if reply.is_empty() {
        return Err(Failure { code: EXIT_SYSTEM, message: format!("{} closed without a reply", socket.display()) });
    }
    serde_json::from_str(&reply)
        .map_err(|e| Failure { code: EXIT_SYSTEM, message: format!("unreadable reply from {}: {e}", socket.display()) })
}

/// The control socket path from the environment.
pub fn default_socket(env: &impl Fn(&str) -> Option<String>) -> PathBuf {
    let dir = env("HERMES_INIT_RUNTIME_DIR").filter(|d| !d.is_empty()).unwrap_or_else(|| "/run/hermes-init".into());
    PathBuf::from(dir).join("control.sock")
}

/// Runs `hermesctl` with the arguments after the program name; returns the exit code.
pub fn run(args: Vec<String>, env: impl Fn(&str) -> Option<String>) -> i32 {
    match run_inner(args, env) {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("hermesctl: {}", failure.message);
            failure.code
        }
    }
}

struct Options {
    socket: PathBuf,
    json: bool,
    wait: bool,
    remove: bool,
    all: bool,
    start: bool,
    yes: bool,
    profile: Option<String>,
    home: Option<String>,
    level: Option<String>,
    health_socket: Option<PathBuf>,
    timeout_ms: u64,
    words: Vec<String>,
}

fn parse(args: Vec<String>, env: &impl Fn(&str) -> Option<String>) -> Result<Option<Options>, Failure> {
    let mut options = Options {
        socket: default_socket(env),
        json: false,
        wait: false,
        remove: false,
        all: false,
        start: false,
        yes: false,
        profile: None,
        home: None,
        level: None,
        health_socket: None,
        timeout_ms: DEFAULT_TIMEOUT_MS,
        words: Vec::new(),
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--json" => options.json = true,
            "--wait" => options.wait = true,
            "--remove" => options.remove = true,
            "--all" => options.all = true,
            "--start" => options.start = true,
            "--yes" => options.yes = true,
            "-p" | "--profile" => options.profile = Some(args.next().ok_or_else(|| usage("-p needs a profile name"))?),
            "--level" => options.level = Some(args.next().ok_or_else(|| usage("--level needs alive or ready"))?),
            "--health-socket" => {
                options.health_socket = Some(args.next().ok_or_else(|| usage("--health-socket needs a path"))?.into())
            }
            "--home" => options.home = Some(args.next().ok_or_else(|| usage("--home needs a directory"))?),
            "--socket" => options.socket = args.next().ok_or_else(|| usage("--socket needs a path"))?.into(),
            "--timeout" => {
                let value = args.next().ok_or_else(|| usage("--timeout needs milliseconds"))?;
                options.timeout_ms =
                    value.parse().map_err(|_| usage(format!("--timeout: not a number of milliseconds: '{value}'")))?;
            }
            other if other.starts_with("--") => return Err(usage(format!("unknown option '{other}'"))),
            _ => options.words.push(arg),
        }
    }
    Ok(Some(options))
}

fn run_inner(args: Vec<String>, env: impl Fn(&str) -> Option<String>) -> Result<i32, Failure> {
    let Some(options) = parse(args, &env)? else {
        print!("{HELP}");
        return Ok(EXIT_OK);
    };
    let Some((command, rest)) = options.words.split_first() else {
        return Err(usage("no command given"));
    };
    let ask = |body: Value| {
        let wait = Duration::from_millis(options.timeout_ms) + Duration::from_secs(5);
        request(&options.socket, &body, wait.max(Duration::from_secs(35)))
    };
    match command.as_str() {
        "status" => {
            let body = match rest {
                [] => json!({"event": "slot.status"}),
                [slot] => json!({"event": "slot.status", "slot": slot}),
                _ => return Err(usage("status takes at most one slot")),
            };
            let reply = ask(body)?;
            if options.json {
                println!("{}", serde_json::to_string_pretty(&reply).unwrap_or_default());
            } else if reply["success"] == true {
                let slots = match &reply["data"] {
                    Value::Object(data) if data.contains_key("slots") => {
                        data["slots"].as_array().cloned().unwrap_or_default()
                    }
                    Value::Object(data) => vec![data["slot"].clone()],
                    _ => Vec::new(),
                };
                if rest.is_empty() {
                    println!("Manager: hermes-init (container supervisor)");
                    let gateways: Vec<Value> = slots
                        .iter()
                        .filter(|s| s["slot"].as_str().is_some_and(|n| n.starts_with("gateway-")))
                        .cloned()
                        .collect();
                    if !gateways.is_empty() {
                        print!("\nGateways:\n{}", crate::ctl_gateway::gateway_rows(&gateways));
                    }
                    print!("\nSlots:\n");
                }
                print!("{}", status_table(&slots, now_secs()));
            }
            finish(&reply, true)
        }
        "start" | "stop" | "restart" => {
            if rest.is_empty() {
                return Err(usage(format!("{command} needs at least one slot")));
            }
            let mut code = EXIT_OK;
            for slot in rest {
                let mut body = json!({"event": format!("slot.{command}"), "slot": slot});
                if options.wait {
                    body["wait"] = json!(if command == "stop" { "down" } else { "ready" });
                    body["timeout_ms"] = json!(options.timeout_ms);
                }
                let reply = ask(body)?;
                code = code.max(finish(&reply, false)?);
            }
            Ok(code)
        }
        "signal" => match rest {
            [sig, slot] => finish(&ask(json!({"event": "slot.signal", "slot": slot, "signal": sig}))?, false),
            _ => Err(usage("usage: hermesctl signal SIG SLOT")),
        },
        "load" => match rest {
            [dir] => {
                let target = match std::fs::canonicalize(dir) {
                    Ok(path) if dir.contains('/') || std::path::Path::new(dir).is_dir() => path.display().to_string(),
                    _ => dir.clone(),
                };
                finish(&ask(json!({"event": "slot.load", "path": target}))?, false)
            }
            _ => Err(usage("usage: hermesctl load DIR")),
        },
        "unload" => match rest {
            [slot] => finish(
                &ask(
                    json!({"event": "slot.unload", "slot": slot, "remove": options.remove, "timeout_ms": options.timeout_ms}),
                )?,
                false,
            ),
            _ => Err(usage("usage: hermesctl unload SLOT [--remove]")),
        },
        "scan" => finish(&ask(json!({"event": "scan"}))?, false),
        "send" => {
            let mut body = match rest {
                [_] => json!({}),
                [_, fields] => serde_json::from_str::<Value>(fields)
                    .ok()
                    .filter(Value::is_object)
                    .ok_or_else(|| usage(format!("send: not a JSON object: {fields}")))?,
                _ => return Err(usage("usage: hermesctl send EVENT [JSON]")),
            };
            body["event"] = json!(rest[0]);
            let reply = ask(body)?;
            println!("{}", serde_json::to_string(&reply).unwrap_or_default());
            finish(&reply, true)
        }
        "profile" | "gateway" => {
            // The helper sits beside hermesctl; without /proc, argv[0] tells where that is.
            let beside = |exe: PathBuf| exe.parent().map(|dir| dir.join("hermes-cont-init"));
            let helper = std::env::current_exe()
                .ok()
                .and_then(beside)
                .or_else(|| std::env::args().next().filter(|a| a.contains('/')).map(PathBuf::from).and_then(beside))
                .unwrap_or_else(|| PathBuf::from("hermes-cont-init"));
            let mut pass = crate::cont_init::Pass::from_env(&env, helper);
            if let Some(home) = &options.home {
                pass.home = crate::profile::Home::new(home);
            }
            let ctx = crate::ctl_gateway::Context {
                socket: &options.socket,
                pass,
                timeout_ms: options.timeout_ms,
                wait: options.wait,
            };
            if command == "profile" {
                crate::ctl_gateway::profile(&ctx, rest, options.start, options.yes)
            } else {
                crate::ctl_gateway::gateway(&ctx, rest, options.profile.as_deref(), options.all)
            }
        }
        "health" => health(&options, rest),
        other => Err(usage(format!("unknown command '{other}'"))),
    }
}

/// `hermesctl health [--json] [--level alive|ready]`: 0 healthy at that level, 1 not, 111
/// when no reaper answers.
fn health(options: &Options, rest: &[String]) -> Result<i32, Failure> {
    if !rest.is_empty() {
        return Err(usage("usage: hermesctl health [--json] [--level alive|ready]"));
    }
    let level = options.level.as_deref();
    if !matches!(level, None | Some("alive") | Some("ready")) {
        return Err(usage("--level must be alive or ready"));
    }
    let socket = match &options.health_socket {
        Some(path) => path.clone(),
        None => options.socket.with_file_name("health.sock"),
    };
    let unreachable = |e: std::io::Error| Failure {
        code: EXIT_SYSTEM,
        message: format!("no health answer from {}: {e} (is hermes-init running?)", socket.display()),
    };
    let mut stream = UnixStream::connect(&socket).map_err(unreachable)?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(unreachable)?;
    let query = level.map(|l| format!("?level={l}")).unwrap_or_default();
    write!(stream, "GET /api/health{query} HTTP/1.1\r\nHost: hermes-init\r\nConnection: close\r\n\r\n")
        .map_err(unreachable)?;
    let mut response = String::new();
    std::io::Read::read_to_string(&mut stream, &mut response).map_err(unreachable)?;
    let code: u16 = response.get(9..12).and_then(|c| c.parse().ok()).ok_or_else(|| Failure {
        code: EXIT_SYSTEM,
        message: format!("unreadable health answer from {}", socket.display()),
    })?;
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let doc: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let ok = match level {
        Some(_) => code == 200,
        None => doc["status"] == "healthy",
    };
    if options.json {
        println!("{}", body.trim_end());
    } else if level == Some("alive") {
        println!("{}", if ok { "alive" } else { "not alive" });
    } else {
        let details = doc["slots"]["details"].as_array().cloned().unwrap_or_default();
        let up = details.iter().filter(|s| s["state"] == "up").count();
        println!(
            "hermes-init {}: {}, uptime {}s, {} slots ({up} up)",
            doc["version"].as_str().unwrap_or("?"),
            doc["status"].as_str().unwrap_or("?"),
            doc["uptime"].as_f64().unwrap_or(0.0),
            details.len()
        );
        for slot in details.iter().filter(|s| s["wanted"] == "up" && !(s["state"] == "up" && s["ready"] == true)) {
            println!(
                "  not ready: {} ({})",
                slot["slot"].as_str().unwrap_or("?"),
                slot["state"].as_str().unwrap_or("?")
            );
        }
    }
    Ok(if ok { EXIT_OK } else { EXIT_NEGATIVE })
}

/// The exit code for a reply; prints its message (to stdout on success, stderr otherwise).
fn finish(reply: &Value, quiet: bool) -> Result<i32, Failure> {
    let message = reply["message"].as_str().unwrap_or("");
    if reply["success"] == true {
        if !quiet && !message.is_empty() {
            println!("{message}");
        }
        Ok(EXIT_OK)
    } else {
        eprintln!("hermesctl: {message}");
        Ok(EXIT_NEGATIVE)
    }
}

fn now_secs() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// The status table, one row per slot.
pub fn status_table(slots: &[Value], now: f64) -> String {
    let mut rows =
        vec![["SLOT", "STATE", "PID", "UPTIME", "RESTARTS", "WANTED", "LAST EXIT"].map(String::from).to_vec()];
    for slot in slots {
        let state = slot["state"].as_str().unwrap_or("?");
        let running = matches!(state, "starting" | "up");
        let uptime = match slot["since"].as_f64() {
            Some(since) if running => human_duration((now - since).max(0.0)),
            _ => "-".into(),
        };
        let last_exit = match &slot["last_exit"] {
            Value::Object(o) if o.contains_key("code") => format!("exit {}", o["code"]),
            Value::Object(o) if o.contains_key("signal") => format!("signal {}", o["signal"]),
            _ => "-".into(),
        };
        let mut state_text = state.to_string();
        if let Some(reason) = slot["failure"].as_str() {
            state_text = format!("{state} ({reason})");
        }
        rows.push(vec![
            slot["slot"].as_str().unwrap_or("?").to_string(),
            state_text,
            slot["pid"].as_i64().map_or("-".into(), |p| p.to_string()),
            uptime,
            slot["restarts"].as_u64().unwrap_or(0).to_string(),
            slot["wanted"].as_str().unwrap_or("?").to_string(),
            last_exit,
        ]);
    }
    render_table(&rows)
}

/// Rows as left-aligned columns two spaces apart.
pub fn render_table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> =
        (0..columns).map(|i| rows.iter().filter_map(|r| r.get(i)).map(String::len).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn human_duration(secs: f64) -> String {
    let s = secs as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86400 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let cases = [(0.0, "0s"), (59.9, "59s"), (61.0, "1m1s"), (3601.0, "1h0m"), (90000.0, "1d1h")];
        for (secs, want) in cases {
            assert_eq!(human_duration(secs), want);
        }
    }

    #[test]
    fn table_rows() {
        let slots = vec![
            json!({"slot": "a", "state": "up", "pid": 12, "since": 100.0, "restarts": 2, "wanted": "up", "last_exit": {"signal": 9}}),
            json!({"slot": "bb", "state": "failed", "pid": null, "since": 50.0, "restarts": 5, "wanted": "down", "last_exit": {"code": 78}, "failure": "exit code 78"}),
        ];
        let table = status_table(&slots, 130.0);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("SLOT  STATE"), "{table}");
        assert!(
            lines[1].contains("a ")
                && lines[1].contains("12")
                && lines[1].contains("30s")
                && lines[1].contains("signal 9"),
            "{table}"
        );
        assert!(lines[2].contains("failed (exit code 78)") && lines[2].contains("exit 78"), "{table}");
    }
}
