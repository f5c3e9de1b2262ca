//! The init's own stdout and stderr, written without ever blocking the loop: a stalled log
//! reader (a full pipe nobody reads) must not stop reaping, respawning, the control socket
//! or the shutdown.
//!
//! Each descriptor gets a queue bounded at [`LIMIT`] bytes (1 MiB for the two). A line that
//! does not fit is dropped whole and counted; once the queue has drained, one line says how
//! many were lost. The loop polls a descriptor with queued bytes for writability and writes
//! what it takes. Gateway log files on the volume are not affected: they keep every line.
//!
//! Invariants: a write never blocks (see `sys::OutputFd`); lines are never cut or
//! interleaved, only dropped whole; before the sinks are installed (and in the tools) lines
//! go straight to the standard descriptors.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::os::fd::BorrowedFd;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::sys::OutputFd;

/// The most bytes queued for one descriptor.
pub const LIMIT: usize = 512 * 1024;

/// Which standard descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

struct Sink {
    out: &'static OutputFd,
    queue: VecDeque<u8>,
    dropped: u64,
    /// The reader is gone for good (EPIPE): nothing more is queued.
    broken: bool,
}

impl Sink {
    fn push(&mut self, line: &[u8]) {
        if self.broken {
            return;
        }
        if self.queue.len() + line.len() > LIMIT {
            let lines = line.iter().filter(|b| **b == b'\n').count().max(1) as u64;
            self.dropped += lines;
            DROPPED_TOTAL.fetch_add(lines, std::sync::atomic::Ordering::Relaxed);
            return;
        }
        self.queue.extend(line);
        self.flush();
    }

    fn flush(&mut self) {
        while !self.queue.is_empty() {
            let (head, _) = self.queue.as_slices();
            match self.out.write(head) {
                Ok(0) => return,
                Ok(n) => drop(self.queue.drain(..n)),
                Err(_) => {
                    self.broken = true;
                    self.queue.clear();
                    return;
                }
            }
        }
        if self.dropped > 0 {
            let note = format!(
                "[hermes-init] warning: {} lines of output were dropped: the log reader was too slow\n",
                self.dropped
            );
            self.dropped = 0;
            self.queue.extend(note.as_bytes());
            self.flush();
        }
    }
}

static SINKS: Mutex<Option<[Sink; 2]>> = Mutex::new(None);
/// Lines dropped since the init started, for `/metrics`.
static DROPPED_TOTAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Lines of output dropped since the init started.
pub fn dropped_total() -> u64 {
    DROPPED_TOTAL.load(std::sync::atomic::Ordering::Relaxed)
}

fn with_sinks<T>(f: impl FnOnce(&mut [Sink; 2]) -> T) -> Option<T> {
    let mut guard = SINKS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    guard.as_mut().map(f)
}

/// Installs the non-blocking sinks for fd 1 and 2 (once, in the reaper).
pub fn install() {
    let make = |fd| Sink {
        out: Box::leak(Box::new(OutputFd::for_stdio(fd))),
        queue: VecDeque::new(),
        dropped: 0,
        broken: false,
    };
    let mut guard = SINKS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if guard.is_none() {
        *guard = Some([make(1), make(2)]);
    }
}

/// Queues one or more whole lines.
pub fn write_lines(stream: Stream, lines: &[u8]) {
    let index = if stream == Stream::Stdout { 0 } else { 1 };
    if with_sinks(|sinks| sinks[index].push(lines)).is_none() {
        let _ = match stream {
            Stream::Stdout => io::stdout().lock().write_all(lines),
            Stream::Stderr => io::stderr().lock().write_all(lines),
        };
    }
}

/// The descriptors with queued bytes, to poll for writability.
pub fn waiting() -> Vec<BorrowedFd<'static>> {
    with_sinks(|sinks| sinks.iter().filter(|s| !s.queue.is_empty() && !s.broken).map(|s| s.out.fd()).collect())
        .unwrap_or_default()
}

/// Writes what the descriptors take now.
pub fn flush() {
    with_sinks(|sinks| sinks.iter_mut().for_each(Sink::flush));
}

/// Before the init exits: tries to write what is queued, for at most `limit`.
pub fn drain(limit: Duration) {
    let until = Instant::now() + limit;
    loop {
        flush();
        let fds = waiting();
        let left = until.saturating_duration_since(Instant::now());
        if fds.is_empty() || left.is_zero() {
            return;
        }
        let interest: Vec<_> =
            fds.into_iter().map(|fd| (fd, crate::sys::Interest { read: false, write: true })).collect();
        let _ = crate::sys::wait_ready(&interest, Some(left));
    }
}

/// A `tracing` writer: each event is one line queued on stderr.
#[derive(Default)]
pub struct StderrLine(Vec<u8>);

impl Write for StderrLine {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for StderrLine {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            write_lines(Stream::Stderr, &self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_full_pipe_drops_whole_lines_counts_them_and_says_so_once_drained() {
        let (read, write) = nix::unistd::pipe().unwrap();
        nix::fcntl::fcntl(&write, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK)).unwrap();
        let out: &'static OutputFd = Box::leak(Box::new(OutputFd::Reopened(write)));
        let mut sink = Sink { out, queue: VecDeque::new(), dropped: 0, broken: false };
        let line = format!("{}\n", "x".repeat(999));
        let started = Instant::now();
        for _ in 0..2000 {
            sink.push(line.as_bytes());
        }
        assert!(started.elapsed() < Duration::from_secs(10), "never blocks");
        assert!(sink.queue.len() <= LIMIT);
        assert!(sink.dropped > 0, "nobody reads: lines were dropped");
        let dropped = sink.dropped;
        // The reader catches up: everything queued arrives whole, then the note.
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        let reader = std::fs::File::from(read);
        nix::fcntl::fcntl(reader.as_fd(), nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK)).unwrap();
        for _ in 0..10_000 {
            sink.flush();
            match nix::unistd::read(reader.as_fd(), &mut buf) {
                Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
                _ => {}
            }
            if sink.queue.is_empty() && sink.dropped == 0 && String::from_utf8_lossy(&got).contains("were dropped") {
                break;
            }
        }
        let text = String::from_utf8_lossy(&got);
        assert!(text.lines().filter(|l| !l.contains("dropped")).all(|l| l.len() == 999), "only whole lines");
        let note = text.lines().find(|l| l.contains("were dropped")).expect("the note");
        assert!(note.contains(&format!("{dropped} lines")), "{note}");
    }
}
