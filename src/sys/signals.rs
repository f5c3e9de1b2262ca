//! The signal self-pipe: every signal the init cares about sets a flag and writes one byte
//! into a non-blocking socket pair, so the single `poll(2)` loop wakes up and learns which
//! signals arrived.
//!
//! Invariants: the handler only stores an atomic and writes to a socket (both
//! async-signal-safe); a flag is set before its wake-up byte is written, so a drain after a
//! wake-up never misses the signal that caused it; coalesced signals are fine because the
//! loop reaps and forwards by state, not by count.

use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal, sigprocmask};

/// Signals the loop receives through the pipe.
pub const HANDLED: [Signal; 8] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
    Signal::SIGCHLD,
];

/// The installed handlers and the read end of the wake-up pipe.
pub struct SignalPipe {
    reader: UnixStream,
    flags: Vec<(Signal, Arc<AtomicBool>)>,
}

impl SignalPipe {
    /// Installs the handlers, unblocks every signal in the init's own mask (a parent may
    /// have left some blocked) and ignores SIGTTIN and SIGTTOU, so that giving the terminal
    /// to the main command never stops the init.
    pub fn install() -> io::Result<SignalPipe> {
        let (reader, writer) = UnixStream::pair()?;
        reader.set_nonblocking(true)?;
        writer.set_nonblocking(true)?;
        let mut flags = Vec::with_capacity(HANDLED.len());
        for signal in HANDLED {
            let flag = Arc::new(AtomicBool::new(false));
            signal_hook::flag::register(signal as i32, Arc::clone(&flag))?;
            signal_hook::low_level::pipe::register(signal as i32, writer.try_clone()?)?;
            flags.push((signal, flag));
        }
        for signal in [Signal::SIGTTIN, Signal::SIGTTOU] {
            // SAFETY: SIG_IGN installs no handler code; it only changes the disposition.
            unsafe { nix::sys::signal::signal(signal, SigHandler::SigIgn) }.map_err(io::Error::from)?;
        }
        sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None).map_err(io::Error::from)?;
        Ok(SignalPipe { reader, flags })
    }

    /// The descriptor to poll for readability.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.reader.as_fd()
    }

    /// Empties the pipe and returns the signals that arrived since the last call, in a
    /// fixed order (the order of [`HANDLED`]).
    pub fn drain(&mut self) -> Vec<Signal> {
        let mut buf = [0u8; 256];
        loop {
            match self.reader.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        self.flags.iter().filter(|(_, flag)| flag.swap(false, Ordering::SeqCst)).map(|(signal, _)| *signal).collect()
    }
}

/// Gives SIGPIPE back its default action, so a command-line tool whose output goes to a
/// closed pipe (`hermesctl status | head -1`) ends quietly instead of failing on a write.
pub fn restore_default_sigpipe() {
    // SAFETY: SIG_DFL installs no handler code; it only changes the disposition.
    let _ = unsafe { nix::sys::signal::signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}
