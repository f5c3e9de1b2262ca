//! A gateway's own log on the volume: `logs/gateways/<profile>/current`, rotated at 1 MB
//! keeping 10 archives named `@<nanoseconds since the epoch>.s`.
//!
//! Invariants: every line handed to it is written or the failure is reported (once per
//! failing stretch); a log that cannot be written never stops the service.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Rotate `current` before it grows past this many bytes.
pub const ROTATE_AT: u64 = 1_000_000;
/// Archives kept.
pub const ARCHIVES: usize = 10;

/// A gateway's own log directory with a rotated `current` file.
#[derive(Debug)]
pub struct RotatingLog {
    dir: PathBuf,
    file: Option<File>,
    size: u64,
    failed: bool,
}

impl RotatingLog {
    pub fn new(dir: PathBuf) -> RotatingLog {
        RotatingLog { dir, file: None, size: 0, failed: false }
    }

    /// Appends one line; a failure is logged once per log and otherwise ignored.
    pub fn append(&mut self, line: &str) {
        if let Err(e) = self.try_append(line) {
            self.file = None;
            if !self.failed {
                self.failed = true;
                tracing::warn!(
                    "cannot write service log {}: {e} (reported once; the service keeps running)",
                    self.dir.join("current").display()
                );
            }
        } else if self.failed {
            self.failed = false;
            tracing::info!("service log {} writable again", self.dir.join("current").display());
        }
    }

    fn try_append(&mut self, line: &str) -> io::Result<()> {
        if self.file.is_none() {
            fs_err::create_dir_all(&self.dir)?;
            let file = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("current"))?;
            self.size = file.metadata()?.len();
            self.file = Some(file);
        }
        if self.size + line.len() as u64 > ROTATE_AT && self.size > 0 {
            self.rotate()?;
        }
        let Some(file) = self.file.as_mut() else { return Ok(()) };
        file.write_all(line.as_bytes())?;
        self.size += line.len() as u64;
        Ok(())
    }

    /// `current` becomes `@<nanoseconds>.s`; archives beyond the newest ten are removed.
    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        let stamp =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        fs_err::rename(self.dir.join("current"), self.dir.join(format!("@{stamp:020}.s")))?;
        let mut archives: Vec<PathBuf> = fs_err::read_dir(&self.dir)?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('@') && n.ends_with(".s")))
            .collect();
        archives.sort();
        let excess = archives.len().saturating_sub(ARCHIVES);
        for old in &archives[..excess] {
            let _ = fs_err::remove_file(old);
        }
        let file = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("current"))?;
        self.size = 0;
        self.file = Some(file);
        Ok(())
    }
}

/// The log directory of a gateway profile.
pub fn gateway_log_dir(home: &Path, profile: &str) -> PathBuf {
    home.join("logs").join("gateways").join(profile)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_ten_archives() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = RotatingLog::new(dir.path().join("g"));
        let line = format!("{}\n", "z".repeat(99_999));
        for _ in 0..150 {
            log.append(&line);
        }
        let names: Vec<String> = std::fs::read_dir(dir.path().join("g"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.iter().filter(|n| n.starts_with('@')).count(), ARCHIVES, "{names:?}");
        assert!(names.contains(&"current".to_string()));
        for name in &names {
            assert!(std::fs::metadata(dir.path().join("g").join(name)).unwrap().len() <= ROTATE_AT);
        }
    }

    #[test]
    fn an_unwritable_log_dir_is_survived() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("blocker"), "").unwrap();
        let mut log = RotatingLog::new(dir.path().join("blocker/sub"));
        log.append("a\n");
        log.append("b\n");
        assert!(log.failed);
    }
}
