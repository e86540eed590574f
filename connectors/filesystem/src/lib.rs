//! Filesystem repository: the asset is a folder. Every file it reads or changes is reached
//! through directory handles opened at start, without following any symlink (see `confine`):
//! `..`, absolute paths elsewhere and symlinks are refused before anything is read or changed.

#![forbid(unsafe_code)]

mod actions;
mod confine;
mod monitor;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use axum::body::Body;
use dsx_connector::{ActionOutcome, ActionPlan, Item, RepoError, Repository};
use dsx_filter::Filter;
use dsx_model::{Estimate, ScanRequest};
use rustix::fs::FileType;
use tokio::sync::mpsc;

pub use confine::{Confinement, FsError};

/// Suffix of the sidecar files that `tag` writes beside an item (Python 1.x's name); never scanned.
pub const SIDECAR_SUFFIX: &str = ".dsx.tags.json";

pub struct FilesystemRepo {
    confine: Arc<Confinement>,
}

impl FilesystemRepo {
    /// `asset` must be an existing folder. `quarantine` is absolute, or relative to the asset.
    pub fn new(asset: &str, quarantine: &str) -> anyhow::Result<Self> {
        anyhow::ensure!(!asset.is_empty(), "DSXCONNECTOR_ASSET must name the folder to scan");
        let root = Path::new(asset)
            .canonicalize()
            .with_context(|| format!("DSXCONNECTOR_ASSET {asset:?} is not an existing folder"))?;
        anyhow::ensure!(root.is_dir(), "DSXCONNECTOR_ASSET {asset:?} is not a folder");
        let confine = Confinement::new(root, quarantine).context("DSXCONNECTOR_ASSET")?;
        Ok(Self { confine: Arc::new(confine) })
    }

    pub fn root(&self) -> &Path {
        self.confine.root()
    }
}

/// The path relative to the root with `/` separators, as filters see it.
fn relative(root: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(root).ok()?;
    let parts: Vec<_> = rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    Some(parts.join("/"))
}

fn item_for(path: &Path, size: Option<u64>) -> Item {
    Item {
        location: path.to_string_lossy().into_owned(),
        metainfo: path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        size,
        version: None,
    }
}

/// Walk the tree depth-first through confined folder handles, never following a symlink,
/// pruning what the filter rules out.
fn walk(confine: &Confinement, filter: &Filter, tx: &mpsc::Sender<Result<Item, RepoError>>) {
    let root = confine.root().to_path_buf();
    let mut stack: Vec<PathBuf> = vec![PathBuf::new()];
    while let Some(dir) = stack.pop() {
        let entries = match confine.list(&dir) {
            Ok(e) => e,
            Err(err) => {
                let _ = tx.blocking_send(Err(err.into()));
                continue;
            }
        };
        let mut subdirs = Vec::new();
        for entry in entries {
            let path = root.join(&dir).join(&entry.name);
            let Some(rel) = relative(&root, &path) else { continue };
            if entry.kind == FileType::Directory {
                if !confine.is_quarantine(&path) && filter.may_descend(&rel) {
                    subdirs.push(dir.join(&entry.name));
                }
            } else if entry.kind == FileType::RegularFile
                && !rel.ends_with(SIDECAR_SUFFIX)
                && filter.matches(&rel)
                && tx.blocking_send(Ok(item_for(&path, entry.size))).is_err()
            {
                return; // the consumer stopped (limit reached, scan cancelled)
            }
        }
        stack.extend(subdirs.into_iter().rev());
    }
}

#[async_trait]
impl Repository for FilesystemRepo {
    fn enumerate(&self, filter: Arc<Filter>) -> mpsc::Receiver<Result<Item, RepoError>> {
        let (tx, rx) = mpsc::channel(256);
        let confine = Arc::clone(&self.confine);
        tokio::task::spawn_blocking(move || walk(&confine, &filter, &tx));
        rx
    }

    async fn open(&self, request: &ScanRequest) -> Result<(Body, Option<u64>), RepoError> {
        let confine = Arc::clone(&self.confine);
        let location = request.location.clone();
        let file = tokio::task::spawn_blocking(move || confine.open_file(&confine.locate(&location)?))
            .await
            .map_err(|e| RepoError::Io(format!("open task: {e}")))??;
        let size = file.metadata().ok().map(|m| m.len());
        let file = tokio::fs::File::from_std(file);
        Ok((Body::from_stream(tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024)), size))
    }

    async fn item_action(&self, request: &ScanRequest, plan: &ActionPlan) -> Result<ActionOutcome, RepoError> {
        let confine = Arc::clone(&self.confine);
        let (request, plan) = (request.clone(), plan.clone());
        tokio::task::spawn_blocking(move || actions::apply(&confine, &request, &plan))
            .await
            .map_err(|e| RepoError::Io(format!("item action task: {e}")))?
    }

    /// The configured path is still a folder and this process can list it (a folder it may
    /// not read would otherwise pass, and every full scan would find nothing).
    async fn check(&self) -> Result<(), String> {
        match tokio::fs::metadata(self.root()).await {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(format!("{} is not a folder", self.root().display())),
            Err(e) => return Err(format!("{}: {e}", self.root().display())),
        }
        let confine = Arc::clone(&self.confine);
        match tokio::task::spawn_blocking(move || confine.list(Path::new("")).map(|_| ())).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(err.to_string()),
            Err(err) => Err(format!("check task: {err}")),
        }
    }

    async fn estimate(&self, filter: Arc<Filter>) -> Estimate {
        let mut rx = self.enumerate(filter);
        let mut count = 0u64;
        while let Some(item) = rx.recv().await {
            count += u64::from(item.is_ok());
        }
        Estimate { count: Some(count), confidence: "exact".into() }
    }

    fn watch(
        &self,
        filter: Arc<Filter>,
        force_polling: bool,
        poll: std::time::Duration,
    ) -> Option<mpsc::Receiver<Item>> {
        monitor::watch(Arc::clone(&self.confine), filter, force_polling, poll)
    }
}
