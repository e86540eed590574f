//! Item actions on files: delete, move to quarantine (never overwriting), tag (sidecar), movetag.
//! Every step goes through the confined handles of [`Confinement`]: no symlink is followed.

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use dsx_connector::{ActionOutcome, ActionPlan, RepoError};
use dsx_model::{ItemAction, ScanRequest};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags};
use rustix::io::Errno;
use serde_json::json;

use crate::confine::{Confinement, Entry, FsError};
use crate::SIDECAR_SUFFIX;

pub fn apply(confine: &Confinement, request: &ScanRequest, plan: &ActionPlan) -> Result<ActionOutcome, RepoError> {
    let rel = confine.locate(&request.location)?;
    let entry = confine.item(&rel)?;
    let shown = confine.root().join(&rel);
    match plan.action {
        ItemAction::Delete => {
            // unlinkat never follows the last component, and `item` refused symlinks before it.
            rustix::fs::unlinkat(&entry.dir, &entry.name, AtFlags::empty())
                .map_err(|e| FsError::from_errno("delete", &shown, e))?;
            Ok(outcome("File deleted.", &shown))
        }
        ItemAction::Move => {
            let moved = move_to_quarantine(confine, &entry, plan, keep_relative_path(request))?;
            Ok(outcome("File moved", &moved.shown))
        }
        ItemAction::Tag => {
            write_sidecar(entry.dir.as_fd(), &entry.name, &shown, request)?;
            Ok(outcome("File tagged", &shown))
        }
        ItemAction::MoveTag => {
            let moved = move_to_quarantine(confine, &entry, plan, keep_relative_path(request))?;
            write_sidecar(moved.dir.as_fd(), &moved.name, &moved.shown, request)?;
            Ok(outcome("File moved and tagged", &moved.shown))
        }
        ItemAction::Nothing | ItemAction::NotImplemented => Ok(outcome("No action taken", &shown)),
    }
}

fn outcome(message: &str, path: &Path) -> ActionOutcome {
    ActionOutcome { message: message.into(), description: path.display().to_string() }
}

/// Python 1.x keeps the path relative to the asset under the quarantine folder; only an
/// explicit `requested_action.details.quarantine_target.preserve_relative_path: false`
/// flattens. Read from the request because the framework's plan cannot tell "absent" from false.
fn keep_relative_path(request: &ScanRequest) -> bool {
    request
        .requested_action
        .as_ref()
        .and_then(|r| r.details.as_ref())
        .and_then(|d| d.pointer("/quarantine_target/preserve_relative_path"))
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(true)
}

/// Where a moved file ended up.
struct Moved {
    dir: OwnedFd,
    name: OsString,
    shown: PathBuf,
}

/// Move into the quarantine folder without ever replacing an existing file: a taken name gets
/// a suffix (`name.1.ext`). The rename is between the two confined folder handles.
fn move_to_quarantine(confine: &Confinement, entry: &Entry, plan: &ActionPlan, keep: bool) -> Result<Moved, FsError> {
    let target = confine.target(&plan.move_target)?;
    let sub = if keep { entry.rel.parent().unwrap_or(Path::new("")) } else { Path::new("") };
    let dir = confine.create_dirs(&target, sub)?;
    let folder = confine.display(target.base, &target.rel.join(sub));
    for n in 0..10_000u32 {
        let name = with_suffix(&entry.name, n);
        let shown = folder.join(&name);
        if place(entry, dir.as_fd(), &name, &shown)? {
            return Ok(Moved { dir, name, shown });
        }
    }
    Err(FsError::Io {
        op: "move",
        path: folder.join(&entry.name).display().to_string(),
        source: std::io::Error::other("no free name in the quarantine folder"),
    })
}

/// Put the entry at `dir/name` unless that name is taken (`Ok(false)`).
fn place(entry: &Entry, dir: BorrowedFd<'_>, name: &OsStr, shown: &Path) -> Result<bool, FsError> {
    // RENAME_NOREPLACE makes "never overwrite" atomic.
    match rustix::fs::renameat_with(&entry.dir, &entry.name, dir, name, RenameFlags::NOREPLACE) {
        Ok(()) => return Ok(true),
        Err(Errno::EXIST) => return Ok(false),
        Err(Errno::XDEV) => return copy_across(entry, dir, name, shown),
        // Filesystems without RENAME_NOREPLACE: link (fails if the name exists), then unlink.
        Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {}
        Err(e) => return Err(FsError::from_errno("move to", shown, e)),
    }
    match rustix::fs::linkat(&entry.dir, &entry.name, dir, name, AtFlags::empty()) {
        Ok(()) => {
            rustix::fs::unlinkat(&entry.dir, &entry.name, AtFlags::empty())
                .map_err(|e| FsError::from_errno("remove original", shown, e))?;
            Ok(true)
        }
        Err(Errno::EXIST) => Ok(false),
        Err(Errno::XDEV | Errno::PERM | Errno::MLINK | Errno::OPNOTSUPP) => copy_across(entry, dir, name, shown),
        Err(e) => Err(FsError::from_errno("move to", shown, e)),
    }
}

/// Across filesystems: copy into a newly created file (O_EXCL, never through a symlink),
/// fsync it, then unlink the original.
fn copy_across(entry: &Entry, dir: BorrowedFd<'_>, name: &OsStr, shown: &Path) -> Result<bool, FsError> {
    let err = |op| move |e: Errno| FsError::from_errno(op, shown, e);
    let src = rustix::fs::openat(
        &entry.dir,
        &entry.name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(err("open original"))?;
    let stat = rustix::fs::fstat(&src).map_err(err("stat original"))?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Err(FsError::NotAFile(shown.display().to_string()));
    }
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let dst = match rustix::fs::openat(dir, name, flags, Mode::from_raw_mode(stat.st_mode & 0o777)) {
        Ok(fd) => fd,
        Err(Errno::EXIST) => return Ok(false),
        Err(e) => return Err(err("create")(e)),
    };
    let (mut src, mut dst) = (std::fs::File::from(src), std::fs::File::from(dst));
    if let Err(source) = std::io::copy(&mut src, &mut dst).and_then(|_| dst.sync_all()) {
        let _ = rustix::fs::unlinkat(dir, name, AtFlags::empty());
        return Err(FsError::Io { op: "copy to", path: shown.display().to_string(), source });
    }
    // The new name must be durable before the original goes.
    let _ = rustix::fs::fsync(dir);
    rustix::fs::unlinkat(&entry.dir, &entry.name, AtFlags::empty()).map_err(err("remove original"))?;
    Ok(true)
}

/// `name.ext` → `name.1.ext` (or `name.1` without an extension); `n == 0` is the name itself.
fn with_suffix(name: &OsStr, n: u32) -> OsString {
    if n == 0 {
        return name.to_owned();
    }
    let path = Path::new(name);
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    match path.extension() {
        Some(ext) => format!("{stem}.{n}.{}", ext.to_string_lossy()).into(),
        None => format!("{stem}.{n}").into(),
    }
}

/// The verdict recorded beside the file, as `<file>.dsx.tags.json` like Python 1.x (object
/// stores use object tags instead). Opened with O_NOFOLLOW in the item's confined folder, and
/// only an existing regular file with no other hard link is overwritten.
fn write_sidecar(dir: BorrowedFd<'_>, item: &OsStr, shown: &Path, request: &ScanRequest) -> Result<(), FsError> {
    let mut name = item.to_owned();
    name.push(SIDECAR_SUFFIX);
    let mut sidecar_path = shown.as_os_str().to_owned();
    sidecar_path.push(SIDECAR_SUFFIX);
    let sidecar_path = PathBuf::from(sidecar_path);
    let shown_sidecar = sidecar_path.display().to_string();
    let at = sidecar_path.as_path();
    let err = |op| move |e: Errno| FsError::from_errno(op, at, e);

    // O_NONBLOCK: a planted FIFO must not block the open; it is refused below.
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = match rustix::fs::openat(dir, &name, flags, Mode::from_raw_mode(0o644)) {
        Ok(fd) => fd,
        Err(Errno::ISDIR | Errno::NXIO) => return Err(FsError::NotAFile(shown_sidecar)),
        Err(e) => return Err(err("open tag")(e)),
    };
    let stat = rustix::fs::fstat(&fd).map_err(err("stat tag"))?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Err(FsError::NotAFile(shown_sidecar));
    }
    if stat.st_nlink > 1 {
        // A hard link planted under the sidecar name may point at a file outside the asset.
        return Err(FsError::HardLinked(shown_sidecar));
    }
    let tags = request.requested_action.as_ref().and_then(|r| r.tags.clone()).unwrap_or_default();
    let body = json!({
        "Verdict": "Malicious",
        "tagged_by": "dsx-connect",
        "tagged_at": dsx_util::unix_now(),
        "scan_job_id": request.scan_job_id,
        "tags": tags,
    });
    rustix::fs::ftruncate(&fd, 0).map_err(err("truncate tag"))?;
    let mut file = std::fs::File::from(fd);
    file.write_all(&serde_json::to_vec_pretty(&body).expect("json"))
        .and_then(|()| file.sync_data())
        .map_err(|source| FsError::Io { op: "write tag", path: shown_sidecar, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixture {
        _dir: tempfile::TempDir,
        root: PathBuf,
        confine: Confinement,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/bad.exe"), b"evil").unwrap();
        let confine = Confinement::new(root.clone(), "dsxconnect-quarantine").unwrap();
        Fixture { _dir: dir, root, confine }
    }

    fn plan(action: ItemAction) -> ActionPlan {
        ActionPlan { action, move_target: "dsxconnect-quarantine".into(), preserve_relative_path: false }
    }

    fn request(path: &Path) -> ScanRequest {
        ScanRequest::new(path.to_str().unwrap(), "bad.exe")
    }

    /// A request that opts out of keeping the relative path (Python's `quarantine_target`).
    fn flat_request(path: &Path) -> ScanRequest {
        let mut r = request(path);
        r.requested_action = Some(dsx_model::RequestedAction {
            details: Some(json!({ "quarantine_target": { "preserve_relative_path": false } })),
            ..Default::default()
        });
        r
    }

    #[test]
    fn delete_removes_the_file() {
        let f = fixture();
        let p = f.root.join("sub/bad.exe");
        let out = apply(&f.confine, &request(&p), &plan(ItemAction::Delete)).unwrap();
        assert_eq!(out.message, "File deleted.");
        assert!(!p.exists());
    }

    #[test]
    fn move_keeps_the_relative_path_by_default_and_never_overwrites() {
        let f = fixture();
        let p = f.root.join("sub/bad.exe");
        let q = f.root.join("dsxconnect-quarantine");
        std::fs::create_dir_all(q.join("sub")).unwrap();
        std::fs::write(q.join("sub/bad.exe"), b"already here").unwrap();
        let out = apply(&f.confine, &request(&p), &plan(ItemAction::Move)).unwrap();
        assert_eq!(out.message, "File moved");
        assert!(!p.exists());
        assert_eq!(out.description, q.join("sub/bad.1.exe").display().to_string());
        assert_eq!(std::fs::read(q.join("sub/bad.exe")).unwrap(), b"already here", "existing file untouched");
        assert_eq!(std::fs::read(q.join("sub/bad.1.exe")).unwrap(), b"evil");
    }

    #[test]
    fn move_flattens_on_explicit_opt_out() {
        let f = fixture();
        let p = f.root.join("sub/bad.exe");
        let q = f.root.join("dsxconnect-quarantine");
        std::fs::create_dir_all(&q).unwrap();
        std::fs::write(q.join("bad.exe"), b"already here").unwrap();
        let out = apply(&f.confine, &flat_request(&p), &plan(ItemAction::Move)).unwrap();
        assert_eq!(out.description, q.join("bad.1.exe").display().to_string());
        assert_eq!(std::fs::read(q.join("bad.exe")).unwrap(), b"already here");
        assert_eq!(std::fs::read(q.join("bad.1.exe")).unwrap(), b"evil");
        assert!(!q.join("sub").exists());
    }

    #[test]
    fn move_to_a_requested_folder_inside_the_asset() {
        let f = fixture();
        let p = f.root.join("sub/bad.exe");
        let mut plan = plan(ItemAction::Move);
        plan.move_target = f.root.join("elsewhere/q").display().to_string();
        apply(&f.confine, &request(&p), &plan).unwrap();
        assert_eq!(std::fs::read(f.root.join("elsewhere/q/sub/bad.exe")).unwrap(), b"evil");
    }

    #[test]
    fn tag_and_movetag_write_a_python_compatible_sidecar() {
        let f = fixture();
        let p = f.root.join("sub/bad.exe");
        let out = apply(&f.confine, &request(&p), &plan(ItemAction::Tag)).unwrap();
        assert_eq!(out.message, "File tagged");
        let sidecar: serde_json::Value =
            serde_json::from_slice(&std::fs::read(f.root.join("sub/bad.exe.dsx.tags.json")).unwrap()).unwrap();
        assert_eq!(sidecar["Verdict"], "Malicious");
        assert!(p.exists(), "tag leaves the file in place");
        // Tagging again rewrites our own sidecar (shorter content leaves no trailing bytes).
        std::fs::write(f.root.join("sub/bad.exe.dsx.tags.json"), vec![b' '; 4096]).unwrap();
        apply(&f.confine, &request(&p), &plan(ItemAction::Tag)).unwrap();
        let again = std::fs::read(f.root.join("sub/bad.exe.dsx.tags.json")).unwrap();
        assert!(serde_json::from_slice::<serde_json::Value>(&again).is_ok());

        let out = apply(&f.confine, &request(&p), &plan(ItemAction::MoveTag)).unwrap();
        assert_eq!(out.message, "File moved and tagged");
        let q = f.root.join("dsxconnect-quarantine/sub");
        assert!(q.join("bad.exe").exists() && q.join("bad.exe.dsx.tags.json").exists());
    }

    #[test]
    fn a_hard_linked_sidecar_is_not_written_through() {
        let f = fixture();
        let outside = tempfile::tempdir_in(f.root.parent().unwrap()).unwrap();
        let victim = outside.path().join("victim.txt");
        std::fs::write(&victim, b"keep").unwrap();
        std::fs::hard_link(&victim, f.root.join("sub/bad.exe.dsx.tags.json")).unwrap();
        let err = apply(&f.confine, &request(&f.root.join("sub/bad.exe")), &plan(ItemAction::Tag)).unwrap_err();
        assert!(matches!(err, RepoError::Forbidden(_)), "{err:?}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
    }

    #[test]
    fn a_fifo_is_neither_read_nor_tagged_and_does_not_block() {
        let f = fixture();
        let fifo = f.root.join("sub/bad.exe.dsx.tags.json");
        rustix::fs::mknodat(rustix::fs::CWD, &fifo, FileType::Fifo, Mode::from_raw_mode(0o644), 0).unwrap();
        let err = apply(&f.confine, &request(&f.root.join("sub/bad.exe")), &plan(ItemAction::Tag)).unwrap_err();
        assert!(matches!(err, RepoError::Forbidden(_)), "{err:?}");
        let err = apply(&f.confine, &request(&fifo), &plan(ItemAction::Delete)).unwrap_err();
        assert!(matches!(err, RepoError::NotFound(_)), "{err:?}");
        assert!(matches!(f.confine.open_file(Path::new("sub/bad.exe.dsx.tags.json")), Err(FsError::NotFound(_))));
    }

    #[test]
    fn move_across_filesystems_copies_without_overwriting() {
        use std::os::unix::fs::MetadataExt;
        let f = fixture();
        let shm = Path::new("/dev/shm");
        let other_fs = shm.metadata().map(|m| m.dev() != f.root.metadata().unwrap().dev()).unwrap_or(false);
        if !other_fs {
            eprintln!("skipped: no second filesystem at /dev/shm");
            return;
        }
        let q = tempfile::tempdir_in(shm).unwrap();
        let confine = Confinement::new(f.root.clone(), q.path().to_str().unwrap()).unwrap();
        let mut plan = plan(ItemAction::MoveTag);
        plan.move_target = q.path().display().to_string();
        std::fs::create_dir_all(q.path().join("sub")).unwrap();
        std::fs::write(q.path().join("sub/bad.exe"), b"already here").unwrap();
        let p = f.root.join("sub/bad.exe");
        let out = apply(&confine, &request(&p), &plan).unwrap();
        assert_eq!(out.description, q.path().join("sub/bad.1.exe").display().to_string());
        assert!(!p.exists(), "the original is removed after the copy");
        assert_eq!(std::fs::read(q.path().join("sub/bad.1.exe")).unwrap(), b"evil");
        assert_eq!(std::fs::read(q.path().join("sub/bad.exe")).unwrap(), b"already here");
        assert!(q.path().join("sub/bad.1.exe.dsx.tags.json").exists());
    }

    #[test]
    fn suffixes() {
        assert_eq!(with_suffix(OsStr::new("a.tar.gz"), 0), "a.tar.gz");
        assert_eq!(with_suffix(OsStr::new("a.tar.gz"), 2), "a.tar.2.gz");
        assert_eq!(with_suffix(OsStr::new("README"), 1), "README.1");
    }
}
