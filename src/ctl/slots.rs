//! The slot commands of `hermesctl`: status, start/stop/restart, signal, load, unload,
//! scan, and `send` for any event.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::Flags;
use super::client::{Client, CtlError};
use super::table;
use crate::core::exit::code;
use crate::core::signal;
use crate::proto::control::{Reply, ReplyData, Request, SignalSpec, Wait, WaitFor};

/// Prints a reply's message (stdout on success, stderr otherwise) and maps it to an exit code.
fn finish(reply: &Reply, quiet: bool) -> i32 {
    if reply.success {
        if !quiet && !reply.message.is_empty() {
            println!("{}", reply.message);
        }
        code::OK
    } else {
        eprintln!("hermesctl: {}", reply.message);
        code::NEGATIVE
    }
}

fn now_secs() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// `status [SLOT] [--json]`
pub fn status(client: &Client, words: &[String], flags: &Flags) -> Result<i32, CtlError> {
    let request = match words {
        [] => Request::Status { slot: None },
        [slot] => Request::Status { slot: Some(slot.clone()) },
        _ => return Err(CtlError::usage("status takes at most one slot")),
    };
    let reply = client.request(&request)?;
    if flags.json {
        println!("{}", serde_json::to_string_pretty(&reply).unwrap_or_default());
        return Ok(finish(&reply, true));
    }
    let slots = match &reply.data {
        Some(ReplyData::Slots { slots }) => slots.clone(),
        Some(ReplyData::Slot { slot }) => vec![(**slot).clone()],
        _ => Vec::new(),
    };
    if reply.success {
        let width = crate::sys::terminal_width();
        if words.is_empty() {
            println!("Manager: hermes-init (container supervisor)");
            if slots.iter().any(|s| s.gateway.is_some()) {
                print!("\nGateways:\n{}", table::gateway_table(&slots, width));
            }
            print!("\nSlots:\n");
        }
        print!("{}", table::status_table(&slots, now_secs(), width));
    }
    Ok(finish(&reply, true))
}

/// `start|stop|restart SLOT... [--wait] [--timeout MS]`
pub fn change(client: &Client, verb: &str, words: &[String], flags: &Flags) -> Result<i32, CtlError> {
    if words.is_empty() {
        return Err(CtlError::usage(format!("{verb} needs at least one slot")));
    }
    let wait = Wait {
        wait: flags.wait.then_some(if verb == "stop" { WaitFor::Down } else { WaitFor::Ready }),
        timeout_ms: flags.wait.then_some(client.wait.as_millis() as u64),
    };
    let mut worst = code::OK;
    for slot in words {
        let slot = slot.clone();
        let request = match verb {
            "start" => Request::Start { slot, wait },
            "stop" => Request::Stop { slot, wait },
            _ => Request::Restart { slot, wait },
        };
        worst = worst.max(finish(&client.request(&request)?, false));
    }
    Ok(worst)
}

/// `signal SIG SLOT`
pub fn signal(client: &Client, words: &[String]) -> Result<i32, CtlError> {
    let [sig, slot] = words else { return Err(CtlError::usage("usage: hermesctl signal SIG SLOT")) };
    let number = signal::parse(sig).ok_or_else(|| {
        CtlError::usage(format!("'{sig}' is not a signal (a name such as HUP or SIGUSR1, or a number from 1 to 64)"))
    })?;
    Ok(finish(&client.request(&Request::Signal { slot: slot.clone(), signal: SignalSpec(number) })?, false))
}

/// `load DIR`
pub fn load(client: &Client, words: &[String]) -> Result<i32, CtlError> {
    let [dir] = words else { return Err(CtlError::usage("usage: hermesctl load DIR")) };
    // A path is made absolute (the reaper has its own working directory); a bare name is
    // a name in the scan dir unless a directory of that name is here.
    let path = std::path::Path::new(dir);
    let request = if dir.contains('/') || path.is_dir() {
        let absolute = fs_err::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        Request::Load { path: Some(absolute.display().to_string()), slot: None, wait: Wait::default() }
    } else {
        Request::Load { path: None, slot: Some(dir.clone()), wait: Wait::default() }
    };
    Ok(finish(&client.request(&request)?, false))
}

/// `unload SLOT [--remove] [--timeout MS]`
pub fn unload(client: &Client, words: &[String], flags: &Flags) -> Result<i32, CtlError> {
    let [slot] = words else { return Err(CtlError::usage("usage: hermesctl unload SLOT [--remove]")) };
    let request =
        Request::Unload { slot: slot.clone(), remove: flags.remove, timeout_ms: Some(client.wait.as_millis() as u64) };
    Ok(finish(&client.request(&request)?, false))
}

/// `logs SLOT [-n N] [-f]`: the slot's recent output; with `-f`, new lines as they come
/// (asked for four times a second) until the slot is unloaded or hermesctl is interrupted.
pub fn logs(client: &Client, words: &[String], flags: &Flags) -> Result<i32, CtlError> {
    let [slot] = words else { return Err(CtlError::usage("usage: hermesctl logs SLOT [-n N] [-f]")) };
    let mut request = Request::Logs { slot: slot.clone(), lines: Some(flags.lines.unwrap_or(20)), after: None };
    loop {
        let reply = client.expect(&request)?;
        let Some(ReplyData::Logs { lines, last }) = reply.data else {
            return Err(CtlError::System("a reply without lines".into()));
        };
        {
            let mut out = std::io::stdout().lock();
            for line in lines {
                let _ = writeln!(out, "{}", line.text);
            }
            let _ = out.flush();
        }
        if !flags.follow {
            return Ok(code::OK);
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
        request = Request::Logs { slot: slot.clone(), lines: None, after: Some(last) };
    }
}

/// `scan`
pub fn scan(client: &Client, words: &[String]) -> Result<i32, CtlError> {
    if !words.is_empty() {
        return Err(CtlError::usage("scan takes no arguments"));
    }
    Ok(finish(&client.request(&Request::Scan)?, false))
}

/// `send EVENT [JSON]`: any event, checked by the same parser as the server's.
pub fn send(client: &Client, words: &[String]) -> Result<i32, CtlError> {
    let (event, fields) = match words {
        [event] => (event, Value::Object(Default::default())),
        [event, fields] => (
            event,
            serde_json::from_str::<Value>(fields)
                .ok()
                .filter(Value::is_object)
                .ok_or_else(|| CtlError::usage(format!("send: not a JSON object: {fields}")))?,
        ),
        _ => return Err(CtlError::usage("usage: hermesctl send EVENT [JSON]")),
    };
    let mut body = fields;
    body["event"] = Value::String(event.clone());
    let line = serde_json::to_vec(&body).map_err(|e| CtlError::System(e.to_string()))?;
    let request = crate::proto::control::parse_request(&line).map_err(CtlError::usage)?;
    let reply = client.request(&request)?;
    println!("{}", serde_json::to_string(&reply).unwrap_or_default());
    Ok(finish(&reply, true))
}
