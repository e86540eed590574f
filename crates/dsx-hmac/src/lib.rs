//! DSX-HMAC: the request signature shared by dsx-connect and its connectors.
//!
//! Signed bytes: `UPPER(method) "|" path_and_query "|" ts "|" nonce "|" body`.
//! Header: `Authorization: DSX-HMAC key_id=<kid>, ts=<unix s>, nonce=<nonce>, sig=<b64>`.
//!
//! This crate is pure: no clock, no store. Callers pass `now` and keep the replay cache;
//! [`verify_parsed`] is the one verifier both dsx-connect and the connectors adapt.

#![forbid(unsafe_code)]

mod header;
mod sign;
mod verify;

/// Seconds since the Unix epoch: the one clock (`dsx_util::unix_now`), re-exported for signers.
pub use dsx_util::unix_now;
pub use header::{parse_authorization, HmacHeader};
pub use sign::{
    authorization_header, compute_signature, generate_key_id, generate_nonce, generate_secret, sign_request, SigningKey,
};
pub use verify::{
    check_freshness, path_candidates, replay_ttl, verify_authorization, verify_parsed, verify_signature, RequestParts,
    Verified,
};

/// The scheme word that starts the `Authorization` header.
pub const SCHEME: &str = "DSX-HMAC";
/// Longest `Authorization` header the verifier will parse.
pub const MAX_HEADER_LEN: usize = 1024;
/// Longest nonce accepted (honest signers send 16 characters).
pub const MAX_NONCE_LEN: usize = 128;
/// Default clock-skew window, seconds (inclusive).
pub const DEFAULT_MAX_SKEW_SECS: u64 = 60;

/// Why a request failed DSX-HMAC verification. `code()` is the wire string sent as
/// `{"detail": "<code>"}`; it matches the Python 1.x error strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum AuthError {
    #[error("missing_hmac")]
    MissingHmac,
    #[error("malformed_hmac")]
    MalformedHmac,
    #[error("missing_key_id")]
    MissingKeyId,
    #[error("unknown_key_id")]
    UnknownKeyId,
    #[error("stale_request")]
    StaleRequest,
    #[error("bad_signature")]
    BadSignature,
    #[error("replayed_request")]
    ReplayedRequest,
}

impl AuthError {
    /// The wire string sent as `{"detail": "<code>"}`.
    pub fn code(self) -> &'static str {
        match self {
            AuthError::MissingHmac => "missing_hmac",
            AuthError::MalformedHmac => "malformed_hmac",
            AuthError::MissingKeyId => "missing_key_id",
            AuthError::UnknownKeyId => "unknown_key_id",
            AuthError::StaleRequest => "stale_request",
            AuthError::BadSignature => "bad_signature",
            AuthError::ReplayedRequest => "replayed_request",
        }
    }
}
