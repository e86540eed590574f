//! Confinement: every file the connector touches is reached relative to a directory handle
//! opened once at start (the asset, or a quarantine folder outside it), with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` or single-component `*at` calls. The check
//! and the use are one system call, so swapping a folder for a symlink between them cannot
//! redirect anything; symlinks inside the asset and the quarantine tree are never followed.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use dsx_connector::RepoError;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// Why a confined operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("{0}: a path component is a symlink, which is never followed")]
    Symlink(String),
    #[error("{0} is outside the asset and the quarantine folder")]
    Outside(String),
    #[error("{0} contains '..'")]
    DotDot(String),
    #[error("{0} is not a regular file")]
    NotAFile(String),
    #[error("{0} has other hard links; refusing to write through them")]
    HardLinked(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("invalid location: {0}")]
    Invalid(String),
    #[error("{op} {path}: {source}")]
    Io { op: &'static str, path: String, source: std::io::Error },
}

impl From<FsError> for RepoError {
    fn from(err: FsError) -> Self {
        let text = err.to_string();
        match err {
            FsError::Symlink(_)
            | FsError::Outside(_)
            | FsError::DotDot(_)
            | FsError::NotAFile(_)
            | FsError::HardLinked(_) => RepoError::Forbidden(text),
            FsError::NotFound(_) => RepoError::NotFound(text),
            FsError::Invalid(_) => RepoError::Invalid(text),
            FsError::Io { .. } => RepoError::Io(text),
        }
    }
}

impl FsError {
    /// Classify an errno from a confined call on `path`.
    pub fn from_errno(op: &'static str, path: &Path, errno: Errno) -> Self {
        let shown = path.display().to_string();
        match errno {
            // RESOLVE_NO_SYMLINKS and O_NOFOLLOW both answer ELOOP for a symlink.
            Errno::LOOP => FsError::Symlink(shown),
            // RESOLVE_BENEATH answers EXDEV for an escape.
            Errno::XDEV => FsError::Outside(shown),
            Errno::NOENT | Errno::NOTDIR => FsError::NotFound(shown),
            _ => FsError::Io { op, path: shown, source: errno.into() },
        }
    }
}

/// Which directory handle a confined path is relative to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    Asset,
    /// The configured quarantine folder, when it is outside the asset.
    Quarantine,
}

/// A folder to move items into: `rel` below a base handle.
#[derive(Debug, Clone)]
pub struct Target {
    pub base: Base,
    pub rel: PathBuf,
}

/// The asset root and quarantine folder, and the handles every operation goes through.
pub struct Confinement {
    root: PathBuf,
    root_dir: OwnedFd,
    /// Absolute path of the configured quarantine folder (for display and for skipping it).
    quarantine: PathBuf,
    /// The same as configured, before canonicalisation, so requests may name it either way.
    quarantine_as_configured: PathBuf,
    /// The configured quarantine as a target: below the asset handle, or its own base.
    quarantine_target: Target,
}

impl Confinement {
    /// `root` must be canonical. `quarantine` is absolute, or relative to the root.
    pub fn new(root: PathBuf, quarantine: &str) -> Result<Self, FsError> {
        let root_dir = rustix::fs::open(&root, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| FsError::from_errno("open asset", &root, e))?;
        let quarantine_as_configured = lexical_normal(&root.join(quarantine));
        let (quarantine, quarantine_target) = configured_quarantine(&root, quarantine);
        Ok(Self { root, root_dir, quarantine, quarantine_as_configured, quarantine_target })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn quarantine(&self) -> &Path {
        &self.quarantine
    }

    pub fn is_quarantine(&self, path: &Path) -> bool {
        path.starts_with(&self.quarantine)
    }

    /// The path of `rel` below `base`, for messages.
    pub fn display(&self, base: Base, rel: &Path) -> PathBuf {
        match base {
            Base::Asset => self.root.join(rel),
            Base::Quarantine => self.quarantine.join(rel),
        }
    }

    /// `location` (absolute inside the asset, or relative to it) as a path relative to the
    /// asset, checked lexically: no `..`, nothing elsewhere. Symlinks are refused at use.
    pub fn locate(&self, location: &str) -> Result<PathBuf, FsError> {
        if location.is_empty() || location.contains('\0') {
            return Err(FsError::Invalid("location must be a non-empty path".into()));
        }
        let path = Path::new(location);
        if path.components().any(|c| c == Component::ParentDir) {
            return Err(FsError::DotDot(location.to_owned()));
        }
        let rel = if path.is_absolute() {
            path.strip_prefix(&self.root).map_err(|_| FsError::Outside(location.to_owned()))?
        } else {
            path
        };
        let rel: PathBuf = rel.components().filter(|c| matches!(c, Component::Normal(_))).collect();
        if rel.as_os_str().is_empty() {
            return Err(FsError::NotFound(format!("{location} is not a file")));
        }
        Ok(rel)
    }

    /// Open an existing regular file of the asset for reading; symlinks anywhere on the way
    /// are refused (403), not followed.
    pub fn open_file(&self, rel: &Path) -> Result<std::fs::File, FsError> {
        // O_NONBLOCK: a planted FIFO must not block the open; it is refused below.
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fd = open_beneath(self.root_dir.as_fd(), rel, flags, Mode::empty())
            .map_err(|e| FsError::from_errno("open", &self.root.join(rel), e))?;
        let stat = rustix::fs::fstat(&fd).map_err(|e| FsError::from_errno("stat", &self.root.join(rel), e))?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            return Err(FsError::NotFound(format!("{} is not a file", self.root.join(rel).display())));
        }
        Ok(std::fs::File::from(fd))
    }

    /// An existing regular file of the asset, as its (confined) parent folder handle and name.
    pub fn item(&self, rel: &Path) -> Result<Entry, FsError> {
        let shown = self.root.join(rel);
        let name = rel.file_name().ok_or_else(|| FsError::Invalid(shown.display().to_string()))?.to_owned();
        let parent = rel.parent().unwrap_or(Path::new(""));
        let dir =
            open_dir_beneath(self.root_dir.as_fd(), parent).map_err(|e| FsError::from_errno("open", &shown, e))?;
        let stat = rustix::fs::statat(&dir, &name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| FsError::from_errno("stat", &shown, e))?;
        match FileType::from_raw_mode(stat.st_mode) {
            FileType::RegularFile => Ok(Entry { dir, name, rel: rel.to_path_buf() }),
            FileType::Symlink => Err(FsError::Symlink(shown.display().to_string())),
            _ => Err(FsError::NotFound(format!("{} is not a file", shown.display()))),
        }
    }

    /// The folder an action moves into: the configured quarantine, or a requested
    /// destination that stays inside the asset or the configured quarantine.
    pub fn target(&self, requested: &str) -> Result<Target, FsError> {
        let path = Path::new(requested);
        if path.components().any(|c| c == Component::ParentDir) {
            return Err(FsError::DotDot(format!("quarantine {requested}")));
        }
        let absolute = if path.is_absolute() { path.to_path_buf() } else { self.root.join(path) };
        let below_quarantine =
            absolute.strip_prefix(&self.quarantine).or_else(|_| absolute.strip_prefix(&self.quarantine_as_configured));
        if let Ok(below) = below_quarantine {
            let mut target = self.quarantine_target.clone();
            target.rel.push(below);
            return Ok(target);
        }
        match absolute.strip_prefix(&self.root) {
            Ok(rel) => Ok(Target { base: Base::Asset, rel: rel.to_path_buf() }),
            Err(_) => Err(FsError::Outside(format!("quarantine {requested}"))),
        }
    }

    /// Open `target/sub`, creating missing folders one confined step at a time; a symlink
    /// anywhere on the way is refused, so nothing is ever created outside.
    pub fn create_dirs(&self, target: &Target, sub: &Path) -> Result<OwnedFd, FsError> {
        let base = match target.base {
            Base::Asset => rustix::io::dup(&self.root_dir),
            Base::Quarantine => {
                // The configured quarantine outside the asset is operator configuration, not
                // something the scanned folder's writers control: created and opened by path.
                std::fs::create_dir_all(&self.quarantine).map_err(|source| FsError::Io {
                    op: "create quarantine",
                    path: self.quarantine.display().to_string(),
                    source,
                })?;
                rustix::fs::open(&self.quarantine, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            }
        };
        let mut dir = base.map_err(|e| FsError::from_errno("open", &self.quarantine, e))?;
        let mut walked = PathBuf::new();
        for part in target.rel.components().chain(sub.components()) {
            let Component::Normal(name) = part else { continue };
            walked.push(name);
            let shown = self.display(target.base, &walked);
            match rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o777)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(FsError::from_errno("create folder", &shown, e)),
            }
            dir = open_dir_beneath(dir.as_fd(), Path::new(name)).map_err(|e| match e {
                Errno::NOTDIR => FsError::Invalid(format!("{} is not a folder", shown.display())),
                e => FsError::from_errno("open folder", &shown, e),
            })?;
        }
        Ok(dir)
    }
}

/// One entry of a folder listing; symlinks are reported as such, never resolved.
pub struct Listed {
    pub name: OsString,
    pub kind: FileType,
    pub size: Option<u64>,
}

impl Confinement {
    /// The entries of the asset folder `rel`, read through a confined handle (a folder swapped
    /// for a symlink is refused rather than listed), sorted by name.
    pub fn list(&self, rel: &Path) -> Result<Vec<Listed>, FsError> {
        use std::os::unix::ffi::OsStrExt;
        let shown = self.root.join(rel);
        let dir = open_dir_beneath(self.root_dir.as_fd(), rel).map_err(|e| FsError::from_errno("open", &shown, e))?;
        let entries = rustix::fs::Dir::read_from(&dir).map_err(|e| FsError::from_errno("list", &shown, e))?;
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| FsError::from_errno("list", &shown, e))?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            if name == "." || name == ".." {
                continue;
            }
            let name = name.to_owned();
            let (mut kind, mut size) = (entry.file_type(), None);
            // Regular files need their size; some filesystems do not report the type at all.
            if matches!(kind, FileType::RegularFile | FileType::Unknown) {
                let Ok(stat) = rustix::fs::statat(&dir, &name, AtFlags::SYMLINK_NOFOLLOW) else { continue };
                kind = FileType::from_raw_mode(stat.st_mode);
                size = u64::try_from(stat.st_size).ok();
            }
            out.push(Listed { name, kind, size });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

/// A regular file reached through its confined parent folder.
pub struct Entry {
    pub dir: OwnedFd,
    pub name: OsString,
    /// Relative to the asset.
    pub rel: PathBuf,
}

/// openat2 is Linux ≥ 5.6; older kernels and seccomp profiles that hide it answer ENOSYS.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// Open `rel` below `dir` without following any symlink and without leaving `dir`.
pub fn open_beneath(dir: BorrowedFd<'_>, rel: &Path, flags: OFlags, mode: Mode) -> Result<OwnedFd, Errno> {
    let flags = flags | OFlags::CLOEXEC;
    if !NO_OPENAT2.load(Ordering::Relaxed) {
        let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        let path = if rel.as_os_str().is_empty() { Path::new(".") } else { rel };
        loop {
            match rustix::fs::openat2(dir, path, flags, mode, resolve) {
                // EAGAIN: a concurrent rename made the kernel unsure; just retry.
                Err(Errno::AGAIN | Errno::INTR) => continue,
                Err(Errno::NOSYS) => {
                    NO_OPENAT2.store(true, Ordering::Relaxed);
                    break;
                }
                // Older container seccomp profiles answer EPERM for syscalls they do not know;
                // our read-only opens have no other reason for EPERM. The fallback is as safe.
                Err(Errno::PERM) => break,
                other => return other,
            }
        }
    }
    open_by_components(dir, rel, flags, mode)
}

/// The fallback: one `openat(O_NOFOLLOW)` per component, each relative to the folder handle
/// the previous one returned, so there is still no window between check and use.
fn open_by_components(dir: BorrowedFd<'_>, rel: &Path, flags: OFlags, mode: Mode) -> Result<OwnedFd, Errno> {
    let names: Vec<&OsStr> = rel
        .components()
        .map(|c| match c {
            Component::Normal(name) => Ok(name),
            Component::CurDir => Ok(OsStr::new(".")),
            _ => Err(Errno::XDEV),
        })
        .collect::<Result<_, _>>()?;
    let Some((last, parents)) = names.split_last() else {
        return rustix::fs::openat(dir, ".", flags, mode);
    };
    let mut current: Option<OwnedFd> = None;
    for name in parents {
        let at = current.as_ref().map_or(dir, |fd| fd.as_fd());
        let next = rustix::fs::openat(at, *name, dir_flags() | OFlags::NOFOLLOW, Mode::empty());
        current = Some(next.map_err(|e| symlink_or(at, name, e))?);
    }
    let at = current.as_ref().map_or(dir, |fd| fd.as_fd());
    rustix::fs::openat(at, *last, flags | OFlags::NOFOLLOW, mode).map_err(|e| symlink_or(at, last, e))
}

/// O_DIRECTORY|O_NOFOLLOW on a symlink may answer ENOTDIR; report it as the symlink it is.
fn symlink_or(dir: BorrowedFd<'_>, name: &OsStr, err: Errno) -> Errno {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => Errno::LOOP,
        _ => err,
    }
}

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC
}

/// A folder below `dir` (`""` is `dir` itself), confined like [`open_beneath`].
pub fn open_dir_beneath(dir: BorrowedFd<'_>, rel: &Path) -> Result<OwnedFd, Errno> {
    open_beneath(dir, rel, dir_flags(), Mode::empty())
}

/// The configured quarantine as an absolute path and a target. Inside the asset it is a path
/// below the asset handle and is never canonicalised (a symlink planted there must not be
/// trusted); outside, the operator's path is canonicalised once, as configuration.
fn configured_quarantine(root: &Path, quarantine: &str) -> (PathBuf, Target) {
    let q = Path::new(quarantine);
    let joined = lexical_normal(&root.join(q)); // an absolute `q` replaces the root
    if let Ok(rel) = joined.strip_prefix(root) {
        return (joined.clone(), Target { base: Base::Asset, rel: rel.to_path_buf() });
    }
    let canonical = canonical_prefix(&joined);
    match canonical.strip_prefix(root) {
        Ok(rel) => (canonical.clone(), Target { base: Base::Asset, rel: rel.to_path_buf() }),
        Err(_) => (canonical, Target { base: Base::Quarantine, rel: PathBuf::new() }),
    }
}

/// Resolve `.` and `..` without touching the filesystem.
fn lexical_normal(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Canonicalise the longest existing ancestor and append the rest.
fn canonical_prefix(path: &Path) -> PathBuf {
    let mut existing = path.to_path_buf();
    let mut rest = Vec::new();
    loop {
        if let Ok(c) = existing.canonicalize() {
            return rest.iter().rev().fold(c, |acc: PathBuf, name: &OsString| acc.join(name));
        }
        match (existing.file_name().map(OsStr::to_owned), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => return path.to_path_buf(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, tempfile::TempDir, Confinement) {
        let asset = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(asset.path().join("sub")).unwrap();
        std::fs::write(asset.path().join("sub/ok.txt"), b"ok").unwrap();
        std::fs::write(outside.path().join("secret.txt"), b"secret").unwrap();
        let root = asset.path().canonicalize().unwrap();
        let c = Confinement::new(root, "dsxconnect-quarantine").unwrap();
        (asset, outside, c)
    }

    fn open(c: &Confinement, location: &str) -> Result<std::fs::File, FsError> {
        c.open_file(&c.locate(location)?)
    }

    #[test]
    fn files_inside_open() {
        let (asset, _o, c) = setup();
        let abs = asset.path().canonicalize().unwrap().join("sub/ok.txt");
        assert!(open(&c, abs.to_str().unwrap()).is_ok());
        assert!(open(&c, "sub/ok.txt").is_ok());
        assert!(open(&c, "./sub/ok.txt").is_ok());
        assert!(matches!(open(&c, "sub/missing.txt"), Err(FsError::NotFound(_))));
        assert!(matches!(open(&c, "sub"), Err(FsError::NotFound(_))));
        assert!(matches!(open(&c, "sub/ok.txt/x"), Err(FsError::NotFound(_))));
        assert!(matches!(c.locate(""), Err(FsError::Invalid(_))));
    }

    #[test]
    fn traversal_absolute_and_symlinks_are_refused() {
        let (asset, outside, c) = setup();
        let traversal = format!("{}/sub/../../etc/passwd", asset.path().display());
        assert!(matches!(open(&c, &traversal), Err(FsError::DotDot(_))));
        assert!(matches!(open(&c, "../../etc/passwd"), Err(FsError::DotDot(_))));
        assert!(matches!(open(&c, "/etc/passwd"), Err(FsError::Outside(_))));
        std::os::unix::fs::symlink(outside.path().join("secret.txt"), asset.path().join("link.txt")).unwrap();
        assert!(matches!(open(&c, "link.txt"), Err(FsError::Symlink(_))));
        std::os::unix::fs::symlink(outside.path(), asset.path().join("linkdir")).unwrap();
        assert!(matches!(open(&c, "linkdir/secret.txt"), Err(FsError::Symlink(_))));
        assert!(matches!(c.item(Path::new("link.txt")), Err(FsError::Symlink(_))));
        assert!(matches!(c.item(Path::new("linkdir/secret.txt")), Err(FsError::Symlink(_))));
    }

    #[test]
    fn the_component_by_component_fallback_refuses_symlinks_too() {
        let (asset, outside, c) = setup();
        std::os::unix::fs::symlink(outside.path().join("secret.txt"), asset.path().join("link.txt")).unwrap();
        std::os::unix::fs::symlink(outside.path(), asset.path().join("linkdir")).unwrap();
        let fd = c.root_dir.as_fd();
        let read = OFlags::RDONLY | OFlags::NOFOLLOW;
        assert!(open_by_components(fd, Path::new("sub/ok.txt"), read, Mode::empty()).is_ok());
        assert_eq!(open_by_components(fd, Path::new("link.txt"), read, Mode::empty()).unwrap_err(), Errno::LOOP);
        let err = open_by_components(fd, Path::new("linkdir/secret.txt"), read, Mode::empty()).unwrap_err();
        assert_eq!(err, Errno::LOOP);
        assert_eq!(open_by_components(fd, Path::new("sub/none"), read, Mode::empty()).unwrap_err(), Errno::NOENT);
    }

    #[test]
    fn quarantine_destinations_are_confined() {
        let (asset, outside, c) = setup();
        let root = asset.path().canonicalize().unwrap();
        let t = c.target("dsxconnect-quarantine").unwrap();
        assert_eq!((t.base, t.rel), (Base::Asset, PathBuf::from("dsxconnect-quarantine")));
        let t = c.target(root.join("q2").to_str().unwrap()).unwrap();
        assert_eq!((t.base, t.rel), (Base::Asset, PathBuf::from("q2")));
        assert!(matches!(c.target("/tmp/elsewhere-q"), Err(FsError::Outside(_))));
        assert!(matches!(c.target("../escape"), Err(FsError::DotDot(_))));

        // A quarantine outside the asset is its own base; requests may go below it.
        let q = outside.path().canonicalize().unwrap().join("q");
        let c = Confinement::new(root.clone(), q.to_str().unwrap()).unwrap();
        let t = c.target(q.to_str().unwrap()).unwrap();
        assert_eq!((t.base, t.rel.as_path()), (Base::Quarantine, Path::new("")));
        let t = c.target(q.join("day1").to_str().unwrap()).unwrap();
        assert_eq!((t.base, t.rel.as_path()), (Base::Quarantine, Path::new("day1")));
        let dir = c.create_dirs(&t, Path::new("a/b")).unwrap();
        assert!(q.join("day1/a/b").is_dir());
        drop(dir);

        // Configured through a symlinked path: requests naming it that way are accepted too.
        let alias = outside.path().join("alias");
        std::os::unix::fs::symlink(&q, &alias).unwrap();
        let c = Confinement::new(asset.path().canonicalize().unwrap(), alias.to_str().unwrap()).unwrap();
        assert_eq!(c.quarantine(), q);
        let t = c.target(alias.to_str().unwrap()).unwrap();
        assert_eq!((t.base, t.rel.as_path()), (Base::Quarantine, Path::new("")));
    }

    #[test]
    fn a_quarantine_inside_the_asset_is_not_canonicalised_through_a_planted_symlink() {
        let asset = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root = asset.path().canonicalize().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("dsxconnect-quarantine")).unwrap();
        let c = Confinement::new(root.clone(), "dsxconnect-quarantine").unwrap();
        assert_eq!(c.quarantine(), root.join("dsxconnect-quarantine"));
        let t = c.target("dsxconnect-quarantine").unwrap();
        assert!(matches!(c.create_dirs(&t, Path::new("sub")), Err(FsError::Symlink(_))));
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }
}
