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

/// The parts of a request a signature covers, as received.
#[derive(Debug, Clone, Copy)]
pub struct RequestParts<'a> {
    pub method: &'a str,
    /// Path and query exactly as sent on the wire (not decoded, not normalised).
    pub path_and_query: &'a str,
    pub body: &'a [u8],
}

/// A request that passed every check but replay. The caller records `(key_id, nonce)` in
/// its replay cache for [`replay_ttl`] and refuses it as `replayed_request` if already seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified<'a> {
    pub key_id: &'a str,
    pub nonce: &'a str,
    pub ts: u64,
}

/// How long a nonce must be remembered: twice the skew window, so a request cannot be
/// replayed while its `ts` is still fresh on either side of `now`.
pub fn replay_ttl(max_skew: u64) -> std::time::Duration {
    std::time::Duration::from_secs(2 * max_skew.max(1))
}

/// The verifier's pure core, run after the caller looked up the header's key id (`key` is
/// `None` for an unknown one). Checks in the contract's order: key id present, key known,
/// freshness (`now` in Unix seconds), signature. Replay is left to the caller (it is I/O),
/// and comes last.
pub fn verify_parsed<'a>(
    header: &HmacHeader<'a>,
    key: Option<&SigningKey>,
    now: u64,
    max_skew: u64,
    req: &RequestParts<'_>,
) -> Result<Verified<'a>, AuthError> {
    let key_id = header.key_id()?;
    let key = key.ok_or(AuthError::UnknownKeyId)?;
    check_freshness(header.ts, now, max_skew)?;
    verify_signature(header, key, req.method, req.path_and_query, req.body)?;
    Ok(Verified { key_id, nonce: header.nonce, ts: header.ts })
}

/// [`parse_authorization`](crate::parse_authorization) then [`verify_parsed`], for a caller
/// whose key lookup is synchronous (`key_for` gets the header's key id).
pub fn verify_authorization<'a>(
    authorization: Option<&'a str>,
    key_for: impl FnOnce(&str) -> Option<SigningKey>,
    now: u64,
    max_skew: u64,
    req: &RequestParts<'_>,
) -> Result<Verified<'a>, AuthError> {
    let header = crate::parse_authorization(authorization)?;
    let key = key_for(header.key_id()?);
    verify_parsed(&header, key.as_ref(), now, max_skew, req)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{authorization_header, parse_authorization};

    const NOW: u64 = 1_700_000_000;

    fn key() -> SigningKey {
        SigningKey::new("s3cret")
    }

    fn signed(method: &str, paq: &str, ts: u64, body: &[u8]) -> String {
        authorization_header(&key(), "kid", method, paq, ts, "n0nce", body)
    }

    fn run(auth: Option<&str>, method: &str, paq: &str, body: &[u8], now: u64) -> Result<(), AuthError> {
        let req = RequestParts { method, path_and_query: paq, body };
        verify_authorization(auth, |kid| (kid == "kid").then(key), now, 60, &req).map(|_| ())
    }

    #[test]
    fn accepts_and_reports_key_id_and_nonce() {
        let auth = signed("POST", "/a?b=1", NOW, b"{}");
        let req = RequestParts { method: "post", path_and_query: "/a?b=1", body: b"{}" };
        let v = verify_authorization(Some(&auth), |_| Some(key()), NOW, 60, &req).unwrap();
        assert_eq!(v, Verified { key_id: "kid", nonce: "n0nce", ts: NOW });
    }

    #[test]
    fn each_rejection_has_its_code() {
        let good = signed("POST", "/a", NOW, b"x");
        assert_eq!(run(None, "POST", "/a", b"x", NOW), Err(AuthError::MissingHmac));
        assert_eq!(run(Some("Bearer t"), "POST", "/a", b"x", NOW), Err(AuthError::MissingHmac));
        assert_eq!(run(Some("DSX-HMAC ts=1"), "POST", "/a", b"x", NOW), Err(AuthError::MalformedHmac));
        let no_kid = good.replace("key_id=kid", "key_id=");
        assert_eq!(run(Some(&no_kid), "POST", "/a", b"x", NOW), Err(AuthError::MissingKeyId));
        let other = good.replace("key_id=kid", "key_id=other");
        assert_eq!(run(Some(&other), "POST", "/a", b"x", NOW), Err(AuthError::UnknownKeyId));
        assert_eq!(run(Some(&good), "POST", "/a", b"x", NOW + 61), Err(AuthError::StaleRequest));
        assert_eq!(run(Some(&good), "POST", "/a", b"x", NOW - 61), Err(AuthError::StaleRequest));
        assert_eq!(run(Some(&good), "POST", "/a", b"x", NOW + 60), Ok(()));
        assert_eq!(run(Some(&good), "POST", "/a", b"y", NOW), Err(AuthError::BadSignature));
        assert_eq!(run(Some(&good), "PUT", "/a", b"x", NOW), Err(AuthError::BadSignature));
        assert_eq!(run(Some(&good), "POST", "/b", b"x", NOW), Err(AuthError::BadSignature));
        let wrong = authorization_header(&SigningKey::new("other"), "kid", "POST", "/a", NOW, "n0nce", b"x");
        assert_eq!(run(Some(&wrong), "POST", "/a", b"x", NOW), Err(AuthError::BadSignature));
    }

    #[test]
    fn unknown_key_is_reported_before_freshness() {
        // The order the contract fixes: a stale request under an unknown key is `unknown_key_id`.
        let auth = signed("GET", "/a", 1, b"").replace("key_id=kid", "key_id=other");
        assert_eq!(run(Some(&auth), "GET", "/a", b"", NOW), Err(AuthError::UnknownKeyId));
        // And a stale request with a wrong signature is `stale_request`.
        let auth = signed("GET", "/a", 1, b"");
        assert_eq!(run(Some(&auth), "GET", "/b", b"", NOW), Err(AuthError::StaleRequest));
    }

    #[test]
    fn raw_and_decoded_path_signatures_both_verify() {
        // Signed over the encoded path (Python clients) or the decoded one (Python servers).
        for signed_paq in ["/f/a%20b?q=%20", "/f/a b?q=%20"] {
            let auth = signed("GET", signed_paq, NOW, b"");
            assert_eq!(run(Some(&auth), "GET", "/f/a%20b?q=%20", b"", NOW), Ok(()), "{signed_paq}");
        }
        // The query is never decoded.
        let auth = signed("GET", "/f/a b?q= ", NOW, b"");
        assert_eq!(run(Some(&auth), "GET", "/f/a%20b?q=%20", b"", NOW), Err(AuthError::BadSignature));
    }

    #[test]
    fn parsed_header_can_be_verified_after_an_async_lookup() {
        let auth = signed("GET", "/a", NOW, b"");
        let header = parse_authorization(Some(&auth)).unwrap();
        let req = RequestParts { method: "GET", path_and_query: "/a", body: b"" };
        assert_eq!(verify_parsed(&header, None, NOW, 60, &req), Err(AuthError::UnknownKeyId));
        assert!(verify_parsed(&header, Some(&key()), NOW, 60, &req).is_ok());
    }

    #[test]
    fn replay_ttl_covers_both_sides_of_the_window() {
        assert_eq!(replay_ttl(60), std::time::Duration::from_secs(120));
        assert_eq!(replay_ttl(0), std::time::Duration::from_secs(2));
    }

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
