//! How a child ended, the exit code that stands for it in shell convention, and the one
//! table of exit codes the three programs use for their own outcomes.
//!
//! Invariant: a process killed by signal N is reported as 128+N, as shells, tini and Docker
//! report it, so `docker inspect` shows 143 for SIGTERM and 137 for SIGKILL.

use std::fmt;

/// How a child process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// It called `exit` with this code.
    Code(i32),
    /// It was killed by this signal.
    Signaled(i32),
}

impl ExitStatus {
    /// The code a shell would report: the exit code, or 128 + the signal number.
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Code(code) => code,
            ExitStatus::Signaled(signal) => 128 + signal,
        }
    }

    /// Whether this is a clean `exit(0)`.
    pub fn success(self) -> bool {
        self == ExitStatus::Code(0)
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(code) => write!(f, "exit status {code}"),
            ExitStatus::Signaled(signal) => write!(f, "killed by signal {signal}"),
        }
    }
}

/// The exit codes of the programs' own outcomes (the s6 convention for the tools: 100 for
/// a permanent or usage error, 111 for a temporary or system error).
pub mod code {
    /// Done; healthy.
    pub const OK: i32 = 0;
    /// A negative answer: no such slot or gateway, failed, timed out, not healthy.
    pub const NEGATIVE: i32 = 1;
    /// A usage error: bad option, argument or environment variable.
    pub const USAGE: i32 = 100;
    /// A system error: nothing reachable, a file or socket that cannot be used.
    pub const SYSTEM: i32 = 111;
    /// The command could not be executed (shell convention).
    pub const CANNOT_EXECUTE: i32 = 126;
    /// The command was not found (shell convention).
    pub const NOT_FOUND: i32 = 127;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_codes() {
        let cases = [
            (ExitStatus::Code(0), 0, true),
            (ExitStatus::Code(7), 7, false),
            (ExitStatus::Code(255), 255, false),
            (ExitStatus::Signaled(15), 143, false),
            (ExitStatus::Signaled(9), 137, false),
        ];
        for (status, code, success) in cases {
            assert_eq!(status.code(), code, "{status}");
            assert_eq!(status.success(), success, "{status}");
        }
    }
}
