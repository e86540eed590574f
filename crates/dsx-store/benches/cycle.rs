//! One pipeline turn on the embedded store: a batch of tasks enqueued, claimed and completed
//! with their results, as the intake and the workers do it. The store's share of the
//! per-file CPU in `dsx-bench pipeline` is mostly this. Criterion's "time" here is the
//! process's CPU time (all threads: the runtime, the store's write and flush threads), not
//! wall time, since a durable enqueue spends most of its wall time waiting for an fsync.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dsx_store::{EmbeddedStore, QueuedTask, ResultRecord, ScanQueue, SecretCodec};
use uuid::Uuid;

/// Tasks per turn: one `scan/request_batch` of this many, claimed and completed together.
const BATCH: usize = 32;

/// CPU time used so far by every thread of this process.
fn process_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn result_json(task_id: &str, job_id: &str) -> String {
    // About the size of a worker's result document for a benign 4 KiB file.
    format!(
        r#"{{"scan_request_task_id":"{task_id}","scan_job_id":"{job_id}","metadata_tag":null,"scan_request":{{"location":"/asset/sub/file-000123.bin","metainfo":"file-000123.bin","connector_url":"http://127.0.0.1:8590","size_in_bytes":4096}},"status":"scanned","verdict":{{"scan_guid":"0f6c1a5e2b9d4c7a8e3f1b2d5c6a7e8f","verdict":"Benign","verdict_details":{{"event_description":"File identified as benign"}},"file_info":{{"file_type":"Unknown","file_size_in_bytes":4096,"file_hash":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}},"scan_duration_in_microseconds":12}},"item_action":{{"status":"nothing","message":"no action configured"}},"timings":{{"queue_wait_us":1500,"claim_to_result_us":900,"read_scan_us":850}}}}"#
    )
}

/// How the completions of one turn reach the store.
#[derive(Clone, Copy)]
enum Completions {
    /// All at once, as concurrent workers finish: they share the write thread's transactions.
    Together,
    /// One after another: one transaction (redb commit) per file, the worst case.
    OneByOne,
}

fn turn(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let mut group = c.benchmark_group("embedded_store");
    group.throughput(Throughput::Elements(BATCH as u64));
    for (name, how) in [("turn_32_files", Completions::Together), ("turn_32_files_commit_each", Completions::OneByOne)]
    {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = EmbeddedStore::open(&dir.path().join("bench.redb"), SecretCodec::plain()).expect("store");
        let owner = Uuid::new_v4();
        let mut next = 0u64;
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                runtime.block_on(async {
                    let start = process_cpu();
                    for _ in 0..iters {
                        let tasks: Vec<QueuedTask> = (0..BATCH)
                            .map(|_| {
                                next += 1;
                                QueuedTask {
                                    task_id: format!("task-{next}"),
                                    connector_uuid: owner,
                                    job_id: "job-bench".into(),
                                    request: dsx_model::ScanRequest::new(format!("/asset/f{next}"), format!("f{next}")),
                                    enqueued_at: 1,
                                    enqueued_at_us: 1,
                                }
                            })
                            .collect();
                        store.enqueue_scans(&tasks).await.expect("enqueue").expect("accepted");
                        let claimed = store.claim_scans("bench", BATCH, Duration::from_secs(60)).await.expect("claim");
                        assert_eq!(claimed.len(), BATCH, "every task enqueued in this turn is claimed");
                        let completions = claimed.iter().map(|delivery| {
                            let record = ResultRecord {
                                task_id: delivery.task.task_id.clone(),
                                job_id: delivery.task.job_id.clone(),
                                json: result_json(&delivery.task.task_id, &delivery.task.job_id),
                                verdict: "Benign".into(),
                                succeeded: true,
                                scan_time_us: 12,
                                file_size: 4096,
                            };
                            let store = &store;
                            async move { store.complete_scan(delivery, Some(&record), 10_000).await.expect("complete") }
                        });
                        match how {
                            Completions::Together => {
                                futures_util::future::join_all(completions).await;
                            }
                            Completions::OneByOne => {
                                for completion in completions {
                                    completion.await;
                                }
                            }
                        }
                    }
                    process_cpu() - start
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, turn);
criterion_main!(benches);
