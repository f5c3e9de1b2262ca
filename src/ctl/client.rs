//! The client side of the control socket, and the errors of `hermesctl` as a type that
//! carries its exit code.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::core::exit::code;
use crate::proto::control::{Reply, Request};

/// Why `hermesctl` did not succeed; each kind is one exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CtlError {
    /// Bad arguments (100).
    Usage(String),
    /// A negative answer: no such slot, failed, timed out (1).
    Negative(String),
    /// Nothing reachable, or a file that cannot be used (111).
    System(String),
}

impl CtlError {
    pub fn code(&self) -> i32 {
        match self {
            CtlError::Usage(_) => code::USAGE,
            CtlError::Negative(_) => code::NEGATIVE,
            CtlError::System(_) => code::SYSTEM,
        }
    }

    pub fn usage(message: impl Into<String>) -> CtlError {
        CtlError::Usage(format!("{} (see hermesctl --help)", message.into()))
    }
}

impl std::fmt::Display for CtlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CtlError::Usage(m) | CtlError::Negative(m) | CtlError::System(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for CtlError {}

impl From<lexopt::Error> for CtlError {
    fn from(error: lexopt::Error) -> CtlError {
        CtlError::usage(error.to_string())
    }
}

/// Why a socket could not be used, with a hint that fits the error.
pub fn unreachable(what: &str, socket: &Path, error: &std::io::Error) -> CtlError {
    let hint = match error.kind() {
        std::io::ErrorKind::PermissionDenied => {
            " (permission denied: run as root, as the init's user, or as a member of HERMES_INIT_ADMIN_GROUP)"
        }
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => " (is hermes-init running?)",
        _ => "",
    };
    CtlError::System(format!("{what} {}: {error}{hint}", socket.display()))
}

/// A connection target: the control socket and how long a reply may take.
#[derive(Debug, Clone)]
pub struct Client {
    pub socket: PathBuf,
    /// The wait limit of `--wait`; replies may take this long plus a margin.
    pub wait: Duration,
}

impl Client {
    /// Sends one request and reads its reply.
    pub fn request(&self, request: &Request) -> Result<Reply, CtlError> {
        let socket = &self.socket;
        let mut stream = UnixStream::connect(socket).map_err(|e| unreachable("cannot connect to", socket, &e))?;
        let limit = (self.wait + Duration::from_secs(5)).max(Duration::from_secs(35));
        stream.set_read_timeout(Some(limit)).map_err(|e| unreachable("cannot use", socket, &e))?;
        let mut line = serde_json::to_vec(request).map_err(|e| CtlError::System(e.to_string()))?;
        line.push(b'\n');
        stream.write_all(&line).map_err(|e| unreachable("cannot write to", socket, &e))?;
        let mut reply = String::new();
        BufReader::new(&stream).read_line(&mut reply).map_err(|e| unreachable("no reply from", socket, &e))?;
        if reply.is_empty() {
            return Err(CtlError::System(format!("{} closed without a reply", socket.display())));
        }
        serde_json::from_str(&reply)
            .map_err(|e| CtlError::System(format!("unreadable reply from {}: {e}", socket.display())))
    }

    /// Sends a request and turns a failed reply into a negative answer.
    pub fn expect(&self, request: &Request) -> Result<Reply, CtlError> {
        let reply = self.request(request)?;
        if reply.success { Ok(reply) } else { Err(CtlError::Negative(reply.message)) }
    }

    /// Whether a slot of that name is loaded.
    pub fn loaded(&self, slot: &str) -> Result<bool, CtlError> {
        Ok(self.request(&Request::Status { slot: Some(slot.to_string()) })?.success)
    }
}
