use crate::{AuthError, MAX_HEADER_LEN, MAX_NONCE_LEN, SCHEME};

/// A strictly parsed `Authorization: DSX-HMAC …` header, borrowing from the raw value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HmacHeader<'a> {
    key_id: Option<&'a str>,
    pub ts: u64,
    pub nonce: &'a str,
    pub sig: &'a str,
}

impl<'a> HmacHeader<'a> {
    /// The key id, or `missing_key_id` (checked after parsing, as the contract orders it).
    pub fn key_id(&self) -> Result<&'a str, AuthError> {
        self.key_id.ok_or(AuthError::MissingKeyId)
    }
}

/// Parse the header value. `None` or a value without the `DSX-HMAC ` prefix is
/// `missing_hmac`; anything an honest signer would never produce is `malformed_hmac`.
///
/// Stricter than Python 1.x on purpose: a `|` or whitespace in the nonce (H7), a signed
/// `ts` such as `+17…`, duplicate parameters and oversized headers are all rejected, so the
/// signed string has exactly one reading.
pub fn parse_authorization(value: Option<&str>) -> Result<HmacHeader<'_>, AuthError> {
    let value = value.ok_or(AuthError::MissingHmac)?;
    let params = value.strip_prefix(SCHEME).and_then(|rest| rest.strip_prefix(' ')).ok_or(AuthError::MissingHmac)?;
    if value.len() > MAX_HEADER_LEN {
        return Err(AuthError::MalformedHmac);
    }

    let (mut key_id, mut ts, mut nonce, mut sig) = (None, None, None, None);
    for piece in params.split(',') {
        let (name, val) = piece.trim().split_once('=').ok_or(AuthError::MalformedHmac)?;
        let slot = match name {
            "key_id" => &mut key_id,
            "ts" => &mut ts,
            "nonce" => &mut nonce,
            "sig" => &mut sig,
            _ => continue, // unknown parameters are ignored, as Python does
        };
        if slot.replace(val).is_some() {
            return Err(AuthError::MalformedHmac);
        }
    }

    let ts = parse_ts(ts.ok_or(AuthError::MalformedHmac)?)?;
    let nonce = nonce.ok_or(AuthError::MalformedHmac)?;
    if nonce.is_empty()
        || nonce.len() > MAX_NONCE_LEN
        // Visible ASCII only (honest nonces are base64): no `|`, no whitespace of any script.
        || nonce.bytes().any(|b| b == b'|' || !b.is_ascii_graphic())
    {
        return Err(AuthError::MalformedHmac);
    }
    let sig = sig.filter(|s| !s.is_empty()).ok_or(AuthError::MalformedHmac)?;
    Ok(HmacHeader { key_id: key_id.filter(|k| !k.is_empty()), ts, nonce, sig })
}

fn parse_ts(raw: &str) -> Result<u64, AuthError> {
    if raw.is_empty() || raw.len() > 19 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AuthError::MalformedHmac);
    }
    raw.parse().map_err(|_| AuthError::MalformedHmac)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "DSX-HMAC key_id=kid, ts=17, nonce=abc, sig=c2ln";

    #[test]
    fn parses_well_formed_header() {
        let h = parse_authorization(Some(GOOD)).unwrap();
        assert_eq!(h.key_id(), Ok("kid"));
        assert_eq!((h.ts, h.nonce, h.sig), (17, "abc", "c2ln"));
    }

    #[test]
    fn sig_keeps_base64_padding() {
        let h = parse_authorization(Some("DSX-HMAC key_id=k, ts=1, nonce=n, sig=ab==")).unwrap();
        assert_eq!(h.sig, "ab==");
    }

    #[test]
    fn absent_or_other_scheme_is_missing() {
        for v in [None, Some(""), Some("Bearer x"), Some("DSX-HMAC"), Some("dsx-hmac key_id=k")] {
            assert_eq!(parse_authorization(v), Err(AuthError::MissingHmac), "{v:?}");
        }
    }

    #[test]
    fn missing_key_id_is_reported_after_parse() {
        let h = parse_authorization(Some("DSX-HMAC ts=1, nonce=n, sig=s")).unwrap();
        assert_eq!(h.key_id(), Err(AuthError::MissingKeyId));
        let h = parse_authorization(Some("DSX-HMAC key_id=, ts=1, nonce=n, sig=s")).unwrap();
        assert_eq!(h.key_id(), Err(AuthError::MissingKeyId));
    }

    #[test]
    fn malformed_inputs_are_rejected() {
        let long_nonce = format!("DSX-HMAC key_id=k, ts=1, nonce={}, sig=s", "n".repeat(129));
        let huge = format!("DSX-HMAC key_id=k, ts=1, nonce=n, sig={}", "s".repeat(1100));
        let cases = [
            "DSX-HMAC key_id=k, garbage, sig=x",
            "DSX-HMAC key_id=k, nonce=n, sig=s",
            "DSX-HMAC key_id=k, ts=1, sig=s",
            "DSX-HMAC key_id=k, ts=1, nonce=n",
            "DSX-HMAC key_id=k, ts=+1, nonce=n, sig=s",
            "DSX-HMAC key_id=k, ts=-1, nonce=n, sig=s",
            "DSX-HMAC key_id=k, ts=1.0, nonce=n, sig=s",
            "DSX-HMAC key_id=k, ts=, nonce=n, sig=s",
            "DSX-HMAC key_id=k, ts=99999999999999999999, nonce=n, sig=s",
            "DSX-HMAC key_id=k, ts=1, nonce=a|b, sig=s",
            "DSX-HMAC key_id=k, ts=1, nonce=a\tb, sig=s",
            // Found by the fuzzer: U+00A0 is whitespace outside ASCII.
            "DSX-HMAC key_id=k, ts=1, nonce=a\u{a0}b, sig=s",
            "DSX-HMAC key_id=k, ts=1, nonce=\u{e9}t\u{e9}, sig=s",
            "DSX-HMAC key_id=k, ts=1, nonce=, sig=s",
            "DSX-HMAC key_id=k, ts=1, nonce=n, sig=",
            "DSX-HMAC key_id=k, ts=1, ts=2, nonce=n, sig=s",
            "DSX-HMAC key_id=k, ts=1, nonce=n, sig=s,",
            long_nonce.as_str(),
            huge.as_str(),
        ];
        for c in cases {
            assert_eq!(parse_authorization(Some(c)), Err(AuthError::MalformedHmac), "{c}");
        }
    }
}
