//! The embedded store's side of one capability (see the trait for the contract).

use super::*;

#[async_trait]
impl Results for EmbeddedStore {
    async fn put_result(&self, record: &ResultRecord, retain: usize) -> StoreResult<Option<u64>> {
        let record = record.clone();
        self.run(move |inner| inner.write(false, |txn| put_result_in(txn, &record, retain, inner.retention_ms()))).await
    }

    async fn get_result(&self, task_id: &str) -> StoreResult<Option<StoredResult>> {
        let task_id = task_id.to_owned();
        self.read_now(move |inner| {
            let txn = inner.db()?.begin_read().map_err(unavailable)?;
            let Some(seq) = txn
                .open_table(RESULT_SEQ_BY_TASK)
                .map_err(unavailable)?
                .get(task_id.as_str())
                .map_err(unavailable)?
                .map(|g| g.value())
            else {
                return Ok(None);
            };
            let rows = txn.open_table(RESULT_ROWS).map_err(unavailable)?;
            let value = rows.get(seq).map_err(unavailable)?;
            value.map(|g| crate::decode_result(g.value())).transpose().map_err(|e| crate::in_task(e, &task_id))
        })
    }

    async fn list_results(&self, limit: usize, job_id: Option<&str>) -> StoreResult<Vec<StoredResult>> {
        let job_id = job_id.map(str::to_owned);
        self.run(move |inner| {
            let txn = inner.db()?.begin_read().map_err(unavailable)?;
            let rows = txn.open_table(RESULT_ROWS).map_err(unavailable)?;
            let mut seqs = Vec::new();
            match job_id {
                None => {
                    let table = txn.open_table(RECENT_RESULTS).map_err(unavailable)?;
                    for row in table.iter().map_err(unavailable)?.rev().take(limit) {
                        seqs.push(row.map_err(unavailable)?.0.value());
                    }
                }
                Some(job) => {
                    let table = txn.open_table(JOB_RESULTS).map_err(unavailable)?;
                    let range = table.range((job.as_str(), 0)..=(job.as_str(), u64::MAX)).map_err(unavailable)?;
                    for row in range.rev().take(limit) {
                        seqs.push(row.map_err(unavailable)?.0.value().1);
                    }
                }
            }
            let mut found = Vec::with_capacity(seqs.len());
            for seq in seqs {
                if let Some(row) = rows.get(seq).map_err(unavailable)? {
                    found.push(row);
                }
            }
            Ok(crate::decode_results(found.iter().map(|row| row.value())))
        })
        .await
    }

    async fn stats(&self) -> StoreResult<std::collections::BTreeMap<String, u64>> {
        self.run(|inner| {
            let txn = inner.db()?.begin_read().map_err(unavailable)?;
            let table = txn.open_table(STATS).map_err(unavailable)?;
            let mut out = std::collections::BTreeMap::new();
            for row in table.iter().map_err(unavailable)? {
                let (k, v) = row.map_err(unavailable)?;
                if k.value() != "results_seq" {
                    out.insert(k.value().to_owned(), v.value());
                }
            }
            Ok(out)
        })
        .await
    }

    async fn clear_results(&self) -> StoreResult<u64> {
        self.run(|inner| {
            inner.write(true, |txn| {
                let mut recent = txn.open_table(RECENT_RESULTS).map_err(unavailable)?;
                let n = recent.len().map_err(unavailable)?;
                recent.retain(|_, _| false).map_err(unavailable)?;
                txn.open_table(RESULT_ROWS).map_err(unavailable)?.retain(|_, _| false).map_err(unavailable)?;
                txn.open_table(RESULT_SEQ_BY_TASK).map_err(unavailable)?.retain(|_, _| false).map_err(unavailable)?;
                txn.open_table(JOB_RESULTS).map_err(unavailable)?.retain(|_, _| false).map_err(unavailable)?;
                txn.open_table(JOBLESS_RESULTS).map_err(unavailable)?.retain(|_, _| false).map_err(unavailable)?;
                // Keep the sequence so ids never repeat; reset the counters.
                txn.open_table(STATS).map_err(unavailable)?.retain(|k, _| k == "results_seq").map_err(unavailable)?;
                Ok(n)
            })
        })
        .await
    }

    async fn clear_job_results(&self, job_id: &str) -> StoreResult<u64> {
        let job_id = job_id.to_owned();
        self.run(move |inner| inner.write(true, |txn| remove_job_results(txn, &job_id, true))).await
    }
}
