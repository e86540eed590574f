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
    #[serde(rename = "type")]
    pub kind: Option<ItemAction>,
    pub destination: Option<Destination>,
    pub tags: Option<std::collections::BTreeMap<String, String>>,
    pub details: Option<serde_json::Value>,
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
