//! The DSXA verdict types live in dsx-model (results store them); the scanner adds what is
//! specific to talking to a scanner.

pub use dsx_model::{FileInfo, ThreatType, Verdict, VerdictDetails, VerdictKind};

use crate::ScanError;

/// Parses a DSXA response body (either shape); bad JSON is a protocol error.
pub(crate) fn parse(bytes: &[u8]) -> Result<Verdict, ScanError> {
    Verdict::from_json(bytes).map_err(|e| ScanError::Protocol(format!("invalid verdict JSON: {e}")))
}

/// `Not Scanned` because the scanner is still warming up is not a real verdict: a retryable
/// [`ScanError::Initializing`].
pub(crate) fn reject_initializing(verdict: Verdict) -> Result<Verdict, ScanError> {
    match verdict.initializing_reason() {
        Some(text) => Err(ScanError::Initializing(text.to_owned())),
        None => Ok(verdict),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_input_is_protocol() {
        for bad in [&b"{}"[..], b"not json", br#"{"verdict":"Evil"}"#, br#"[1]"#] {
            assert!(matches!(parse(bad), Err(ScanError::Protocol(_))), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn initializing_is_rejected() {
        let v = parse(br#"{"verdict":"Not Scanned","verdict_details":{"reason":"Scanner Initializing"}}"#).unwrap();
        assert!(matches!(reject_initializing(v), Err(ScanError::Initializing(_))));
        let v = parse(br#"{"verdict":"Not Scanned","verdict_details":{"eventDescription":"INITIALIZING"}}"#).unwrap();
        assert!(matches!(reject_initializing(v), Err(ScanError::Initializing(_))));
        let v = parse(br#"{"verdict":"Not Scanned","verdict_details":{"reason":"File too large"}}"#).unwrap();
        assert!(reject_initializing(v).is_ok());
    }
}
