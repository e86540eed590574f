//! Encryption at rest for HMAC secrets (AES-256-GCM), enabled by `DSXCONNECT_AUTH__SECRET_KEY`.
//!
//! Sealed values are `enc:v1:<base64(nonce ‖ ciphertext)>`. Without a key, secrets are stored
//! as plain text (the Python 1.x layout, readable by Python workers sharing the Redis).
//! Plain values are still read when a key is set, so turning encryption on needs no migration.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};

use crate::StoreError;

const PREFIX: &str = "enc:v1:";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretKeyError {
    #[error("DSXCONNECT_AUTH__SECRET_KEY must be 32 bytes as base64 (44 chars) or hex (64 chars), e.g. `openssl rand -base64 32`")]
    BadLength,
}

/// Seals and opens secrets; a codec without a key passes them through.
#[derive(Clone, Default)]
pub struct SecretCodec {
    cipher: Option<Aes256Gcm>,
}

impl std::fmt::Debug for SecretCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretCodec(encrypting: {})", self.cipher.is_some())
    }
}

impl SecretCodec {
    /// Pass-through codec (no encryption at rest).
    pub fn plain() -> Self {
        Self::default()
    }

    /// Codec from the configured key text: 32 bytes as base64 or hex.
    pub fn from_key_text(text: &str) -> Result<Self, SecretKeyError> {
        let text = text.trim();
        let bytes = STANDARD
            .decode(text)
            .ok()
            .filter(|b| b.len() == 32)
            .or_else(|| hex::decode(text).ok().filter(|b| b.len() == 32))
            .ok_or(SecretKeyError::BadLength)?;
        let cipher = Aes256Gcm::new_from_slice(&bytes).map_err(|_| SecretKeyError::BadLength)?;
        Ok(Self { cipher: Some(cipher) })
    }

    pub fn is_encrypting(&self) -> bool {
        self.cipher.is_some()
    }

    /// The text to store for `secret`.
    pub fn seal(&self, secret: &SecretString) -> String {
        let Some(cipher) = &self.cipher else {
            return secret.expose_secret().to_owned();
        };
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ct = cipher
            .encrypt(Nonce::from_slice(&nonce), secret.expose_secret().as_bytes())
            .expect("AES-GCM encryption of a short secret cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        format!("{PREFIX}{}", STANDARD.encode(out))
    }

    /// The secret behind stored text. Sealed text without the right key is `Corrupt`.
    pub fn open(&self, stored: &str) -> Result<SecretString, StoreError> {
        let Some(sealed) = stored.strip_prefix(PREFIX) else {
            return Ok(SecretString::from(stored.to_owned()));
        };
        let cipher = self.cipher.as_ref().ok_or_else(|| {
            StoreError::Corrupt("secret is encrypted but DSXCONNECT_AUTH__SECRET_KEY is not set".into())
        })?;
        let raw = STANDARD.decode(sealed).map_err(|_| StoreError::Corrupt("sealed secret is not base64".into()))?;
        if raw.len() < 12 + 16 {
            return Err(StoreError::Corrupt("sealed secret is truncated".into()));
        }
        let (nonce, ct) = raw.split_at(12);
        let plain = cipher
            .decrypt(Nonce::from_slice(nonce), ct)
            .map_err(|_| StoreError::Corrupt("sealed secret does not decrypt with the configured key".into()))?;
        String::from_utf8(plain)
            .map(SecretString::from)
            .map_err(|_| StoreError::Corrupt("sealed secret is not UTF-8".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    #[test]
    fn seal_open_round_trip_and_hides_plaintext() {
        let codec = SecretCodec::from_key_text(KEY).unwrap();
        let secret = SecretString::from("the-secret".to_owned());
        let sealed = codec.seal(&secret);
        assert!(sealed.starts_with(PREFIX));
        assert!(!sealed.contains("the-secret"));
        assert_ne!(sealed, codec.seal(&secret), "fresh nonce per seal");
        assert_eq!(codec.open(&sealed).unwrap().expose_secret(), "the-secret");
    }

    #[test]
    fn hex_key_accepted_and_bad_keys_rejected() {
        assert!(SecretCodec::from_key_text(&"ab".repeat(32)).is_ok());
        assert_eq!(SecretCodec::from_key_text("short").unwrap_err(), SecretKeyError::BadLength);
    }

    #[test]
    fn plain_values_still_read_and_wrong_key_is_corrupt() {
        let a = SecretCodec::from_key_text(KEY).unwrap();
        let b = SecretCodec::from_key_text(&"cd".repeat(32)).unwrap();
        assert_eq!(a.open("legacy-plain").unwrap().expose_secret(), "legacy-plain");
        let sealed = a.seal(&SecretString::from("x".to_owned()));
        assert!(matches!(b.open(&sealed), Err(StoreError::Corrupt(_))));
        assert!(matches!(SecretCodec::plain().open(&sealed), Err(StoreError::Corrupt(_))));
    }
}
