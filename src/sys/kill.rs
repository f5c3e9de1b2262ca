//! Sending signals to one process, a process group, or every descendant of the init.
//!
//! Invariants: a target that is already gone (ESRCH) is not an error; signalling "everything
//! left" never reaches beyond the init's own descendants, even when the init is a subreaper
//! on a shared host rather than PID 1 of a namespace.

use std::collections::HashMap;
use std::io;

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill, killpg};

use super::Pid;

/// Sends `signal` (a number, real-time signals included) to one process. Gone already is fine.
pub fn signal_process(pid: Pid, signal: i32) -> io::Result<()> {
    raw_kill(pid.0, signal)
}

/// Sends `signal` to a whole process group. Gone already is fine.
pub fn signal_group(pgid: Pid, signal: i32) -> io::Result<()> {
    if pgid.0 <= 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("not a process group: {pgid}")));
    }
    raw_kill(-pgid.0, signal)
}

/// kill(2) with a raw number: nix's `Signal` has no real-time signals.
fn raw_kill(target: i32, signal: i32) -> io::Result<()> {
    if !(1..=crate::core::signal::MAX).contains(&signal) || target == 0 || target == -1 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("refusing kill({target}, {signal})")));
    }
    // SAFETY: kill(2) takes plain integers and has no memory effects.
    let rc = unsafe { nix::libc::kill(target, signal) };
    deliver(Errno::result(rc).map(drop))
}

/// Sends `signal` to every descendant of this process except the members of the groups in
/// `skip_groups`; returns how many were signalled. As PID 1 of a namespace with no group to
/// skip this is `kill(-1)`, which the kernel applies atomically to every process but the init.
pub fn signal_descendants(signal: i32, skip_groups: &[Pid], is_pid1: bool) -> io::Result<usize> {
    let sig = to_signal(signal)?;
    if is_pid1 && skip_groups.is_empty() {
        return match kill(nix::unistd::Pid::from_raw(-1), sig) {
            Ok(()) => Ok(1),
            Err(Errno::ESRCH) => Ok(0),
            Err(e) => Err(e.into()),
        };
    }
    let mut count = 0;
    for (pid, pgid) in descendants(std::process::id() as i32)? {
        if skip_groups.iter().any(|g| g.0 == pgid) {
            continue;
        }
        deliver(kill(nix::unistd::Pid::from_raw(pid), sig))?;
        count += 1;
    }
    Ok(count)
}

/// Whether any process of the group `pgid` exists (zombies count until reaped).
pub fn group_exists(pgid: Pid) -> bool {
    !matches!(killpg(nix::unistd::Pid::from_raw(pgid.0), None), Err(Errno::ESRCH))
}

fn to_signal(signal: i32) -> io::Result<Signal> {
    Signal::try_from(signal)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("not a signal number: {signal}")))
}

fn deliver(result: nix::Result<()>) -> io::Result<()> {
    match result {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Every (pid, pgid) below `root` in the process tree, read from `/proc/<pid>/stat`.
/// Processes that vanish during the walk are skipped.
pub fn descendants(root: i32) -> io::Result<Vec<(i32, i32)>> {
    let mut parent_of: HashMap<i32, (i32, i32)> = HashMap::new();
    for entry in std::fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        if let Some((ppid, pgid)) = parse_stat_parents(&stat) {
            parent_of.insert(pid, (ppid, pgid));
        }
    }
    let mut found = Vec::new();
    for (&pid, &(_, pgid)) in &parent_of {
        let mut cursor = pid;
        // Walk up at most the table's size, so a racy cycle cannot loop forever.
        for _ in 0..parent_of.len() {
            match parent_of.get(&cursor) {
                Some(&(ppid, _)) if ppid == root => {
                    found.push((pid, pgid));
                    break;
                }
                Some(&(ppid, _)) if ppid > 1 => cursor = ppid,
                _ => break,
            }
        }
    }
    Ok(found)
}

/// The parent pid and process group from a `/proc/<pid>/stat` line. The command name may
/// hold spaces and parentheses, so parsing starts after its last `)`.
fn parse_stat_parents(stat: &str) -> Option<(i32, i32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let _state = fields.next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgid = fields.next()?.parse().ok()?;
    Some((ppid, pgid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parsing_survives_odd_command_names() {
        let cases = [
            ("12 (sh) S 1 12 12 0 -1", Some((1, 12))),
            ("40 (a) b) (c) R 7 40 1 0", Some((7, 40))),
            ("41 (with space) Z 3 9 9", Some((3, 9))),
            ("garbage", None),
            ("5 (x) S", None),
        ];
        for (line, want) in cases {
            assert_eq!(parse_stat_parents(line), want, "{line}");
        }
    }
}
