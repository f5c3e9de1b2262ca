//! One owner per volume: the reaper holds an exclusive lock (flock(2)) on
//! `$HERMES_HOME/.hermes-init.lock` for its lifetime, so two containers mounting one volume
//! never both run its gateways. The file says who holds it (`host`, `pid`, `since`).
//!
//! Invariants: the lock file is reached beneath the home without following a link, and
//! belongs to the volume's owner; trying never waits.

use std::io::{self, Read, Seek, Write};

use super::{Home, owner_of};
use crate::sys::{self, FileLock};

pub const LOCK_FILE: &str = ".hermes-init.lock";

/// What trying the lock found.
pub enum Tried {
    /// Held by this process from now on, for as long as the value lives.
    Held(FileLock),
    /// Held by another: who, as the lock file says.
    Busy(String),
}

/// Tries to take the volume's lock.
pub fn try_take(home: &Home) -> io::Result<Tried> {
    let root = home.open()?;
    let file = root.open_rw(LOCK_FILE, 0o644, owner_of(&root))?;
    match sys::try_lock(file) {
        Ok(mut lock) => {
            let who =
                format!("host={} pid={} since={}\n", sys::host_name(), std::process::id(), sys::files::utc_timestamp());
            lock.set_len(0)?;
            lock.rewind()?;
            lock.write_all(who.as_bytes())?;
            Ok(Tried::Held(lock))
        }
        Err((mut file, e)) if e.kind() == io::ErrorKind::WouldBlock => {
            let mut who = String::new();
            let _ = (&mut file).take(512).read_to_string(&mut who);
            let who = who.trim();
            Ok(Tried::Busy(if who.is_empty() { "another hermes-init".into() } else { who.to_string() }))
        }
        Err((_, e)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_taker_learns_who_holds_it_and_takes_it_once_released() {
        let tmp = tempfile::tempdir().unwrap();
        let home = Home::new(tmp.path());
        let Tried::Held(first) = try_take(&home).unwrap() else { panic!("the first takes it") };
        match try_take(&home).unwrap() {
            Tried::Busy(who) => assert!(who.contains(&format!("pid={}", std::process::id())), "{who}"),
            Tried::Held(_) => panic!("two holders"),
        }
        drop(first);
        assert!(matches!(try_take(&home).unwrap(), Tried::Held(_)));
    }
}
