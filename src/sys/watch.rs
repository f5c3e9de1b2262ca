//! Watching directories for changes to their entries (inotify), so the loop learns of a
//! rewritten state file without polling it.
//!
//! Invariants: the descriptor is non-blocking and close-on-exec; the last component of a
//! watched path is never followed if it is a link; a failed read is no events.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

/// Watches keyed by a name of the caller's (a slot).
pub struct Watcher {
    inotify: Inotify,
    by_descriptor: HashMap<WatchDescriptor, String>,
    by_key: HashMap<String, WatchDescriptor>,
}

impl Watcher {
    pub fn new() -> io::Result<Watcher> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        Ok(Watcher { inotify, by_descriptor: HashMap::new(), by_key: HashMap::new() })
    }

    /// Watches the entries of directory `dir` (created, written and closed, moved in or
    /// out, removed), under `key`.
    pub fn watch_dir(&mut self, key: &str, dir: &Path) -> io::Result<()> {
        self.unwatch(key);
        let flags = AddWatchFlags::IN_CLOSE_WRITE
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_DELETE_SELF
            | AddWatchFlags::IN_MOVE_SELF
            | AddWatchFlags::IN_ONLYDIR
            | AddWatchFlags::IN_DONT_FOLLOW;
        let descriptor = self.inotify.add_watch(dir, flags)?;
        // Two keys on one directory share the kernel's descriptor: the last one wins.
        self.by_descriptor.insert(descriptor, key.to_string());
        self.by_key.insert(key.to_string(), descriptor);
        Ok(())
    }

    pub fn unwatch(&mut self, key: &str) {
        if let Some(descriptor) = self.by_key.remove(key)
            && self.by_descriptor.get(&descriptor).is_some_and(|k| k == key)
        {
            self.by_descriptor.remove(&descriptor);
            let _ = self.inotify.rm_watch(descriptor);
        }
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.inotify.as_fd()
    }

    /// The events waiting: (key, entry name), each key and name once.
    pub fn events(&mut self) -> Vec<(String, Option<OsString>)> {
        let mut out: Vec<(String, Option<OsString>)> = Vec::new();
        while let Ok(events) = self.inotify.read_events() {
            if events.is_empty() {
                break;
            }
            for event in events {
                let Some(key) = self.by_descriptor.get(&event.wd) else { continue };
                let item = (key.clone(), event.name);
                if !out.contains(&item) {
                    out.push(item);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_file_is_seen_and_a_link_is_not_watched() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("profile");
        std::fs::create_dir(&dir).unwrap();
        std::os::unix::fs::symlink(&dir, tmp.path().join("link")).unwrap();
        let mut watcher = Watcher::new().unwrap();
        assert!(watcher.watch_dir("x", &tmp.path().join("link")).is_err(), "a link is not followed");
        watcher.watch_dir("slot", &dir).unwrap();
        assert!(watcher.events().is_empty());
        std::fs::write(dir.join("state.tmp"), "{}").unwrap();
        std::fs::rename(dir.join("state.tmp"), dir.join("state")).unwrap();
        let events = watcher.events();
        assert!(events.contains(&("slot".to_string(), Some("state".into()))), "{events:?}");
        watcher.unwatch("slot");
        std::fs::write(dir.join("other"), "").unwrap();
        assert!(watcher.events().is_empty());
    }
}
