//! A gateway's own log on the volume: `logs/gateways/<profile>/current`, rotated at 1 MB
//! keeping 10 archives named `@<nanoseconds since the epoch>.s`.
//!
//! Invariants: every line handed to it is written or the failure is reported (once per
//! failing stretch); a log that cannot be written never stops the service.

use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;

use super::{Home, owner_of};
use crate::sys::beneath::{Dir, Kind};

/// Rotate `current` before it grows past this many bytes.
pub const ROTATE_AT: u64 = 1_000_000;
/// Archives kept.
pub const ARCHIVES: usize = 10;

/// A gateway's own log directory with a rotated `current` file.
#[derive(Debug)]
pub struct RotatingLog {
    home: Home,
    profile: String,
    open: Option<(Dir, File)>,
    size: u64,
    failed: bool,
}

impl RotatingLog {
    pub fn new(home: Home, profile: &str) -> RotatingLog {
        RotatingLog { home, profile: profile.to_string(), open: None, size: 0, failed: false }
    }

    /// `logs/gateways/<profile>`, for messages.
    pub fn dir(&self) -> PathBuf {
        self.home.root.join("logs/gateways").join(&self.profile)
    }

    /// Appends lines; a failure is logged once per failing stretch and otherwise ignored.
    pub fn append(&mut self, lines: &str) {
        if let Err(e) = self.try_append(lines) {
            self.open = None;
            if !self.failed {
                self.failed = true;
                tracing::warn!(
                    "cannot write service log {}: {e} (reported once; the service keeps running)",
                    self.dir().join("current").display()
                );
            }
        } else if self.failed {
            self.failed = false;
            tracing::info!("service log {} writable again", self.dir().join("current").display());
        }
    }

    /// Opens (creating as needed, each given to the home's owner) the log directory and
    /// `current`, beneath the home.
    fn open(&self) -> io::Result<(Dir, File)> {
        let root = self.home.open()?;
        let owner = owner_of(&root);
        let dir = root.create_dir("logs", 0o755, owner)?.create_dir("gateways", 0o755, owner)?.create_dir(
            &self.profile,
            0o755,
            owner,
        )?;
        let file = dir.open_append("current", 0o644, owner)?;
        Ok((dir, file))
    }

    fn try_append(&mut self, lines: &str) -> io::Result<()> {
        if self.open.is_none() {
            let (dir, file) = self.open()?;
            self.size = file.metadata()?.len();
            self.open = Some((dir, file));
        }
        if self.size + lines.len() as u64 > ROTATE_AT && self.size > 0 {
            self.rotate()?;
        }
        let Some((_, file)) = self.open.as_mut() else { return Ok(()) };
        file.write_all(lines.as_bytes())?;
        self.size += lines.len() as u64;
        Ok(())
    }

    /// `current` becomes `@<nanoseconds>.s`; archives beyond the newest ten are removed.
    fn rotate(&mut self) -> io::Result<()> {
        let Some((dir, _)) = self.open.take() else { return Ok(()) };
        let stamp =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        dir.rename("current", &format!("@{stamp:020}.s"))?;
        let mut archives: Vec<String> = dir
            .entries()?
            .into_iter()
            .filter(|(_, kind)| *kind != Kind::Dir)
            .map(|(name, _)| name.to_string_lossy().into_owned())
            .filter(|n| n.starts_with('@') && n.ends_with(".s"))
            .collect();
        archives.sort();
        let excess = archives.len().saturating_sub(ARCHIVES);
        for old in &archives[..excess] {
            let _ = dir.unlink(old);
        }
        let file = dir.open_append("current", 0o644, owner_of(&dir))?;
        self.size = 0;
        self.open = Some((dir, file));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_ten_archives() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = RotatingLog::new(Home::new(dir.path()), "g");
        let line = format!("{}\n", "z".repeat(99_999));
        for _ in 0..150 {
            log.append(&line);
        }
        let names: Vec<String> = std::fs::read_dir(dir.path().join("logs/gateways/g"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.iter().filter(|n| n.starts_with('@')).count(), ARCHIVES, "{names:?}");
        assert!(names.contains(&"current".to_string()));
        for name in &names {
            assert!(std::fs::metadata(dir.path().join("logs/gateways/g").join(name)).unwrap().len() <= ROTATE_AT);
        }
    }

    #[test]
    fn an_unwritable_log_dir_is_survived() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("logs"), "").unwrap();
        let mut log = RotatingLog::new(Home::new(dir.path()), "sub");
        log.append("a\n");
        log.append("b\n");
        assert!(log.failed);
    }
}
