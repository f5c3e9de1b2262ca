//! `logs/container-boot.log`: one line per profile and boot pass, rotated to `.1` at 256 KiB.
//!
//! Invariant: reached beneath the home without following links; a link or a hard-linked
//! file in its place is refused, never written through.

use std::io::{self, Write};

use super::{Home, owner_of};

pub const BOOT_LOG_LIMIT: u64 = 256 * 1024;
pub const BOOT_LOG: &str = "container-boot.log";

/// Appends lines to `logs/container-boot.log` in one write, first rotating it to `.1` at
/// 256 KiB.
pub fn append_boot_log(home: &Home, lines: &str) -> io::Result<()> {
    let root = home.open()?;
    let owner = owner_of(&root);
    let logs = root.create_dir("logs", 0o755, owner)?;
    if logs.stat(BOOT_LOG)?.is_some_and(|s| s.st_size as u64 >= BOOT_LOG_LIMIT) {
        logs.rename(BOOT_LOG, &format!("{BOOT_LOG}.1"))?;
    }
    let mut file = logs.open_append(BOOT_LOG, 0o644, owner)?;
    file.write_all(lines.as_bytes())
}
