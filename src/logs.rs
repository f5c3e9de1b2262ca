//! Service output: each slot's stdout and stderr arrive through pipes, are split into
//! lines and passed to the init's stdout (prefixed `[slot] `, or as JSON), and for gateway
//! slots also appended to `$HERMES_HOME/logs/gateways/<profile>/current`, rotated at 1 MB
//! keeping 10 archives (as `s6-log n10 s1000000` did).
//!
//! Invariants: a line longer than 64 KiB is cut and marked, never buffered without bound;
//! bytes that are not UTF-8 are replaced, never dropped with their line; one read per
//! pipe per loop turn is capped, so a flooding service cannot starve the others; a log file
//! that cannot be written is reported once and never stops the service.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde_json::json;

/// Lines are cut at this length.
pub const MAX_LINE: usize = 64 * 1024;
/// The most bytes read from one pipe in one loop turn.
pub const READ_BUDGET: usize = 64 * 1024;
/// A gateway's `current` log is rotated at this size.
pub const ROTATE_AT: u64 = 1_000_000;
/// Archives kept beside `current`.
pub const ARCHIVES: usize = 10;
/// The mark appended to a cut line.
pub const CUT_MARK: &str = " [line cut at 64 KiB]";

/// How service lines are written to the init's stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Prefixed,
    Plain,
    Json,
}

impl Format {
    /// From `HERMES_INIT_LOG_FORMAT` and `HERMES_INIT_LOG_PREFIX`.
    pub fn from_env(format: Option<&str>, prefix: Option<&str>) -> Result<Format, String> {
        let prefixed = match prefix.map(str::trim) {
            None | Some("1") => true,
            Some("0") => false,
            Some(other) => return Err(format!("HERMES_INIT_LOG_PREFIX must be 0 or 1, not '{other}'")),
        };
        match format.map(str::trim) {
            Some("json") => Ok(Format::Json),
            None | Some("text") | Some("") => Ok(if prefixed { Format::Prefixed } else { Format::Plain }),
            Some(other) => Err(format!("HERMES_INIT_LOG_FORMAT must be text or json, not '{other}'")),
        }
    }
}

/// Splits a byte stream into lines, cutting the overlong ones.
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    /// Feeds bytes; calls `emit(line, cut)` for every complete (or cut) line.
    pub fn feed(&mut self, mut data: &[u8], emit: &mut impl FnMut(&[u8], bool)) {
        while !data.is_empty() {
            match data.iter().position(|b| *b == b'\n') {
                Some(end) if self.partial.len() + end <= MAX_LINE => {
                    if self.partial.is_empty() {
                        emit(&data[..end], false);
                    } else {
                        self.partial.extend_from_slice(&data[..end]);
                        emit(&self.partial, false);
                        self.partial.clear();
                    }
                    data = &data[end + 1..];
                }
                _ => {
                    let room = MAX_LINE - self.partial.len();
                    let take = room.min(data.len());
                    self.partial.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if self.partial.len() == MAX_LINE {
                        emit(&self.partial, true);
                        self.partial.clear();
                    }
                }
            }
        }
    }

    /// End of stream: the last line without a newline, if any.
    pub fn finish(&mut self, emit: &mut impl FnMut(&[u8], bool)) {
        if !self.partial.is_empty() {
            emit(&self.partial, false);
            self.partial.clear();
        }
    }
}

/// Renders one service line for the init's stdout.
pub fn render(format: Format, slot: &str, stream: &str, line: &[u8], cut: bool, time: &str) -> String {
    let mut text = String::from_utf8_lossy(line).into_owned();
    if cut {
        text.push_str(CUT_MARK);
    }
    match format {
        Format::Prefixed => format!("[{slot}] {text}\n"),
        Format::Plain => format!("{text}\n"),
        Format::Json => format!("{}\n", json!({"time": time, "slot": slot, "stream": stream, "message": text})),
    }
}

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
            std::fs::create_dir_all(&self.dir)?;
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
        std::fs::rename(self.dir.join("current"), self.dir.join(format!("@{stamp:020}.s")))?;
        let mut archives: Vec<PathBuf> = std::fs::read_dir(&self.dir)?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('@') && n.ends_with(".s")))
            .collect();
        archives.sort();
        let excess = archives.len().saturating_sub(ARCHIVES);
        for old in &archives[..excess] {
            let _ = std::fs::remove_file(old);
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

    type Lines = Vec<(Vec<u8>, bool)>;

    fn split(chunks: &[&[u8]]) -> Lines {
        let mut out = Vec::new();
        let mut splitter = LineSplitter::default();
        let mut emit = |line: &[u8], cut: bool| out.push((line.to_vec(), cut));
        for chunk in chunks {
            splitter.feed(chunk, &mut emit);
        }
        splitter.finish(&mut emit);
        out
    }

    #[test]
    fn line_table() {
        let long = vec![b'x'; MAX_LINE + 10];
        let cases: Vec<(Vec<&[u8]>, Lines)> = vec![
            (vec![b"a\nb\n"], vec![(b"a".to_vec(), false), (b"b".to_vec(), false)]),
            (vec![b"par", b"tial\nend"], vec![(b"partial".to_vec(), false), (b"end".to_vec(), false)]),
            (vec![b"\n\n"], vec![(vec![], false), (vec![], false)]),
            (vec![&long, b"\n"], vec![(vec![b'x'; MAX_LINE], true), (vec![b'x'; 10], false)]),
        ];
        for (chunks, want) in cases {
            assert_eq!(split(&chunks), want);
        }
    }

    #[test]
    fn rendering() {
        assert_eq!(render(Format::Prefixed, "s", "stdout", b"hi", false, "t"), "[s] hi\n");
        assert_eq!(render(Format::Plain, "s", "stdout", b"hi", false, "t"), "hi\n");
        assert_eq!(
            render(Format::Prefixed, "s", "stderr", b"\xffok", true, "t"),
            format!("[s] \u{fffd}ok{CUT_MARK}\n")
        );
        let json: serde_json::Value =
            serde_json::from_str(&render(Format::Json, "s", "stderr", b"m", false, "t")).unwrap();
        assert_eq!(json, json!({"time": "t", "slot": "s", "stream": "stderr", "message": "m"}));
    }

    #[test]
    fn formats_from_env() {
        let cases = [
            (None, None, Ok(Format::Prefixed)),
            (None, Some("0"), Ok(Format::Plain)),
            (Some("json"), None, Ok(Format::Json)),
            (Some("text"), Some("1"), Ok(Format::Prefixed)),
        ];
        for (format, prefix, want) in cases {
            assert_eq!(Format::from_env(format, prefix), want);
        }
        assert!(Format::from_env(Some("xml"), None).unwrap_err().contains("HERMES_INIT_LOG_FORMAT"));
        assert!(Format::from_env(None, Some("yes")).unwrap_err().contains("HERMES_INIT_LOG_PREFIX"));
    }

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
