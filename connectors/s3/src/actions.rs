//! Item actions on objects, each on the **scanned version**: `delete` removes that version
//! (not just a delete marker), `move` copies it to the quarantine (multipart above 5 GiB),
//! checks the copy, then deletes that version; `tag` merges the verdict into the object's
//! tags; `movetag` both. Release puts a quarantined object back and tags it released.

use std::collections::BTreeMap;

use aws_sdk_s3::operation::head_object::HeadObjectOutput;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, MetadataDirective, Tag, Tagging, TaggingDirective};
use dsx_connector::{ActionOutcome, ActionPlan, RepoError};
use dsx_model::{ItemAction, ScanRequest};
use dsx_util::unix_now;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::read::Pin;
use crate::settings::{parse_quarantine, BucketPrefix};
use crate::{classify, Inner};

/// S3 allows at most this many tags on an object.
pub const MAX_TAGS: usize = 10;
/// The verdict tag (Python 1.x's key).
pub const VERDICT_TAG: &str = "Verdict";
/// Set with the release time (Unix seconds) when an operator releases an object.
pub const RELEASED_AT_TAG: &str = "dsx-released-at";
/// Metadata on a quarantined copy naming where it came from (percent-encoded key).
const META_ORIGINAL_BUCKET: &str = "dsx-original-bucket";
const META_ORIGINAL_KEY: &str = "dsx-original-key";
/// CopyObject's limit; larger objects are copied in parts.
const SINGLE_COPY_MAX: u64 = 5 * 1024 * 1024 * 1024;
/// Part size of a multipart copy.
const PART_SIZE: u64 = 512 * 1024 * 1024;

/// Keys in a copy source and metadata values: everything but unreserved characters and `/`.
const KEY_ENCODE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~').remove(b'/');

fn enc(key: &str) -> String {
    utf8_percent_encode(key, KEY_ENCODE).to_string()
}

/// One object version, resolved from the scan request.
#[derive(Debug, Clone)]
struct Target {
    bucket: String,
    key: String,
    version_id: Option<String>,
    head: HeadObjectOutput,
}

impl Target {
    fn uri(&self) -> String {
        Inner::s3_uri(&self.bucket, &self.key)
    }

    fn copy_source(&self) -> String {
        let base = format!("{}/{}", self.bucket, enc(&self.key));
        match &self.version_id {
            Some(v) => format!("{base}?versionId={}", enc(v)),
            None => base,
        }
    }

    fn size(&self) -> u64 {
        self.head.content_length().and_then(|n| u64::try_from(n).ok()).unwrap_or(0)
    }
}

fn outcome(message: &str, description: String) -> ActionOutcome {
    ActionOutcome { message: message.into(), description }
}

pub async fn apply(inner: &Inner, request: &ScanRequest, plan: &ActionPlan) -> Result<ActionOutcome, RepoError> {
    let key = inner.key_of(&request.location)?;
    let target = resolve(inner, &inner.cfg.asset.bucket, key, &Pin::of(request)).await?;
    // An operator released this content: the verdict is recorded, the object stays.
    if tags_of(inner, &target).await?.get(VERDICT_TAG).map(String::as_str) == Some("Released") {
        return Ok(outcome("Released by an operator; left in place", target.uri()));
    }
    let requested_tags = request.requested_action.as_ref().and_then(|r| r.tags.clone()).unwrap_or_default();
    match plan.action {
        ItemAction::Delete => {
            delete_version(inner, &target).await?;
            Ok(outcome("File deleted.", target.uri()))
        }
        ItemAction::Move => {
            let moved = quarantine(inner, &target, plan).await?;
            Ok(outcome("File moved", moved.uri()))
        }
        ItemAction::Tag => {
            merge_tags(inner, &target, &verdict_tags(request, requested_tags)).await?;
            Ok(outcome("File tagged", target.uri()))
        }
        ItemAction::MoveTag => {
            let moved = quarantine(inner, &target, plan).await?;
            merge_tags(inner, &moved, &verdict_tags(request, requested_tags)).await?;
            Ok(outcome("File moved and tagged", moved.uri()))
        }
        ItemAction::Nothing | ItemAction::NotImplemented => Ok(outcome("No action taken", target.uri())),
    }
}

/// `Verdict=Malicious` first (it must fit), then the requested tags, then the job id.
fn verdict_tags(request: &ScanRequest, requested: BTreeMap<String, String>) -> Vec<(String, String)> {
    let mut tags = vec![(VERDICT_TAG.to_owned(), "Malicious".to_owned())];
    tags.extend(requested.into_iter().filter(|(k, _)| k != VERDICT_TAG));
    if let Some(job) = &request.scan_job_id {
        tags.push(("dsx-scan-job-id".into(), job.clone()));
    }
    tags
}

/// HEAD the object in the version the scan saw. With a version id that is exact. Without
/// one, `If-Match` on the listed ETag; on a versioned bucket whose current version changed
/// since, the scanned version is found among the key's versions by its ETag.
async fn resolve(inner: &Inner, bucket: &str, key: &str, pin: &Pin) -> Result<Target, RepoError> {
    let uri = Inner::s3_uri(bucket, key);
    let head = |version: Option<String>, etag: Option<String>| {
        inner.s3.head_object().bucket(bucket).key(key).set_version_id(version).set_if_match(etag).send()
    };
    if pin.version_id.is_some() {
        let h = head(pin.version_id.clone(), None).await.map_err(|e| classify("HeadObject", &uri, &e))?;
        return Ok(Target { bucket: bucket.into(), key: key.into(), version_id: pin.version_id.clone(), head: h });
    }
    match head(None, pin.etag.clone()).await {
        Ok(h) => {
            let version_id = h.version_id().filter(|v| *v != "null").map(str::to_owned);
            Ok(Target { bucket: bucket.into(), key: key.into(), version_id, head: h })
        }
        Err(e) => match classify("HeadObject", &uri, &e) {
            RepoError::Changed(reason) => {
                let etag = pin.etag.as_deref().unwrap_or_default();
                let Some(version) = version_with_etag(inner, bucket, key, etag).await? else {
                    return Err(RepoError::Changed(format!(
                        "{reason}; the scanned content is no longer stored (an unversioned bucket keeps no older versions)"
                    )));
                };
                let h = head(Some(version.clone()), None).await.map_err(|e| classify("HeadObject", &uri, &e))?;
                Ok(Target { bucket: bucket.into(), key: key.into(), version_id: Some(version), head: h })
            }
            other => Err(other),
        },
    }
}

/// The id of the version of `key` whose ETag is `etag`, if the bucket keeps it.
async fn version_with_etag(inner: &Inner, bucket: &str, key: &str, etag: &str) -> Result<Option<String>, RepoError> {
    let out = inner
        .s3
        .list_object_versions()
        .bucket(bucket)
        .prefix(key)
        .send()
        .await
        .map_err(|e| classify("ListObjectVersions", &Inner::s3_uri(bucket, key), &e))?;
    Ok(out
        .versions()
        .iter()
        .find(|v| v.key() == Some(key) && v.e_tag() == Some(etag))
        .and_then(|v| v.version_id())
        .filter(|v| *v != "null")
        .map(str::to_owned))
}

/// Delete exactly the target version: on a versioned bucket a delete without the id would
/// only add a delete marker and keep the malicious bytes. Unversioned: `If-Match` on the
/// ETag the HEAD saw, so content written since is not deleted unscanned.
async fn delete_version(inner: &Inner, target: &Target) -> Result<(), RepoError> {
    let mut req = inner.s3.delete_object().bucket(&target.bucket).key(&target.key);
    req = match &target.version_id {
        Some(v) => req.version_id(v),
        None => req.set_if_match(target.head.e_tag().map(str::to_owned)),
    };
    req.send().await.map_err(|e| classify("DeleteObject", &target.uri(), &e))?;
    Ok(())
}

/// Copy into the quarantine (never over an existing object), check the copy, then delete
/// the scanned version. Returns the quarantined object.
async fn quarantine(inner: &Inner, target: &Target, plan: &ActionPlan) -> Result<Target, RepoError> {
    let dest = destination(inner, plan)?;
    let dest_key = free_key(inner, &dest.bucket, &format!("{}{}", dest.prefix, target.key)).await?;
    let mut metadata = target.head.metadata().cloned().unwrap_or_default();
    metadata.insert(META_ORIGINAL_BUCKET.into(), target.bucket.clone());
    metadata.insert(META_ORIGINAL_KEY.into(), enc(&target.key));
    copy(inner, target, &dest.bucket, &dest_key, metadata).await?;
    let copied = verify_copy(inner, target, &dest.bucket, &dest_key).await?;
    delete_version(inner, target).await?;
    Ok(copied)
}

/// The configured quarantine, or `requested_action.destination.path` in the same forms.
fn destination(inner: &Inner, plan: &ActionPlan) -> Result<BucketPrefix, RepoError> {
    let dest = parse_quarantine(&inner.cfg.asset, &plan.move_target).map_err(|e| RepoError::Invalid(e.to_string()))?;
    if dest.bucket == inner.cfg.asset.bucket && dest.prefix.is_empty() {
        return Err(RepoError::Invalid("the quarantine must be a prefix, not the scanned bucket itself".into()));
    }
    Ok(dest)
}

/// `key`, or `key.1`, `key.2`, … when taken: a quarantined object is never overwritten.
async fn free_key(inner: &Inner, bucket: &str, key: &str) -> Result<String, RepoError> {
    for n in 0..100u32 {
        let candidate = if n == 0 { key.to_owned() } else { format!("{key}.{n}") };
        match inner.s3.head_object().bucket(bucket).key(&candidate).send().await {
            Ok(_) => continue,
            Err(e) => match classify("HeadObject", &Inner::s3_uri(bucket, &candidate), &e) {
                RepoError::NotFound(_) => return Ok(candidate),
                other => return Err(other),
            },
        }
    }
    Err(RepoError::Io(format!("no free key for {} in the quarantine", Inner::s3_uri(bucket, key))))
}

async fn copy(
    inner: &Inner,
    src: &Target,
    bucket: &str,
    key: &str,
    metadata: std::collections::HashMap<String, String>,
) -> Result<(), RepoError> {
    let uri = Inner::s3_uri(bucket, key);
    if src.size() > SINGLE_COPY_MAX {
        return multipart_copy(inner, src, bucket, key, metadata).await;
    }
    inner
        .s3
        .copy_object()
        .bucket(bucket)
        .key(key)
        .copy_source(src.copy_source())
        .set_copy_source_if_match(src.head.e_tag().map(str::to_owned))
        .metadata_directive(MetadataDirective::Replace)
        .set_metadata(Some(metadata))
        .set_content_type(src.head.content_type().map(str::to_owned))
        .tagging_directive(TaggingDirective::Copy)
        .send()
        .await
        .map_err(|e| classify("CopyObject", &uri, &e))?;
    Ok(())
}

/// Byte ranges of the parts of a multipart copy of `size` bytes.
fn part_ranges(size: u64, part: u64) -> Vec<(u64, u64)> {
    (0..size.div_ceil(part)).map(|i| (i * part, ((i + 1) * part).min(size) - 1)).collect()
}

/// `UploadPartCopy` for objects CopyObject refuses (over 5 GiB); aborted on any failure so
/// no orphaned parts are billed.
async fn multipart_copy(
    inner: &Inner,
    src: &Target,
    bucket: &str,
    key: &str,
    metadata: std::collections::HashMap<String, String>,
) -> Result<(), RepoError> {
    let uri = Inner::s3_uri(bucket, key);
    let created = inner
        .s3
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .set_metadata(Some(metadata))
        .set_content_type(src.head.content_type().map(str::to_owned))
        .send()
        .await
        .map_err(|e| classify("CreateMultipartUpload", &uri, &e))?;
    let upload_id = created.upload_id().unwrap_or_default().to_owned();
    let result = async {
        let mut parts = Vec::new();
        for (n, (first, last)) in part_ranges(src.size(), PART_SIZE).into_iter().enumerate() {
            let number = i32::try_from(n + 1).map_err(|_| RepoError::Io("too many parts".into()))?;
            let out = inner
                .s3
                .upload_part_copy()
                .bucket(bucket)
                .key(key)
                .upload_id(&upload_id)
                .part_number(number)
                .copy_source(src.copy_source())
                .copy_source_range(format!("bytes={first}-{last}"))
                .set_copy_source_if_match(src.head.e_tag().map(str::to_owned))
                .send()
                .await
                .map_err(|e| classify("UploadPartCopy", &uri, &e))?;
            let etag = out.copy_part_result().and_then(|r| r.e_tag()).map(str::to_owned);
            parts.push(CompletedPart::builder().part_number(number).set_e_tag(etag).build());
        }
        inner
            .s3
            .complete_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(&upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await
            .map_err(|e| classify("CompleteMultipartUpload", &uri, &e))?;
        Ok(())
    }
    .await;
    if result.is_err() {
        let _ = inner.s3.abort_multipart_upload().bucket(bucket).key(key).upload_id(&upload_id).send().await;
    }
    result
}

/// A copy counts only once the destination exists with the source's size (and ETag, for
/// single-part sources, whose ETag is the content's MD5). A bad copy is deleted again and
/// the source is left alone.
async fn verify_copy(inner: &Inner, src: &Target, bucket: &str, key: &str) -> Result<Target, RepoError> {
    let uri = Inner::s3_uri(bucket, key);
    let head =
        inner.s3.head_object().bucket(bucket).key(key).send().await.map_err(|e| classify("HeadObject", &uri, &e))?;
    let size_ok = head.content_length() == src.head.content_length();
    let single_part = src.head.e_tag().is_some_and(|t| !t.contains('-')) && src.size() <= SINGLE_COPY_MAX;
    let etag_ok = !single_part || head.e_tag() == src.head.e_tag();
    let version_id = head.version_id().filter(|v| *v != "null").map(str::to_owned);
    let copied = Target { bucket: bucket.into(), key: key.into(), version_id, head };
    if !(size_ok && etag_ok) {
        let _ = delete_version(inner, &copied).await;
        return Err(RepoError::Io(format!(
            "the copy of {} to {uri} does not match the original; original kept",
            src.uri()
        )));
    }
    Ok(copied)
}

async fn tags_of(inner: &Inner, target: &Target) -> Result<BTreeMap<String, String>, RepoError> {
    let out = inner
        .s3
        .get_object_tagging()
        .bucket(&target.bucket)
        .key(&target.key)
        .set_version_id(target.version_id.clone())
        .send()
        .await
        .map_err(|e| classify("GetObjectTagging", &target.uri(), &e))?;
    Ok(out.tag_set().iter().map(|t| (t.key().to_owned(), t.value().to_owned())).collect())
}

/// The object's tags with `ours` merged in (ours win on the same key). S3 keeps at most 10:
/// the owner's tags are never dropped; ours are added in order while there is room, and the
/// first of ours (the verdict) must fit or the action fails with the reason.
pub fn merge(existing: &BTreeMap<String, String>, ours: &[(String, String)]) -> Result<Vec<(String, String)>, String> {
    let mut merged = existing.clone();
    for (i, (k, v)) in ours.iter().enumerate() {
        if merged.contains_key(k) || merged.len() < MAX_TAGS {
            merged.insert(k.clone(), v.clone());
        } else if i == 0 {
            return Err(format!("the object already has {MAX_TAGS} tags; no room for the {k} tag"));
        }
    }
    Ok(merged.into_iter().collect())
}

async fn merge_tags(inner: &Inner, target: &Target, ours: &[(String, String)]) -> Result<(), RepoError> {
    let existing = tags_of(inner, target).await?;
    let merged = merge(&existing, ours).map_err(|r| RepoError::Io(format!("{}: {r}", target.uri())))?;
    let tag_set = merged
        .into_iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build().map_err(|e| RepoError::Invalid(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    let tagging =
        Tagging::builder().set_tag_set(Some(tag_set)).build().map_err(|e| RepoError::Invalid(e.to_string()))?;
    inner
        .s3
        .put_object_tagging()
        .bucket(&target.bucket)
        .key(&target.key)
        .set_version_id(target.version_id.clone())
        .tagging(tagging)
        .send()
        .await
        .map_err(|e| classify("PutObjectTagging", &target.uri(), &e))?;
    Ok(())
}

/// `s3://bucket/key`, `<quarantine bucket>/key`, or a key in the quarantine bucket.
fn quarantined_location(inner: &Inner, location: &str) -> Result<(String, String), RepoError> {
    let q = &inner.cfg.quarantine;
    let (bucket, key) = match location.strip_prefix("s3://") {
        Some(rest) => rest.split_once('/').unwrap_or((rest, "")),
        None => match location.strip_prefix(&format!("{}/", q.bucket)) {
            Some(rest) if rest.starts_with(&q.prefix) => (q.bucket.as_str(), rest),
            _ => (q.bucket.as_str(), location),
        },
    };
    if !q.holds(bucket, key) || key.ends_with('/') || key.len() == q.prefix.len() {
        return Err(RepoError::Forbidden(format!("{location} is not an object in the quarantine {q}")));
    }
    Ok((bucket.to_owned(), key.to_owned()))
}

/// Put a quarantined object back where it was found (never over an object that is there
/// again), tag it `Verdict=Released` with the time, then remove the quarantined copy.
pub async fn release(inner: &Inner, location: &str) -> Result<ActionOutcome, RepoError> {
    let (bucket, key) = quarantined_location(inner, location)?;
    let held = resolve(inner, &bucket, &key, &Pin::default()).await?;
    let meta = held.head.metadata().cloned().unwrap_or_default();
    let original_bucket = meta.get(META_ORIGINAL_BUCKET).cloned().unwrap_or_else(|| inner.cfg.asset.bucket.clone());
    let original_key = match meta.get(META_ORIGINAL_KEY) {
        Some(k) => percent_encoding::percent_decode_str(k).decode_utf8_lossy().into_owned(),
        None => key.strip_prefix(&inner.cfg.quarantine.prefix).unwrap_or(&key).to_owned(),
    };
    if !inner.cfg.asset.holds(&original_bucket, &original_key) || inner.in_quarantine(&original_bucket, &original_key) {
        return Err(RepoError::Forbidden(format!(
            "{} would be restored to {}, outside the asset {}",
            held.uri(),
            Inner::s3_uri(&original_bucket, &original_key),
            inner.cfg.asset
        )));
    }
    let restored_uri = Inner::s3_uri(&original_bucket, &original_key);
    match inner.s3.head_object().bucket(&original_bucket).key(&original_key).send().await {
        Ok(_) => {
            return Err(RepoError::Invalid(format!("{restored_uri} exists again; it is not overwritten by a release")))
        }
        Err(e) => match classify("HeadObject", &restored_uri, &e) {
            RepoError::NotFound(_) => {}
            other => return Err(other),
        },
    }
    let mut metadata = meta;
    metadata.remove(META_ORIGINAL_BUCKET);
    metadata.remove(META_ORIGINAL_KEY);
    copy(inner, &held, &original_bucket, &original_key, metadata).await?;
    let restored = verify_copy(inner, &held, &original_bucket, &original_key).await?;
    let released =
        [(VERDICT_TAG.to_owned(), "Released".to_owned()), (RELEASED_AT_TAG.to_owned(), unix_now().to_string())];
    merge_tags(inner, &restored, &released).await?;
    delete_version(inner, &held).await?;
    tracing::info!(target: "audit", from = %held.uri(), to = %restored_uri, "object released from quarantine");
    Ok(outcome("File released", restored_uri))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(n: usize) -> BTreeMap<String, String> {
        (0..n).map(|i| (format!("owner{i}"), "x".to_owned())).collect()
    }

    #[test]
    fn merge_keeps_owner_tags_and_needs_room_for_the_verdict() {
        let ours = vec![("Verdict".to_owned(), "Malicious".to_owned()), ("extra".to_owned(), "1".to_owned())];
        let merged = merge(&tags(3), &ours).unwrap();
        assert_eq!(merged.len(), 5);
        let merged = merge(&tags(9), &ours).unwrap();
        assert_eq!(merged.len(), 10, "verdict fits, extra does not");
        assert!(merged.iter().any(|(k, _)| k == "Verdict") && !merged.iter().any(|(k, _)| k == "extra"));
        assert!(merge(&tags(10), &ours).unwrap_err().contains("no room"));
        let mut with_verdict = tags(9);
        with_verdict.insert("Verdict".into(), "Clean".into());
        let merged = merge(&with_verdict, &ours).unwrap();
        assert!(
            merged.contains(&("Verdict".to_owned(), "Malicious".to_owned())),
            "an existing key is replaced in place"
        );
    }

    #[test]
    fn parts_cover_the_object() {
        assert_eq!(part_ranges(10, 4), vec![(0, 3), (4, 7), (8, 9)]);
        assert_eq!(part_ranges(8, 4), vec![(0, 3), (4, 7)]);
        let size = 6 * 1024 * 1024 * 1024 + 1;
        let parts = part_ranges(size, PART_SIZE);
        assert_eq!(parts.last().unwrap().1, size - 1);
        assert_eq!(parts.len(), 13);
    }

    #[test]
    fn copy_sources_are_encoded() {
        assert_eq!(enc("in/a b+c?.txt"), "in/a%20b%2Bc%3F.txt");
    }
}
