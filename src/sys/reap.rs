//! Reaping: collect every exited child with `waitpid(-1, WNOHANG)` until none is left.
//!
//! Invariant: one call empties the kernel's queue of dead children, whatever number of
//! SIGCHLD signals coalesced into one wake-up.

use nix::errno::Errno;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};

use super::Pid;
use crate::core::exit::ExitStatus;

/// What one pass of reaping found.
#[derive(Debug, Default)]
pub struct Reaped {
    /// Every child collected, with how it ended.
    pub exited: Vec<(Pid, ExitStatus)>,
    /// Whether any child (running, or dead and not yet collected) remains.
    pub children_left: bool,
}

/// Collects every dead child. With `only` set (the test-only switch that disables reaping
/// orphans), just those pids are waited for; everything else is left as a zombie.
pub fn reap(only: Option<&[Pid]>) -> Reaped {
    let mut reaped = Reaped::default();
    match only {
        None => reaped.children_left = reap_until_empty(None, &mut reaped.exited),
        Some(pids) => {
            for pid in pids {
                if reap_until_empty(Some(*pid), &mut reaped.exited) {
                    reaped.children_left = true;
                }
            }
        }
    }
    reaped
}

/// Returns whether the waited-for set still has members.
fn reap_until_empty(pid: Option<Pid>, out: &mut Vec<(Pid, ExitStatus)>) -> bool {
    let target = nix::unistd::Pid::from_raw(pid.map_or(-1, |p| p.0));
    loop {
        match waitpid(target, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => out.push((Pid(pid.as_raw()), ExitStatus::Code(code))),
            Ok(WaitStatus::Signaled(pid, signal, _)) => {
                out.push((Pid(pid.as_raw()), ExitStatus::Signaled(signal as i32)))
            }
            Ok(WaitStatus::StillAlive) => return true,
            // Stopped or continued children are not exits; keep collecting.
            Ok(_) => continue,
            Err(Errno::EINTR) => continue,
            Err(_) => return false,
        }
    }
}
