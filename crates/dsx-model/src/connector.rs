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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct Connector {
    pub name: String,
    pub display_name: String,
    pub display_icon: String,
    pub uuid: Uuid,
    pub meta_info: String,
    /// Base URL including `/<name>`; dsx-connect calls `<url>/read_file` etc.
    pub url: String,
    pub status: ConnectorStatus,
    pub item_action: ItemAction,
    pub item_action_move_metainfo: String,
    pub asset: String,
    pub asset_display_name: String,
    pub filter: String,
    pub last_repo_check_ts: Option<serde_json::Value>,
    pub last_repo_check_reason: Option<String>,
    pub last_repo_check_message: Option<String>,
}

impl Default for Connector {
    fn default() -> Self {
        Self {
            name: "connector".into(),
            display_name: String::new(),
            display_icon: String::new(),
            uuid: Uuid::new_v4(),
            meta_info: String::new(),
            url: String::new(),
            status: ConnectorStatus::default(),
            item_action: ItemAction::default(),
            item_action_move_metainfo: String::new(),
            asset: String::new(),
            asset_display_name: String::new(),
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
