//! The pure core: decisions as functions of events and time, with no syscalls, no clock
//! reads and no file I/O, so that every transition is tested by a table. Its only side
//! effect is `tracing` log lines.

pub mod backoff;
pub mod exit;
pub mod hooks;
pub mod lifecycle;
pub mod reconcile;
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

/// Signal numbers the core reasons about (Linux values; the `sys` layer maps them).
pub mod signal {
    pub const HUP: i32 = 1;
    pub const INT: i32 = 2;
    pub const QUIT: i32 = 3;
    pub const KILL: i32 = 9;
    pub const USR1: i32 = 10;
    pub const USR2: i32 = 12;
    pub const TERM: i32 = 15;
    pub const CHLD: i32 = 17;
    pub const CONT: i32 = 18;
    pub const WINCH: i32 = 28;

    /// The signals passed on to the main command.
    pub const FORWARDED: [i32; 7] = [TERM, INT, HUP, QUIT, USR1, USR2, WINCH];

    /// A readable name for log lines.
    pub fn name(signal: i32) -> String {
        match signal {
            HUP => "SIGHUP".into(),
            INT => "SIGINT".into(),
            QUIT => "SIGQUIT".into(),
            KILL => "SIGKILL".into(),
            USR1 => "SIGUSR1".into(),
            USR2 => "SIGUSR2".into(),
            TERM => "SIGTERM".into(),
            CHLD => "SIGCHLD".into(),
            WINCH => "SIGWINCH".into(),
            other => format!("signal {other}"),
        }
    }
}
