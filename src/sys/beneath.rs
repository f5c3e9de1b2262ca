//! Files under a root that somebody else owns (the volume), reached only through directory
//! descriptors: a path is resolved beneath the root without following a symlink in any
//! component (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`; where the kernel or a
//! seccomp filter lacks it, an `O_NOFOLLOW` walk one component at a time), and every later
//! operation names a single entry of an open directory (`*at` calls), so swapping a
//! directory for a link after the check changes nothing.
//!
//! Invariants:
//! - nothing here follows a symlink below the root or resolves `..`; a planted link is an
//!   error (`ELOOP`/`EXDEV`), never a write elsewhere;
//! - a file opened for writing is a regular file with one link (a hard link to a file
//!   elsewhere is refused), opened without blocking (a FIFO is refused);
//! - what root creates is given to the owner asked for, through the open descriptor.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};

/// An open directory under the root, with the path it stands for (for messages only).
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

/// A file's owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// What kind of entry a name is (not following a symlink).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

fn error(path: &Path, errno: Errno) -> io::Error {
    let what = match errno {
        Errno::ELOOP => "a symlink (not followed)".to_string(),
        Errno::EXDEV => "leads outside the volume (not followed)".to_string(),
        Errno::ENOTDIR => "not a directory".to_string(),
        Errno::ENXIO => "a FIFO or socket (not opened)".to_string(),
        other => io::Error::from(other).to_string(),
    };
    io::Error::new(io::Error::from(errno).kind(), format!("{}: {what}", path.display()))
}

/// One component: not empty, no `/`, not `.` or `..`.
fn entry_name(name: &OsStr) -> io::Result<CString> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.contains(&b'/') || bytes == b"." || bytes == b".." || bytes.contains(&0) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("not a single file name: {name:?}")));
    }
    CString::new(bytes).map_err(io::Error::other)
}

/// The components of a relative path, each a plain name.
fn components(rel: &Path) -> io::Result<Vec<&OsStr>> {
    rel.components()
        .map(|c| match c {
            Component::Normal(name) => Ok(name),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: only plain names are resolved beneath the volume", rel.display()),
            )),
        })
        .collect()
}

fn kind_of(stat: &FileStat) -> Kind {
    match SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFREG => Kind::File,
        SFlag::S_IFDIR => Kind::Dir,
        SFlag::S_IFLNK => Kind::Symlink,
        _ => Kind::Other,
    }
}

impl Dir {
    /// Opens the root itself (its own path is the operator's, and may hold links).
    pub fn open_root(path: &Path) -> io::Result<Dir> {
        let fd = nix::fcntl::open(path, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|e| error(path, e))?;
        Ok(Dir { fd, path: path.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of an entry, for messages.
    pub fn display(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Opens `rel` relative to this directory, beneath it, following no symlink.
    fn open_beneath(&self, rel: &Path, flags: OFlag, mode: Mode) -> io::Result<OwnedFd> {
        components(rel)?;
        let full = self.path.join(rel);
        let flags = flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let how = OpenHow::new()
            .flags(flags)
            .mode(mode)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
        match nix::fcntl::openat2(self.fd.as_fd(), rel, how) {
            Ok(fd) => Ok(fd),
            // No openat2 here (an old kernel, or a seccomp filter that refuses it).
            Err(Errno::ENOSYS | Errno::EPERM) => self.open_walk(rel, flags, mode),
            Err(e) => Err(error(&full, e)),
        }
    }

    /// The same as `open_beneath` without `openat2`: one component at a time, each opened
    /// with `O_NOFOLLOW` relative to the one before.
    fn open_walk(&self, rel: &Path, flags: OFlag, mode: Mode) -> io::Result<OwnedFd> {
        let parts = components(rel)?;
        let full = self.path.join(rel);
        let flags = flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let Some((last, dirs)) = parts.split_last() else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "an empty path"));
        };
        let mut current: Option<OwnedFd> = None;
        for part in dirs {
            let at = current.as_ref().map_or(self.fd.as_fd(), |fd| fd.as_fd());
            let name = entry_name(part)?;
            let next = nix::fcntl::openat(
                at,
                name.as_c_str(),
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| error(&full, e))?;
            current = Some(next);
        }
        let at = current.as_ref().map_or(self.fd.as_fd(), |fd| fd.as_fd());
        let name = entry_name(last)?;
        nix::fcntl::openat(at, name.as_c_str(), flags, mode).map_err(|e| error(&full, e))
    }

    /// Opens the directory `rel` beneath this one.
    pub fn open_dir(&self, rel: impl AsRef<Path>) -> io::Result<Dir> {
        let rel = rel.as_ref();
        let fd = self.open_beneath(rel, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty())?;
        Ok(Dir { fd, path: self.path.join(rel) })
    }

    /// Opens the directory `name`, creating it (mode `mode`, given to `owner`) if missing.
    pub fn create_dir(&self, name: &str, mode: u32, owner: Option<Owner>) -> io::Result<Dir> {
        let c_name = entry_name(OsStr::new(name))?;
        match nix::sys::stat::mkdirat(self.fd.as_fd(), c_name.as_c_str(), Mode::from_bits_truncate(mode)) {
            Ok(()) => {
                let dir = self.open_dir(name)?;
                dir.give_to(owner)?;
                Ok(dir)
            }
            Err(Errno::EEXIST) => self.open_dir(name),
            Err(e) => Err(error(&self.display(name), e)),
        }
    }

    /// Creates `name` as a new directory; an existing entry of that name is an error.
    pub fn create_new_dir(&self, name: &str, mode: u32, owner: Option<Owner>) -> io::Result<Dir> {
        let c_name = entry_name(OsStr::new(name))?;
        nix::sys::stat::mkdirat(self.fd.as_fd(), c_name.as_c_str(), Mode::from_bits_truncate(mode))
            .map_err(|e| error(&self.display(name), e))?;
        let dir = self.open_dir(name)?;
        dir.give_to(owner)?;
        Ok(dir)
    }

    /// Opens a regular file for reading, without blocking and without following a link.
    pub fn open_read(&self, name: &str) -> io::Result<File> {
        let fd = self.open_beneath(Path::new(name), OFlag::O_RDONLY | OFlag::O_NONBLOCK, Mode::empty())?;
        let file = File::from(fd);
        let stat = nix::sys::stat::fstat(&file).map_err(|e| error(&self.display(name), e))?;
        match kind_of(&stat) {
            Kind::File => Ok(file),
            Kind::Dir => Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                format!("{}: a directory", self.display(name).display()),
            )),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: not a regular file", self.display(name).display()),
            )),
        }
    }

    /// Opens `name` for appending, creating it (mode `mode`, given to `owner`) if missing.
    /// An existing entry must be a regular file with a single link.
    pub fn open_append(&self, name: &str, mode: u32, owner: Option<Owner>) -> io::Result<File> {
        let flags = OFlag::O_WRONLY | OFlag::O_APPEND | OFlag::O_NONBLOCK;
        match self.open_beneath(Path::new(name), flags | OFlag::O_CREAT | OFlag::O_EXCL, Mode::from_bits_truncate(mode))
        {
            Ok(fd) => {
                let file = File::from(fd);
                give(&file, owner, &self.display(name))?;
                Ok(file)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let file = File::from(self.open_beneath(Path::new(name), flags, Mode::empty())?);
                self.check_writable(&file, name)?;
                Ok(file)
            }
            Err(e) => Err(e),
        }
    }

    /// Opens `name` for reading and writing, creating it (mode `mode`, given to `owner`) if
    /// missing; an existing entry must be a regular file with a single link.
    pub fn open_rw(&self, name: &str, mode: u32, owner: Option<Owner>) -> io::Result<File> {
        let flags = OFlag::O_RDWR | OFlag::O_NONBLOCK;
        match self.open_beneath(Path::new(name), flags | OFlag::O_CREAT | OFlag::O_EXCL, Mode::from_bits_truncate(mode))
        {
            Ok(fd) => {
                let file = File::from(fd);
                give(&file, owner, &self.display(name))?;
                Ok(file)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let file = File::from(self.open_beneath(Path::new(name), flags, Mode::empty())?);
                self.check_writable(&file, name)?;
                Ok(file)
            }
            Err(e) => Err(e),
        }
    }

    /// Creates `name` anew for writing; an existing entry of that name is an error.
    pub fn create_new(&self, name: &str, mode: u32, owner: Option<Owner>) -> io::Result<File> {
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NONBLOCK;
        let file = File::from(self.open_beneath(Path::new(name), flags, Mode::from_bits_truncate(mode))?);
        give(&file, owner, &self.display(name))?;
        Ok(file)
    }

    /// A file about to be written must be a regular file with one link: a hard link to a
    /// file elsewhere would make the write land there.
    fn check_writable(&self, file: &File, name: &str) -> io::Result<()> {
        let stat = nix::sys::stat::fstat(file).map_err(|e| error(&self.display(name), e))?;
        if kind_of(&stat) != Kind::File {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: not a regular file (not written)", self.display(name).display()),
            ));
        }
        if stat.st_nlink > 1 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{}: has {} hard links (not written)", self.display(name).display(), stat.st_nlink),
            ));
        }
        Ok(())
    }

    /// What `name` is, without following a link; `None` when it does not exist.
    pub fn kind(&self, name: &str) -> io::Result<Option<Kind>> {
        Ok(self.stat(name)?.map(|s| kind_of(&s)))
    }

    /// The status of `name` itself (a link is not followed); `None` when it does not exist.
    pub fn stat(&self, name: &str) -> io::Result<Option<FileStat>> {
        let c_name = entry_name(OsStr::new(name))?;
        match nix::sys::stat::fstatat(self.fd.as_fd(), c_name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(stat) => Ok(Some(stat)),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(error(&self.display(name), e)),
        }
    }

    /// The owner of this directory.
    pub fn owner(&self) -> io::Result<Owner> {
        let stat = nix::sys::stat::fstat(&self.fd).map_err(|e| error(&self.path, e))?;
        Ok(Owner { uid: stat.st_uid, gid: stat.st_gid })
    }

    /// Renames an entry of this directory to another name in it (replacing that entry, a
    /// link included, never what it points to).
    pub fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let (a, b) = (entry_name(OsStr::new(from))?, entry_name(OsStr::new(to))?);
        nix::fcntl::renameat(self.fd.as_fd(), a.as_c_str(), self.fd.as_fd(), b.as_c_str())
            .map_err(|e| error(&self.display(from), e))
    }

    /// Removes a file or link of this directory (never what a link points to).
    pub fn unlink(&self, name: &str) -> io::Result<()> {
        let c_name = entry_name(OsStr::new(name))?;
        nix::unistd::unlinkat(self.fd.as_fd(), c_name.as_c_str(), nix::unistd::UnlinkatFlags::NoRemoveDir)
            .map_err(|e| error(&self.display(name), e))
    }

    /// Removes the directory `name` and everything in it, through descriptors: a link in it
    /// is removed as a link, never followed.
    pub fn remove_dir_all(&self, name: &str) -> io::Result<()> {
        let dir = self.open_dir(name)?;
        for (entry, kind) in dir.entries()? {
            let entry = entry.to_string_lossy().into_owned();
            if kind == Kind::Dir {
                dir.remove_dir_all(&entry)?;
            } else {
                dir.unlink(&entry)?;
            }
        }
        let c_name = entry_name(OsStr::new(name))?;
        nix::unistd::unlinkat(self.fd.as_fd(), c_name.as_c_str(), nix::unistd::UnlinkatFlags::RemoveDir)
            .map_err(|e| error(&self.display(name), e))
    }

    /// The entries of this directory (without `.` and `..`), each with its kind.
    pub fn entries(&self) -> io::Result<Vec<(OsString, Kind)>> {
        let fd = nix::fcntl::openat(
            self.fd.as_fd(),
            c".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| error(&self.path, e))?;
        let mut dir = nix::dir::Dir::from_fd(fd).map_err(|e| error(&self.path, e))?;
        let mut out = Vec::new();
        for entry in dir.iter() {
            let entry = entry.map_err(|e| error(&self.path, e))?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            if name == "." || name == ".." {
                continue;
            }
            let kind = match entry.file_type() {
                Some(nix::dir::Type::File) => Kind::File,
                Some(nix::dir::Type::Directory) => Kind::Dir,
                Some(nix::dir::Type::Symlink) => Kind::Symlink,
                Some(_) => Kind::Other,
                None => self.kind(&name.to_string_lossy())?.unwrap_or(Kind::Other),
            };
            out.push((name.to_os_string(), kind));
        }
        Ok(out)
    }

    /// Flushes this directory's entries (after a rename into it).
    pub fn sync(&self) -> io::Result<()> {
        nix::unistd::fsync(&self.fd).map_err(|e| error(&self.path, e))
    }

    /// Gives this directory to `owner`.
    pub fn give_to(&self, owner: Option<Owner>) -> io::Result<()> {
        give(&self.fd, owner, &self.path)
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Gives an open file to `owner` (as root, when it is not already theirs).
pub fn give(fd: &impl AsFd, owner: Option<Owner>, path: &Path) -> io::Result<()> {
    let Some(owner) = owner else { return Ok(()) };
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let stat = nix::sys::stat::fstat(fd).map_err(|e| error(path, e))?;
    if stat.st_uid == owner.uid && stat.st_gid == owner.gid {
        return Ok(());
    }
    // SAFETY: fchown(2) on a descriptor we own; plain integers.
    let rc = unsafe { nix::libc::fchown(fd.as_fd().as_raw_fd(), owner.uid, owner.gid) };
    Errno::result(rc).map(drop).map_err(|e| error(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::fs::symlink;

    struct Fixture {
        _tmp: tempfile::TempDir,
        root: PathBuf,
        outside: PathBuf,
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("victim"), "precious\n").unwrap();
        Fixture { _tmp: tmp, root, outside }
    }

    #[test]
    fn links_in_any_component_are_refused() {
        let f = fixture();
        symlink(&f.outside, f.root.join("a/out")).unwrap();
        symlink(f.outside.join("victim"), f.root.join("a/b/file")).unwrap();
        symlink("../..", f.root.join("a/b/up")).unwrap();
        let root = Dir::open_root(&f.root).unwrap();
        assert!(root.open_dir("a/out").is_err());
        assert!(root.open_dir("a/b/up").is_err());
        assert!(root.open_dir("a/../..").is_err());
        assert!(root.open_dir("/etc").is_err());
        let b = root.open_dir("a/b").unwrap();
        assert!(b.open_read("file").is_err());
        let err = b.open_append("file", 0o644, None).unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
        assert!(b.create_new("file", 0o644, None).is_err());
        // Removing a link removes the link, never its target.
        b.unlink("file").unwrap();
        let a = root.open_dir("a").unwrap();
        a.unlink("out").unwrap();
        assert_eq!(std::fs::read_to_string(f.outside.join("victim")).unwrap(), "precious\n");
    }

    /// The walk used where `openat2` is missing refuses the same links.
    #[test]
    fn the_fallback_walk_refuses_links_too() {
        let f = fixture();
        symlink(&f.outside, f.root.join("a/out")).unwrap();
        symlink(f.outside.join("victim"), f.root.join("a/b/file")).unwrap();
        let root = Dir::open_root(&f.root).unwrap();
        let dir = OFlag::O_RDONLY | OFlag::O_DIRECTORY;
        assert!(root.open_walk(Path::new("a/b"), dir, Mode::empty()).is_ok());
        assert!(root.open_walk(Path::new("a/out"), dir, Mode::empty()).is_err());
        assert!(root.open_walk(Path::new("a/out/x"), OFlag::O_RDONLY, Mode::empty()).is_err());
        assert!(root.open_walk(Path::new("a/b/file"), OFlag::O_WRONLY | OFlag::O_APPEND, Mode::empty()).is_err());
        assert!(root.open_walk(Path::new("a/../.."), dir, Mode::empty()).is_err());
        assert_eq!(std::fs::read_to_string(f.outside.join("victim")).unwrap(), "precious\n");
    }

    #[test]
    fn a_hard_link_is_never_written() {
        let f = fixture();
        std::fs::hard_link(f.outside.join("victim"), f.root.join("a/current")).unwrap();
        let a = Dir::open_root(&f.root).unwrap().open_dir("a").unwrap();
        let err = a.open_append("current", 0o644, None).unwrap_err();
        assert!(err.to_string().contains("hard links"), "{err}");
        assert_eq!(std::fs::read_to_string(f.outside.join("victim")).unwrap(), "precious\n");
    }

    #[test]
    fn a_fifo_is_neither_read_nor_written_and_nothing_blocks() {
        let f = fixture();
        nix::unistd::mkfifo(&f.root.join("a/pipe"), Mode::from_bits_truncate(0o644)).unwrap();
        let a = Dir::open_root(&f.root).unwrap().open_dir("a").unwrap();
        assert!(a.open_read("pipe").is_err());
        assert!(a.open_append("pipe", 0o644, None).is_err());
    }

    /// Ownership is given through the open descriptor: swapping the path for a link to
    /// another file between the write and the chown changes nothing elsewhere (issue 14).
    #[test]
    fn ownership_goes_to_the_file_written_not_to_what_its_path_became() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: needs root to give files away");
            return;
        }
        let f = fixture();
        let a = Dir::open_root(&f.root).unwrap().open_dir("a").unwrap();
        let file = a.create_new("state.tmp", 0o644, None).unwrap();
        std::fs::rename(f.root.join("a/state.tmp"), f.root.join("a/moved")).unwrap();
        symlink(f.outside.join("victim"), f.root.join("a/state.tmp")).unwrap();
        give(&file, Some(Owner { uid: 65534, gid: 65534 }), Path::new("state.tmp")).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(f.outside.join("victim")).unwrap().uid(), 0, "the victim stays root's");
        assert_eq!(std::fs::metadata(f.root.join("a/moved")).unwrap().uid(), 65534, "the file written is given");
    }

    #[test]
    fn create_append_read_rename_and_remove() {
        let f = fixture();
        let root = Dir::open_root(&f.root).unwrap();
        let logs = root.create_dir("logs", 0o755, None).unwrap();
        let mut file = logs.open_append("current", 0o644, None).unwrap();
        file.write_all(b"one\n").unwrap();
        let mut again = logs.open_append("current", 0o644, None).unwrap();
        again.write_all(b"two\n").unwrap();
        logs.rename("current", "@1.s").unwrap();
        let mut text = String::new();
        logs.open_read("@1.s").unwrap().read_to_string(&mut text).unwrap();
        assert_eq!(text, "one\ntwo\n");
        assert_eq!(logs.kind("@1.s").unwrap(), Some(Kind::File));
        assert_eq!(logs.kind("nothing").unwrap(), None);
        let inner = logs.create_dir("inner", 0o755, None).unwrap();
        symlink(&f.outside, f.root.join("logs/inner/link")).unwrap();
        inner.create_new("x", 0o600, None).unwrap();
        root.remove_dir_all("logs").unwrap();
        assert!(!f.root.join("logs").exists());
        assert!(f.outside.join("victim").exists(), "the link's target survives");
    }
}
