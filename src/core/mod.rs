//! The pure core: decisions as functions of events and time, with no syscalls, no clock
//! reads and no file I/O, so that every transition is tested by a table. Its only side
//! effect is `tracing` log lines.
//!
//! `slot` and `lifecycle` are the two state machines (a supervised slot; the init's own
//! boot, main command and shutdown); `backoff`, `hooks`, `exit` and `signal` are the small
//! pure rules they use; `reconcile` is the gateway boot decision.

pub mod backoff;
pub mod exit;
pub mod hooks;
pub mod lifecycle;
pub mod paths;
pub mod reconcile;
pub mod signal;
pub mod slot;

use std::fmt;

/// A process id (also a process-group id for the leaders the init starts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pid(pub i32);

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
