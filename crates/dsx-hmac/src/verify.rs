use std::borrow::Cow;

use subtle::ConstantTimeEq;

use crate::{AuthError, HmacHeader, SigningKey};

/// `|now - ts| <= max_skew` (inclusive) or `stale_request`.
pub fn check_freshness(ts: u64, now: u64, max_skew: u64) -> Result<(), AuthError> {
    if ts.abs_diff(now) > max_skew {
        Err(AuthError::StaleRequest)
    } else {
        Ok(())
    }
}

/// The forms of `path_and_query` a signature may cover: the raw form as received and,
/// when the path holds percent-escapes, the decoded path with the raw query (Python
/// servers verify the decoded path while Python clients sign the encoded one — H8).
pub fn path_candidates(raw: &str) -> (&str, Option<String>) {
    let (path, query) = match raw.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (raw, None),
    };
    if !path.contains('%') {
        return (raw, None);
    }
    let decoded = match percent_encoding::percent_decode_str(path).decode_utf8() {
        Ok(Cow::Owned(d)) => d,
        _ => return (raw, None),
    };
    let alt = match query {
        Some(q) => format!("{decoded}?{q}"),
        None => decoded,
    };
    (raw, Some(alt))
}

/// Verify `header.sig` against the request in constant time, trying the raw path first and
/// the percent-decoded one second. Freshness and replay are separate steps (see crate docs).
pub fn verify_signature(
    header: &HmacHeader<'_>,
    key: &SigningKey,
    method: &str,
    raw_path_and_query: &str,
    body: &[u8],
) -> Result<(), AuthError> {
    let (raw, decoded) = path_candidates(raw_path_and_query);
    let matches = |paq: &str| {
        let expected = key.signature(method, paq, header.ts, header.nonce, body);
        bool::from(expected.as_bytes().ct_eq(header.sig.as_bytes()))
    };
    if matches(raw) || decoded.as_deref().is_some_and(matches) {
        Ok(())
    } else {
        Err(AuthError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freshness_window_is_inclusive() {
        assert!(check_freshness(100, 160, 60).is_ok());
        assert!(check_freshness(160, 100, 60).is_ok());
        assert_eq!(check_freshness(100, 161, 60), Err(AuthError::StaleRequest));
        assert_eq!(check_freshness(161, 100, 60), Err(AuthError::StaleRequest));
    }

    #[test]
    fn decoded_candidate_only_for_escaped_paths() {
        assert_eq!(path_candidates("/a/b?x=%20"), ("/a/b?x=%20", None));
        assert_eq!(path_candidates("/a%20b?x=%20").1.as_deref(), Some("/a b?x=%20"));
        assert_eq!(path_candidates("/a%2Fb").1.as_deref(), Some("/a/b"));
        // Undecodable (invalid UTF-8) escapes: only the raw form is tried.
        assert_eq!(path_candidates("/a%ff").1, None);
    }
}
