//! The Redis store's side of one capability (see the trait for the contract).

use super::*;

#[async_trait]
impl Results for RedisStore {
    async fn put_result(&self, record: &ResultRecord, retain: usize) -> StoreResult<Option<u64>> {
        let mut conn = self.conn().await?;
        let id: u64 = conn.incr(self.keys.result_seq(), 1u64).await.map_err(map_err)?;
        let json = with_id(&record.json, id)?;
        let stored: i64 = scripts::RESULT
            .key(self.keys.results())
            .key(self.keys.result_by_task(&record.task_id))
            .key(self.keys.job_results(&record.job_id))
            .key(self.keys.job(&record.job_id))
            .key(self.keys.stats())
            .arg(json)
            .arg(retain.max(1))
            .arg(crate::verdict_counter(&record.verdict))
            .arg(if record.succeeded { "1" } else { "0" })
            .arg(record.scan_time_us)
            .arg(record.file_size)
            .arg(now_secs())
            .arg(self.job_retention_ms)
            .invoke_async(&mut conn)
            .await
            .map_err(map_err)?;
        if stored == 2 {
            // This result completed its job: the job's earlier results expire with it.
            if let Err(err) = self.expire_job_results(&record.job_id, true).await {
                tracing::warn!(job_id = %record.job_id, error = %err, "could not set the finished job's retention");
            }
        }
        Ok((stored >= 1).then_some(id))
    }

    async fn get_result(&self, task_id: &str) -> StoreResult<Option<StoredResult>> {
        let mut conn = self.conn().await?;
        let row: Option<Vec<u8>> = conn.get(self.keys.result_by_task(task_id)).await.map_err(map_err)?;
        row.map(|row| crate::decode_result(&row)).transpose().map_err(|e| crate::in_task(e, task_id))
    }

    async fn list_results(&self, limit: usize, job_id: Option<&str>) -> StoreResult<Vec<StoredResult>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.conn().await?;
        let rows: Vec<Vec<u8>> = match job_id {
            None => conn.lrange(self.keys.results(), 0, limit as isize - 1).await.map_err(map_err)?,
            Some(job) => {
                let mut rows: Vec<Vec<u8>> =
                    conn.lrange(self.keys.job_results(job), -(limit as isize), -1).await.map_err(map_err)?;
                rows.reverse();
                rows
            }
        };
        Ok(crate::decode_results(rows))
    }

    async fn stats(&self) -> StoreResult<std::collections::BTreeMap<String, u64>> {
        let mut conn = self.conn().await?;
        let raw: std::collections::HashMap<String, u64> = conn.hgetall(self.keys.stats()).await.map_err(map_err)?;
        Ok(raw.into_iter().collect())
    }

    async fn clear_results(&self) -> StoreResult<u64> {
        let mut keys = self.scan_keys(&self.keys.result_by_task("*")).await?;
        keys.extend(self.scan_keys(&self.keys.job_results("*")).await?);
        keys.push(self.keys.stats());
        let mut conn = self.conn().await?;
        let listed: u64 = conn.llen(self.keys.results()).await.map_err(map_err)?;
        keys.push(self.keys.results());
        for chunk in keys.chunks(500) {
            conn.del::<_, ()>(chunk).await.map_err(map_err)?;
        }
        Ok(listed)
    }

    async fn clear_job_results(&self, job_id: &str) -> StoreResult<u64> {
        let mut conn = self.conn().await?;
        scripts::CLEAR_JOB_RESULTS
            .key(self.keys.results())
            .key(self.keys.job_results(job_id))
            .arg(self.keys.result_by_task(""))
            .invoke_async(&mut conn)
            .await
            .map_err(map_err)
    }
}
