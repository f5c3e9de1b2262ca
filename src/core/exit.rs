//! How a child ended, and the exit code that stands for it in shell convention.
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
