//! Group commit for scan intake: requests that arrive while the store is busy with earlier
//! ones are queued together, in one store round trip ([`ScanQueue::enqueue_intakes`]).
//! Nothing waits for a timer: a lone request goes at once, and under load each round trip
//! carries what arrived while the ones before it were in flight.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{mpsc, oneshot};

use crate::{Intake, IntakeOnce, IntakeResult, Nonce, QueuedTask, ScanQueue, StoreError};

/// Most intakes in one round trip.
const MAX_GROUP: usize = 64;
/// Most tasks in one round trip, unless one intake alone has more (it then goes alone): a
/// Redis script blocks the server while it runs.
const MAX_GROUP_TASKS: usize = 1024;
/// Groups committing at once: on the embedded store a group's transaction can commit while
/// the one before waits for its fsync, and both share it.
const MAX_IN_FLIGHT: usize = 2;
/// Intakes waiting for the committer before senders wait for room.
const BACKLOG: usize = 1024;

/// One intake request, owned so it can wait for the committer.
#[derive(Debug)]
pub struct OwnedIntake {
    pub tasks: Vec<QueuedTask>,
    /// As [`IntakeOnce::key`].
    pub key: Option<String>,
    pub nonce: Option<OwnedNonce>,
}

/// As [`Nonce`], owned: a verified request's nonce whose replay-cache entry is not written yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedNonce {
    pub key_id: String,
    pub nonce: String,
    pub ttl: Duration,
}

impl OwnedIntake {
    fn borrow(&self) -> Intake<'_> {
        let nonce = self.nonce.as_ref().map(|n| Nonce { key_id: &n.key_id, nonce: &n.nonce, ttl: n.ttl });
        Intake { tasks: &self.tasks, once: IntakeOnce { key: self.key.as_deref(), nonce } }
    }
}

/// The store's answer to one intake, with the intake handed back.
pub type IntakeAnswer = (OwnedIntake, IntakeResult);

struct Waiting {
    intake: OwnedIntake,
    reply: oneshot::Sender<IntakeAnswer>,
}

/// The intake side of a store, committing concurrent requests together. Cheap to share; the
/// committing task starts with the first request (it needs a runtime).
pub struct GroupCommit {
    store: Arc<dyn ScanQueue>,
    queue: OnceLock<mpsc::Sender<Waiting>>,
}

impl GroupCommit {
    pub fn new(store: Arc<dyn ScanQueue>) -> Self {
        Self { store, queue: OnceLock::new() }
    }

    /// Queue one intake with whatever else is waiting; the answer is
    /// [`ScanQueue::enqueue_scans_once`]'s, durable on return.
    pub async fn enqueue(&self, intake: OwnedIntake) -> IntakeAnswer {
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::channel(BACKLOG);
            tokio::spawn(commit_loop(Arc::clone(&self.store), rx));
            tx
        });
        let (reply, answer) = oneshot::channel();
        if let Err(refused) = queue.send(Waiting { intake, reply }).await {
            return (refused.0.intake, Err(stopped()));
        }
        // Dropped only if the committer itself is gone (its runtime shut down), with the intake.
        answer.await.unwrap_or_else(|_| (OwnedIntake { tasks: Vec::new(), key: None, nonce: None }, Err(stopped())))
    }
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the intake committer has stopped".into())
}

async fn commit_loop(store: Arc<dyn ScanQueue>, mut queue: mpsc::Receiver<Waiting>) {
    // The commits run inside this task rather than spawned: a spawn per group costs more
    // scheduling than the group saves on a fast store.
    let mut in_flight = FuturesUnordered::new();
    let mut arrived = Vec::with_capacity(MAX_GROUP);
    let mut open = true;
    loop {
        while in_flight.len() < MAX_IN_FLIGHT && !arrived.is_empty() {
            // Add whatever came meanwhile, without waiting.
            while arrived.len() < MAX_GROUP {
                let Ok(waiting) = queue.try_recv() else { break };
                arrived.push(waiting);
            }
            let group: Vec<Waiting> = arrived.drain(..group_len(&arrived)).collect();
            in_flight.push(commit(&*store, group));
        }
        tokio::select! {
            biased;
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            arrivals = queue.recv_many(&mut arrived, MAX_GROUP), if open && arrived.is_empty() && in_flight.len() < MAX_IN_FLIGHT => {
                open = arrivals > 0;
            }
            else => return,
        }
    }
}

/// One round trip for `group`, and each its answer.
async fn commit(store: &dyn ScanQueue, group: Vec<Waiting>) {
    let (intakes, replies): (Vec<OwnedIntake>, Vec<_>) = group.into_iter().map(|w| (w.intake, w.reply)).unzip();
    let borrowed: Vec<Intake<'_>> = intakes.iter().map(OwnedIntake::borrow).collect();
    // A panic in the store fails this group with an error, not silently.
    let answers = AssertUnwindSafe(store.enqueue_intakes(&borrowed)).catch_unwind().await;
    drop(borrowed);
    let failure = match answers {
        Ok(Ok(answers)) if answers.len() == intakes.len() => {
            for ((intake, answer), reply) in intakes.into_iter().zip(answers).zip(replies) {
                let _ = reply.send((intake, answer));
            }
            return;
        }
        Ok(Ok(_)) => StoreError::Corrupt("the store's answers do not match the intakes".into()),
        Ok(Err(err)) => err,
        Err(_) => {
            tracing::error!("the store panicked during an intake commit");
            StoreError::Unavailable("the intake commit failed".into())
        }
    };
    for (intake, reply) in intakes.into_iter().zip(replies) {
        let _ = reply.send((intake, Err(failure.clone())));
    }
}

/// How many of the waiting intakes (at least one) go in the next round trip.
fn group_len(waiting: &[Waiting]) -> usize {
    let mut tasks = 0;
    let fits = waiting
        .iter()
        .take_while(|w| {
            tasks += w.intake.tasks.len();
            tasks <= MAX_GROUP_TASKS
        })
        .count();
    fits.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(tasks: usize) -> Waiting {
        let task = QueuedTask {
            task_id: "t".into(),
            connector_uuid: uuid::Uuid::nil(),
            job_id: "j".into(),
            request: dsx_model::ScanRequest::new("/item", "item"),
            enqueued_at_us: 0,
            enqueued_at: 0,
        };
        let intake = OwnedIntake { tasks: vec![task; tasks], key: None, nonce: None };
        Waiting { intake, reply: oneshot::channel().0 }
    }

    #[test]
    fn a_group_holds_whole_intakes_up_to_the_task_limit() {
        let sizes = |s: &[usize]| s.iter().map(|&n| waiting(n)).collect::<Vec<_>>();
        assert_eq!(group_len(&sizes(&[1, 1, 1])), 3);
        assert_eq!(group_len(&sizes(&[MAX_GROUP_TASKS - 1, 1, 1])), 2, "the limit is reached, not passed");
        assert_eq!(group_len(&sizes(&[600, 600, 1])), 1, "an intake is never split");
        assert_eq!(group_len(&sizes(&[MAX_GROUP_TASKS * 3, 1])), 1, "a big intake goes alone");
    }
}
