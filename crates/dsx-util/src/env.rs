//! Environment variable parsing. Every function takes the variable's name and its raw value
//! (`None` when unset); a blank value counts as unset, and an error names the variable, so a
//! bad setting stops the start with a message that says which one to fix.

use std::str::FromStr;
use std::time::Duration;

/// A variable whose value could not be used: `"<VAR>: <reason>"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {reason}")]
pub struct EnvError {
    pub var: String,
    pub reason: String,
}

impl EnvError {
    pub fn new(var: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { var: var.into(), reason: reason.into() }
    }
}

/// The trimmed value, or `None` if unset or blank.
pub fn non_blank(raw: Option<&str>) -> Option<&str> {
    raw.map(str::trim).filter(|v| !v.is_empty())
}

/// `1/true/yes/on` or `0/false/no/off` (any case); unset is `default`.
pub fn parse_bool(var: &str, raw: Option<&str>, default: bool) -> Result<bool, EnvError> {
    match non_blank(raw).map(str::to_ascii_lowercase) {
        None => Ok(default),
        Some(v) if ["1", "true", "yes", "on"].contains(&v.as_str()) => Ok(true),
        Some(v) if ["0", "false", "no", "off"].contains(&v.as_str()) => Ok(false),
        Some(v) => Err(EnvError::new(var, format!("expected true or false, got {v:?}"))),
    }
}

/// A whole number; unset is `default`.
pub fn parse_num<T: FromStr>(var: &str, raw: Option<&str>, default: T) -> Result<T, EnvError> {
    match non_blank(raw) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| EnvError::new(var, format!("expected a whole number, got {v:?}"))),
    }
}

/// A duration given in whole seconds; unset is `default`.
pub fn parse_secs(var: &str, raw: Option<&str>, default: Duration) -> Result<Duration, EnvError> {
    parse_num(var, raw, default.as_secs()).map(Duration::from_secs)
}

/// A duration given in whole milliseconds; unset is `default`.
pub fn parse_millis(var: &str, raw: Option<&str>, default: Duration) -> Result<Duration, EnvError> {
    parse_num(var, raw, default.as_millis() as u64).map(Duration::from_millis)
}

/// A comma-separated list, items trimmed, blank ones dropped; unset is empty.
pub fn parse_list(raw: Option<&str>) -> Vec<String> {
    raw.into_iter().flat_map(|v| v.split(',')).map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bool_words_and_blank_default() {
        for (raw, want) in [("1", true), (" Yes ", true), ("ON", true), ("0", false), ("off", false), ("No", false)] {
            assert_eq!(parse_bool("V", Some(raw), !want), Ok(want), "{raw}");
        }
        assert_eq!(parse_bool("V", None, true), Ok(true));
        assert_eq!(parse_bool("V", Some("  "), false), Ok(false));
        let err = parse_bool("DSX_FLAG", Some("Sometimes"), false).unwrap_err();
        assert_eq!(err.to_string(), "DSX_FLAG: expected true or false, got \"sometimes\"");
    }

    #[test]
    fn numbers_and_durations_name_the_variable() {
        assert_eq!(parse_num("N", Some(" 42 "), 0u64), Ok(42));
        assert_eq!(parse_num("N", None, 7u16), Ok(7));
        assert_eq!(
            parse_num::<u64>("DSX_N", Some("-1"), 0).unwrap_err().to_string(),
            "DSX_N: expected a whole number, got \"-1\""
        );
        assert_eq!(parse_secs("S", Some("90"), Duration::ZERO), Ok(Duration::from_secs(90)));
        assert_eq!(parse_secs("S", None, Duration::from_secs(5)), Ok(Duration::from_secs(5)));
        assert_eq!(parse_millis("M", Some("250"), Duration::ZERO), Ok(Duration::from_millis(250)));
        assert_eq!(parse_millis("DSX_MS", Some("1.5"), Duration::ZERO).unwrap_err().var, "DSX_MS");
    }

    #[test]
    fn lists_split_on_commas() {
        assert_eq!(parse_list(Some(" a, b ,,c ")), ["a", "b", "c"]);
        assert!(parse_list(None).is_empty());
        assert!(parse_list(Some(" , ")).is_empty());
    }
}
