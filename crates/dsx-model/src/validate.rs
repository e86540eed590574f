use serde::de::DeserializeOwned;
use serde::Serialize;

/// A JSON body that failed to parse, naming the field at fault (FastAPI-style `loc`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub loc: Vec<String>,
    pub msg: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.loc.join("."), self.msg)
    }
}

/// Parse a JSON body, reporting the path of the offending field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, FieldError> {
    // Tracking the path costs on every field; only a failure needs it, and parsing the same
    // bytes again fails the same way.
    if let Ok(value) = T::deserialize(&mut serde_json::Deserializer::from_slice(bytes)) {
        return Ok(value);
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let kind = if inner.is_syntax() || inner.is_eof() { "json_invalid" } else { "value_error" };
        let kind = if inner.to_string().starts_with("missing field") { "missing" } else { kind };
        let mut loc = vec!["body".to_owned()];
        if path != "." {
            loc.extend(path.split('.').map(str::to_owned));
        }
        // serde reports a missing field at its parent; name the field itself, as FastAPI does.
        let message = inner.to_string();
        if let Some(name) = message.strip_prefix("missing field `").and_then(|rest| rest.split('`').next()) {
            loc.push(name.to_owned());
        }
        let field = loc[1..].join(".");
        let msg = if field.is_empty() { inner.to_string() } else { format!("field `{field}`: {inner}") };
        FieldError { loc, msg, kind }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Connector;

    #[test]
    fn wrong_type_names_the_field() {
        let err = parse_json::<Connector>(br#"{"name": 5}"#).unwrap_err();
        assert_eq!(err.loc, ["body", "name"]);
        assert!(err.msg.contains("field `name`"), "{}", err.msg);
    }

    #[test]
    fn bad_enum_names_the_field() {
        let err = parse_json::<Connector>(br#"{"item_action": "shred"}"#).unwrap_err();
        assert_eq!(err.loc, ["body", "item_action"]);
    }

    #[test]
    fn missing_required_field_is_named() {
        let err = parse_json::<crate::ScanRequest>(br#"{"metainfo": "x"}"#).unwrap_err();
        assert_eq!(err.loc, ["body", "location"]);
        assert_eq!(err.kind, "missing");
    }

    #[test]
    fn malformed_json_is_json_invalid() {
        let err = parse_json::<Connector>(b"{not json").unwrap_err();
        assert_eq!(err.kind, "json_invalid");
    }
}
