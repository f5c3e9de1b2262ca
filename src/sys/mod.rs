//! The thin shell around the operating system: the only module that touches `nix` and
//! `signal-hook`. Everything here is a small, direct wrapper; decisions live in `core`.

pub mod kill;
pub mod reap;
pub mod signals;
pub mod spawn;

use std::io;
use std::os::fd::BorrowedFd;
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

pub use crate::core::Pid;

/// How the init relates to the processes below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// PID 1 of its PID namespace: orphans come to it by kernel rule.
    Pid1,
    /// A child subreaper (`PR_SET_CHILD_SUBREAPER`): orphans below it come to it.
    Subreaper,
    /// Neither: orphans escape to the real init and may linger as zombies there.
    Plain,
}

/// Finds out whether this process is PID 1 and, if not, asks to become a child subreaper.
pub fn take_reaper_role() -> Role {
    if std::process::id() == 1 {
        Role::Pid1
    } else if nix::sys::prctl::set_child_subreaper(true).is_ok() {
        Role::Subreaper
    } else {
        Role::Plain
    }
}

/// Waits until one of `fds` is readable or `timeout` passes (`None`: no timeout). Returns
/// the readiness of each descriptor; an interrupted wait returns all false.
pub fn wait_readable(fds: &[BorrowedFd<'_>], timeout: Option<Duration>) -> io::Result<Vec<bool>> {
    let mut poll_fds: Vec<PollFd> = fds.iter().map(|fd| PollFd::new(*fd, PollFlags::POLLIN)).collect();
    let timeout = match timeout {
        None => PollTimeout::NONE,
        // Round up so a deadline is never woken for just before it is due.
        Some(d) => {
            let ms = d.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
        }
    };
    match poll(&mut poll_fds, timeout) {
        Ok(_) => Ok(poll_fds.iter().map(|p| p.any().unwrap_or(false)).collect()),
        Err(Errno::EINTR) => Ok(vec![false; fds.len()]),
        Err(e) => Err(e.into()),
    }
}
