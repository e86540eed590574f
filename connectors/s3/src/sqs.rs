//! Monitor mode: long-poll an SQS queue of S3 event notifications (no public endpoint
//! needed). A message is deleted only after every item it names was enqueued; otherwise it
//! becomes visible again and, after the queue's `maxReceiveCount`, goes to its dead-letter
//! queue by the redrive policy.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::error::DisplayErrorContext;
use dsx_connector::EventBatch;
use dsx_filter::Filter;
use tokio::sync::{mpsc, oneshot};

use crate::{events, Inner};

/// SQS's longest long poll.
const WAIT_SECONDS: i32 = 20;
/// Pause after a failed receive (credentials, network) before trying again.
const RECEIVE_BACKOFF: Duration = Duration::from_secs(5);

pub fn watch(inner: Arc<Inner>, filter: Arc<Filter>) -> Option<mpsc::Receiver<EventBatch>> {
    let Some(url) = inner.cfg.sqs_queue_url.clone() else {
        tracing::warn!("DSXCONNECTOR_MONITOR is on but DSXCONNECTOR_S3_SQS_QUEUE_URL is not set: no events are consumed (the webhook still takes them)");
        return None;
    };
    let (tx, rx) = mpsc::channel(16);
    tracing::info!(queue = %url, "consuming S3 event notifications from SQS");
    tokio::spawn(consume(inner, filter, url, tx));
    Some(rx)
}

async fn consume(inner: Arc<Inner>, filter: Arc<Filter>, url: String, tx: mpsc::Sender<EventBatch>) {
    let Some(sqs) = inner.sqs.clone() else { return };
    loop {
        let received = sqs
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .wait_time_seconds(WAIT_SECONDS)
            .send()
            .await;
        let messages = match received {
            Ok(out) => out.messages.unwrap_or_default(),
            Err(err) => {
                tracing::warn!(error = %DisplayErrorContext(&err), "SQS ReceiveMessage failed; retrying");
                tokio::time::sleep(RECEIVE_BACKOFF).await;
                continue;
            }
        };
        for message in messages {
            let id = message.message_id().unwrap_or_default().to_owned();
            let body = message.body().unwrap_or_default();
            let items = match events::parse(body.as_bytes()) {
                Ok(evts) => inner.event_items(evts, &filter),
                Err(err) => {
                    // Left in the queue: the redrive policy moves it aside after a few tries.
                    tracing::warn!(message_id = %id, error = %err, "SQS message is not an S3 event; left for the redrive policy");
                    continue;
                }
            };
            let count = items.len();
            let accepted = if items.is_empty() {
                true // nothing to scan (other events, filtered, quarantine): done with it
            } else {
                let (done, result) = oneshot::channel();
                if tx.send(EventBatch { items, done }).await.is_err() {
                    return; // the connector is shutting down
                }
                result.await.unwrap_or(false)
            };
            if !accepted {
                tracing::warn!(message_id = %id, items = count, "not every item was enqueued; the message is left for redelivery");
                continue;
            }
            let Some(handle) = message.receipt_handle() else { continue };
            if let Err(err) = sqs.delete_message().queue_url(&url).receipt_handle(handle).send().await {
                tracing::warn!(message_id = %id, error = %DisplayErrorContext(&err), "SQS DeleteMessage failed; the message will be delivered again");
            }
        }
    }
}
