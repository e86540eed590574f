//! Property tests: sign→verify round-trips; any single-byte change to what is signed fails.

use dsx_hmac::{authorization_header, parse_authorization, verify_signature, AuthError, SigningKey};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Req {
    method: String,
    path: String,
    query: String,
    ts: u64,
    nonce: String,
    body: Vec<u8>,
}

impl Req {
    fn paq(&self) -> String {
        if self.query.is_empty() {
            self.path.clone()
        } else {
            format!("{}?{}", self.path, self.query)
        }
    }
}

fn req() -> impl Strategy<Value = Req> {
    (
        prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "PATCH"]),
        "/[a-z0-9_/-]{0,40}",
        "([a-z]{1,5}=[a-z0-9]{0,5}(&[a-z]{1,5}=[a-z0-9]{0,5}){0,3})?",
        1_600_000_000u64..1_900_000_000,
        "[A-Za-z0-9+/=]{16}",
        prop::collection::vec(any::<u8>(), 0..512),
    )
        .prop_map(|(m, path, query, ts, nonce, body)| Req { method: m.into(), path, query, ts, nonce, body })
}

fn verify(key: &SigningKey, header: &str, r: &Req) -> Result<(), AuthError> {
    let parsed = parse_authorization(Some(header))?;
    verify_signature(&parsed, key, &r.method, &r.paq(), &r.body)
}

/// Flip one byte of `s` to another printable ASCII byte that keeps it well-formed.
fn mutate(s: &str, idx: usize, delta: u8) -> String {
    let mut b = s.as_bytes().to_vec();
    let i = idx % b.len();
    let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let pos = alphabet.iter().position(|&c| c == b[i].to_ascii_lowercase()).unwrap_or(0);
    let mut next = alphabet[(pos + 1 + delta as usize % (alphabet.len() - 1)) % alphabet.len()];
    if next == b[i] {
        next = if b[i] == b'a' { b'b' } else { b'a' };
    }
    b[i] = next;
    String::from_utf8(b).unwrap()
}

proptest! {
    #[test]
    fn round_trip(r in req(), secret in "[ -~]{1,64}") {
        let key = SigningKey::new(&secret);
        let header = authorization_header(&key, "kid", &r.method, &r.paq(), r.ts, &r.nonce, &r.body);
        prop_assert_eq!(verify(&key, &header, &r), Ok(()));
    }

    #[test]
    fn any_single_byte_change_fails(r in req(), which in 0usize..6, idx in any::<usize>(), delta in any::<u8>()) {
        let key = SigningKey::new("secret");
        let header = authorization_header(&key, "kid", &r.method, &r.paq(), r.ts, &r.nonce, &r.body);
        let mut t = r.clone();
        match which {
            0 => t.method = if r.method == "GET" { "PUT".into() } else { "GET".into() },
            1 => t.path = mutate(&r.path, idx, delta),
            2 => t.query = if r.query.is_empty() { "a=1".into() } else { mutate(&r.query, idx, delta) },
            3 => t.ts = r.ts ^ (1 << (idx % 20)),
            4 => t.nonce = mutate(&r.nonce, idx, delta),
            _ => if r.body.is_empty() { t.body = vec![delta] } else {
                let i = idx % r.body.len();
                t.body[i] ^= delta.max(1);
            },
        }
        // Re-create the header with the mutated ts/nonce (the attacker controls the header)
        // but keep the original signature.
        let original = parse_authorization(Some(&header)).unwrap();
        let forged = format!("DSX-HMAC key_id=kid, ts={}, nonce={}, sig={}", t.ts, t.nonce, original.sig);
        prop_assert_eq!(verify(&key, &forged, &t), Err(AuthError::BadSignature));
    }

    #[test]
    fn parser_never_panics(s in "\\PC{0,300}") {
        let _ = parse_authorization(Some(&s));
        let _ = parse_authorization(Some(&format!("DSX-HMAC {s}")));
    }
}
