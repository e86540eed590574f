//! Monitor mode: new and modified files, debounced until they stop changing, become items.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dsx_connector::Item;
use dsx_filter::Filter;
use notify::{Config, EventKind, PollWatcher, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::confine::Confinement;
use crate::{item_for, relative, SIDECAR_SUFFIX};

/// A file is enqueued once it has been quiet this long (writers often write in pieces).
const QUIET_FOR: Duration = Duration::from_millis(400);

pub fn watch(
    confine: Arc<Confinement>,
    filter: Arc<Filter>,
    force_polling: bool,
    poll: Duration,
) -> Option<mpsc::Receiver<Item>> {
    let (tx, rx) = mpsc::channel(1024);
    let (events_tx, events_rx) = std::sync::mpsc::channel::<PathBuf>();
    let handler = move |res: notify::Result<notify::Event>| {
        if let Ok(event) = res {
            if matches!(event.kind, EventKind::Create(_) | EventKind::Modify(_)) {
                for path in event.paths {
                    let _ = events_tx.send(path);
                }
            }
        }
    };
    let mut watcher: Box<dyn Watcher + Send> = if force_polling {
        Box::new(PollWatcher::new(handler, Config::default().with_poll_interval(poll)).ok()?)
    } else {
        match RecommendedWatcher::new(handler.clone(), Config::default()) {
            Ok(w) => Box::new(w),
            Err(err) => {
                tracing::warn!(error = %err, "native file watching unavailable; polling instead");
                Box::new(PollWatcher::new(handler, Config::default().with_poll_interval(poll)).ok()?)
            }
        }
    };
    if let Err(err) = watcher.watch(confine.root(), RecursiveMode::Recursive) {
        tracing::error!(error = %err, "cannot watch the asset");
        return None;
    }
    tracing::info!(root = %confine.root().display(), polling = force_polling, "monitoring for new and changed files");
    std::thread::Builder::new()
        .name("fs-monitor".into())
        .spawn(move || {
            let _watcher = watcher; // lives as long as this thread
            let mut pending: HashMap<PathBuf, Instant> = HashMap::new();
            loop {
                match events_rx.recv_timeout(Duration::from_millis(100)) {
                    Ok(path) => {
                        pending.insert(path, Instant::now());
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                }
                let now = Instant::now();
                let ready: Vec<PathBuf> = pending
                    .iter()
                    .filter(|(_, at)| now.duration_since(**at) >= QUIET_FOR)
                    .map(|(p, _)| p.clone())
                    .collect();
                for path in ready {
                    pending.remove(&path);
                    let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
                    let Some(rel) = relative(confine.root(), &path) else { continue };
                    if !meta.is_file()
                        || confine.is_quarantine(&path)
                        || rel.ends_with(SIDECAR_SUFFIX)
                        || !filter.matches(&rel)
                    {
                        continue;
                    }
                    if tx.blocking_send(item_for(&path, Some(meta.len()))).is_err() {
                        return;
                    }
                }
            }
        })
        .ok()?;
    Some(rx)
}
