use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Lifecycle state a connector reports about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ConnectorStatus {
    Ready,
    #[default]
    Starting,
    Stopped,
    Failed,
}

/// What a connector does with a malicious item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema)]
pub enum ItemAction {
    #[serde(rename = "not implemented")]
    NotImplemented,
    #[default]
    #[serde(rename = "nothing")]
    Nothing,
    #[serde(rename = "delete")]
    Delete,
    #[serde(rename = "move")]
    Move,
    #[serde(rename = "tag")]
    Tag,
    #[serde(rename = "movetag", alias = "move_tag")]
    MoveTag,
}

impl ItemAction {
    pub fn as_str(self) -> &'static str {
        match self {
            ItemAction::NotImplemented => "not implemented",
            ItemAction::Nothing => "nothing",
            ItemAction::Delete => "delete",
            ItemAction::Move => "move",
            ItemAction::Tag => "tag",
            ItemAction::MoveTag => "movetag",
        }
    }
}

impl std::str::FromStr for ItemAction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        serde_json::from_value(serde_json::Value::String(s.trim().to_ascii_lowercase()))
            .map_err(|_| format!("unknown item action {s:?} (expected nothing, delete, move, tag or movetag)"))
    }
}

/// The connector model (`ConnectorInstanceModel`) sent at registration and kept as presence.
///
/// Python 1.x connectors send `null` for every unset optional field (`display_name`,
/// `display_icon`, `meta_info`, `asset_display_name` by default), so those are `Option`s that
/// round-trip as `null`; the other fields read `null` as their default rather than refusing the
/// registration (docs/interop.md, "Nulls").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct Connector {
    #[serde(deserialize_with = "crate::nulls::or_default")]
    pub name: String,
    pub display_name: Option<String>,
    pub display_icon: Option<String>,
    #[serde(deserialize_with = "crate::nulls::uuid_or_new")]
    pub uuid: Uuid,
    pub meta_info: Option<String>,
    /// Base URL including `/<name>`; dsx-connect calls `<url>/read_file` etc.
    #[serde(deserialize_with = "crate::nulls::or_default")]
    pub url: String,
    #[serde(deserialize_with = "crate::nulls::or_default")]
    pub status: ConnectorStatus,
    #[serde(deserialize_with = "crate::nulls::or_default")]
    pub item_action: ItemAction,
    #[serde(deserialize_with = "crate::nulls::or_default")]
    pub item_action_move_metainfo: String,
    #[serde(deserialize_with = "crate::nulls::or_default")]
    pub asset: String,
    pub asset_display_name: Option<String>,
    #[serde(deserialize_with = "crate::nulls::or_default")]
    pub filter: String,
    pub last_repo_check_ts: Option<serde_json::Value>,
    pub last_repo_check_reason: Option<String>,
    pub last_repo_check_message: Option<String>,
}

impl Default for Connector {
    fn default() -> Self {
        Self {
            name: "connector".into(),
            display_name: None,
            display_icon: None,
            uuid: Uuid::new_v4(),
            meta_info: None,
            url: String::new(),
            status: ConnectorStatus::default(),
            item_action: ItemAction::default(),
            item_action_move_metainfo: String::new(),
            asset: String::new(),
            asset_display_name: None,
            filter: String::new(),
            last_repo_check_ts: None,
            last_repo_check_reason: None,
            last_repo_check_message: None,
        }
    }
}

impl Connector {
    /// `"<name> (<uuid>) @ <url>"`, the registration `description`.
    pub fn describe(&self) -> String {
        format!("{} ({}) @ {}", self.name, self.uuid, self.url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_json;

    #[test]
    fn python_payload_round_trips_and_ignores_unknown_fields() {
        let body = br#"{"name":"filesystem-connector","uuid":"3f2504e0-4f89-11d3-9a0c-0305e82c3301",
            "url":"http://h:8620/filesystem-connector","status":"ready","item_action":"move_tag",
            "something_new":{"x":1}}"#;
        let c: Connector = parse_json(body).unwrap();
        assert_eq!(c.item_action, ItemAction::MoveTag);
        assert_eq!(c.status, ConnectorStatus::Ready);
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["item_action"], "movetag");
        assert_eq!(json["name"], "filesystem-connector");
        assert!(json.get("something_new").is_none());
    }

    #[test]
    fn python_nulls_are_accepted() {
        // What a Python 1.x connector sends with its default settings.
        let body = br#"{"name":"filesystem-connector","display_name":null,"display_icon":null,
            "uuid":"5d84f8ce-d115-4201-9a07-11af8531faa7","meta_info":null,"url":"http://h:1/filesystem-connector",
            "status":"ready","item_action":"move","item_action_move_metainfo":null,"asset":null,
            "asset_display_name":null,"filter":null,"last_repo_check_ts":null,"last_repo_check_reason":null,
            "last_repo_check_message":null}"#;
        let c: Connector = parse_json(body).unwrap();
        assert_eq!(c.display_name, None);
        assert_eq!(c.asset, "");
        let json = serde_json::to_value(&c).unwrap();
        assert!(json["display_name"].is_null() && json["asset_display_name"].is_null());
        let c: Connector = parse_json(br#"{"uuid":null,"status":null,"item_action":null,"name":null}"#).unwrap();
        assert_ne!(c.uuid, Uuid::nil());
        assert_eq!((c.name.as_str(), c.item_action), ("", ItemAction::Nothing));
    }

    #[test]
    fn defaults_fill_missing_fields() {
        let c: Connector = parse_json(b"{}").unwrap();
        assert_eq!(c.name, "connector");
        assert_eq!(c.item_action, ItemAction::Nothing);
        assert_ne!(c.uuid, Uuid::nil());
    }

    #[test]
    fn item_action_from_str() {
        assert_eq!("MOVE".parse::<ItemAction>(), Ok(ItemAction::Move));
        assert_eq!("move_tag".parse::<ItemAction>(), Ok(ItemAction::MoveTag));
        assert!("shred".parse::<ItemAction>().is_err());
    }
}
