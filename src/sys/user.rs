//! Users: running a program as another user.
//!
//! Invariant: privileges are dropped only when running as root and the user exists; the
//! user's own groups (from the group database) replace the caller's supplementary groups.

use std::io;

/// Replaces this process with `argv`, first dropping to `user` when running as root and the
/// user exists. Returns only on failure.
pub fn exec_as(user: &str, argv: &[String]) -> io::Error {
    use std::os::unix::process::CommandExt;
    let Some((program, args)) = argv.split_first() else {
        return io::Error::new(io::ErrorKind::InvalidInput, "no command to run");
    };
    let mut command = std::process::Command::new(program);
    command.args(args);
    if nix::unistd::geteuid().is_root() {
        match nix::unistd::User::from_name(user) {
            Ok(Some(account)) => {
                let name = match std::ffi::CString::new(user) {
                    Ok(name) => name,
                    Err(e) => return io::Error::other(e),
                };
                // The user's own groups, then its gid and uid, set here before the exec:
                // `Command::uid` would clear the supplementary groups again.
                if let Err(e) = nix::unistd::initgroups(&name, account.gid) {
                    return io::Error::other(format!("initgroups for {user}: {e}"));
                }
                if let Err(e) = nix::unistd::setgid(account.gid).and_then(|()| nix::unistd::setuid(account.uid)) {
                    return io::Error::other(format!("cannot become {user}: {e}"));
                }
            }
            // getpwnam(3): these errors also mean "no such user" (no /etc/passwd at all).
            Ok(None) | Err(nix::errno::Errno::ENOENT | nix::errno::Errno::ESRCH | nix::errno::Errno::EBADF) => {}
            Err(nix::errno::Errno::EPERM) => {}
            Err(e) => return io::Error::other(format!("looking up user {user}: {e}")),
        }
    }
    command.exec()
}
