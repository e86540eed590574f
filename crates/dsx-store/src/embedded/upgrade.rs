//! Files written by earlier releases (redb 2, file format v2) are upgraded on open.
//!
//! The current redb reads only its own format, and redb 3 also changed how tuples of
//! variable-width fields are encoded, so an in-place format upgrade would leave those tables
//! unreadable. Instead every table is read with redb 2 and written, value by value, into a
//! new file beside the old one, which then replaces it in one `rename`: a crash at any point
//! leaves either the old file or the complete new one, never a mix.

use std::path::{Path, PathBuf};

use redb::{Database, Durability, WriteTransaction};
use redb2::{ReadableTable as _, TableHandle as _};

use super::*;

/// Copy one table (if the old file has it) under the same name and types, counting its rows.
/// The types are written once, for the destination's definition; a mismatch with it does not
/// compile.
macro_rules! copy_table {
    ($src:expr, $dst:expr, $copied:expr, $rows:expr, $def:expr, $k:ty, $v:ty) => {{
        let name = $def.name();
        $copied.push(name);
        match $src.open_table(redb2::TableDefinition::<$k, $v>::new(name)) {
            Ok(from) => {
                let mut to = $dst.open_table($def).map_err(unavailable)?;
                for row in from.iter().map_err(old_file)? {
                    let (key, value) = row.map_err(old_file)?;
                    to.insert(key.value(), value.value()).map_err(unavailable)?;
                    $rows += 1;
                }
            }
            Err(redb2::TableError::TableDoesNotExist(_)) => {}
            Err(err) => return Err(old_file(err)),
        }
    }};
}

/// Where the upgraded copy is written before it replaces the file.
fn upgrading_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".upgrading");
    path.with_file_name(name)
}

fn old_file(err: impl std::fmt::Display) -> StoreError {
    unavailable(format!("reading the store file written by an earlier release: {err}"))
}

/// Upgrade the v2 file at `path` to the current format (see the module comment).
pub(super) fn upgrade_v2_file(path: &Path) -> StoreResult<()> {
    let started = Instant::now();
    let new_path = upgrading_path(path);
    // A copy left by an upgrade that was interrupted is incomplete: start again.
    match std::fs::remove_file(&new_path) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            return Err(unavailable(format!("remove {}: {err}", new_path.display())))
        }
        _ => {}
    }
    let old = redb2::Database::open(path).map_err(old_file)?;
    let copied = (|| {
        let src = old.begin_read().map_err(old_file)?;
        let new =
            Database::create(&new_path).map_err(|e| unavailable(format!("create {}: {e}", new_path.display())))?;
        let mut dst = new.begin_write().map_err(unavailable)?;
        dst.set_durability(Durability::Immediate).map_err(unavailable)?;
        let rows = copy_all(&src, &dst)?;
        dst.commit().map_err(unavailable)?;
        Ok(rows)
    })();
    drop(old);
    let rows = copied.inspect_err(|_| {
        let _ = std::fs::remove_file(&new_path);
    })?;
    std::fs::rename(&new_path, path)
        .map_err(|e| unavailable(format!("replace {} with its upgraded copy: {e}", path.display())))?;
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        // The rename itself must survive a power cut.
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| unavailable(format!("sync {}: {e}", dir.display())))?;
    }
    tracing::info!(
        path = %path.display(),
        rows,
        took_ms = started.elapsed().as_millis() as u64,
        "embedded store file upgraded to the current format"
    );
    Ok(())
}

/// Every table this store has ever written; refuses a table it does not know rather than
/// dropping it. Returns how many rows were copied.
fn copy_all(src: &redb2::ReadTransaction, dst: &WriteTransaction) -> StoreResult<u64> {
    let mut copied: Vec<&str> = Vec::new();
    let mut rows = 0u64;
    copy_table!(src, dst, copied, rows, PRESENCE, &str, (u64, &[u8]));
    copy_table!(src, dst, copied, rows, CREDENTIALS, &str, &[u8]);
    copy_table!(src, dst, copied, rows, KEY_IDS, &str, (u64, &[u8]));
    copy_table!(src, dst, copied, rows, REGISTRATIONS, &str, &[u8]);
    copy_table!(src, dst, copied, rows, NONCES, (&str, &str), u64);
    copy_table!(src, dst, copied, rows, STATE, (&str, &str, &str), &str);
    copy_table!(src, dst, copied, rows, SCAN_QUEUE, u64, &[u8]);
    copy_table!(src, dst, copied, rows, JOBS, &str, &[u8]);
    copy_table!(src, dst, copied, rows, QUEUE_STATE, u64, (u64, u64, u64));
    copy_table!(src, dst, copied, rows, DEAD_LETTERS, u64, &[u8]);
    copy_table!(src, dst, copied, rows, RESULT_ROWS, u64, &[u8]);
    copy_table!(src, dst, copied, rows, RESULT_SEQ_BY_TASK, &str, u64);
    copy_table!(src, dst, copied, rows, JOB_RESULTS, (&str, u64), &str);
    copy_table!(src, dst, copied, rows, RECENT_RESULTS, u64, &str);
    copy_table!(src, dst, copied, rows, OLD_RESULTS, u64, &[u8]);
    copy_table!(src, dst, copied, rows, OLD_RESULT_BY_TASK, &str, &[u8]);
    copy_table!(src, dst, copied, rows, OLD_RESULTS_BY_JOB, (&str, u64), &[u8]);
    copy_table!(src, dst, copied, rows, STATS, &str, u64);
    copy_table!(src, dst, copied, rows, JOBLESS_RESULTS, &str, u64);
    copy_table!(src, dst, copied, rows, INTAKE_KEYS, &str, u64);
    copy_table!(src, dst, copied, rows, RATE, &str, (u64, u64));
    for table in src.list_tables().map_err(old_file)? {
        if !copied.contains(&table.name()) {
            return Err(unavailable(format!(
                "the store file has a table this release does not know ({}); it was left as it is",
                table.name()
            )));
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    const V2_PRESENCE: redb2::TableDefinition<&str, (u64, &[u8])> = redb2::TableDefinition::new("presence");
    const V2_NONCES: redb2::TableDefinition<(&str, &str), u64> = redb2::TableDefinition::new("nonces");
    const V2_STATE: redb2::TableDefinition<(&str, &str, &str), &str> = redb2::TableDefinition::new("state");
    const V2_QUEUE: redb2::TableDefinition<u64, &[u8]> = redb2::TableDefinition::new("scan_queue");
    const V2_QUEUE_STATE: redb2::TableDefinition<u64, (u64, u64, u64)> =
        redb2::TableDefinition::new("scan_queue_state");
    const V2_ROWS: redb2::TableDefinition<u64, &[u8]> = redb2::TableDefinition::new("result_rows");
    const V2_BY_TASK: redb2::TableDefinition<&str, u64> = redb2::TableDefinition::new("result_seq_by_task");
    const V2_JOB_RESULTS: redb2::TableDefinition<(&str, u64), &str> = redb2::TableDefinition::new("job_results");
    const V2_RECENT: redb2::TableDefinition<u64, &str> = redb2::TableDefinition::new("recent_results");
    const V2_STATS: redb2::TableDefinition<&str, u64> = redb2::TableDefinition::new("stats");

    /// A result document as stored (with its `id`), or as a worker hands it over (without).
    fn result_json(task: &str, job: &str, id: Option<u64>) -> String {
        let id = id.map(|id| format!(r#""id":{id},"#)).unwrap_or_default();
        format!(
            concat!(
                r#"{{{id}"scan_request_task_id":"{task}","scan_job_id":"{job}","metadata_tag":"a","#,
                r#""scan_request":{{"location":"/a","metainfo":"a"}},"verdict":null,"status":"scanned","#,
                r#""finished_at":1}}"#
            ),
            id = id,
            task = task,
            job = job
        )
    }

    /// A file as the previous release wrote it: every kind of key and value, tuples included.
    fn write_v2_file(path: &Path, uuid: Uuid) {
        let db = redb2::Database::create(path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let connector =
                serde_json::to_vec(&Connector { uuid, name: "old-connector".into(), ..Connector::default() }).unwrap();
            txn.open_table(V2_PRESENCE).unwrap().insert(uuid.to_string().as_str(), (0, connector.as_slice())).unwrap();
            txn.open_table(V2_NONCES).unwrap().insert(("kid-1", "nonce-1"), u64::MAX).unwrap();
            txn.open_table(V2_STATE).unwrap().insert((uuid.to_string().as_str(), "ns", "cursor"), "page-7").unwrap();
            let task = QueuedTask {
                task_id: "task-queued".into(),
                connector_uuid: uuid,
                job_id: "job-old".into(),
                request: dsx_model::ScanRequest::new("/queued", "/queued"),
                enqueued_at: 1,
                enqueued_at_us: 0,
            };
            txn.open_table(V2_QUEUE).unwrap().insert(1, serde_json::to_vec(&task).unwrap().as_slice()).unwrap();
            // Leased when the old release stopped: visible again, as another attempt.
            txn.open_table(V2_QUEUE_STATE).unwrap().insert(1, (u64::MAX, 2, 1)).unwrap();
            let json = result_json("task-done", "job-old", Some(5));
            txn.open_table(V2_ROWS).unwrap().insert(5, json.as_bytes()).unwrap();
            txn.open_table(V2_BY_TASK).unwrap().insert("task-done", 5).unwrap();
            txn.open_table(V2_JOB_RESULTS).unwrap().insert(("job-old", 5), "task-done").unwrap();
            txn.open_table(V2_RECENT).unwrap().insert(5, "job-old").unwrap();
            txn.open_table(V2_STATS).unwrap().insert("results_seq", 5).unwrap();
            txn.open_table(V2_STATS).unwrap().insert("files_scanned", 1).unwrap();
        }
        txn.commit().unwrap();
    }

    #[tokio::test]
    async fn a_file_of_the_previous_release_is_upgraded_with_every_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let uuid = Uuid::new_v4();
        write_v2_file(&path, uuid);
        // Left by an upgrade that was interrupted: replaced, not trusted.
        std::fs::write(upgrading_path(&path), b"half a file").unwrap();

        let store = EmbeddedStore::open(&path, SecretCodec::plain()).unwrap();
        assert!(!upgrading_path(&path).exists(), "the copy replaced the file");
        let presence = store.get_presence(uuid).await.unwrap().expect("presence kept");
        assert_eq!(presence.name, "old-connector");
        assert_eq!(store.get_state(uuid, "ns", "cursor").await.unwrap().as_deref(), Some("page-7"));
        // The nonce is still remembered: a replay across the upgrade is refused.
        assert!(!store.remember_nonce("kid-1", "nonce-1", Duration::from_secs(60)).await.unwrap());
        let result = store.get_result("task-done").await.unwrap().expect("result kept");
        assert_eq!(result.id, 5);
        assert_eq!(store.list_results(10, Some("job-old")).await.unwrap().len(), 1);
        assert_eq!(store.list_results(10, None).await.unwrap().len(), 1);
        assert_eq!(store.stats().await.unwrap().get("files_scanned"), Some(&1));
        // The queued task survives, its dead lease released as another attempt.
        let claimed = store.claim_scans("w", 10, Duration::from_secs(30)).await.unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].task.request.location, "/queued");
        assert_eq!(claimed[0].attempt, 3);
        // New results continue the old sequence.
        let record = ResultRecord {
            task_id: "task-new".into(),
            job_id: "job-old".into(),
            json: result_json("task-new", "job-old", None),
            verdict: "Benign".into(),
            succeeded: true,
            scan_time_us: 1,
            file_size: 1,
        };
        assert_eq!(store.put_result(&record, 100).await.unwrap(), Some(6));
        drop(store);

        // Opened again: nothing to upgrade, everything still there.
        let store = EmbeddedStore::open(&path, SecretCodec::plain()).unwrap();
        assert_eq!(store.list_results(10, Some("job-old")).await.unwrap().len(), 2);
        assert_eq!(store.get_state(uuid, "ns", "cursor").await.unwrap().as_deref(), Some("page-7"));
    }

    #[test]
    fn a_table_this_release_does_not_know_stops_the_upgrade_and_keeps_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        write_v2_file(&path, Uuid::new_v4());
        {
            let db = redb2::Database::open(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(redb2::TableDefinition::<u64, u64>::new("from_the_future")).unwrap().insert(1, 1).unwrap();
            txn.commit().unwrap();
        }
        let before = std::fs::read(&path).unwrap();
        let err = EmbeddedStore::open(&path, SecretCodec::plain()).err().expect("refused");
        assert!(err.to_string().contains("from_the_future"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), before, "the old file is untouched");
        // Still readable by the release that wrote it.
        let db = redb2::Database::open(&path).unwrap();
        let txn = db.begin_read().unwrap();
        assert_eq!(txn.open_table(V2_BY_TASK).unwrap().get("task-done").unwrap().unwrap().value(), 5);
    }
}
