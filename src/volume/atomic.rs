//! Reading a small file of the volume without trusting it, and replacing one atomically.
//!
//! Invariants: a read never blocks, never follows a link, never reads past its bound; a
//! replacement goes through a uniquely named temporary file in the same directory, fsync,
//! rename and fsync of the directory, so a reader sees the old or the new file, never a
//! mix; the new file keeps the old one's mode and owner when the old one was a regular
//! file with one link, and otherwise belongs to the directory's owner.

use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::sys::beneath::{Dir, Kind, Owner};

/// Why a bounded read failed.
#[derive(Debug)]
pub enum ReadError {
    Missing,
    /// A link, a directory, a FIFO, unreadable...: the message names the file.
    Unusable(String),
    TooLarge(u64),
}

/// Reads `name` in `dir`, at most `limit` bytes.
pub fn read_bounded(dir: &Dir, name: &str, limit: u64) -> Result<Vec<u8>, ReadError> {
    let mut file = match dir.open_read(name) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(ReadError::Missing),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            return Err(ReadError::Unusable(format!("{}: unreadable: Permission denied", dir.display(name).display())));
        }
        Err(e) => return Err(ReadError::Unusable(e.to_string())),
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if len > limit {
        return Err(ReadError::TooLarge(len));
    }
    let mut bytes = Vec::new();
    (&mut file)
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ReadError::Unusable(format!("{}: unreadable: {e}", dir.display(name).display())))?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge(bytes.len() as u64));
    }
    Ok(bytes)
}

/// What identifies one version of a file: replaced by a rename or rewritten, it changes.
pub type Version = Option<(u64, i64, i64, i64)>;

pub fn version(dir: &Dir, name: &str) -> Version {
    dir.stat(name).ok().flatten().map(|s| (s.st_ino, s.st_size, s.st_mtime, s.st_mtime_nsec))
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A temporary name no other writer uses: prefix, pid, time and a counter.
fn temp_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{prefix}{}-{nanos}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Replaces `name` in `dir` with `bytes`, durably. `still` is asked once the new file is on
/// disk: when it answers false (the file changed meanwhile) nothing is replaced and the
/// result is `Ok(false)`.
pub fn replace(
    dir: &Dir,
    name: &str,
    temp_prefix: &str,
    bytes: &[u8],
    default_mode: u32,
    still: impl Fn() -> bool,
) -> io::Result<bool> {
    replace_with(dir, name, temp_prefix, bytes, default_mode, true, still)
}

/// `replace`, with the fsyncs only when `durable` (a tmpfs rebuilt at every boot needs
/// atomicity, not durability).
pub fn replace_with(
    dir: &Dir,
    name: &str,
    temp_prefix: &str,
    bytes: &[u8],
    default_mode: u32,
    durable: bool,
    still: impl Fn() -> bool,
) -> io::Result<bool> {
    let existing = dir.stat(name)?;
    let (mode, owner) = match existing {
        Some(s) if s.st_nlink == 1 && dir.kind(name)? == Some(Kind::File) => {
            (s.st_mode & 0o7777, Some(Owner { uid: s.st_uid, gid: s.st_gid }))
        }
        _ => (default_mode, super::owner_of(dir)),
    };
    let mut attempts = 0;
    let (tmp, mut file) = loop {
        let tmp = temp_name(temp_prefix);
        match dir.create_new(&tmp, mode, owner) {
            Ok(file) => break (tmp, file),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 8 => attempts += 1,
            Err(e) => return Err(e),
        }
    };
    let written = (|| {
        file.write_all(bytes)?;
        // The mode asked for, whatever the umask took away.
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        if durable {
            file.sync_all()?;
        }
        if !still() {
            return Ok(false);
        }
        dir.rename(&tmp, name)?;
        if durable {
            dir.sync()?;
        }
        Ok(true)
    })();
    if !matches!(written, Ok(true)) {
        let _ = dir.unlink(&tmp);
    }
    written
}
