//! One non-blocking connection type for both servers of the loop (the control socket and
//! the health API): a stream, its input and output buffers, its deadline, and whether the
//! peer has finished sending.
//!
//! Invariants: nothing here blocks; input is bounded by the caller's limit; once the peer
//! has shut down its sending side the connection is never polled for input again (a
//! half-closed socket stays readable forever, and polling it would spin the loop); an I/O
//! error marks the connection dead, never the server.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use crate::sys::Interest;

/// A unix or TCP stream.
pub enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Stream::Unix(s) => s.as_fd(),
            Stream::Tcp(s) => s.as_fd(),
        }
    }

    fn set_nonblocking(&self) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_nonblocking(true),
            Stream::Tcp(s) => s.set_nonblocking(true),
        }
    }

    fn shutdown_write(&self) {
        let _ = match self {
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Write),
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Write),
        };
    }

    /// The unix stream, for peer credentials.
    pub fn unix(&self) -> Option<&UnixStream> {
        match self {
            Stream::Unix(s) => Some(s),
            Stream::Tcp(_) => None,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A descriptor held in reserve. When the process has none left, a pending client keeps
/// the listener readable while `accept` fails, and the loop would spin; giving the reserve
/// up for a moment lets that client be accepted and closed at once (the classic remedy).
pub struct FdReserve {
    spare: Option<std::fs::File>,
    /// Out of descriptors now: said once per stretch.
    short: bool,
}

impl Default for FdReserve {
    fn default() -> FdReserve {
        FdReserve { spare: std::fs::File::open("/dev/null").ok(), short: false }
    }
}

impl FdReserve {
    /// After `accept` failed with `error`: if it is for want of descriptors, frees the
    /// reserve, accepts and drops one client with `accept_and_drop`, and takes the reserve
    /// back. Returns whether the listener should be tried again.
    pub fn on_accept_error(&mut self, what: &str, error: &io::Error, accept_and_drop: impl FnOnce() -> bool) -> bool {
        if !crate::sys::out_of_descriptors(error) {
            tracing::warn!("{what}: accept failed: {error}");
            return false;
        }
        if !self.short {
            self.short = true;
            tracing::warn!("{what}: out of descriptors ({error}): new clients are turned away until some are free");
        }
        self.spare = None;
        let dropped = accept_and_drop();
        self.spare = std::fs::File::open("/dev/null").ok();
        dropped
    }

    /// An accept succeeded: the shortage, if any, is over.
    pub fn recovered(&mut self, what: &str) {
        if self.short {
            self.short = false;
            tracing::info!("{what}: descriptors available again");
        }
    }
}

/// One accepted connection.
pub struct Connection {
    stream: Stream,
    /// Bytes received and not consumed yet.
    pub input: Vec<u8>,
    output: Vec<u8>,
    /// When the owner gives up on it.
    pub deadline: Instant,
    /// The peer shut down its sending side (or closed).
    pub eof: bool,
    shut: bool,
    /// Gone: drop it.
    pub dead: bool,
}

impl Connection {
    /// Takes an accepted stream, non-blocking from now on.
    pub fn new(stream: Stream, deadline: Instant) -> io::Result<Connection> {
        stream.set_nonblocking()?;
        Ok(Connection { stream, input: Vec::new(), output: Vec::new(), deadline, eof: false, shut: false, dead: false })
    }

    pub fn stream(&self) -> &Stream {
        &self.stream
    }

    /// What to poll this connection for: input while `want_input` and the peer may still
    /// send, output while some is pending. `None`: nothing to wait for on it.
    pub fn interest(&self, want_input: bool) -> Option<(BorrowedFd<'_>, Interest)> {
        let interest = Interest { read: want_input && !self.eof && !self.dead, write: self.pending_output() };
        (interest.read || interest.write).then(|| (self.stream.fd(), interest))
    }

    /// Reads what is there, keeping at most `limit + 1` bytes of input (so the owner can
    /// tell the limit was passed).
    pub fn receive(&mut self, limit: usize) {
        let mut buf = [0u8; 8192];
        while !self.eof && !self.dead && self.input.len() <= limit {
            match self.stream.read(&mut buf) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    let room = (limit + 1).saturating_sub(self.input.len());
                    self.input.extend_from_slice(&buf[..n.min(room)]);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => self.dead = true,
            }
        }
    }

    /// Reads and drops what is there (a refused client, until it closes).
    pub fn discard(&mut self) {
        self.receive(0);
        self.input.clear();
    }

    /// Queues bytes and writes what the socket takes now.
    pub fn send(&mut self, bytes: &[u8]) {
        self.output.extend_from_slice(bytes);
        self.flush();
    }

    pub fn pending_output(&self) -> bool {
        !self.output.is_empty() && !self.dead
    }

    /// Writes as much pending output as the socket takes now.
    pub fn flush(&mut self) {
        while !self.output.is_empty() && !self.dead {
            match self.stream.write(&self.output) {
                Ok(0) => self.dead = true,
                Ok(n) => {
                    self.output.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => self.dead = true,
            }
        }
    }

    /// Shuts our sending side once (the peer sees the end of our replies).
    pub fn shut_write(&mut self) {
        if !self.shut {
            self.stream.shutdown_write();
            self.shut = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_half_closed_peer_is_seen_once_and_never_polled_again() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let mut conn = Connection::new(Stream::Unix(ours), Instant::now()).unwrap();
        theirs.write_all(b"GET /api/he").unwrap();
        theirs.shutdown(std::net::Shutdown::Write).unwrap();
        assert!(conn.interest(true).is_some_and(|(_, i)| i.read));
        conn.receive(100);
        assert_eq!(conn.input, b"GET /api/he");
        assert!(conn.eof);
        assert!(conn.interest(true).is_none(), "polling a half-closed socket for input would spin");
        conn.send(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        let mut got = Vec::new();
        conn.shut_write();
        theirs.read_to_end(&mut got).unwrap();
        assert!(got.starts_with(b"HTTP/1.1 400"));
    }

    #[test]
    fn input_is_bounded() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let mut conn = Connection::new(Stream::Unix(ours), Instant::now()).unwrap();
        theirs.write_all(&[b'x'; 50_000]).unwrap();
        conn.receive(1000);
        assert_eq!(conn.input.len(), 1001);
    }
}
