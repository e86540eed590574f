//! Item actions on files: delete, move to quarantine (never overwriting), tag (sidecar), movetag.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use dsx_connector::{ActionOutcome, ActionPlan, RepoError};
use dsx_model::{ItemAction, ScanRequest};
use serde_json::json;

use crate::confine::Confinement;
use crate::SIDECAR_SUFFIX;

fn io(context: &str, path: &Path, err: std::io::Error) -> RepoError {
    RepoError::Io(format!("{context} {}: {err}", path.display()))
}

pub fn apply(confine: &Confinement, request: &ScanRequest, plan: &ActionPlan) -> Result<ActionOutcome, RepoError> {
    let path = confine.resolve_item(&request.location)?;
    match plan.action {
        ItemAction::Delete => {
            std::fs::remove_file(&path).map_err(|e| io("delete", &path, e))?;
            Ok(outcome("File deleted", &path))
        }
        ItemAction::Move => {
            let dest = move_to_quarantine(confine, &path, plan)?;
            Ok(outcome("File moved", &dest))
        }
        ItemAction::Tag => {
            write_sidecar(&path, request)?;
            Ok(outcome("File tagged", &path))
        }
        ItemAction::MoveTag => {
            let dest = move_to_quarantine(confine, &path, plan)?;
            write_sidecar(&dest, request)?;
            Ok(outcome("File moved and tagged", &dest))
        }
        ItemAction::Nothing | ItemAction::NotImplemented => Ok(outcome("No action taken", &path)),
    }
}

fn outcome(message: &str, path: &Path) -> ActionOutcome {
    ActionOutcome { message: message.into(), description: path.display().to_string() }
}

/// Move into the quarantine folder without ever replacing an existing file: the file is
/// hard-linked to a free name (link fails if the name exists) and then unlinked; across
/// filesystems it is copied to a newly created file instead.
fn move_to_quarantine(confine: &Confinement, path: &Path, plan: &ActionPlan) -> Result<PathBuf, RepoError> {
    let quarantine = confine.quarantine_for(&plan.move_target)?;
    let name = if plan.preserve_relative_path {
        path.strip_prefix(confine.root()).map(Path::to_path_buf).unwrap_or_else(|_| file_name(path))
    } else {
        file_name(path)
    };
    let wanted = quarantine.join(name);
    let parent = wanted.parent().unwrap_or(&quarantine).to_path_buf();
    std::fs::create_dir_all(&parent).map_err(|e| io("create quarantine", &parent, e))?;
    for n in 0..10_000u32 {
        let candidate = if n == 0 { wanted.clone() } else { with_suffix(&wanted, n) };
        match std::fs::hard_link(path, &candidate) {
            Ok(()) => {
                std::fs::remove_file(path).map_err(|e| io("remove original", path, e))?;
                return Ok(candidate);
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(_) => match copy_new(path, &candidate) {
                Ok(()) => {
                    std::fs::remove_file(path).map_err(|e| io("remove original", path, e))?;
                    return Ok(candidate);
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io("move to", &candidate, e)),
            },
        }
    }
    Err(RepoError::Io(format!("no free name in quarantine for {}", wanted.display())))
}

fn file_name(path: &Path) -> PathBuf {
    PathBuf::from(path.file_name().unwrap_or_default())
}

/// `name.ext` → `name.1.ext` (or `name.1` without an extension).
fn with_suffix(path: &Path, n: u32) -> PathBuf {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let name = match path.extension() {
        Some(ext) => format!("{stem}.{n}.{}", ext.to_string_lossy()),
        None => format!("{stem}.{n}"),
    };
    path.with_file_name(name)
}

fn copy_new(from: &Path, to: &Path) -> std::io::Result<()> {
    let mut src = std::fs::File::open(from)?;
    let mut dst = std::fs::OpenOptions::new().write(true).create_new(true).open(to)?;
    std::io::copy(&mut src, &mut dst)?;
    dst.sync_all()
}

/// The verdict recorded beside the file (object stores use object tags instead).
fn write_sidecar(path: &Path, request: &ScanRequest) -> Result<(), RepoError> {
    let mut sidecar = path.as_os_str().to_owned();
    sidecar.push(SIDECAR_SUFFIX);
    let tags = request.requested_action.as_ref().and_then(|r| r.tags.clone()).unwrap_or_default();
    let body = json!({
        "verdict": "Malicious",
        "tagged_by": "dsx-connect",
        "tagged_at": dsx_connector_now(),
        "scan_job_id": request.scan_job_id,
        "tags": tags,
    });
    let sidecar = PathBuf::from(sidecar);
    std::fs::write(&sidecar, serde_json::to_vec_pretty(&body).expect("json")).map_err(|e| io("write tag", &sidecar, e))
}

fn dsx_connector_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
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
        let confine = Confinement::new(root.clone(), "dsxconnect-quarantine");
        Fixture { _dir: dir, root, confine }
    }

    fn plan(action: ItemAction, preserve: bool) -> ActionPlan {
        ActionPlan { action, move_target: "dsxconnect-quarantine".into(), preserve_relative_path: preserve }
    }

    fn request(path: &Path) -> ScanRequest {
        ScanRequest::new(path.to_str().unwrap(), "bad.exe")
    }

    #[test]
    fn delete_removes_the_file() {
        let f = fixture();
        let p = f.root.join("sub/bad.exe");
        apply(&f.confine, &request(&p), &plan(ItemAction::Delete, false)).unwrap();
        assert!(!p.exists());
    }

    #[test]
    fn move_never_overwrites_and_can_keep_the_relative_path() {
        let f = fixture();
        let p = f.root.join("sub/bad.exe");
        let q = f.root.join("dsxconnect-quarantine");
        std::fs::create_dir_all(&q).unwrap();
        std::fs::write(q.join("bad.exe"), b"already here").unwrap();
        let out = apply(&f.confine, &request(&p), &plan(ItemAction::Move, false)).unwrap();
        assert!(!p.exists());
        assert_eq!(out.description, q.join("bad.1.exe").display().to_string());
        assert_eq!(std::fs::read(q.join("bad.exe")).unwrap(), b"already here", "existing file untouched");
        assert_eq!(std::fs::read(q.join("bad.1.exe")).unwrap(), b"evil");

        std::fs::write(&p, b"evil2").unwrap();
        apply(&f.confine, &request(&p), &plan(ItemAction::Move, true)).unwrap();
        assert_eq!(std::fs::read(q.join("sub/bad.exe")).unwrap(), b"evil2");
    }

    #[test]
    fn tag_and_movetag_write_a_sidecar() {
        let f = fixture();
        let p = f.root.join("sub/bad.exe");
        apply(&f.confine, &request(&p), &plan(ItemAction::Tag, false)).unwrap();
        let sidecar: serde_json::Value =
            serde_json::from_slice(&std::fs::read(f.root.join("sub/bad.exe.dsxconnect.json")).unwrap()).unwrap();
        assert_eq!(sidecar["verdict"], "Malicious");
        assert!(p.exists(), "tag leaves the file in place");
        apply(&f.confine, &request(&p), &plan(ItemAction::MoveTag, false)).unwrap();
        let q = f.root.join("dsxconnect-quarantine");
        assert!(q.join("bad.exe").exists() && q.join("bad.exe.dsxconnect.json").exists());
    }

    #[test]
    fn actions_outside_the_asset_change_nothing() {
        let f = fixture();
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim.txt");
        std::fs::write(&victim, b"keep").unwrap();
        for action in [ItemAction::Delete, ItemAction::Move, ItemAction::Tag] {
            let err = apply(&f.confine, &request(&victim), &plan(action, false)).unwrap_err();
            assert!(matches!(err, RepoError::Forbidden(_)));
        }
        std::os::unix::fs::symlink(&victim, f.root.join("sub/link.txt")).unwrap();
        let err =
            apply(&f.confine, &request(&f.root.join("sub/link.txt")), &plan(ItemAction::Delete, false)).unwrap_err();
        assert!(matches!(err, RepoError::Forbidden(_)));
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        let mut escape = plan(ItemAction::Move, false);
        escape.move_target = outside.path().display().to_string();
        let err = apply(&f.confine, &request(&f.root.join("sub/bad.exe")), &escape).unwrap_err();
        assert!(matches!(err, RepoError::Forbidden(_)));
        assert!(f.root.join("sub/bad.exe").exists());
    }
}
