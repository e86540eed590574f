//! Every positive and negative case of the shared DSX-HMAC test vectors.

use std::collections::HashSet;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use dsx_hmac::{
    authorization_header, parse_authorization, verify_authorization, verify_signature, AuthError, RequestParts,
    SigningKey,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};

#[derive(Deserialize, Clone)]
struct Positive {
    name: String,
    key_id: String,
    secret: String,
    method: String,
    path_and_query: String,
    ts: u64,
    nonce: String,
    body_base64: String,
    canonical_sha256: String,
    sig: String,
    authorization: String,
}

#[derive(Deserialize)]
struct Negative {
    name: String,
    base: String,
    verify_at: u64,
    expect: String,
    #[serde(default)]
    replay: bool,
    secret: Option<String>,
    method: Option<String>,
    path_and_query: Option<String>,
    body_base64: Option<String>,
    authorization: Option<String>,
}

#[derive(Deserialize)]
struct Vectors {
    scheme: String,
    positive: Vec<Positive>,
    negative: Vec<Negative>,
}

fn load() -> Vectors {
    serde_json::from_str(include_str!("data/dsx-hmac.json")).expect("vector file parses")
}

/// A verifier as a server runs it, with one known key and an in-memory replay cache.
struct Verifier {
    key_id: String,
    secret: String,
    seen: HashSet<(String, String)>,
}

impl Verifier {
    fn verify(&mut self, auth: Option<&str>, method: &str, paq: &str, body: &[u8], now: u64) -> Result<(), AuthError> {
        // The shared core both dsx-connect and the connectors adapt; replay stays with the caller.
        let req = RequestParts { method, path_and_query: paq, body };
        let key_for = |kid: &str| (kid == self.key_id).then(|| SigningKey::new(&self.secret));
        let verified = verify_authorization(auth, key_for, now, 60, &req)?;
        if !self.seen.insert((verified.key_id.to_owned(), verified.nonce.to_owned())) {
            return Err(AuthError::ReplayedRequest);
        }
        Ok(())
    }
}

#[test]
fn scheme_is_dsx_hmac() {
    assert_eq!(load().scheme, dsx_hmac::SCHEME);
}

#[test]
fn positive_vectors_sign_and_verify() {
    let v = load();
    assert!(v.positive.len() >= 6);
    for p in &v.positive {
        let body = STANDARD.decode(&p.body_base64).unwrap();
        let mut canonical =
            format!("{}|{}|{}|{}|", p.method.to_uppercase(), p.path_and_query, p.ts, p.nonce).into_bytes();
        canonical.extend_from_slice(&body);
        assert_eq!(hex::encode(Sha256::digest(&canonical)), p.canonical_sha256, "{}: canonical", p.name);

        let key = SigningKey::new(&p.secret);
        assert_eq!(key.signature(&p.method, &p.path_and_query, p.ts, &p.nonce, &body), p.sig, "{}: sig", p.name);
        let header = authorization_header(&key, &p.key_id, &p.method, &p.path_and_query, p.ts, &p.nonce, &body);
        assert_eq!(header, p.authorization, "{}: header", p.name);

        let mut verifier = Verifier { key_id: p.key_id.clone(), secret: p.secret.clone(), seen: HashSet::new() };
        assert_eq!(verifier.verify(Some(&header), &p.method, &p.path_and_query, &body, p.ts), Ok(()), "{}", p.name);
    }
}

#[test]
fn negative_vectors_fail_with_expected_code() {
    let v = load();
    assert!(v.negative.len() >= 14);
    for n in &v.negative {
        let base = v.positive.iter().find(|p| p.name == n.base).expect("base exists").clone();
        let body = STANDARD.decode(n.body_base64.as_ref().unwrap_or(&base.body_base64)).unwrap();
        let method = n.method.as_ref().unwrap_or(&base.method);
        let paq = n.path_and_query.as_ref().unwrap_or(&base.path_and_query);
        let auth = n.authorization.as_ref().unwrap_or(&base.authorization);
        let auth = (!auth.is_empty()).then_some(auth.as_str());
        let mut verifier = Verifier {
            key_id: base.key_id.clone(),
            secret: n.secret.clone().unwrap_or(base.secret.clone()),
            seen: HashSet::new(),
        };
        let mut outcome = verifier.verify(auth, method, paq, &body, n.verify_at);
        if n.replay {
            assert_eq!(outcome, Ok(()), "{}: first use must pass", n.name);
            outcome = verifier.verify(auth, method, paq, &body, n.verify_at);
        }
        let got = outcome.map(|_| "ok").unwrap_or_else(|e| e.code());
        assert_eq!(got, n.expect, "{}", n.name);
    }
}

#[test]
fn percent_encoded_path_verifies_in_either_form() {
    // A Python client signs the encoded path; a Python server verifies the decoded one (H8).
    let key = SigningKey::new("s");
    let encoded = "/dsx-connect/api/v1/connectors/state/u/ns/my%20key?x=%2F";
    let decoded = "/dsx-connect/api/v1/connectors/state/u/ns/my key?x=%2F";
    for signed in [encoded, decoded] {
        let h = authorization_header(&key, "k", "PUT", signed, 5, "n", b"v");
        let parsed = parse_authorization(Some(&h)).unwrap();
        assert_eq!(verify_signature(&parsed, &key, "PUT", encoded, b"v"), Ok(()), "signed {signed}");
    }
    // A different decoded path still fails.
    let h = authorization_header(&key, "k", "PUT", "/other", 5, "n", b"v");
    let parsed = parse_authorization(Some(&h)).unwrap();
    assert_eq!(verify_signature(&parsed, &key, "PUT", encoded, b"v"), Err(AuthError::BadSignature));
}
