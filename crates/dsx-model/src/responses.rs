use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// `status` of a StatusResponse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StatusKind {
    Success,
    Error,
    Nothing,
}

/// The generic response; all five keys are always present on the wire. Python peers send
/// `"description": null` (and sometimes `"message": null`), read here as empty strings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StatusResponse {
    pub status: StatusKind,
    #[serde(default, deserialize_with = "crate::nulls::or_default")]
    pub message: String,
    #[serde(default, deserialize_with = "crate::nulls::or_default")]
    pub description: String,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub preview: Option<Vec<serde_json::Value>>,
}

impl StatusResponse {
    pub fn error(message: impl Into<String>, description: impl Into<String>) -> Self {
        Self { status: StatusKind::Error, ..Self::success(message, description) }
    }

    pub fn success(message: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            status: StatusKind::Success,
            message: message.into(),
            description: description.into(),
            id: None,
            preview: None,
        }
    }
}

/// `{"detail": "<code>"}`, the body of every non-validation error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ErrorBody {
    pub detail: String,
}

/// Response of `POST connectors/register`. Credential fields are present only on the one
/// response that mints them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RegistrationResponse {
    pub status: StatusKind,
    pub message: String,
    pub description: String,
    pub connector_uuid: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac_key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac_secret: Option<String>,
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub token: Option<TokenResponse>,
}

/// The opaque bearer token kept for compatibility (`connectors/token`, registration).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: String,
    pub expires_in: u64,
}

/// `POST scan/auth_check` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AuthCheckResponse {
    pub status: String,
    pub message: String,
    pub description: String,
}

impl Default for AuthCheckResponse {
    fn default() -> Self {
        Self { status: "success".into(), message: "auth_ok".into(), description: "HMAC verified".into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_json;

    #[test]
    fn python_null_description_parses() {
        let r: StatusResponse =
            parse_json(br#"{"status":"success","message":"ok","description":null,"id":null,"preview":null}"#).unwrap();
        assert_eq!(r.description, "");
        let r: StatusResponse = parse_json(br#"{"status":"error","message":null}"#).unwrap();
        assert_eq!((r.status, r.message.as_str()), (StatusKind::Error, ""));
    }
}
