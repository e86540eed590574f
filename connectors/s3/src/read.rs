//! `read_file`: stream the object pinned to the listed version, resuming a dropped
//! connection with a Range request against the same version.

use std::sync::Arc;

use aws_sdk_s3::operation::get_object::GetObjectOutput;
use axum::body::Body;
use bytes::Bytes;
use dsx_connector::RepoError;
use dsx_model::ScanRequest;
use tokio::sync::mpsc;

use crate::{classify, Inner};

/// Resumes after a dropped connection before the read fails.
const MAX_RESUMES: u32 = 3;

/// What a read is pinned to: the version id when known, and the ETag (`If-Match`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pin {
    pub version_id: Option<String>,
    pub etag: Option<String>,
}

impl Pin {
    pub fn of(request: &ScanRequest) -> Self {
        let v = request.item_version.clone().unwrap_or_default();
        Self { version_id: v.version_id, etag: v.etag }
    }
}

/// `Range` for the rest of an object from `offset`.
fn rest_from(offset: u64) -> String {
    format!("bytes={offset}-")
}

async fn get(inner: &Inner, key: &str, pin: &Pin, offset: u64) -> Result<GetObjectOutput, RepoError> {
    let bucket = &inner.cfg.asset.bucket;
    inner
        .s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .set_version_id(pin.version_id.clone())
        .set_if_match(pin.etag.clone())
        .set_range((offset > 0).then(|| rest_from(offset)))
        .send()
        .await
        .map_err(|e| classify("GetObject", &Inner::s3_uri(bucket, key), &e))
}

fn too_large(max: Option<u64>, size: Option<u64>, key: &str) -> Result<(), RepoError> {
    match (max, size) {
        (Some(max), Some(size)) if size > max => Err(RepoError::Unscannable(format!(
            "{key} is {size} bytes, over DSXCONNECTOR_S3_MAX_OBJECT_SIZE_BYTES ({max})"
        ))),
        _ => Ok(()),
    }
}

pub async fn open(inner: &Arc<Inner>, request: &ScanRequest) -> Result<(Body, Option<u64>), RepoError> {
    let key = inner.key_of(&request.location)?.to_owned();
    too_large(inner.cfg.max_object_size, request.size_in_bytes, &key)?;
    let mut pin = Pin::of(request);
    let first = get(inner, &key, &pin, 0).await?;
    let size = first.content_length().and_then(|n| u64::try_from(n).ok());
    too_large(inner.cfg.max_object_size, size, &key)?;
    // Unpinned requests (a Python server drops `item_version`) pin the resumes to what the
    // first answer was, so a resumed read never splices two versions.
    pin.version_id = pin.version_id.or_else(|| first.version_id().filter(|v| *v != "null").map(str::to_owned));
    pin.etag = pin.etag.or_else(|| first.e_tag().map(str::to_owned));
    let (tx, mut rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    tokio::spawn(pump(Arc::clone(inner), key, pin, first, tx));
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    Ok((Body::from_stream(stream), size))
}

/// Copy the object's bytes into `tx`; on a dropped connection, ask for the rest.
async fn pump(
    inner: Arc<Inner>,
    key: String,
    pin: Pin,
    first: GetObjectOutput,
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    let mut body = first.body;
    let mut offset = 0u64;
    let mut resumes = 0u32;
    loop {
        match body.next().await {
            None => return,
            Some(Ok(chunk)) => {
                offset += chunk.len() as u64;
                if tx.send(Ok(chunk)).await.is_err() {
                    return; // the reader went away
                }
            }
            Some(Err(err)) if resumes < MAX_RESUMES => {
                resumes += 1;
                tracing::warn!(%key, offset, resumes, error = %err, "read interrupted; resuming with a Range request");
                match get(&inner, &key, &pin, offset).await {
                    Ok(rest) => body = rest.body,
                    Err(err) => {
                        let _ = tx.send(Err(std::io::Error::other(err.to_string()))).await;
                        return;
                    }
                }
            }
            Some(Err(err)) => {
                let _ =
                    tx.send(Err(std::io::Error::other(format!("read of {key} failed at byte {offset}: {err}")))).await;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_limit_and_ranges() {
        assert!(too_large(Some(10), Some(10), "k").is_ok());
        assert!(matches!(too_large(Some(10), Some(11), "k"), Err(RepoError::Unscannable(_))));
        assert!(too_large(None, Some(u64::MAX), "k").is_ok());
        assert_eq!(rest_from(1024), "bytes=1024-");
    }
}
