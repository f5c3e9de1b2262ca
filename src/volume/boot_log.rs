//! `logs/container-boot.log`: one line per profile and boot pass, rotated to `.1` at 256 KiB.

use std::io::{self, Write};

use super::Home;

pub const BOOT_LOG_LIMIT: u64 = 256 * 1024;

/// Appends lines to `logs/container-boot.log` in one write, first rotating it to `.1` at
/// 256 KiB.
pub fn append_boot_log(home: &Home, lines: &str) -> io::Result<()> {
    let dir = home.logs_dir();
    fs_err::create_dir_all(&dir)?;
    let path = dir.join("container-boot.log");
    if fs_err::metadata(&path).is_ok_and(|m| m.len() >= BOOT_LOG_LIMIT) {
        fs_err::rename(&path, dir.join("container-boot.log.1"))?;
    }
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
    file.write_all(lines.as_bytes())
}
