pub mod connectors;
pub mod events;
pub mod proxy;
pub mod registration;
pub mod results;
pub mod scan;
pub mod system;

use uuid::Uuid;

use crate::error::ApiError;

/// Parse a `{uuid}` path segment; a malformed one is a 422 naming the parameter.
pub fn parse_uuid(raw: &str, name: &str) -> Result<Uuid, ApiError> {
    raw.parse().map_err(|_| {
        ApiError::Validation(dsx_model::FieldError {
            loc: vec!["path".into(), name.into()],
            msg: format!("field `{name}`: {raw:?} is not a UUID"),
            kind: "uuid_parsing",
        })
    })
}

/// A boolean query flag as FastAPI reads it: `1`, `true` or `yes` (any case) is on.
pub fn query_flag(value: Option<&str>) -> bool {
    value.is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
}
