//! The S3 repository against a real S3-compatible server (moto): listing, pinned reads,
//! unscannable objects, actions on the scanned version, events, the SQS consumer, release.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::types::{StorageClass, Tag, Tagging};
use dsx_connector::{ActionOutcome, ActionPlan, RepoError, Repository};
use dsx_filter::Filter;
use dsx_model::{ItemAction, ScanRequest};
use serde_json::json;
use support::{fixture, Fixture, EICAR};

fn request(f: &Fixture, key: &str, item: Option<&dsx_connector::Item>) -> ScanRequest {
    let mut r = ScanRequest::new(key, format!("{}/{key}", f.bucket));
    r.item_version = item.and_then(|i| i.version.clone());
    r.size_in_bytes = item.and_then(|i| i.size);
    r.scan_job_id = Some("job-1".into());
    r
}

fn plan(action: ItemAction, target: &str) -> ActionPlan {
    ActionPlan { action, move_target: target.into(), preserve_relative_path: true }
}

/// Apply `action` to `key` as a worker does after its scan: pinned to the version the
/// listing shows now, `target` as the quarantine.
async fn act(f: &Fixture, key: &str, action: ItemAction, target: &str) -> Result<ActionOutcome, RepoError> {
    let item = f.listed(key).await;
    f.repo.item_action(&request(f, key, Some(&item)), &plan(action, target)).await
}

async fn read_all(f: &Fixture, req: &ScanRequest) -> Result<Vec<u8>, RepoError> {
    let (body, _) = f.repo.open(req).await?;
    Ok(axum::body::to_bytes(body, usize::MAX).await.unwrap().to_vec())
}

#[tokio::test]
async fn full_scan_pages_skips_folders_and_quarantine_and_carries_etags() {
    let f = fixture(false, "", &[]).await;
    for i in 0..1003 {
        f.put(&format!("bulk/f{i:04}.txt"), b"x").await;
    }
    f.put("docs/", b"").await; // a console "folder"
    f.put("docs/a.pdf", b"pdf").await;
    f.put("dsxconnect-quarantine/old/eicar.com", EICAR).await;
    let items = f.list("").await;
    assert_eq!(items.len(), 1004, "two listing pages, no folder key, nothing from the quarantine");
    assert!(items.iter().all(|i| !i.location.ends_with('/') && !i.location.starts_with("dsxconnect-quarantine/")));
    let a = items.iter().find(|i| i.location == "docs/a.pdf").unwrap();
    assert_eq!(a.metainfo, format!("{}/docs/a.pdf", f.bucket));
    assert_eq!(a.size, Some(3));
    let version = a.version.as_ref().unwrap();
    assert!(version.etag.as_deref().is_some_and(|e| e.starts_with('"')), "{version:?}");
    assert_eq!(version.version_id, None, "unversioned bucket");
    // The filter narrows the listing and decides.
    let docs: Vec<String> = f.list("docs/*.pdf").await.into_iter().map(|i| i.location).collect();
    assert_eq!(docs, ["docs/a.pdf"]);
}

#[tokio::test]
async fn asset_prefix_and_versioned_listing() {
    let f = fixture(true, "/inbox", &[]).await;
    f.put("inbox/a.txt", b"one").await;
    let (_, v2) = f.put("inbox/a.txt", b"two").await;
    f.put("inbox/sub/b.txt", b"b").await;
    f.put("elsewhere/c.txt", b"c").await;
    let items = f.list("").await;
    let keys: BTreeSet<&str> = items.iter().map(|i| i.location.as_str()).collect();
    assert_eq!(keys, BTreeSet::from(["inbox/a.txt", "inbox/sub/b.txt"]), "one item per key, the current version");
    let a = items.iter().find(|i| i.location == "inbox/a.txt").unwrap();
    assert_eq!(a.version.as_ref().unwrap().version_id, v2);
    // Filters are relative to the asset prefix.
    let subs: Vec<String> = f.list("sub").await.into_iter().map(|i| i.location).collect();
    assert_eq!(subs, ["inbox/sub/b.txt"]);
    // Outside the asset or in the quarantine: refused before anything is read.
    let err = f.repo.open(&ScanRequest::new("elsewhere/c.txt", "")).await.err().unwrap();
    assert!(matches!(err, RepoError::Forbidden(_)), "{err:?}");
}

#[tokio::test]
async fn a_read_is_pinned_to_the_listed_version() {
    // Versioned: the listed version's bytes are read even after an overwrite.
    let f = fixture(true, "", &[]).await;
    f.put("doc.txt", b"listed content").await;
    let item = f.listed("doc.txt").await;
    f.put("doc.txt", b"written after listing").await;
    assert_eq!(read_all(&f, &request(&f, "doc.txt", Some(&item))).await.unwrap(), b"listed content");

    // Unversioned: the listed bytes are gone; the outcome says so instead of scanning others.
    let g = fixture(false, "", &[]).await;
    g.put("doc.txt", b"listed content").await;
    let item = g.listed("doc.txt").await;
    g.put("doc.txt", b"written after listing").await;
    let err = g.repo.open(&request(&g, "doc.txt", Some(&item))).await.err().unwrap();
    assert!(matches!(err, RepoError::Changed(_)), "{err:?}");
    assert_eq!(err.code(), "item_changed");
    // Without a pin (a Python server drops it) the current content is read.
    assert_eq!(read_all(&g, &request(&g, "doc.txt", None)).await.unwrap(), b"written after listing");
}

#[tokio::test]
async fn archived_and_oversized_objects_are_unscannable_with_the_reason() {
    let f = fixture(false, "", &[("DSXCONNECTOR_S3_MAX_OBJECT_SIZE_BYTES", "10")]).await;
    f.put_in(&f.bucket, "cold/g.bin", b"glacier", Some(StorageClass::Glacier)).await;
    f.put_in(&f.bucket, "cold/d.bin", b"deep", Some(StorageClass::DeepArchive)).await;
    f.put("big.bin", &[0u8; 11]).await;
    f.put("small.bin", &[0u8; 10]).await;
    for key in ["cold/g.bin", "cold/d.bin"] {
        let item = f.listed(key).await;
        let err = f.repo.open(&request(&f, key, Some(&item))).await.err().unwrap();
        assert!(matches!(&err, RepoError::Unscannable(r) if r.contains("archived")), "{key}: {err:?}");
        assert_eq!(err.code(), "unscannable");
    }
    let item = f.listed("big.bin").await;
    let err = f.repo.open(&request(&f, "big.bin", Some(&item))).await.err().unwrap();
    assert!(
        matches!(&err, RepoError::Unscannable(r) if r.contains("DSXCONNECTOR_S3_MAX_OBJECT_SIZE_BYTES")),
        "{err:?}"
    );
    // Even when the request does not say the size.
    let err = f.repo.open(&request(&f, "big.bin", None)).await.err().unwrap();
    assert!(matches!(err, RepoError::Unscannable(_)), "{err:?}");
    assert_eq!(read_all(&f, &request(&f, "small.bin", None)).await.unwrap().len(), 10);
}

#[tokio::test]
async fn delete_removes_the_scanned_version_not_just_a_marker() {
    let f = fixture(true, "", &[]).await;
    f.put("bad.com", EICAR).await;
    let item = f.listed("bad.com").await;
    f.put("bad.com", b"clean rewrite").await;
    let out = f.repo.item_action(&request(&f, "bad.com", Some(&item)), &plan(ItemAction::Delete, "q")).await.unwrap();
    assert_eq!(out.message, "File deleted.");
    let versions = f.s3.list_object_versions().bucket(&f.bucket).send().await.unwrap();
    let ids: Vec<&str> = versions.versions().iter().filter_map(|v| v.version_id()).collect();
    assert_eq!(ids.len(), 1, "the malicious version is gone: {ids:?}");
    assert!(!ids.contains(&item.version.as_ref().unwrap().version_id.as_deref().unwrap()));
    assert!(versions.delete_markers().is_empty(), "no delete marker hides it");
    assert_eq!(f.get("bad.com").await.unwrap(), b"clean rewrite", "the newer, unscanned content stays");
}

#[tokio::test]
async fn move_quarantines_and_checks_the_copy() {
    let f = fixture(true, "", &[]).await;
    f.put("in/bad.com", EICAR).await;
    let out = act(&f, "in/bad.com", ItemAction::Move, "dsxconnect-quarantine").await.unwrap();
    assert_eq!(out.message, "File moved");
    assert_eq!(out.description, format!("s3://{}/dsxconnect-quarantine/in/bad.com", f.bucket));
    assert_eq!(f.get("dsxconnect-quarantine/in/bad.com").await.unwrap(), EICAR);
    let versions = f.s3.list_object_versions().bucket(&f.bucket).prefix("in/").send().await.unwrap();
    assert!(versions.versions().is_empty() && versions.delete_markers().is_empty(), "the scanned version is deleted");

    // A second object of the same key never overwrites the first quarantined one.
    f.put("in/bad.com", b"another bad").await;
    let out = act(&f, "in/bad.com", ItemAction::Move, "dsxconnect-quarantine").await.unwrap();
    assert!(out.description.ends_with("dsxconnect-quarantine/in/bad.com.1"), "{}", out.description);
    assert_eq!(f.get("dsxconnect-quarantine/in/bad.com").await.unwrap(), EICAR);

    // A failed copy (the quarantine bucket does not exist) is an error and keeps the original.
    f.put("in/worse.com", EICAR).await;
    let err = act(&f, "in/worse.com", ItemAction::Move, "no-such-bucket-dsx/q").await.unwrap_err();
    assert!(matches!(err, RepoError::Io(_) | RepoError::NotFound(_)), "{err:?}");
    assert_eq!(f.get("in/worse.com").await.unwrap(), EICAR, "not moved, still in place");
}

#[tokio::test]
async fn tag_merges_with_the_owners_tags() {
    let f = fixture(false, "", &[]).await;
    f.put("bad.com", EICAR).await;
    let owner: Vec<Tag> = (0..3).map(|i| Tag::builder().key(format!("team{i}")).value("x").build().unwrap()).collect();
    f.s3.put_object_tagging()
        .bucket(&f.bucket)
        .key("bad.com")
        .tagging(Tagging::builder().set_tag_set(Some(owner)).build().unwrap())
        .send()
        .await
        .unwrap();
    let item = f.listed("bad.com").await;
    let mut req = request(&f, "bad.com", Some(&item));
    req.requested_action = Some(dsx_model::RequestedAction {
        tags: Some([("Scanner".to_owned(), "dsxa".to_owned())].into()),
        ..Default::default()
    });
    let out = f.repo.item_action(&req, &plan(ItemAction::Tag, "q")).await.unwrap();
    assert_eq!(out.message, "File tagged");
    let tags = f.tags("bad.com").await;
    assert_eq!(tags.get("Verdict").map(String::as_str), Some("Malicious"));
    assert_eq!(tags.get("Scanner").map(String::as_str), Some("dsxa"));
    assert_eq!(tags.get("dsx-scan-job-id").map(String::as_str), Some("job-1"));
    assert!((0..3).all(|i| tags.contains_key(&format!("team{i}"))), "owner tags kept: {tags:?}");
}

#[tokio::test]
async fn movetag_then_release_restores_the_object_tagged_released() {
    let f = fixture(false, "", &[]).await;
    f.put("in/bad.com", EICAR).await;
    let out = act(&f, "in/bad.com", ItemAction::MoveTag, "dsxconnect-quarantine").await.unwrap();
    assert_eq!(out.message, "File moved and tagged");
    assert!(f.get("in/bad.com").await.is_none());
    assert_eq!(f.tags("dsxconnect-quarantine/in/bad.com").await.get("Verdict").map(String::as_str), Some("Malicious"));

    // Only quarantined objects can be released.
    let err = f.repo.release("in/other.txt").await.unwrap_err();
    assert!(matches!(err, RepoError::Forbidden(_)), "{err:?}");
    let released = f.repo.release(&out.description).await.unwrap();
    assert_eq!(released.message, "File released");
    assert_eq!(released.description, format!("s3://{}/in/bad.com", f.bucket));
    assert_eq!(f.get("in/bad.com").await.unwrap(), EICAR);
    assert!(f.get("dsxconnect-quarantine/in/bad.com").await.is_none(), "the quarantined copy is removed");
    let tags = f.tags("in/bad.com").await;
    assert_eq!(tags.get("Verdict").map(String::as_str), Some("Released"));
    assert!(tags.contains_key("dsx-released-at"));

    // The released object is not quarantined again by a later scan's action.
    let again = act(&f, "in/bad.com", ItemAction::Move, "dsxconnect-quarantine").await.unwrap();
    assert!(again.message.contains("Released"), "{}", again.message);
    assert_eq!(f.get("in/bad.com").await.unwrap(), EICAR);

    // A release never overwrites an object that is back at the original key.
    f.put("in/x.com", EICAR).await;
    let moved = act(&f, "in/x.com", ItemAction::Move, "dsxconnect-quarantine").await.unwrap();
    f.put("in/x.com", b"new upload").await;
    let err = f.repo.release(&moved.description).await.unwrap_err();
    assert!(matches!(err, RepoError::Invalid(_)), "{err:?}");
    assert_eq!(f.get("in/x.com").await.unwrap(), b"new upload");
}

#[tokio::test]
async fn webhook_events_every_record_decoded_filtered_and_never_the_quarantine() {
    let f = fixture(false, "", &[]).await;
    let record = |key: &str| json!({ "eventName": "ObjectCreated:Put", "s3": { "bucket": { "name": f.bucket }, "object": { "key": key, "size": 4, "eTag": "abc" } } });
    let body = json!({ "Records": [
        record("in/my+file%21.txt"),
        record("in/second.txt"),
        record("dsxconnect-quarantine/in/bad.com"),
        record("skip/me.tmp"),
        { "eventName": "ObjectCreated:Put", "s3": { "bucket": { "name": "someone-elses" }, "object": { "key": "in/x" } } },
    ]});
    let filter = Arc::new(Filter::parse("-*.tmp").unwrap());
    let items = f.repo.webhook_items(body.to_string().as_bytes(), Arc::clone(&filter)).await.unwrap().unwrap();
    let keys: Vec<&str> = items.iter().map(|i| i.location.as_str()).collect();
    assert_eq!(keys, ["in/my file!.txt", "in/second.txt"]);
    assert_eq!(items[0].version.as_ref().unwrap().etag.as_deref(), Some("\"abc\""), "pinned to the event's ETag");
    let sns = json!({ "Type": "Notification", "Message": json!({ "Records": [record("a%20b.txt")] }).to_string() });
    let eb = json!({ "source": "aws.s3", "detail-type": "Object Created",
        "detail": { "bucket": { "name": f.bucket }, "object": { "key": "c d.txt", "size": 1 } } });
    for (body, want) in [(sns, "a b.txt"), (eb, "c d.txt")] {
        let items = f.repo.webhook_items(body.to_string().as_bytes(), Arc::clone(&filter)).await.unwrap().unwrap();
        assert_eq!(items.iter().map(|i| i.location.as_str()).collect::<Vec<_>>(), [want]);
    }
    let err = f.repo.webhook_items(b"{\"nope\": 1}", filter).await.unwrap().unwrap_err();
    assert!(matches!(err, RepoError::Invalid(_)));
}

#[tokio::test]
async fn an_sqs_message_is_deleted_only_after_every_record_was_enqueued() {
    let moto = dsx_testkit::Moto::get();
    // moto's queue URLs are `<endpoint>/<account>/<name>`.
    let url = format!("{}/123456789012/{}", moto.endpoint, support::bucket_name());
    let f = support::fixture_on(moto, false, "", &[("DSXCONNECTOR_S3_SQS_QUEUE_URL", &url)]).await;
    let sqs0 = f.sqs.clone().unwrap();
    let name = url.rsplit('/').next().unwrap();
    let queue = sqs0
        .create_queue()
        .queue_name(name)
        .attributes(aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout, "1")
        .send()
        .await
        .unwrap();
    assert_eq!(queue.queue_url(), Some(url.as_str()));
    let record = |key: &str| json!({ "eventName": "ObjectCreated:Put", "s3": { "bucket": { "name": f.bucket }, "object": { "key": key } } });
    let body = json!({ "Records": [record("a.txt"), record("b+c.txt")] }).to_string();
    sqs0.send_message().queue_url(&url).message_body(&body).send().await.unwrap();
    let mut batches = f.repo.watch_batches(Arc::new(Filter::everything())).expect("SQS configured");

    // First delivery: the enqueue fails → the message stays.
    let batch = tokio::time::timeout(Duration::from_secs(30), batches.recv()).await.unwrap().unwrap();
    let keys: Vec<&str> = batch.items.iter().map(|i| i.location.as_str()).collect();
    assert_eq!(keys, ["a.txt", "b c.txt"], "every record of the message");
    batch.done.send(false).unwrap();
    // Redelivered after the visibility timeout: this time it is accepted → deleted.
    let batch = tokio::time::timeout(Duration::from_secs(30), batches.recv()).await.unwrap().unwrap();
    assert_eq!(batch.items.len(), 2, "the same message again");
    batch.done.send(true).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let attrs = sqs0
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
            .send()
            .await
            .unwrap();
        let attrs: HashMap<String, String> =
            attrs.attributes().unwrap().iter().map(|(k, v)| (k.as_str().to_owned(), v.clone())).collect();
        let left: u64 = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
            .iter()
            .map(|k| attrs.get(*k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0))
            .sum();
        if left == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "message not deleted after acceptance: {attrs:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
