//! The embedded store's side of one capability (see the trait for the contract).

use super::*;

#[async_trait]
impl ScanQueue for EmbeddedStore {
    async fn enqueue_intakes(&self, intakes: &[Intake<'_>]) -> StoreResult<Vec<IntakeResult>> {
        // Encoded here, so the blocking task owns only bytes.
        let prepared = intakes.iter().map(PreparedIntake::new).collect::<StoreResult<Vec<_>>>()?;
        let answers = self
            .run(move |inner| {
                // An intake that fails does so before any write but its nonce's, so the others
                // still commit; a failure of the transaction itself fails them all.
                inner.write(true, |txn| Ok(prepared.iter().map(|intake| intake.enqueue(txn)).collect::<Vec<_>>()))
            })
            .await?;
        if answers.iter().any(|a| matches!(a, Ok(Ok(Enqueued::Queued)))) {
            self.inner.work.notify_waiters();
        }
        Ok(answers)
    }

    async fn scan_queue_len(&self) -> StoreResult<u64> {
        self.run(|inner| {
            let txn = inner.db()?.begin_read().map_err(unavailable)?;
            let table = txn.open_table(SCAN_QUEUE).map_err(unavailable)?;
            table.len().map_err(unavailable)
        })
        .await
    }

    async fn complete_scan(
        &self,
        delivery: &Delivery,
        record: Option<&ResultRecord>,
        retain: usize,
    ) -> StoreResult<Option<u64>> {
        let seq = parse_seq(&delivery.id)?;
        self.complete_batched(seq, record.cloned(), retain).await
    }

    async fn claim_scans(&self, consumer: &str, max: usize, lease: Duration) -> StoreResult<Vec<Delivery>> {
        let _ = consumer; // one process owns the file: leases need no owner name
                          // Shares the write thread's transactions with the completions of the same moment.
        self.write_batched(move |_, txn| {
            {
                let now = now_millis();
                let queue = txn.open_table(SCAN_QUEUE).map_err(unavailable)?;
                let mut state = txn.open_table(QUEUE_STATE).map_err(unavailable)?;
                let jobs = txn.open_table(JOBS).map_err(unavailable)?;
                let results = txn.open_table(RESULT_SEQ_BY_TASK).map_err(unavailable)?;
                let mut statuses: std::collections::HashMap<String, Option<JobStatus>> = Default::default();
                let claimed_at_us = crate::now_micros();
                let mut out = Vec::new();
                for row in queue.iter().map_err(unavailable)? {
                    if out.len() >= max {
                        break;
                    }
                    let (seq, payload) = row.map_err(unavailable)?;
                    let seq = seq.value();
                    let (visible_at, attempt, leased) =
                        state.get(seq).map_err(unavailable)?.map(|g| g.value()).unwrap_or((0, 1, 0));
                    if visible_at > now {
                        continue;
                    }
                    // A lease that ran out means the holder died: this is another attempt.
                    let attempt = if leased == 1 { attempt + 1 } else { attempt };
                    let task: QueuedTask = match serde_json::from_slice(payload.value()) {
                        Ok(t) => t,
                        Err(err) => {
                            tracing::error!(seq, error = %err, "unreadable queue entry skipped");
                            continue;
                        }
                    };
                    state.insert(seq, (now + ttl_ms_u64(lease), attempt, 1)).map_err(unavailable)?;
                    let job_status = match statuses.get(&task.job_id) {
                        Some(status) => *status,
                        None => {
                            let status = match jobs.get(task.job_id.as_str()).map_err(unavailable)? {
                                Some(raw) => Some(serde_json::from_slice::<Job>(raw.value()).map_err(corrupt)?.status),
                                None => None,
                            };
                            statuses.insert(task.job_id.clone(), status);
                            status
                        }
                    };
                    let has_result = results.get(task.task_id.as_str()).map_err(unavailable)?.is_some();
                    out.push(Delivery {
                        id: seq.to_string(),
                        task,
                        attempt: attempt as u32,
                        job_status,
                        has_result,
                        claimed_at_us,
                    });
                }
                Ok(out)
            }
        })
        .await
    }

    async fn ack_scan(&self, delivery: &Delivery) -> StoreResult<()> {
        let seq = parse_seq(&delivery.id)?;
        self.run(move |inner| inner.write(false, |txn| ack_in(txn, seq))).await
    }

    async fn retry_scan(&self, delivery: &Delivery, delay: Duration) -> StoreResult<()> {
        self.requeue_later(delivery, delay, u64::from(delivery.attempt) + 1, true).await
    }

    async fn defer_scan(&self, delivery: &Delivery, delay: Duration) -> StoreResult<()> {
        // Not waited for: a crash that loses it only redelivers the task once its lease runs out.
        self.requeue_later(delivery, delay, u64::from(delivery.attempt), false).await
    }

    async fn renew_scans(&self, consumer: &str, deliveries: &[Delivery], lease: Duration) -> StoreResult<Vec<String>> {
        let _ = consumer; // one process owns the file: the attempt number tells whose lease it is
        if deliveries.is_empty() {
            return Ok(Vec::new());
        }
        let held: Vec<(String, u64)> = deliveries.iter().map(|d| (d.id.clone(), u64::from(d.attempt))).collect();
        self.run(move |inner| {
            inner.write(false, |txn| {
                let queue = txn.open_table(SCAN_QUEUE).map_err(unavailable)?;
                let mut state = txn.open_table(QUEUE_STATE).map_err(unavailable)?;
                let now = now_millis();
                let mut lost = Vec::new();
                for (id, attempt) in held {
                    let seq = parse_seq(&id)?;
                    let current = state.get(seq).map_err(unavailable)?.map(|g| g.value());
                    let mine = matches!(current, Some((_, a, 1)) if a == attempt);
                    if mine && queue.get(seq).map_err(unavailable)?.is_some() {
                        state.insert(seq, (now + ttl_ms_u64(lease), attempt, 1)).map_err(unavailable)?;
                    } else {
                        lost.push(id);
                    }
                }
                Ok(lost)
            })
        })
        .await
    }

    async fn dead_letter_scan(
        &self,
        delivery: &Delivery,
        reason: &str,
        record: Option<&ResultRecord>,
        retain: usize,
    ) -> StoreResult<Option<u64>> {
        let seq = parse_seq(&delivery.id)?;
        let letter = DeadLetter::of(delivery, reason);
        let json = serde_json::to_vec(&letter).map_err(corrupt)?;
        let record = record.cloned();
        self.run(move |inner| {
            let retention = inner.retention_ms();
            inner.write(true, |txn| {
                let removed =
                    txn.open_table(SCAN_QUEUE).map_err(unavailable)?.remove(seq).map_err(unavailable)?.is_some();
                txn.open_table(QUEUE_STATE).map_err(unavailable)?.remove(seq).map_err(unavailable)?;
                if !removed {
                    return Ok(None);
                }
                let mut dlq = txn.open_table(DEAD_LETTERS).map_err(unavailable)?;
                let next = dlq.last().map_err(unavailable)?.map(|(k, _)| k.value() + 1).unwrap_or(1);
                dlq.insert(next, json.as_slice()).map_err(unavailable)?;
                drop(dlq);
                let ids = store_results(txn, &[(record.as_ref(), retain)], retention)?;
                Ok(ids.into_iter().next().flatten())
            })
        })
        .await
    }

    async fn dead_letters(&self, start: usize, end: usize) -> StoreResult<Vec<DeadLetter>> {
        self.run(move |inner| {
            let txn = inner.db()?.begin_read().map_err(unavailable)?;
            let table = txn.open_table(DEAD_LETTERS).map_err(unavailable)?;
            let mut out = Vec::new();
            for row in table.iter().map_err(unavailable)?.skip(start).take(end.saturating_sub(start)) {
                let (_, json) = row.map_err(unavailable)?;
                out.push(serde_json::from_slice(json.value()).map_err(corrupt)?);
            }
            Ok(out)
        })
        .await
    }

    async fn dead_letter_count(&self) -> StoreResult<u64> {
        self.run(|inner| {
            let txn = inner.db()?.begin_read().map_err(unavailable)?;
            txn.open_table(DEAD_LETTERS).map_err(unavailable)?.len().map_err(unavailable)
        })
        .await
    }

    async fn requeue_dead_letters(&self, max: usize) -> StoreResult<u64> {
        let out = self
            .run(move |inner| {
                inner.write(true, |txn| {
                    let mut dlq = txn.open_table(DEAD_LETTERS).map_err(unavailable)?;
                    let mut queue = txn.open_table(SCAN_QUEUE).map_err(unavailable)?;
                    let mut next = queue.last().map_err(unavailable)?.map(|(k, _)| k.value() + 1).unwrap_or(1);
                    let mut moved = 0;
                    while moved < max as u64 {
                        let Some((_, json)) = dlq.pop_first().map_err(unavailable)? else { break };
                        let letter: DeadLetter = serde_json::from_slice(json.value()).map_err(corrupt)?;
                        undo_failed_outcome(txn, &letter.task)?;
                        let task = serde_json::to_vec(&letter.task).map_err(corrupt)?;
                        queue.insert(next, task.as_slice()).map_err(unavailable)?;
                        next += 1;
                        moved += 1;
                    }
                    Ok(moved)
                })
            })
            .await;
        self.inner.work.notify_waiters();
        out
    }

    async fn clear_dead_letters(&self) -> StoreResult<u64> {
        self.run(|inner| {
            inner.write(true, |txn| {
                let mut dlq = txn.open_table(DEAD_LETTERS).map_err(unavailable)?;
                let count = dlq.len().map_err(unavailable)?;
                dlq.retain(|_, _| false).map_err(unavailable)?;
                Ok(count)
            })
        })
        .await
    }

    async fn wait_for_tasks(&self, wait: Duration) -> StoreResult<()> {
        // Retries and expired leases become due by time alone: wake at least every
        // `RECHECK_IDLE` even without an enqueue.
        let _ = tokio::time::timeout(wait.min(RECHECK_IDLE), self.inner.work.notified()).await;
        Ok(())
    }
}

/// One intake, encoded for the write transaction.
struct PreparedIntake {
    /// The queue entries, in order.
    payloads: Vec<Vec<u8>>,
    /// (job id, owner, items), as [`Intake::jobs`].
    jobs: Vec<(String, Uuid, u64)>,
    key: Option<String>,
    nonce: Option<(String, String, Duration)>,
}

impl PreparedIntake {
    fn new(intake: &Intake<'_>) -> StoreResult<Self> {
        Ok(Self {
            payloads: intake.tasks.iter().map(serde_json::to_vec).collect::<Result<_, _>>().map_err(corrupt)?,
            jobs: intake.jobs().into_iter().map(|(id, owner, items)| (id.to_owned(), owner, items)).collect(),
            key: intake.once.key.map(str::to_owned),
            nonce: intake
                .once
                .nonce
                .map(|n| (n.key_id.to_owned(), n.nonce.to_owned(), n.ttl.max(crate::MIN_NONCE_TTL))),
        })
    }

    /// Check and queue inside `txn`: every check comes before any write but the nonce's, so a
    /// refused intake leaves only its nonce behind (a verified signature uses it up).
    fn enqueue(&self, txn: &WriteTransaction) -> IntakeResult {
        // The nonce first, as the signature check would: a replay queues nothing.
        if let Some((key_id, nonce, ttl)) = &self.nonce {
            let mut nonces = txn.open_table(NONCES).map_err(unavailable)?;
            let key = (key_id.as_str(), nonce.as_str());
            if nonces.get(key).map_err(unavailable)?.is_some_and(|g| g.value() > now_millis()) {
                return Ok(Err(JobRefusal::NonceReused));
            }
            nonces.insert(key, expiry_ms(*ttl)).map_err(unavailable)?;
        }
        let mut seen = txn.open_table(INTAKE_KEYS).map_err(unavailable)?;
        if let Some(key) = &self.key {
            if seen.get(key.as_str()).map_err(unavailable)?.is_some_and(|exp| exp.value() > now_millis()) {
                return Ok(Ok(Enqueued::Repeat));
            }
        }
        let mut jobs = txn.open_table(JOBS).map_err(unavailable)?;
        // Every job, read once and checked before anything is written: queued whole or not at all.
        let now = now_secs();
        let mut touched = Vec::with_capacity(self.jobs.len());
        for (job_id, owner, items) in &self.jobs {
            let job = match jobs.get(job_id.as_str()).map_err(unavailable)? {
                Some(raw) => serde_json::from_slice::<Job>(raw.value()).map_err(corrupt)?,
                None => new_job(job_id, *owner, now),
            };
            if let Err(refusal) = job_takes(&job, *owner) {
                return Ok(Err(refusal));
            }
            touched.push((job, *items));
        }
        let mut queue = txn.open_table(SCAN_QUEUE).map_err(unavailable)?;
        let first = queue.last().map_err(unavailable)?.map(|(k, _)| k.value() + 1).unwrap_or(1);
        for (seq, payload) in (first..).zip(&self.payloads) {
            queue.insert(seq, payload.as_slice()).map_err(unavailable)?;
        }
        for (job, items) in &mut touched {
            job.enqueued_count += *items;
            job.updated_at = now;
            let bytes = serde_json::to_vec(&*job).map_err(corrupt)?;
            jobs.insert(job.job_id.as_str(), bytes.as_slice()).map_err(unavailable)?;
        }
        // Remembered only with the tasks: a refused intake may be sent again.
        if let Some(key) = &self.key {
            seen.insert(key.as_str(), now_millis() + ttl_ms_u64(crate::INTAKE_KEY_TTL)).map_err(unavailable)?;
        }
        Ok(Ok(Enqueued::Queued))
    }
}
