//! The Redis store's side of one capability (see the trait for the contract).

use super::*;

#[async_trait]
impl Jobs for RedisStore {
    async fn claim_job(&self, job_id: &str, owner: Uuid) -> StoreResult<Result<(), JobRefusal>> {
        let mut conn = self.conn().await?;
        let answer: Vec<String> = scripts::CLAIM_JOB
            .key(self.keys.job(job_id))
            .arg(job_id)
            .arg(owner.to_string())
            .arg(now_secs())
            .invoke_async(&mut conn)
            .await
            .map_err(map_err)?;
        Ok(refusal(&answer))
    }

    async fn get_job(&self, job_id: &str) -> StoreResult<Option<Job>> {
        let mut conn = self.conn().await?;
        let fields: std::collections::HashMap<String, String> =
            conn.hgetall(self.keys.job(job_id)).await.map_err(map_err)?;
        if fields.is_empty() {
            return Ok(None);
        }
        let num = |k: &str| fields.get(k).and_then(|v| v.parse::<u64>().ok());
        let status = match fields.get("status").map(String::as_str) {
            Some("paused") => JobStatus::Paused,
            Some("cancelled") => JobStatus::Cancelled,
            Some("completed") => JobStatus::Completed,
            _ => JobStatus::Running,
        };
        Ok(Some(Job {
            job_id: job_id.to_owned(),
            connector_uuid: fields.get("connector_uuid").and_then(|u| u.parse().ok()),
            status,
            enqueued_count: num("enqueued_count").unwrap_or(0),
            processed_count: num("processed_count").unwrap_or(0),
            succeeded_count: num("succeeded_count").unwrap_or(0),
            failed_count: num("failed_count").unwrap_or(0),
            expected_total: num("expected_total"),
            enumeration_errors: num("enumeration_errors").unwrap_or(0),
            enqueue_done: fields.get("enqueue_done").is_some_and(|v| v == "1" || v == "true"),
            created_at: num("created_at").unwrap_or(0),
            updated_at: num("updated_at").unwrap_or(0),
        }))
    }

    async fn mark_enqueue_done(
        &self,
        job_id: &str,
        total: Option<u64>,
        enumeration_errors: Option<u64>,
    ) -> StoreResult<Option<Job>> {
        let mut conn = self.conn().await?;
        let outcome: u8 = scripts::ENQUEUE_DONE
            .key(self.keys.job(job_id))
            .arg(now_secs())
            .arg(total.map(|t| t.to_string()).unwrap_or_default())
            .arg(enumeration_errors.map(|e| e.to_string()).unwrap_or_default())
            .invoke_async(&mut conn)
            .await
            .map_err(map_err)?;
        match outcome {
            0 => return Ok(None),
            2 => self.expire_job_results(job_id, true).await?,
            _ => {}
        }
        self.get_job(job_id).await
    }

    async fn list_jobs(&self) -> StoreResult<Vec<Job>> {
        let mut jobs = Vec::new();
        for key in self.scan_keys(&self.keys.job("*")).await? {
            if let Some(job) = self.get_job(key.trim_start_matches(&self.keys.job(""))).await? {
                jobs.push(job);
            }
        }
        jobs.sort_by_key(|j| std::cmp::Reverse(j.updated_at));
        Ok(jobs)
    }

    async fn delete_jobs(&self) -> StoreResult<u64> {
        let keys = self.scan_keys(&self.keys.job("*")).await?;
        if keys.is_empty() {
            return Ok(0);
        }
        let mut conn = self.conn().await?;
        let deleted = conn.del(&keys).await.map_err(map_err)?;
        // Nothing will finish these jobs any more: their results expire as a finished job's.
        for key in &keys {
            self.expire_job_results(key.trim_start_matches(&self.keys.job("")), false).await?;
        }
        Ok(deleted)
    }

    async fn set_job_status(&self, job_id: &str, status: JobStatus) -> StoreResult<Option<Job>> {
        let key = self.keys.job(job_id);
        let mut conn = self.conn().await?;
        let word = serde_json::to_value(status).map_err(corrupt)?.as_str().unwrap_or("running").to_owned();
        let now: String =
            scripts::JOB_STATUS.key(&key).arg(word).arg(now_secs()).invoke_async(&mut conn).await.map_err(map_err)?;
        match now.as_str() {
            "" => return Ok(None),
            "completed" | "cancelled" => self.expire_job_results(job_id, true).await?,
            // Running or paused again: kept until it finishes.
            _ => redis::pipe()
                .cmd("PERSIST")
                .arg(&key)
                .ignore()
                .cmd("PERSIST")
                .arg(self.keys.job_results(job_id))
                .ignore()
                .query_async::<()>(&mut conn)
                .await
                .map_err(map_err)?,
        }
        self.get_job(job_id).await
    }
}
