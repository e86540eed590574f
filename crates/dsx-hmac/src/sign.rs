use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use dsx_util::unix_now;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// A pre-keyed HMAC-SHA256 state. The key is the UTF-8 bytes of the secret string as
/// issued (the base64 text is *not* decoded). Cloning it skips the key schedule, so a
/// verifier can cache one per key id.
#[derive(Clone)]
pub struct SigningKey(HmacSha256);

impl SigningKey {
    pub fn new(secret: &str) -> Self {
        Self::from_bytes(secret.as_bytes())
    }

    pub fn from_bytes(secret: &[u8]) -> Self {
        // HMAC accepts keys of any length; this cannot fail.
        Self(HmacSha256::new_from_slice(secret).expect("HMAC takes any key length"))
    }

    /// Raw HMAC-SHA256 over the signed bytes, fed piecewise so the body is never copied.
    pub fn mac(&self, method: &str, path_and_query: &str, ts: u64, nonce: &str, body: &[u8]) -> [u8; 32] {
        let mut mac = self.0.clone();
        for b in method.bytes() {
            mac.update(&[b.to_ascii_uppercase()]);
        }
        mac.update(b"|");
        mac.update(path_and_query.as_bytes());
        mac.update(b"|");
        mac.update(itoa::Buffer::new().format(ts).as_bytes());
        mac.update(b"|");
        mac.update(nonce.as_bytes());
        mac.update(b"|");
        mac.update(body);
        mac.finalize().into_bytes().into()
    }

    /// The `sig=` value: standard base64 (padded) of the MAC.
    pub fn signature(&self, method: &str, path_and_query: &str, ts: u64, nonce: &str, body: &[u8]) -> String {
        STANDARD.encode(self.mac(method, path_and_query, ts, nonce, body))
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

/// `sig` for one request: base64(HMAC-SHA256(secret, signed bytes)).
pub fn compute_signature(
    secret: &str,
    method: &str,
    path_and_query: &str,
    ts: u64,
    nonce: &str,
    body: &[u8],
) -> String {
    SigningKey::new(secret).signature(method, path_and_query, ts, nonce, body)
}

/// The full `Authorization` header value for the given inputs (deterministic).
pub fn authorization_header(
    key: &SigningKey,
    key_id: &str,
    method: &str,
    path_and_query: &str,
    ts: u64,
    nonce: &str,
    body: &[u8],
) -> String {
    let sig = key.signature(method, path_and_query, ts, nonce, body);
    format!("{} key_id={key_id}, ts={ts}, nonce={nonce}, sig={sig}", crate::SCHEME)
}

/// Sign a request now, with a fresh random nonce.
pub fn sign_request(key: &SigningKey, key_id: &str, method: &str, path_and_query: &str, body: &[u8]) -> String {
    authorization_header(key, key_id, method, path_and_query, unix_now(), &generate_nonce(), body)
}

fn random_b64<const N: usize>() -> String {
    let mut buf = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    STANDARD.encode(buf)
}

/// Signer nonce: 12 random bytes, standard base64 (16 characters).
pub fn generate_nonce() -> String {
    random_b64::<12>()
}

/// `hmac_key_id`: 12 random bytes, standard base64 (16 characters).
pub fn generate_key_id() -> String {
    random_b64::<12>()
}

/// `hmac_secret`: 32 random bytes, standard base64 with padding (44 characters).
pub fn generate_secret() -> String {
    random_b64::<32>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_credentials_have_contract_shapes() {
        assert_eq!(generate_key_id().len(), 16);
        assert_eq!(generate_nonce().len(), 16);
        let s = generate_secret();
        assert_eq!(s.len(), 44);
        assert!(s.ends_with('='));
        assert_ne!(generate_secret(), generate_secret());
    }

    #[test]
    fn debug_never_prints_key() {
        assert_eq!(format!("{:?}", SigningKey::new("topsecret")), "SigningKey(<redacted>)");
    }
}
