//! Live updates over SSE (`text/event-stream`), with idle heartbeats every 15 s.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use serde_json::json;

use crate::error::ApiError;
use crate::state::SharedState;

/// Channel names on the store's notification bus (`<env>:dsx-connect:notify:<name>` in Redis).
pub const SCAN_RESULT: &str = "scan_result";
pub const CONNECTORS: &str = "connectors";
/// Connector uuids whose keys were revoked: every API replica drops them from its key cache.
pub const REVOCATIONS: &str = "revocations";

const HEARTBEAT: Duration = Duration::from_secs(15);

fn relay(rx: tokio::sync::mpsc::Receiver<String>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let events =
        stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|msg| (Ok(Event::default().data(msg)), rx)) });
    Sse::new(events).keep_alive(KeepAlive::new().interval(HEARTBEAT).text("heartbeat"))
}

/// `GET subscribe/scan-result`: one event per stored result.
pub async fn scan_results(
    State(state): State<SharedState>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    Ok(relay(state.store.subscribe(SCAN_RESULT).await?))
}

/// `GET subscribe/connector-registered`: registered / refreshed / unregistered.
pub async fn connectors(
    State(state): State<SharedState>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    Ok(relay(state.store.subscribe(CONNECTORS).await?))
}

#[derive(Deserialize)]
pub struct IntervalQuery {
    interval: Option<u64>,
}

/// `GET subscribe/job-summary/{job_id}?interval=5`: the job's counters every `interval`
/// seconds, ending after the job completes or is cancelled.
pub async fn job_summary(
    State(state): State<SharedState>,
    Path(job_id): Path<String>,
    Query(q): Query<IntervalQuery>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let every = Duration::from_secs(q.interval.unwrap_or(5).clamp(1, 300));
    let events = stream::unfold((state, job_id, false, true), move |(state, job_id, finished, first)| async move {
        if finished {
            return None;
        }
        if !first {
            tokio::time::sleep(every).await;
        }
        let (data, done) = match state.store.get_job(&job_id).await {
            Ok(Some(job)) => {
                let done = matches!(job.status, dsx_store::JobStatus::Completed | dsx_store::JobStatus::Cancelled);
                (json!({ "type": "job_summary", "job": job }), done)
            }
            Ok(None) => (json!({ "type": "job_summary", "job": null, "job_id": job_id }), false),
            Err(err) => (json!({ "type": "error", "detail": err.to_string() }), false),
        };
        Some((Ok(Event::default().data(data.to_string())), (state, job_id, done, false)))
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(HEARTBEAT).text("heartbeat"))
}
