#![no_main]
//! The DSX-HMAC header parser must never panic, and anything it accepts must satisfy the
//! strict rules (no `|` or whitespace in the nonce, bounded sizes, digits-only ts).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for candidate in [text.to_owned(), format!("DSX-HMAC {text}")] {
        if let Ok(h) = dsx_hmac::parse_authorization(Some(&candidate)) {
            assert!(candidate.len() <= dsx_hmac::MAX_HEADER_LEN);
            assert!(!h.nonce.is_empty() && h.nonce.len() <= dsx_hmac::MAX_NONCE_LEN);
            assert!(!h.nonce.contains('|') && !h.nonce.chars().any(char::is_whitespace));
            assert!(!h.sig.is_empty());
            let _ = h.key_id();
        }
    }
});
