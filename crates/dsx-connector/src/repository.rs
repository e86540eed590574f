//! The one trait a repository kind implements; the framework does the rest.

use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Body;
use dsx_filter::Filter;
use dsx_model::{Estimate, ItemAction, ItemVersion, ScanRequest};
use tokio::sync::{mpsc, oneshot};

/// One scannable item, as sent in a scan request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// filesystem: absolute path; object stores: the key.
    pub location: String,
    /// filesystem: file name; object stores: `bucket/key`.
    pub metainfo: String,
    pub size: Option<u64>,
    /// The listed version (object stores), carried in the scan request so the read and the
    /// action are pinned to it.
    pub version: Option<ItemVersion>,
}

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("not found: {0}")]
    NotFound(String),
    /// Outside the asset (traversal, absolute path elsewhere, escaping symlink).
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("{0}")]
    Io(String),
    /// The item exists but must not or cannot be scanned (archived storage class, encrypted
    /// with a key the connector lacks, over the size limit): recorded as not scanned, with
    /// the reason, never as clean.
    #[error("unscannable: {0}")]
    Unscannable(String),
    /// The item changed since it was listed: the listed version is not what would be read.
    #[error("changed since listed: {0}")]
    Changed(String),
}

impl RepoError {
    /// The stable code of the error (`detail` of an HTTP error, `error_code` of an item action).
    pub fn code(&self) -> &'static str {
        match self {
            RepoError::NotFound(_) => "not_found",
            RepoError::Forbidden(_) => "forbidden",
            RepoError::Invalid(_) => "invalid_request",
            RepoError::Io(_) => "repository_error",
            RepoError::Unscannable(_) => "unscannable",
            RepoError::Changed(_) => "item_changed",
        }
    }

    /// The human-readable reason.
    pub fn reason(&self) -> &str {
        match self {
            RepoError::NotFound(m)
            | RepoError::Forbidden(m)
            | RepoError::Invalid(m)
            | RepoError::Io(m)
            | RepoError::Unscannable(m)
            | RepoError::Changed(m) => m,
        }
    }
}

/// The effective action for one `item_action` call.
#[derive(Debug, Clone)]
pub struct ActionPlan {
    pub action: ItemAction,
    /// Quarantine destination (configured, or `requested_action.destination.path`).
    pub move_target: String,
    pub preserve_relative_path: bool,
}

/// What an item action did.
#[derive(Debug, Clone)]
pub struct ActionOutcome {
    pub message: String,
    pub description: String,
}

/// Changes the filter and other runtime settings (`PUT config`).
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub filter: Arc<Filter>,
    pub item_action: ItemAction,
    pub item_action_move_metainfo: String,
}

/// Items from one event message (monitor mode), acknowledged together: `done` gets `true`
/// once every item was enqueued, so the source may drop the message (an SQS delete), and
/// `false` when one failed, so the source redelivers it.
pub struct EventBatch {
    pub items: Vec<Item>,
    pub done: oneshot::Sender<bool>,
}

#[async_trait]
pub trait Repository: Send + Sync + 'static {
    /// Enumerate every item passing `filter`, streamed through a channel so a huge asset
    /// never sits in memory. The sender is dropped when enumeration ends.
    fn enumerate(&self, filter: Arc<Filter>) -> mpsc::Receiver<Result<Item, RepoError>>;

    /// Open an item for reading; the body streams (never the whole file in memory).
    async fn open(&self, request: &ScanRequest) -> Result<(Body, Option<u64>), RepoError>;

    /// Remediate a malicious item.
    async fn item_action(&self, request: &ScanRequest, plan: &ActionPlan) -> Result<ActionOutcome, RepoError>;

    /// Is the repository reachable? `Err` carries the reason.
    async fn check(&self) -> Result<(), String>;

    /// How many items a full scan would enqueue, when cheap to know.
    async fn estimate(&self, filter: Arc<Filter>) -> Estimate {
        let _ = filter;
        Estimate { count: None, confidence: "unknown".into() }
    }

    /// Watch for new or changed items (monitor mode); `None` when the kind cannot.
    fn watch(
        &self,
        filter: Arc<Filter>,
        force_polling: bool,
        poll: std::time::Duration,
    ) -> Option<mpsc::Receiver<Item>> {
        let _ = (filter, force_polling, poll);
        None
    }

    /// Like [`Repository::watch`], for sources that must know an item was enqueued before
    /// they forget it (a queue of event messages). Used instead of `watch` when `Some`.
    fn watch_batches(&self, filter: Arc<Filter>) -> Option<mpsc::Receiver<EventBatch>> {
        let _ = filter;
        None
    }

    /// The items a `webhook/event` body names, in this kind's own event formats, already
    /// filtered. `None` when the kind has none (the framework then reads `location`).
    async fn webhook_items(&self, body: &[u8], filter: Arc<Filter>) -> Option<Result<Vec<Item>, RepoError>> {
        let _ = (body, filter);
        None
    }

    /// Operator action: put a quarantined item back where it was found.
    async fn release(&self, location: &str) -> Result<ActionOutcome, RepoError> {
        let _ = location;
        Err(RepoError::Invalid("this connector kind cannot release items from quarantine".into()))
    }
}
