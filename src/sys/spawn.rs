//! Starting a child in a clean state: its own process group, an empty signal mask, every
//! signal disposition at its default (SIGPIPE included), and no descriptor beyond 0, 1 and 2
//! surviving `exec`.
//!
//! Invariants: everything in the `pre_exec` hook is async-signal-safe (plain syscalls, no
//! allocation); the child is its own process-group leader before `exec`, so one `killpg`
//! reaches it and everything it starts; the pid is returned to the single loop before that
//! loop can reap it.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::libc;

use super::Pid;

/// How a child is started, beyond what `Command` already carries.
#[derive(Debug, Clone, Copy, Default)]
pub struct SpawnOptions {
    /// Make the child's process group the foreground group of the terminal on fd 0, when
    /// fd 0 is a terminal (what `docker run -it` needs for job control and reading input).
    pub take_terminal: bool,
    /// Pass this descriptor to the child under the given number (readiness notification);
    /// the source is close-on-exec and the copy is not.
    pub pass_fd: Option<(std::os::fd::RawFd, i32)>,
}

/// Spawns `command` in a clean state and returns its pid, which is also its process group.
/// The `Child` handle is dropped: the init's loop reaps with `waitpid(-1)`, never `Child::wait`.
pub fn spawn_clean(mut command: Command, options: SpawnOptions) -> io::Result<Pid> {
    let take_terminal = options.take_terminal;
    let pass_fd = options.pass_fd;
    // SAFETY: the hook only calls async-signal-safe syscalls and touches no heap.
    unsafe {
        command.pre_exec(move || {
            if libc::setpgid(0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // A background group may take the terminal only with SIGTTOU blocked (the init
            // catches it, to forward it); everything is unblocked again below.
            if take_terminal && libc::isatty(0) == 1 {
                let mut ttou: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut ttou);
                libc::sigaddset(&mut ttou, libc::SIGTTOU);
                libc::sigprocmask(libc::SIG_BLOCK, &ttou, std::ptr::null_mut());
                libc::tcsetpgrp(0, libc::getpgrp());
            }
            reset_all_dispositions();
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            mark_inherited_fds_cloexec();
            if let Some((source, target)) = pass_fd {
                if source == target {
                    libc::fcntl(target, libc::F_SETFD, 0);
                } else if libc::dup2(source, target) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = command.spawn()?;
    Ok(Pid(child.id() as i32))
}

/// Sets every signal to its default action, through the raw syscall: glibc's `signal()`
/// refuses the two real-time signals it reserves (32 and 33), yet a parent may have left
/// them ignored, and an ignored signal stays ignored across `exec`.
///
/// SAFETY: call only in a forked child before `exec`; uses plain syscalls.
unsafe fn reset_all_dispositions() {
    // The kernel's `struct sigaction` on x86_64 and aarch64: handler, flags, restorer, mask.
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: u64,
        restorer: usize,
        mask: u64,
    }
    let default = KernelSigaction { handler: libc::SIG_DFL, flags: 0, restorer: 0, mask: 0 };
    for signal in 1..=64 {
        if signal != libc::SIGKILL && signal != libc::SIGSTOP {
            // SAFETY: rt_sigaction reads `default` and writes nothing back (null old action).
            unsafe {
                libc::syscall(libc::SYS_rt_sigaction, signal, &default as *const KernelSigaction, 0usize, 8usize)
            };
        }
    }
}

/// Marks every descriptor from 3 up close-on-exec. Closing them outright would also close
/// the pipe `std` uses to report an `exec` failure back to the parent.
///
/// SAFETY: call only in a forked child before `exec`; uses plain syscalls.
unsafe fn mark_inherited_fds_cloexec() {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range only changes descriptor flags.
    let done = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC) } == 0;
    if !done {
        // Kernels before 5.11: walk the descriptor table up to the soft limit.
        // SAFETY: plain syscalls on integers.
        let limit = match unsafe { libc::sysconf(libc::_SC_OPEN_MAX) } {
            n if n > 0 => n.min(1 << 20) as i32,
            _ => 1024,
        };
        for fd in 3..limit {
            // SAFETY: fcntl on a possibly closed descriptor just fails with EBADF.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
}

/// Runs `task` in a forked child of this (single-threaded) process, as `user` (uid, gid)
/// when given and running as root, and returns the child's pid at once: blocking work
/// (an fsync on a slow volume) then never holds up the caller, which reaps the child like
/// any other. The child starts with every signal at its default action (a signal meant for
/// it never runs the parent's handlers) and exits with `task`'s code.
pub fn fork_task(user: Option<(u32, u32)>, task: impl FnOnce() -> i32) -> io::Result<Pid> {
    // Signals stay blocked across the fork until the child has reset its dispositions.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    let mut previous: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: plain signal-mask calls on local sets.
    unsafe {
        libc::sigfillset(&mut all);
        libc::sigprocmask(libc::SIG_SETMASK, &all, &mut previous);
    }
    // SAFETY: the init is single-threaded, so the child may run ordinary code.
    let forked = unsafe { nix::unistd::fork() };
    match forked {
        Ok(nix::unistd::ForkResult::Child) => {
            // SAFETY: in the child, before anything else runs.
            unsafe {
                reset_all_dispositions();
                let mut empty: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut empty);
                libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            }
            let code = match user {
                Some((uid, gid)) if nix::unistd::geteuid().is_root() && uid != 0 => {
                    let gid = nix::unistd::Gid::from_raw(gid);
                    let dropped = nix::unistd::setgroups(&[gid])
                        .and_then(|()| nix::unistd::setgid(gid))
                        .and_then(|()| nix::unistd::setuid(nix::unistd::Uid::from_raw(uid)));
                    if dropped.is_ok() { task() } else { 111 }
                }
                _ => task(),
            };
            // SAFETY: ends the child without running the parent's exit handlers.
            unsafe { libc::_exit(code) }
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            // SAFETY: restores the mask saved above.
            unsafe { libc::sigprocmask(libc::SIG_SETMASK, &previous, std::ptr::null_mut()) };
            Ok(Pid(child.as_raw()))
        }
        Err(e) => {
            // SAFETY: restores the mask saved above.
            unsafe { libc::sigprocmask(libc::SIG_SETMASK, &previous, std::ptr::null_mut()) };
            Err(e.into())
        }
    }
}
