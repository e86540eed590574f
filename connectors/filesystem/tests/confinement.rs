//! Symlinks and `..` planted in the asset or in the quarantine tree never let `read_file` or an
//! item action read, write, create, rename or delete anything outside the asset and the
//! quarantine folder. Real files in temporary folders, through the public `Repository` API.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use dsx_connector::{ActionPlan, RepoError, Repository};
use dsx_model::{ItemAction, RequestedAction, ScanRequest};
use filesystem_connector::{FilesystemRepo, SIDECAR_SUFFIX};
use serde_json::json;

const QUARANTINE: &str = "dsxconnect-quarantine";

struct Fixture {
    _asset: tempfile::TempDir,
    outside_dir: tempfile::TempDir,
    root: PathBuf,
    repo: FilesystemRepo,
}

impl Fixture {
    /// `sub/bad.exe` in the asset, `outside/secret.txt` next to it (not inside).
    fn new() -> Self {
        let asset = tempfile::tempdir().unwrap();
        let outside_dir = tempfile::tempdir().unwrap();
        let root = asset.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/bad.exe"), b"evil").unwrap();
        std::fs::write(outside_dir.path().join("secret.txt"), b"OUTSIDE").unwrap();
        let repo = FilesystemRepo::new(root.to_str().unwrap(), QUARANTINE).unwrap();
        Self { _asset: asset, outside_dir, root, repo }
    }

    fn outside(&self) -> PathBuf {
        self.outside_dir.path().canonicalize().unwrap()
    }

    fn quarantine(&self) -> PathBuf {
        self.root.join(QUARANTINE)
    }

    async fn action(&self, location: &Path, action: ItemAction, keep: bool) -> Result<String, RepoError> {
        let mut request = ScanRequest::new(location.to_str().unwrap(), "bad.exe");
        request.requested_action = Some(RequestedAction {
            details: Some(json!({ "quarantine_target": { "preserve_relative_path": keep } })),
            ..Default::default()
        });
        let plan = ActionPlan { action, move_target: QUARANTINE.into(), preserve_relative_path: keep };
        self.repo.item_action(&request, &plan).await.map(|o| o.description)
    }

    async fn read(&self, location: &str) -> Result<Vec<u8>, RepoError> {
        let (body, _) = self.repo.open(&ScanRequest::new(location, "x")).await?;
        Ok(axum::body::to_bytes(body, usize::MAX).await.unwrap().to_vec())
    }
}

fn symlink(target: &Path, link: &Path) {
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(target, link).unwrap();
}

fn sidecar(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(SIDECAR_SUFFIX);
    PathBuf::from(name)
}

/// Everything under `dir`, so a test can assert that nothing was created there.
fn listing(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
            out.push(e.path());
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn tag_never_writes_through_a_symlinked_sidecar() {
    let f = Fixture::new();
    let item = f.root.join("sub/bad.exe");
    symlink(&f.outside().join("secret.txt"), &sidecar(&item));
    let err = f.action(&item, ItemAction::Tag, true).await.unwrap_err();
    assert!(matches!(err, RepoError::Forbidden(_)), "{err:?}");
    assert_eq!(std::fs::read(f.outside().join("secret.txt")).unwrap(), b"OUTSIDE");
    // A sidecar symlink to a file that does not exist yet creates nothing outside either.
    std::fs::remove_file(sidecar(&item)).unwrap();
    symlink(&f.outside().join("created.txt"), &sidecar(&item));
    assert!(f.action(&item, ItemAction::Tag, true).await.is_err());
    assert!(!f.outside().join("created.txt").exists());
}

#[tokio::test]
async fn movetag_never_writes_through_a_symlinked_sidecar_in_the_quarantine() {
    let f = Fixture::new();
    let item = f.root.join("sub/bad.exe");
    // Where the moved file will land (relative path kept) and its sidecar, pre-planted.
    symlink(&f.outside().join("secret.txt"), &sidecar(&f.quarantine().join("sub/bad.exe")));
    let _ = f.action(&item, ItemAction::MoveTag, true).await;
    assert_eq!(std::fs::read(f.outside().join("secret.txt")).unwrap(), b"OUTSIDE");
    // Flattened layout, same trap.
    std::fs::write(&item, b"evil").unwrap();
    symlink(&f.outside().join("secret.txt"), &sidecar(&f.quarantine().join("bad.exe")));
    let _ = f.action(&item, ItemAction::MoveTag, false).await;
    assert_eq!(std::fs::read(f.outside().join("secret.txt")).unwrap(), b"OUTSIDE");
    assert_eq!(listing(&f.outside()), [f.outside().join("secret.txt")]);
}

#[tokio::test]
async fn keeping_the_relative_path_never_follows_a_symlinked_quarantine_folder() {
    let f = Fixture::new();
    let item = f.root.join("sub/bad.exe");
    symlink(&f.outside(), &f.quarantine().join("sub"));
    let err = f.action(&item, ItemAction::Move, true).await.unwrap_err();
    assert!(matches!(err, RepoError::Forbidden(_)), "{err:?}");
    assert_eq!(listing(&f.outside()), [f.outside().join("secret.txt")], "nothing created outside");
    assert_eq!(std::fs::read(&item).unwrap(), b"evil", "the item stays in place");

    // The quarantine folder itself a symlink: same.
    std::fs::remove_file(f.quarantine().join("sub")).unwrap();
    std::fs::remove_dir(f.quarantine()).unwrap();
    symlink(&f.outside(), &f.quarantine());
    let err = f.action(&item, ItemAction::Move, false).await.unwrap_err();
    assert!(matches!(err, RepoError::Forbidden(_)), "{err:?}");
    assert_eq!(listing(&f.outside()), [f.outside().join("secret.txt")]);
}

#[tokio::test]
async fn delete_never_follows_a_symlink() {
    let f = Fixture::new();
    // To a file outside.
    let link = f.root.join("sub/link.exe");
    symlink(&f.outside().join("secret.txt"), &link);
    let err = f.action(&link, ItemAction::Delete, true).await.unwrap_err();
    assert!(matches!(err, RepoError::Forbidden(_)), "{err:?}");
    assert!(f.outside().join("secret.txt").exists());
    // To a file inside the asset: refused as well, the target stays.
    let inner = f.root.join("alias.exe");
    symlink(&f.root.join("sub/bad.exe"), &inner);
    let err = f.action(&inner, ItemAction::Delete, true).await.unwrap_err();
    assert!(matches!(err, RepoError::Forbidden(_)), "{err:?}");
    assert!(f.root.join("sub/bad.exe").exists());
    // Through a symlinked parent folder (inside or outside).
    symlink(&f.root.join("sub"), &f.root.join("subalias"));
    let err = f.action(&f.root.join("subalias/bad.exe"), ItemAction::Delete, true).await.unwrap_err();
    assert!(matches!(err, RepoError::Forbidden(_)), "{err:?}");
    assert!(f.root.join("sub/bad.exe").exists());
    symlink(&f.outside(), &f.root.join("out"));
    let err = f.action(&f.root.join("out/secret.txt"), ItemAction::Delete, true).await.unwrap_err();
    assert!(matches!(err, RepoError::Forbidden(_)), "{err:?}");
    assert!(f.outside().join("secret.txt").exists());
}

#[tokio::test]
async fn move_and_tag_refuse_a_symlinked_item() {
    let f = Fixture::new();
    let inner = f.root.join("alias.exe");
    symlink(&f.root.join("sub/bad.exe"), &inner);
    for action in [ItemAction::Move, ItemAction::Tag, ItemAction::MoveTag] {
        let err = f.action(&inner, action, true).await.unwrap_err();
        assert!(matches!(err, RepoError::Forbidden(_)), "{action:?}: {err:?}");
    }
    assert_eq!(std::fs::read(f.root.join("sub/bad.exe")).unwrap(), b"evil");
    assert!(!sidecar(&f.root.join("sub/bad.exe")).exists() && !sidecar(&inner).exists());
}

#[tokio::test]
async fn read_file_never_follows_a_symlink() {
    let f = Fixture::new();
    assert_eq!(f.read("sub/bad.exe").await.unwrap(), b"evil");
    symlink(&f.outside().join("secret.txt"), &f.root.join("out.txt"));
    symlink(&f.outside(), &f.root.join("outdir"));
    symlink(&f.root.join("sub/bad.exe"), &f.root.join("alias.exe"));
    symlink(&f.root.join("sub"), &f.root.join("subalias"));
    for location in ["out.txt", "outdir/secret.txt", "alias.exe", "subalias/bad.exe"] {
        let err = f.read(location).await.unwrap_err();
        assert!(matches!(err, RepoError::Forbidden(_)), "{location}: {err:?}");
        let absolute = f.root.join(location);
        let err = f.read(absolute.to_str().unwrap()).await.unwrap_err();
        assert!(matches!(err, RepoError::Forbidden(_)), "{location}: {err:?}");
    }
}

#[tokio::test]
async fn dot_dot_and_paths_elsewhere_are_forbidden() {
    let f = Fixture::new();
    let outside = f.outside().join("secret.txt");
    let via_dots = format!("{}/sub/../../{}", f.root.display(), outside.strip_prefix("/").unwrap().display());
    for location in ["sub/../sub/bad.exe", "../secret.txt", via_dots.as_str(), outside.to_str().unwrap()] {
        assert!(matches!(f.read(location).await, Err(RepoError::Forbidden(_))), "{location}");
        for action in [ItemAction::Delete, ItemAction::Move, ItemAction::Tag] {
            let err = f.action(Path::new(location), action, true).await.unwrap_err();
            assert!(matches!(err, RepoError::Forbidden(_)), "{location} {action:?}: {err:?}");
        }
    }
    assert!(outside.exists() && f.root.join("sub/bad.exe").exists());
    assert!(matches!(f.read("sub/missing.exe").await, Err(RepoError::NotFound(_))));
    assert!(matches!(f.action(&f.root.join("nope.exe"), ItemAction::Delete, true).await, Err(RepoError::NotFound(_))));
}

/// A folder swapped for a symlink to outside while reads are in flight: no read may ever
/// return the outside content (a check-then-open implementation loses this race).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapping_a_folder_for_a_symlink_never_leaks_outside_content() {
    let f = Arc::new(Fixture::new());
    std::fs::create_dir(f.root.join("d")).unwrap();
    std::fs::write(f.root.join("d/secret.txt"), b"inside").unwrap();
    symlink(&f.outside(), &f.root.join("swap"));
    if exchange(&f.root.join("d"), &f.root.join("swap")).is_err() {
        eprintln!("skipped: this filesystem cannot exchange names atomically (RENAME_EXCHANGE)");
        return;
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swapper = {
        let (root, stop) = (f.root.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let (a, b) = (root.join("d"), root.join("swap"));
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                exchange(&a, &b).unwrap();
            }
        })
    };
    let (mut inside, mut leaked) = (0, 0);
    for _ in 0..3000 {
        match f.read("d/secret.txt").await {
            Ok(body) if body == b"OUTSIDE" => leaked += 1,
            Ok(_) => inside += 1,
            Err(_) => {}
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    swapper.join().unwrap();
    assert_eq!(leaked, 0, "outside content returned {leaked} times ({inside} inside reads)");
    assert!(inside > 0, "the folder was never read while in place");
}

/// Atomically swap two names (renameat2 RENAME_EXCHANGE).
fn exchange(a: &Path, b: &Path) -> rustix::io::Result<()> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE)
}

#[tokio::test]
async fn enumeration_lists_regular_files_only_and_never_descends_a_symlink() {
    let f = Fixture::new();
    std::fs::write(f.root.join("sub/bad.exe.dsx.tags.json"), b"{}").unwrap();
    std::fs::create_dir_all(f.quarantine().join("old")).unwrap();
    std::fs::write(f.quarantine().join("old/q.exe"), b"q").unwrap();
    symlink(&f.outside(), &f.root.join("outdir"));
    symlink(&f.outside().join("secret.txt"), &f.root.join("out.txt"));
    symlink(&f.root.join("sub"), &f.root.join("subalias"));
    let mut rx = f.repo.enumerate(Arc::new(dsx_filter::Filter::everything()));
    let mut items = Vec::new();
    while let Some(item) = rx.recv().await {
        let item = item.unwrap();
        items.push((item.location, item.size));
    }
    assert_eq!(items, [(f.root.join("sub/bad.exe").display().to_string(), Some(4))]);
}
