//! The embedded store's side of one capability (see the trait for the contract).

use super::*;

#[async_trait]
impl Jobs for EmbeddedStore {
    async fn claim_job(&self, job_id: &str, owner: Uuid) -> StoreResult<Result<(), JobRefusal>> {
        let job_id = job_id.to_owned();
        self.run(move |inner| {
            inner.write(true, |txn| {
                let mut jobs = txn.open_table(JOBS).map_err(unavailable)?;
                let existing = jobs.get(job_id.as_str()).map_err(unavailable)?.map(|g| g.value().to_vec());
                match existing {
                    Some(bytes) => {
                        let job: Job = serde_json::from_slice(&bytes).map_err(corrupt)?;
                        if job.connector_uuid.is_some_and(|o| o != owner) {
                            return Ok(Err(JobRefusal::OtherOwner { job_id }));
                        }
                    }
                    None => put_json(&mut jobs, &job_id, &new_job(&job_id, owner, now_secs()))?,
                }
                Ok(Ok(()))
            })
        })
        .await
    }

    async fn get_job(&self, job_id: &str) -> StoreResult<Option<Job>> {
        let job_id = job_id.to_owned();
        self.read_now(move |inner| {
            let txn = inner.db()?.begin_read().map_err(unavailable)?;
            let table = txn.open_table(JOBS).map_err(unavailable)?;
            let value = table.get(job_id.as_str()).map_err(unavailable)?;
            value.map(|g| serde_json::from_slice(g.value()).map_err(corrupt)).transpose()
        })
    }

    async fn mark_enqueue_done(
        &self,
        job_id: &str,
        total: Option<u64>,
        enumeration_errors: Option<u64>,
    ) -> StoreResult<Option<Job>> {
        let job_id = job_id.to_owned();
        self.run(move |inner| {
            inner.write(true, |txn| {
                update_job(txn, &job_id, |job| {
                    job.enqueue_done = true;
                    job.expected_total = total.or(job.expected_total);
                    job.enumeration_errors = enumeration_errors.unwrap_or(job.enumeration_errors);
                })
            })
        })
        .await
    }

    async fn list_jobs(&self) -> StoreResult<Vec<Job>> {
        self.run(|inner| {
            let txn = inner.db()?.begin_read().map_err(unavailable)?;
            let table = txn.open_table(JOBS).map_err(unavailable)?;
            let mut jobs = Vec::new();
            for row in table.iter().map_err(unavailable)? {
                jobs.push(serde_json::from_slice::<Job>(row.map_err(unavailable)?.1.value()).map_err(corrupt)?);
            }
            jobs.sort_by_key(|j| std::cmp::Reverse(j.updated_at));
            Ok(jobs)
        })
        .await
    }

    async fn delete_jobs(&self) -> StoreResult<u64> {
        self.run(|inner| {
            let retention = inner.retention_ms();
            inner.write(true, |txn| {
                let mut jobs = txn.open_table(JOBS).map_err(unavailable)?;
                let n = jobs.len().map_err(unavailable)?;
                if retention > 0 {
                    // Nothing will finish these jobs any more: their results expire as a
                    // finished job's.
                    let mut jobless = txn.open_table(JOBLESS_RESULTS).map_err(unavailable)?;
                    let until = now_millis() + retention;
                    for row in jobs.iter().map_err(unavailable)? {
                        jobless.insert(row.map_err(unavailable)?.0.value(), until).map_err(unavailable)?;
                    }
                }
                jobs.retain(|_, _| false).map_err(unavailable)?;
                Ok(n)
            })
        })
        .await
    }

    async fn set_job_status(&self, job_id: &str, status: JobStatus) -> StoreResult<Option<Job>> {
        let job_id = job_id.to_owned();
        self.run(move |inner| inner.write(true, |txn| update_job(txn, &job_id, |job| job.status = status))).await
    }
}
