use serde::{Deserialize, Serialize};

use crate::{Connector, ItemAction, StatusResponse};

/// Where a `move` puts an item (`requested_action.destination`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct Destination {
    pub path: Option<String>,
    pub prefix: Option<String>,
    pub filename: Option<String>,
}

/// A remediation the caller asks for, overriding the connector's configured action.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct RequestedAction {
    #[serde(rename = "type", deserialize_with = "crate::nulls::lenient_item_action")]
    pub kind: Option<ItemAction>,
    pub destination: Option<Destination>,
    pub tags: Option<std::collections::BTreeMap<String, String>>,
    pub details: Option<serde_json::Value>,
}

/// Which version of an item was listed, so the connector reads (and remediates) exactly that
/// one: object stores' ETag and version id. This server's extension; absent for files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct ItemVersion {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
}

/// `ScanRequest`: one item to scan. `location`/`metainfo` are echoed back to the connector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ScanRequest {
    #[serde(default)]
    pub connector: Option<Connector>,
    pub location: String,
    pub metainfo: String,
    #[serde(default)]
    pub connector_url: Option<String>,
    #[serde(default)]
    pub requested_action: Option<RequestedAction>,
    #[serde(default)]
    pub size_in_bytes: Option<u64>,
    #[serde(default)]
    pub scan_job_id: Option<String>,
    #[serde(default)]
    pub job_item_id: Option<String>,
    #[serde(default)]
    pub scan_source: Option<String>,
    /// Not sent when absent, so requests for files are byte-for-byte Python's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_version: Option<ItemVersion>,
}

impl ScanRequest {
    pub fn new(location: impl Into<String>, metainfo: impl Into<String>) -> Self {
        Self {
            connector: None,
            location: location.into(),
            metainfo: metainfo.into(),
            connector_url: None,
            requested_action: None,
            size_in_bytes: None,
            scan_job_id: None,
            job_item_id: None,
            scan_source: None,
            item_version: None,
        }
    }
}

/// `POST scan/request_batch` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ScanRequestBatch {
    pub requests: Vec<ScanRequest>,
    #[serde(default)]
    pub batch_size: Option<usize>,
}

/// `PUT item_action` answer: a StatusResponse plus the action taken (same flat JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ItemActionStatusResponse {
    #[serde(flatten)]
    pub response: StatusResponse,
    pub item_action: ItemAction,
}

/// `GET estimate` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Estimate {
    pub count: Option<u64>,
    pub confidence: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_json;

    #[test]
    fn requested_action_type_is_a_free_string() {
        for (raw, want) in [
            (r#"" MoveTag ""#, Some(ItemAction::MoveTag)),
            (r#""move_tag""#, Some(ItemAction::MoveTag)),
            (r#""DELETE""#, Some(ItemAction::Delete)),
            (r#""shred""#, None),
            (r#""""#, None),
            ("null", None),
            ("5", None),
        ] {
            let body = format!(r#"{{"location":"/a","metainfo":"a","requested_action":{{"type":{raw}}}}}"#);
            let req: ScanRequest = parse_json(body.as_bytes()).unwrap();
            assert_eq!(req.requested_action.unwrap().kind, want, "{raw}");
        }
    }

    #[test]
    fn item_action_response_with_null_description_parses() {
        let body = br#"{"status":"nothing","message":"Item action did nothing or not implemented","description":null,"id":null,"preview":null,"item_action":"nothing"}"#;
        let r: ItemActionStatusResponse = parse_json(body).unwrap();
        assert_eq!(r.item_action, ItemAction::Nothing);
    }
}
