//! S3 repository: the asset is a bucket (or a prefix in it). Items are objects: `location`
//! is the key, `metainfo` is `bucket/key`, and every item carries the listed ETag (and
//! version id on versioned buckets) so reads and actions are pinned to what was listed.

#![forbid(unsafe_code)]

mod actions;
mod client;
pub mod events;
mod read;
pub mod settings;
mod sqs;

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::types::BucketVersioningStatus;
use axum::body::Body;
use dsx_connector::{ActionOutcome, ActionPlan, EventBatch, Item, RepoError, Repository};
use dsx_filter::Filter;
use dsx_model::{ItemVersion, ScanRequest};
use tokio::sync::mpsc;

pub use client::build_clients;
pub use settings::{BucketPrefix, S3Settings, SettingsError, Verify};

pub struct S3Repo {
    inner: Arc<Inner>,
}

struct Inner {
    s3: aws_sdk_s3::Client,
    sqs: Option<aws_sdk_sqs::Client>,
    cfg: S3Settings,
}

impl S3Repo {
    /// Build the SDK clients (credential chain, region, endpoint) for `cfg`. Nothing is called yet.
    pub async fn new(cfg: S3Settings) -> anyhow::Result<Self> {
        let (s3, sqs) = build_clients(&cfg).await?;
        Ok(Self { inner: Arc::new(Inner { s3, sqs, cfg }) })
    }

    pub fn settings(&self) -> &S3Settings {
        &self.inner.cfg
    }
}

/// An SDK error as a [`RepoError`], by what it means for the item. Messages name the
/// operation and object, never credentials (the SDK's errors carry none).
fn classify<E>(op: &str, target: &str, err: &SdkError<E>) -> RepoError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = err.raw_response().map(|r| r.status().as_u16());
    let code = err.code().unwrap_or_default();
    let message = err.message().unwrap_or_default();
    match (status, code) {
        (_, "InvalidObjectState") => RepoError::Unscannable(format!(
            "{target} is archived (GLACIER or DEEP_ARCHIVE storage class): restore it before it can be scanned"
        )),
        (Some(412), _) | (_, "PreconditionFailed") => {
            RepoError::Changed(format!("{target} changed after it was listed; the listed version is no longer current"))
        }
        (Some(404), _) | (_, "NoSuchKey" | "NoSuchVersion" | "NotFound") => {
            RepoError::NotFound(format!("{target} does not exist (or not in the listed version)"))
        }
        (Some(400), _) if is_sse_c(message) => RepoError::Unscannable(format!(
            "{target} is encrypted with a customer-provided key (SSE-C), which the connector does not hold"
        )),
        _ => RepoError::Io(format!("{op} {target}: {}", DisplayErrorContext(err))),
    }
}

/// S3's answer to a read of an SSE-C object without its key.
fn is_sse_c(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("server side encryption") || m.contains("customer-provided") || m.contains("sse-c")
}

impl Inner {
    fn s3_uri(bucket: &str, key: &str) -> String {
        format!("s3://{bucket}/{key}")
    }

    /// The key a request names, checked: inside the asset prefix and not in the quarantine.
    fn key_of<'a>(&self, location: &'a str) -> Result<&'a str, RepoError> {
        let key = location.strip_prefix(&format!("s3://{}/", self.cfg.asset.bucket)).unwrap_or(location);
        if key.is_empty() || key.ends_with('/') {
            return Err(RepoError::Invalid(format!("{location:?} is not an object key")));
        }
        if !self.cfg.asset.holds(&self.cfg.asset.bucket, key) {
            return Err(RepoError::Forbidden(format!("{key} is outside the asset {}", self.cfg.asset)));
        }
        if self.in_quarantine(&self.cfg.asset.bucket, key) {
            return Err(RepoError::Forbidden(format!("{key} is in the quarantine {}", self.cfg.quarantine)));
        }
        Ok(key)
    }

    fn in_quarantine(&self, bucket: &str, key: &str) -> bool {
        self.cfg.quarantine.holds(bucket, key)
    }

    /// The key relative to the asset prefix, as filters see it.
    fn relative<'a>(&self, key: &'a str) -> &'a str {
        key.strip_prefix(&self.cfg.asset.prefix).unwrap_or(key)
    }

    /// An object as an item, or `None` when it is not scanned: a "folder" placeholder, in
    /// the quarantine, outside the asset, or ruled out by the filter.
    fn item_for(
        &self,
        bucket: &str,
        key: &str,
        size: Option<u64>,
        version: ItemVersion,
        filter: &Filter,
    ) -> Option<Item> {
        if key.ends_with('/')
            || !self.cfg.asset.holds(bucket, key)
            || self.in_quarantine(bucket, key)
            || !filter.matches(self.relative(key))
        {
            return None;
        }
        Some(Item {
            location: key.to_owned(),
            metainfo: format!("{bucket}/{key}"),
            size,
            version: Some(version).filter(|v| v.etag.is_some() || v.version_id.is_some()),
        })
    }

    /// Listing prefixes: the asset prefix, narrowed by the filter's literal include prefixes.
    fn list_prefixes(&self, filter: &Filter) -> Vec<String> {
        match filter.listing_prefixes() {
            Some(hints) => hints.into_iter().map(|h| format!("{}{h}", self.cfg.asset.prefix)).collect(),
            None => vec![self.cfg.asset.prefix.clone()],
        }
    }

    /// How to list: `ListObjectVersions` when versioning is (or was) on, so items carry
    /// version ids; `ListObjectsV2` when it never was. When the bucket will not say (no
    /// `s3:GetBucketVersioning`, or a store that answers it oddly), versions are tried, and
    /// plain listing is the fallback.
    async fn listing(&self) -> Listing {
        match self.s3.get_bucket_versioning().bucket(&self.cfg.asset.bucket).send().await {
            Ok(out)
                if matches!(
                    out.status(),
                    Some(BucketVersioningStatus::Enabled | BucketVersioningStatus::Suspended)
                ) =>
            {
                Listing::Versions
            }
            Ok(_) => Listing::Current,
            Err(err) => {
                tracing::debug!(error = %DisplayErrorContext(&err), "GetBucketVersioning failed; trying ListObjectVersions");
                Listing::VersionsOrCurrent
            }
        }
    }

    /// Stream every matching object into `tx`, one page at a time, until the receiver goes
    /// away (limit reached, scan cancelled).
    async fn list(self: Arc<Self>, filter: Arc<Filter>, tx: mpsc::Sender<Result<Item, RepoError>>) {
        let mut listing = self.listing().await;
        for prefix in self.list_prefixes(&filter) {
            let outcome = match listing {
                Listing::Current => self.list_current(&prefix, &filter, &tx).await,
                _ => match self.list_versions(&prefix, &filter, &tx, listing == Listing::VersionsOrCurrent).await {
                    Paged::Unavailable => {
                        listing = Listing::Current;
                        self.list_current(&prefix, &filter, &tx).await
                    }
                    other => {
                        listing = Listing::Versions;
                        other
                    }
                },
            };
            if outcome == Paged::Stopped {
                return;
            }
        }
    }

    async fn list_current(&self, prefix: &str, filter: &Filter, tx: &mpsc::Sender<Result<Item, RepoError>>) -> Paged {
        let bucket = &self.cfg.asset.bucket;
        let mut pages = self.s3.list_objects_v2().bucket(bucket).prefix(prefix).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = match page {
                Ok(p) => p,
                Err(err) => {
                    let _ = tx.send(Err(classify("ListObjectsV2", &Inner::s3_uri(bucket, prefix), &err))).await;
                    return Paged::Done;
                }
            };
            for obj in page.contents() {
                let Some(key) = obj.key() else { continue };
                let version = ItemVersion { etag: obj.e_tag().map(str::to_owned), version_id: None };
                let size = obj.size().and_then(|s| u64::try_from(s).ok());
                if let Some(item) = self.item_for(bucket, key, size, version, filter) {
                    if tx.send(Ok(item)).await.is_err() {
                        return Paged::Stopped;
                    }
                }
            }
        }
        Paged::Done
    }

    /// Versioned buckets: `ListObjectVersions`, keeping the current version of each key (not
    /// delete markers), so every item carries its version id without a request per object.
    async fn list_versions(
        &self,
        prefix: &str,
        filter: &Filter,
        tx: &mpsc::Sender<Result<Item, RepoError>>,
        may_fall_back: bool,
    ) -> Paged {
        let bucket = &self.cfg.asset.bucket;
        let (mut key_marker, mut version_marker): (Option<String>, Option<String>) = (None, None);
        loop {
            let key_marker_was_none = key_marker.is_none();
            let page = self
                .s3
                .list_object_versions()
                .bucket(bucket)
                .prefix(prefix)
                .set_key_marker(key_marker.take())
                .set_version_id_marker(version_marker.take())
                .send()
                .await;
            let page = match page {
                Ok(p) => p,
                Err(err) if may_fall_back && key_marker_was_none => {
                    tracing::info!(error = %DisplayErrorContext(&err), "ListObjectVersions unavailable; listing without version ids");
                    return Paged::Unavailable;
                }
                Err(err) => {
                    let _ = tx.send(Err(classify("ListObjectVersions", &Inner::s3_uri(bucket, prefix), &err))).await;
                    return Paged::Done;
                }
            };
            for v in page.versions().iter().filter(|v| v.is_latest() == Some(true)) {
                let Some(key) = v.key() else { continue };
                let version = ItemVersion {
                    etag: v.e_tag().map(str::to_owned),
                    version_id: v.version_id().filter(|id| *id != "null").map(str::to_owned),
                };
                let size = v.size().and_then(|s| u64::try_from(s).ok());
                if let Some(item) = self.item_for(bucket, key, size, version, filter) {
                    if tx.send(Ok(item)).await.is_err() {
                        return Paged::Stopped;
                    }
                }
            }
            if page.is_truncated() != Some(true) {
                return Paged::Done;
            }
            key_marker = page.next_key_marker().map(str::to_owned);
            version_marker = page.next_version_id_marker().map(str::to_owned);
            if key_marker.is_none() {
                return Paged::Done;
            }
        }
    }

    /// Items named by events, through the same checks as listed objects. Events for another
    /// bucket are logged and skipped (a misrouted notification must not scan a foreign key).
    fn event_items(&self, events: Vec<events::ObjectEvent>, filter: &Filter) -> Vec<Item> {
        events
            .into_iter()
            .filter_map(|e| {
                if e.bucket != self.cfg.asset.bucket {
                    tracing::warn!(bucket = %e.bucket, key = %e.key, "event for another bucket ignored");
                    return None;
                }
                let version = ItemVersion { etag: e.etag.map(|t| quoted(&t)), version_id: e.version_id };
                self.item_for(&e.bucket, &e.key, e.size, version, filter)
            })
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listing {
    Current,
    Versions,
    VersionsOrCurrent,
}

/// How a listing of one prefix ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Paged {
    Done,
    /// The receiver went away.
    Stopped,
    /// `ListObjectVersions` refused on its first page: list without versions instead.
    Unavailable,
}

/// ETags as S3's HTTP headers carry them, in quotes (notifications leave the quotes off).
fn quoted(etag: &str) -> String {
    let bare = etag.trim_matches('"');
    format!("\"{bare}\"")
}

#[async_trait]
impl Repository for S3Repo {
    fn enumerate(&self, filter: Arc<Filter>) -> mpsc::Receiver<Result<Item, RepoError>> {
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(Arc::clone(&self.inner).list(filter, tx));
        rx
    }

    async fn open(&self, request: &ScanRequest) -> Result<(Body, Option<u64>), RepoError> {
        read::open(&self.inner, request).await
    }

    async fn item_action(&self, request: &ScanRequest, plan: &ActionPlan) -> Result<ActionOutcome, RepoError> {
        actions::apply(&self.inner, request, plan).await
    }

    async fn check(&self) -> Result<(), String> {
        let bucket = &self.inner.cfg.asset.bucket;
        match self.inner.s3.head_bucket().bucket(bucket).send().await {
            Ok(_) => Ok(()),
            Err(err) => Err(format!("HeadBucket {bucket}: {}", DisplayErrorContext(&err))),
        }
    }

    fn watch_batches(&self, filter: Arc<Filter>) -> Option<mpsc::Receiver<EventBatch>> {
        sqs::watch(Arc::clone(&self.inner), filter)
    }

    async fn webhook_items(&self, body: &[u8], filter: Arc<Filter>) -> Option<Result<Vec<Item>, RepoError>> {
        Some(match events::parse(body) {
            Ok(events) => Ok(self.inner.event_items(events, &filter)),
            Err(err) => Err(RepoError::Invalid(err.to_string())),
        })
    }

    async fn release(&self, location: &str) -> Result<ActionOutcome, RepoError> {
        actions::release(&self.inner, location).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_c_messages_are_recognised() {
        assert!(is_sse_c("The object was stored using a form of Server Side Encryption. The correct parameters must be provided to retrieve the object."));
        assert!(!is_sse_c("Bad Request"));
        assert_eq!(quoted("abc"), "\"abc\"");
        assert_eq!(quoted("\"abc\""), "\"abc\"");
    }
}
