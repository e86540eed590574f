//! The Redis store's side of one capability (see the trait for the contract).

use super::*;

#[async_trait]
impl ScanQueue for RedisStore {
    async fn enqueue_intakes(&self, intakes: &[Intake<'_>]) -> StoreResult<Vec<IntakeResult>> {
        if intakes.is_empty() {
            return Ok(Vec::new());
        }
        // Keys first, then arguments, in the order `ENQUEUE_SCRIPT` reads them.
        let jobs: Vec<_> = intakes.iter().map(Intake::jobs).collect();
        let keys: usize = 1 + intakes
            .iter()
            .zip(&jobs)
            .map(|(intake, jobs)| {
                jobs.len() + usize::from(intake.once.key.is_some()) + usize::from(intake.once.nonce.is_some())
            })
            .sum::<usize>();
        let mut cmd = evalsha(&scripts::ENQUEUE, keys);
        cmd.arg(self.keys.scan_queue());
        for (intake, jobs) in intakes.iter().zip(&jobs) {
            for (job_id, _, _) in jobs {
                cmd.arg(self.keys.job(job_id));
            }
            if let Some(key) = intake.once.key {
                cmd.arg(self.keys.intake(key));
            }
            if let Some(nonce) = intake.once.nonce {
                cmd.arg(self.keys.nonce(nonce.key_id, nonce.nonce));
            }
        }
        cmd.arg(now_secs()).arg(intakes.len());
        let mut payload = Vec::with_capacity(512);
        let mut uuid = uuid::Uuid::encode_buffer();
        for (intake, jobs) in intakes.iter().zip(&jobs) {
            let intake_ttl = if intake.once.key.is_some() { ttl_ms(crate::INTAKE_KEY_TTL) } else { 0 };
            let nonce_ttl = intake.once.nonce.map_or(0, |n| ttl_ms(n.ttl.max(crate::MIN_NONCE_TTL)));
            cmd.arg(jobs.len()).arg(intake_ttl).arg(nonce_ttl).arg(intake.tasks.len());
            for (job_id, owner, items) in jobs {
                cmd.arg(*job_id).arg(&*owner.hyphenated().encode_lower(&mut uuid)).arg(*items);
            }
            for task in intake.tasks {
                payload.clear();
                serde_json::to_writer(&mut payload, task).map_err(corrupt)?;
                cmd.arg(&payload[..]);
            }
        }
        let answers: Vec<Vec<String>> = self.eval(&scripts::ENQUEUE, &cmd).await?;
        if answers.len() != intakes.len() {
            return Err(StoreError::Corrupt(format!("{} answers to {} intakes", answers.len(), intakes.len())));
        }
        Ok(answers
            .iter()
            .map(|answer| match answer.first().map(String::as_str) {
                Some("repeat") => Ok(Ok(Enqueued::Repeat)),
                Some("replayed") => Ok(Err(JobRefusal::NonceReused)),
                Some("error") => Err(script_error(answer.get(1).map_or("", String::as_str))),
                _ => Ok(refusal(answer).map(|()| Enqueued::Queued)),
            })
            .collect())
    }

    async fn scan_queue_len(&self) -> StoreResult<u64> {
        let mut conn = self.conn().await?;
        let (live, delayed): (u64, u64) = redis::pipe()
            .cmd("XLEN")
            .arg(self.keys.scan_queue())
            .cmd("ZCARD")
            .arg(self.keys.delayed())
            .query_async(&mut conn)
            .await
            .map_err(map_err)?;
        Ok(live + delayed)
    }

    async fn claim_scans(&self, consumer: &str, max: usize, lease: Duration) -> StoreResult<Vec<Delivery>> {
        let mut cmd = evalsha(&scripts::CLAIM, 2);
        cmd.arg(self.keys.scan_queue())
            .arg(self.keys.delayed())
            .arg(crate::now_millis())
            .arg(GROUP)
            .arg(consumer)
            .arg(ttl_ms(lease))
            .arg(max)
            .arg(self.keys.job(""))
            .arg(self.keys.result_by_task(""));
        let reply: Vec<redis::Value> = self.eval(&scripts::CLAIM, &cmd).await?;
        let mut out = Vec::with_capacity(reply.len() / 5);
        for fields in reply.chunks(5) {
            match Self::delivery(fields) {
                Ok(d) => out.push(d),
                // Left pending: it is logged again on each takeover, never handed out.
                Err(err) => tracing::error!(error = %err, "unreadable queue entry skipped"),
            }
        }
        Ok(out)
    }

    async fn ack_scan(&self, delivery: &Delivery) -> StoreResult<()> {
        self.settle(delivery, "ack", 0, String::new()).await
    }

    async fn retry_scan(&self, delivery: &Delivery, delay: Duration) -> StoreResult<()> {
        let task = serde_json::to_string(&delivery.task).map_err(corrupt)?;
        let due = crate::now_millis() + delay.as_millis() as u64;
        self.settle(delivery, "retry", due, format!("{}|{task}", delivery.attempt + 1)).await
    }

    async fn defer_scan(&self, delivery: &Delivery, delay: Duration) -> StoreResult<()> {
        let task = serde_json::to_string(&delivery.task).map_err(corrupt)?;
        let due = crate::now_millis() + delay.as_millis() as u64;
        self.settle(delivery, "retry", due, format!("{}|{task}", delivery.attempt)).await
    }

    async fn renew_scans(&self, consumer: &str, deliveries: &[Delivery], lease: Duration) -> StoreResult<Vec<String>> {
        let _ = lease; // Redis judges a holder by its entries' idle time against the claimer's lease
        if deliveries.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn().await?;
        let script = &*scripts::RENEW_SCANS;
        let mut invocation = script.key(self.keys.scan_queue());
        invocation.arg(GROUP).arg(consumer);
        for d in deliveries {
            invocation.arg(&d.id);
        }
        invocation.invoke_async(&mut conn).await.map_err(map_err)
    }

    async fn dead_letter_scan(
        &self,
        delivery: &Delivery,
        reason: &str,
        record: Option<&ResultRecord>,
        retain: usize,
    ) -> StoreResult<Option<u64>> {
        let letter = DeadLetter::of(delivery, reason);
        self.finish(delivery, record, retain, Some(serde_json::to_string(&letter).map_err(corrupt)?)).await
    }

    async fn dead_letters(&self, start: usize, end: usize) -> StoreResult<Vec<DeadLetter>> {
        if end <= start {
            return Ok(Vec::new());
        }
        let mut conn = self.conn().await?;
        let raw: Vec<String> =
            conn.lrange(self.keys.dead_letters(), start as isize, end as isize - 1).await.map_err(map_err)?;
        raw.iter().map(|r| serde_json::from_str(r).map_err(corrupt)).collect()
    }

    async fn dead_letter_count(&self) -> StoreResult<u64> {
        let mut conn = self.conn().await?;
        conn.llen(self.keys.dead_letters()).await.map_err(map_err)
    }

    async fn requeue_dead_letters(&self, max: usize) -> StoreResult<u64> {
        let mut conn = self.conn().await?;
        let mut moved = 0;
        while moved < max as u64 {
            let batch = (max as u64 - moved).min(100) as isize;
            let raws: Vec<String> = conn.lrange(self.keys.dead_letters(), 0, batch - 1).await.map_err(map_err)?;
            if raws.is_empty() {
                break;
            }
            for raw in raws {
                let letter: DeadLetter = serde_json::from_str(&raw).map_err(corrupt)?;
                let task = &letter.task;
                // One atomic step per letter: taking it off the list (only one requeuer wins),
                // undoing its failed outcome and queueing it again.
                let taken: i64 = scripts::REQUEUE
                    .key(self.keys.dead_letters())
                    .key(self.keys.scan_queue())
                    .key(self.keys.results())
                    .key(self.keys.result_by_task(&task.task_id))
                    .key(self.keys.job_results(&task.job_id))
                    .key(self.keys.job(&task.job_id))
                    .arg(&raw)
                    .arg(serde_json::to_string(task).map_err(corrupt)?)
                    .arg(now_secs())
                    .invoke_async(&mut conn)
                    .await
                    .map_err(map_err)?;
                moved += taken as u64;
                if moved >= max as u64 {
                    break;
                }
            }
        }
        Ok(moved)
    }

    async fn clear_dead_letters(&self) -> StoreResult<u64> {
        let mut conn = self.conn().await?;
        let (count, _): (u64, u64) = redis::pipe()
            .atomic()
            .llen(self.keys.dead_letters())
            .del(self.keys.dead_letters())
            .query_async(&mut conn)
            .await
            .map_err(map_err)?;
        Ok(count)
    }

    async fn complete_scan(
        &self,
        delivery: &Delivery,
        record: Option<&ResultRecord>,
        retain: usize,
    ) -> StoreResult<Option<u64>> {
        self.finish(delivery, record, retain, None).await
    }

    async fn wait_for_tasks(&self, wait: Duration) -> StoreResult<()> {
        self.wait_on_stream(wait).await
    }
}

impl RedisStore {
    /// [`ScanQueue::complete_scan`], or with a dead letter [`ScanQueue::dead_letter_scan`]:
    /// one script either way.
    async fn finish(
        &self,
        delivery: &Delivery,
        record: Option<&ResultRecord>,
        retain: usize,
        dead_letter: Option<String>,
    ) -> StoreResult<Option<u64>> {
        let task = &delivery.task;
        let mut cmd = evalsha(&scripts::COMPLETE, 8);
        cmd.arg(self.keys.results())
            .arg(self.keys.result_by_task(&task.task_id))
            .arg(self.keys.job_results(&task.job_id))
            .arg(self.keys.job(&task.job_id))
            .arg(self.keys.stats())
            .arg(self.keys.result_seq())
            .arg(self.keys.scan_queue())
            .arg(self.keys.dead_letters());
        match record {
            Some(record) => cmd
                .arg(&record.json)
                .arg(retain.max(1))
                .arg(crate::verdict_counter(&record.verdict))
                .arg(if record.succeeded { "1" } else { "0" })
                .arg(record.scan_time_us)
                .arg(record.file_size),
            None => cmd.arg("").arg(1).arg("").arg("0").arg(0).arg(0),
        };
        cmd.arg(now_secs())
            .arg(self.job_retention_ms)
            .arg(GROUP)
            .arg(&delivery.id)
            .arg(dead_letter.unwrap_or_default());
        let (id, completed): (u64, u8) = self.eval(&scripts::COMPLETE, &cmd).await?;
        if completed == 1 {
            // This result completed its job: the job's earlier results expire with it.
            if let Err(err) = self.expire_job_results(&task.job_id, true).await {
                tracing::warn!(job_id = %task.job_id, error = %err, "could not set the finished job's retention");
            }
        }
        Ok((id > 0).then_some(id))
    }
}
