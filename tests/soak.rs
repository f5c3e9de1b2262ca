//! The soak: 10,000 load/unload cycles and 1,000 hostile control clients (garbage,
//! half-closed, idle, oversized) against one reaper, with its descriptors, resident memory
//! and process count measured before and after. Long, so not part of `cargo test`:
//!
//! ```sh
//! cargo test --release --test soak -- --ignored --nocapture
//! ```

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Instant;

use common::*;
use serde_json::json;

/// Loads the slot at `dir` (waiting until it runs) and unloads it, `count` times, over one
/// connection.
fn cycles(socket: &Path, dir: &Path, count: usize) {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream.set_read_timeout(Some(LONG)).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    for _ in 0..count {
        for body in [
            json!({"event": "slot.load", "path": dir, "wait": "up"}),
            json!({"event": "slot.unload", "slot": "cycler"}),
        ] {
            writeln!(stream, "{body}").unwrap();
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            assert!(line.contains("\"success\":true"), "{body}: {line}");
        }
    }
}

/// `count` clients, 200 at a time: garbage lines, half-closed half requests, idle ones and
/// oversized lines; each is answered or cut off at the idle limit (it sees the end).
fn hostile_clients(socket: &Path, count: usize) {
    let mut clients = Vec::new();
    for i in 0..count {
        let mut client = UnixStream::connect(socket).unwrap();
        match i % 4 {
            0 => drop(client.write_all(b"\x00garbage{{{\n")),
            1 => {
                let _ = client.write_all(b"{\"event\": \"slot.sta");
                let _ = client.shutdown(std::net::Shutdown::Write);
            }
            2 => {} // idle
            _ => drop(client.write_all(&vec![b'x'; 70_000])),
        }
        clients.push(client);
        if clients.len() == 200 || i + 1 == count {
            for mut client in clients.drain(..) {
                client.set_read_timeout(Some(LONG)).unwrap();
                let mut rest = Vec::new();
                let _ = client.read_to_end(&mut rest);
            }
        }
    }
}

#[test]
#[ignore = "a long soak; run it with --ignored"]
fn soak_ten_thousand_cycles_and_a_thousand_hostile_clients() {
    if !namespaces_available() {
        return;
    }
    let mut sv = Supervised::new();
    let dir = sv.slot_in(&sv.scratch.path("pool"), "cycler", "exec sleep 7901", &[]);
    sv.slot("steady", "exec sleep 7902", &[]);
    sv.boot(true, &[("HERMES_INIT_CONTROL_IDLE_MS", "200")]);
    let socket = sv.socket();
    // Warm-up: the heap grows to its high-water mark for a burst of clients (the allocator
    // keeps what it freed), so the figures after compare like with like.
    cycles(&socket, &dir, 50);
    hostile_clients(&socket, 1000);
    wait_for("the warm-up clients to be gone", LONG, || fds_and_rss(sv.reaper).0 <= 20);
    let processes = || children(sv.reaper).len();
    let (fds_before, rss_before) = fds_and_rss(sv.reaper);
    let procs_before = processes();
    let started = Instant::now();
    cycles(&socket, &dir, 10_000);
    let cycles_took = started.elapsed();
    let started = Instant::now();
    hostile_clients(&socket, 1000);
    let clients_took = started.elapsed();
    cycles(&socket, &dir, 1);
    wait_for("every client to be gone", LONG, || fds_and_rss(sv.reaper).0 <= fds_before);
    let (fds_after, rss_after) = fds_and_rss(sv.reaper);
    let procs_after = processes();
    println!(
        "soak: 10,000 load/unload cycles in {:.1} s, 1,000 hostile clients in {:.1} s",
        cycles_took.as_secs_f64(),
        clients_took.as_secs_f64()
    );
    println!(
        "soak: descriptors {fds_before} -> {fds_after}, RSS {rss_before} KiB -> {rss_after} KiB, processes {procs_before} -> {procs_after}"
    );
    assert_eq!(fds_after, fds_before, "descriptors leaked");
    assert!(rss_after <= rss_before + 256, "RSS grew from {rss_before} KiB to {rss_after} KiB");
    assert_eq!(procs_after, procs_before, "processes leaked");
    assert_eq!(zombie_children(sv.reaper), 0);
    sv.stop();
}
