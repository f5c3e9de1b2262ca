//! The thin shell around the operating system: the only module that touches `nix`, `libc`
//! and `signal-hook`. Everything here is a small, direct wrapper; decisions live in `core`.

pub mod beneath;
pub mod files;
pub mod kill;
pub mod reap;
pub mod signals;
pub mod spawn;
pub mod user;
pub mod watch;

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
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

/// A pipe whose both ends are close-on-exec; the read end is non-blocking.
pub fn cloexec_pipe() -> io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    use nix::fcntl::OFlag;
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    nix::fcntl::fcntl(&read, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
    Ok((read, write))
}

/// The pid, uid and gid of the process at the other end of a unix socket.
pub fn peer_credentials(stream: &std::os::unix::net::UnixStream) -> io::Result<(i32, u32, u32)> {
    let creds = nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials)?;
    Ok((creds.pid(), creds.uid(), creds.gid()))
}

/// This process's effective uid.
pub fn effective_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// The gid of a group given by number or by name.
pub fn group_id(name_or_gid: &str) -> io::Result<u32> {
    if let Ok(gid) = name_or_gid.parse::<u32>() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(name_or_gid)? {
        Some(group) => Ok(group.gid.as_raw()),
        None => Err(io::Error::new(io::ErrorKind::NotFound, format!("no such group '{name_or_gid}'"))),
    }
}

/// Gives `path` to group `gid`, keeping its owner.
pub fn chown_group(path: &std::path::Path, gid: u32) -> io::Result<()> {
    nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(gid)))?;
    Ok(())
}

/// What a descriptor is polled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interest {
    pub read: bool,
    pub write: bool,
}

impl Interest {
    pub const READ: Interest = Interest { read: true, write: false };
}

/// Waits until one of `fds` is ready for what is asked or `timeout` passes. Returns
/// (readable or hung up, writable) for each descriptor. A descriptor polled for neither
/// still reports a hang-up or an error as readable, so its owner can close it.
pub fn wait_ready(fds: &[(BorrowedFd<'_>, Interest)], timeout: Option<Duration>) -> io::Result<Vec<(bool, bool)>> {
    let mut poll_fds: Vec<PollFd> = fds
        .iter()
        .map(|(fd, interest)| {
            let mut events = PollFlags::empty();
            if interest.read {
                events |= PollFlags::POLLIN;
            }
            if interest.write {
                events |= PollFlags::POLLOUT;
            }
            PollFd::new(*fd, events)
        })
        .collect();
    let timeout = match timeout {
        None => PollTimeout::NONE,
        Some(d) => {
            let ms = d.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
        }
    };
    match poll(&mut poll_fds, timeout) {
        Ok(_) => Ok(poll_fds
            .iter()
            .map(|p| {
                let r = p.revents().unwrap_or(PollFlags::empty());
                (
                    r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR),
                    r.contains(PollFlags::POLLOUT),
                )
            })
            .collect()),
        Err(Errno::EINTR) => Ok(vec![(false, false); fds.len()]),
        Err(e) => Err(e.into()),
    }
}

/// Whether an error says the process or the system has run out of a resource (descriptors,
/// processes, memory): a condition to wait out, not a fault of what was being done.
pub fn resource_exhausted(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(nix::libc::EMFILE | nix::libc::ENFILE | nix::libc::EAGAIN | nix::libc::ENOMEM))
}

/// Whether an error says the process or the system has no descriptor left.
pub fn out_of_descriptors(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(nix::libc::EMFILE | nix::libc::ENFILE))
}

/// An exclusive lock (flock(2)) on an open file, held until the value is dropped.
pub type FileLock = nix::fcntl::Flock<std::fs::File>;

/// Takes an exclusive lock on `file` without waiting: `Err` gives the file back when another
/// holder has it.
pub fn try_lock(file: std::fs::File) -> Result<FileLock, (std::fs::File, io::Error)> {
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(f, e)| (f, e.into()))
}

/// This machine's host name (the container's, in a container).
pub fn host_name() -> String {
    nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| "?".into())
}

/// Whether `path` is on a filesystem mounted `noexec`.
pub fn mounted_noexec(path: &std::path::Path) -> bool {
    nix::sys::statvfs::statvfs(path).is_ok_and(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_NOEXEC))
}

/// The width of the terminal on stdout, if stdout is one.
pub fn terminal_width() -> Option<usize> {
    let mut size = nix::libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ fills the winsize it is given; fd 1 may be anything, and a
    // non-terminal just fails with ENOTTY.
    let rc = unsafe { nix::libc::ioctl(1, nix::libc::TIOCGWINSZ, &mut size) };
    (rc == 0 && size.ws_col > 0).then_some(size.ws_col as usize)
}

/// How the init writes to one of its own standard descriptors without ever blocking.
#[derive(Debug)]
pub enum OutputFd {
    /// A descriptor of our own, opened anew on the same pipe or terminal and made
    /// non-blocking (the inherited one is shared with CMD, which must keep blocking writes).
    Reopened(std::os::fd::OwnedFd),
    /// A socket: every write is `send(MSG_DONTWAIT)`.
    Socket(i32),
    /// A regular file or `/dev/null`: writes do not wait for a reader.
    Plain(i32),
}

impl OutputFd {
    /// The non-blocking way to write to standard descriptor `fd` (1 or 2).
    pub fn for_stdio(fd: i32) -> OutputFd {
        use nix::sys::stat::{SFlag, fstat};
        // SAFETY: fd 1 and 2 stay open for the life of the process.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let kind = fstat(borrowed).map(|s| SFlag::from_bits_truncate(s.st_mode & SFlag::S_IFMT.bits()));
        match kind {
            Ok(SFlag::S_IFSOCK) => OutputFd::Socket(fd),
            Ok(SFlag::S_IFIFO | SFlag::S_IFCHR) => {
                let path = format!("/proc/self/fd/{fd}");
                let flags = nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC;
                match nix::fcntl::open(path.as_str(), flags, nix::sys::stat::Mode::empty()) {
                    Ok(own) => OutputFd::Reopened(own),
                    // No /proc: write to the shared descriptor, never more than the pipe
                    // takes at once (see `write`).
                    Err(_) => OutputFd::Plain(fd),
                }
            }
            _ => OutputFd::Plain(fd),
        }
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        let raw = match self {
            OutputFd::Reopened(own) => return own.as_fd(),
            OutputFd::Socket(fd) | OutputFd::Plain(fd) => *fd,
        };
        // SAFETY: 1 and 2 stay open for the life of the process.
        unsafe { BorrowedFd::borrow_raw(raw) }
    }

    /// Writes what the descriptor takes now; `Ok(0)` when it takes nothing (full).
    pub fn write(&self, bytes: &[u8]) -> io::Result<usize> {
        let result = match self {
            OutputFd::Reopened(own) => nix::unistd::write(own, bytes),
            OutputFd::Socket(fd) => nix::sys::socket::send(*fd, bytes, nix::sys::socket::MsgFlags::MSG_DONTWAIT),
            OutputFd::Plain(fd) => {
                // SAFETY: see `fd`.
                let borrowed = unsafe { BorrowedFd::borrow_raw(*fd) };
                // A pipe that poll(2) says is writable takes a write of up to PIPE_BUF
                // bytes at once without blocking.
                let ready = wait_ready(&[(borrowed, Interest { read: false, write: true })], Some(Duration::ZERO))
                    .is_ok_and(|r| r.first().is_some_and(|(_, w)| *w));
                if !ready {
                    return Ok(0);
                }
                nix::unistd::write(borrowed, &bytes[..bytes.len().min(nix::libc::PIPE_BUF)])
            }
        };
        match result {
            Ok(n) => Ok(n),
            Err(Errno::EAGAIN | Errno::EINTR) => Ok(0),
            Err(e) => Err(e.into()),
        }
    }
}

/// Starts a TCP connection without waiting for it: the stream is non-blocking, and the
/// connection is made once it polls writable (then `take_error` says whether it failed).
pub fn connect_nonblocking(addr: std::net::SocketAddr) -> io::Result<std::net::TcpStream> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, SockaddrIn6, connect, socket};
    let family = if addr.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    let fd = socket(family, SockType::Stream, SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC, None)?;
    let result = match addr {
        std::net::SocketAddr::V4(v4) => connect(fd.as_raw_fd(), &SockaddrIn::from(v4)),
        std::net::SocketAddr::V6(v6) => connect(fd.as_raw_fd(), &SockaddrIn6::from(v6)),
    };
    match result {
        Ok(()) | Err(Errno::EINPROGRESS) => Ok(std::net::TcpStream::from(fd)),
        Err(e) => Err(e.into()),
    }
}
