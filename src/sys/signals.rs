//! The signal self-pipe: every signal the init cares about sets a flag and writes one byte
//! into a non-blocking socket pair, so the single `poll(2)` loop wakes up and learns which
//! signals arrived.
//!
//! Invariants: the handler only stores an atomic and writes to a socket (both
//! async-signal-safe); a flag is set before its wake-up byte is written, so a drain after a
//! wake-up never misses the signal that caused it; coalesced signals are fine because the
//! loop reaps and forwards by state, not by count.

use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal, sigprocmask};

/// The installed handlers and the read end of the wake-up pipe.
pub struct SignalPipe {
    reader: UnixStream,
    /// The write end the handlers send to; kept open for as long as they are installed.
    _writer: UnixStream,
    /// One flag per handled signal (`core::signal::handled`), by number.
    flags: Vec<(i32, Arc<AtomicBool>)>,
}

impl SignalPipe {
    /// Installs a handler for every signal of `core::signal::handled` (every catchable one,
    /// to forward it, and SIGCHLD) and unblocks every signal in the init's own mask (a parent
    /// may have left some blocked). The init never reads from or writes to a terminal in the
    /// background, so SIGTTIN and SIGTTOU reach it only from kill(2): they are forwarded too.
    pub fn install() -> io::Result<SignalPipe> {
        let (reader, writer) = UnixStream::pair()?;
        reader.set_nonblocking(true)?;
        writer.set_nonblocking(true)?;
        // One writer for every signal (a descriptor per signal would cost dozens).
        let raw = writer.as_raw_fd();
        let mut flags = Vec::new();
        for signal in crate::core::signal::handled() {
            let flag = Arc::new(AtomicBool::new(false));
            let set = Arc::clone(&flag);
            let action = move || {
                // Only an atomic store and a non-blocking send: both async-signal-safe. The
                // flag is set first, so a drain after the wake-up sees it.
                set.store(true, Ordering::SeqCst);
                let _ = nix::sys::socket::send(raw, b"s", nix::sys::socket::MsgFlags::MSG_DONTWAIT);
            };
            // SAFETY: the action is async-signal-safe (see above), and `writer` lives as long
            // as the handlers (it is kept in the returned value, which the loop never drops).
            match unsafe { signal_hook::low_level::register(signal, action) } {
                Ok(_) => flags.push((signal, flag)),
                // The C library keeps some real-time signals for itself (glibc 32 and 33,
                // musl 32 to 34): those cannot be handled, nor forwarded.
                Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) && signal >= 32 => {}
                Err(e) => return Err(e),
            }
        }
        sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None).map_err(io::Error::from)?;
        Ok(SignalPipe { reader, _writer: writer, flags })
    }

    /// The descriptor to poll for readability.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.reader.as_fd()
    }

    /// Empties the pipe and returns the signals that arrived since the last call, by number
    /// in increasing order.
    pub fn drain(&mut self) -> Vec<i32> {
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
