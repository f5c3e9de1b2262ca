//! File-system calls the standard library lacks: swapping two directories atomically,
//! syncing a directory, and timestamps.

use std::fs::File;
use std::io;
use std::path::Path;

use nix::libc;

/// Swaps two existing paths in one step (`renameat2(RENAME_EXCHANGE)`).
pub fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let a = std::ffi::CString::new(a.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let b = std::ffi::CString::new(b.as_os_str().as_bytes()).map_err(io::Error::other)?;
    const RENAME_EXCHANGE: libc::c_uint = 1 << 1;
    // SAFETY: both strings are valid, NUL-terminated and outlive the call.
    let rc = unsafe {
        libc::syscall(libc::SYS_renameat2, libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), RENAME_EXCHANGE)
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Flushes a directory's entries (after a rename into it) to disk.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Broken-down time: (year, month, day, hour, minute, second, offset from UTC in seconds).
type Civil = (i64, i64, i64, i64, i64, i64, i64);

fn broken_down(secs: i64, local: bool) -> Civil {
    let t = secs as _;
    // SAFETY: `tm` is plain data, filled in by the reentrant call.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers to a time_t and a tm.
    let ok = unsafe {
        if local { !libc::localtime_r(&t, &mut tm).is_null() } else { !libc::gmtime_r(&t, &mut tm).is_null() }
    };
    if !ok {
        return (1970, 1, 1, 0, 0, 0, 0);
    }
    (
        tm.tm_year as i64 + 1900,
        tm.tm_mon as i64 + 1,
        tm.tm_mday as i64,
        tm.tm_hour as i64,
        tm.tm_min as i64,
        tm.tm_sec as i64,
        tm.tm_gmtoff,
    )
}

fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Now as ISO-8601 in UTC: `2026-11-22T21:14:05Z`.
pub fn utc_timestamp() -> String {
    let (y, mo, d, h, mi, s, _) = broken_down(now_secs(), false);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// Now as ISO-8601 in UTC with milliseconds: `2026-11-22T21:14:05.123Z` (for intents,
/// where the newer of two said in one second must win).
pub fn utc_timestamp_ms() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let (y, mo, d, h, mi, s, _) = broken_down(now.as_secs() as i64, false);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{:03}Z", now.subsec_millis())
}

/// Now in the local zone as `%Y-%m-%dT%H:%M:%S%z`: `2026-11-22T21:14:05+0000`.
pub fn local_timestamp() -> String {
    let (y, mo, d, h, mi, s, off) = broken_down(now_secs(), true);
    let sign = if off < 0 { '-' } else { '+' };
    let off = off.abs();
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{sign}{:02}{:02}", off / 3600, (off % 3600) / 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_have_the_documented_shape() {
        let utc = utc_timestamp();
        assert_eq!(utc.len(), 20, "{utc}");
        assert!(utc.ends_with('Z') && utc.as_bytes()[10] == b'T', "{utc}");
        let local = local_timestamp();
        assert_eq!(local.len(), 24, "{local}");
        assert!(matches!(local.as_bytes()[19], b'+' | b'-'), "{local}");
    }

    #[test]
    fn exchange_swaps_two_directories() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::create_dir(&a).unwrap();
        std::fs::create_dir(&b).unwrap();
        std::fs::write(a.join("from-a"), "").unwrap();
        exchange(&a, &b).unwrap();
        assert!(b.join("from-a").exists() && !a.join("from-a").exists());
    }
}
