//! A scan result as the store gives it back (the `scan/results` documents).
//!
//! Reading is lossless: fields this release does not know (written by an earlier release, or
//! added later) are kept in `extra` and served again as they were stored.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{ScanRequest, Verdict};

/// Where a task's time went, beside the verdict's fields (whole milliseconds for Python
/// readers, microseconds for the stage report). Every field is optional: earlier releases
/// wrote fewer of them, and a result reads back with exactly the ones it was stored with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dsxconnect_request_elapsed_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dsxconnect_claim_to_result_us: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dsxconnect_queue_wait_us: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dsxconnect_read_elapsed_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dsxconnect_read_scan_us: Option<u64>,
}

/// A stored result's `verdict`: the scanner's verdict with the worker's timings in the same
/// object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultVerdict {
    #[serde(flatten)]
    pub verdict: Verdict,
    #[serde(flatten)]
    pub timings: Timings,
    /// Fields neither of the above knows, kept as stored.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One stored scan result. `id` is the store's sequence number (newer results have larger
/// ids; never reused, even after the results are cleared).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredResult {
    pub id: u64,
    pub scan_request_task_id: String,
    pub scan_job_id: String,
    /// The request's `metainfo`.
    pub metadata_tag: String,
    pub scan_request: ScanRequest,
    /// `null` when the item was not scanned (cancelled job, dead-lettered task).
    pub verdict: Option<ResultVerdict>,
    /// The connector's answer to `item_action` (`null` when none was asked for).
    #[serde(default)]
    pub item_action: Value,
    /// `scanned`, `action succeeded`, `action attempted, but failed`, `not scanned`.
    pub status: String,
    /// Unix seconds.
    pub finished_at: u64,
    /// Fields this release does not know, kept as stored.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl StoredResult {
    /// Decodes a stored result document.
    pub fn from_json(bytes: &[u8]) -> Result<StoredResult, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::VerdictKind;
    use serde_json::json;

    fn round_trip(doc: &Value) -> (StoredResult, Value) {
        let typed = StoredResult::from_json(doc.to_string().as_bytes()).unwrap();
        let again = serde_json::to_value(&typed).unwrap();
        (typed, again)
    }

    /// What this release's worker writes for a scanned, remediated item (the store adds `id`).
    fn scanned_doc() -> Value {
        json!({
            "id": 7,
            "scan_request_task_id": "t-1",
            "scan_job_id": "job-1",
            "metadata_tag": "bad.exe",
            "scan_request": {
                "connector": {
                    "name": "fs", "display_name": null, "display_icon": null,
                    "uuid": "3f2504e0-4f89-11d3-9a0c-0305e82c3301", "meta_info": null,
                    "url": "http://h:8620/fs", "status": "ready", "item_action": "movetag",
                    "item_action_move_metainfo": "/quarantine", "asset": "/data", "asset_display_name": null,
                    "filter": "", "last_repo_check_ts": null, "last_repo_check_reason": null,
                    "last_repo_check_message": null
                },
                "location": "/data/bad.exe", "metainfo": "bad.exe", "connector_url": null,
                "requested_action": {"type": "delete", "destination": null, "tags": {"a": "b"}, "details": null},
                "size_in_bytes": 68, "scan_job_id": "job-1", "job_item_id": null, "scan_source": "full_scan",
                "item_version": {"etag": "e1"}
            },
            "verdict": {
                "scan_guid": "g1", "verdict": "Malicious",
                "verdict_details": {"event_description": "File identified as malicious", "threat_type": "VIRUS"},
                "file_info": {"file_type": "TextFile", "file_size_in_bytes": 68, "file_hash": "275a"},
                "scan_duration_in_microseconds": 120, "X-Custom-Metadata": "file-loc:a",
                "dsxconnect_request_elapsed_ms": 3, "dsxconnect_claim_to_result_us": 3500,
                "dsxconnect_queue_wait_us": 40, "dsxconnect_read_elapsed_ms": 2, "dsxconnect_read_scan_us": 2100
            },
            "item_action": {"status": "success", "message": "deleted", "item_action": "delete"},
            "status": "action succeeded",
            "finished_at": 1700000000u64
        })
    }

    #[test]
    fn current_document_reads_typed_and_serves_the_same_json() {
        let doc = scanned_doc();
        let (typed, again) = round_trip(&doc);
        assert_eq!(typed.id, 7);
        assert_eq!(typed.status, "action succeeded");
        assert_eq!(typed.scan_request.location, "/data/bad.exe");
        let verdict = typed.verdict.as_ref().unwrap();
        assert_eq!(verdict.verdict.verdict, VerdictKind::Malicious);
        assert_eq!(verdict.timings.dsxconnect_read_scan_us, Some(2100));
        assert!(typed.extra.is_empty() && verdict.extra.is_empty());
        assert_eq!(again, doc);
    }

    #[test]
    fn older_and_dead_letter_documents_round_trip_unchanged() {
        // A dead-lettered (not scanned) task: no verdict, no connector answer.
        let mut dead = scanned_doc();
        dead["verdict"] = Value::Null;
        dead["item_action"] = Value::Null;
        dead["status"] = json!("not scanned");
        dead["scan_request"]["connector"] = Value::Null;
        let (typed, again) = round_trip(&dead);
        assert!(typed.verdict.is_none());
        assert_eq!(again, dead);

        // The first release wrote fewer timings; fields no release of this one knows survive
        // at both levels.
        let mut old = scanned_doc();
        let v = old["verdict"].as_object_mut().unwrap();
        for gone in ["dsxconnect_claim_to_result_us", "dsxconnect_queue_wait_us", "dsxconnect_read_scan_us"] {
            v.remove(gone);
        }
        v.insert("dsxa_extra".into(), json!({"nested": [1, 2]}));
        old["legacy_field"] = json!("kept");
        old["worker"] = json!({"host": "w1"});
        let (typed, again) = round_trip(&old);
        assert_eq!(typed.extra.get("legacy_field"), Some(&json!("kept")));
        assert_eq!(typed.verdict.as_ref().unwrap().extra.get("dsxa_extra"), Some(&json!({"nested": [1, 2]})));
        assert_eq!(typed.verdict.as_ref().unwrap().timings.dsxconnect_claim_to_result_us, None);
        assert_eq!(again, old);
    }

    #[test]
    fn missing_required_field_is_an_error() {
        let mut doc = scanned_doc();
        doc.as_object_mut().unwrap().remove("status");
        assert!(StoredResult::from_json(doc.to_string().as_bytes()).is_err());
        assert!(StoredResult::from_json(b"not json").is_err());
    }
}
