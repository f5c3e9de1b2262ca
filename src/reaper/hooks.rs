//! Finding the boot hooks: the executable regular files of the cont-init directory, in byte
//! order of their names.
//!
//! Invariants: a missing directory means no hooks; anything that is not an executable
//! regular file (after following a symlink) is skipped with a log line, never run.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The hook file names to run, sorted by their bytes.
pub fn list(dir: &Path) -> io::Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(text) = name.to_str() else {
            tracing::warn!("hook {:?} in {}: name is not UTF-8, skipped", name, dir.display());
            continue;
        };
        match std::fs::metadata(entry.path()) {
            Ok(meta) if meta.is_file() && meta.permissions().mode() & 0o111 != 0 => names.push(text.to_string()),
            Ok(meta) if meta.is_file() => tracing::info!("hook {text}: not executable, skipped"),
            Ok(_) => tracing::debug!("{text} in {}: not a regular file, skipped", dir.display()),
            Err(e) => tracing::warn!("hook {text}: {e}, skipped"),
        }
    }
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn only_executable_regular_files_in_byte_order() {
        let dir = tempfile::tempdir().unwrap();
        let make = |name: &str, mode: u32| {
            let path = dir.path().join(name);
            fs::write(&path, "#!/bin/sh\n").unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        };
        for name in ["b", "10-x", "02-y", "B", "_u", "a"] {
            make(name, 0o755);
        }
        make("not-exec", 0o644);
        fs::create_dir(dir.path().join("03-dir")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("a"), dir.path().join("04-link")).unwrap();
        std::os::unix::fs::symlink("/nonexistent", dir.path().join("05-dangling")).unwrap();
        assert_eq!(list(dir.path()).unwrap(), ["02-y", "04-link", "10-x", "B", "_u", "a", "b"]);
    }

    #[test]
    fn missing_directory_means_no_hooks() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(list(&dir.path().join("absent")).unwrap(), Vec::<String>::new());
    }
}
