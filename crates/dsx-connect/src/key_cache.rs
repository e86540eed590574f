//! A short-lived, in-process cache of resolved DSX-HMAC keys.
//!
//! Every signed request needs its key id resolved; on Redis that is a network round trip and
//! Redis CPU on the hottest path there is. Keys change rarely (rotation keeps the old key valid
//! for its grace period anyway), so a resolution is reused for [`KEY_CACHE_TTL`]. Revocation
//! through this process drops the connector's entries at once; a revocation made through
//! another replica takes effect here within the TTL. Unknown key ids are never cached, so a
//! connector that re-enrolls is recognised on its next call.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dsx_store::ResolvedKey;
use uuid::Uuid;

/// How long a resolved key is reused.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(1);
/// Bound on entries (one per live key id); beyond it the cache starts over.
const MAX_ENTRIES: usize = 10_000;

#[derive(Default)]
pub struct KeyCache {
    entries: Mutex<HashMap<String, (Instant, ResolvedKey)>>,
}

impl KeyCache {
    pub fn get(&self, key_id: &str) -> Option<ResolvedKey> {
        let entries = self.entries.lock().expect("key cache lock");
        entries.get(key_id).filter(|(at, _)| at.elapsed() < KEY_CACHE_TTL).map(|(_, key)| key.clone())
    }

    pub fn put(&self, key_id: &str, key: &ResolvedKey) {
        let mut entries = self.entries.lock().expect("key cache lock");
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(key_id.to_owned(), (Instant::now(), key.clone()));
    }

    /// Forget every key of a connector (it was revoked or unregistered here).
    pub fn forget_connector(&self, uuid: Uuid) {
        self.entries.lock().expect("key cache lock").retain(|_, (_, key)| key.connector_uuid != uuid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    fn key(uuid: Uuid) -> ResolvedKey {
        ResolvedKey { connector_uuid: uuid, secret: SecretString::from("s") }
    }

    #[test]
    fn entries_expire_and_revocation_forgets_them() {
        let cache = KeyCache::default();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        cache.put("ka", &key(a));
        cache.put("kb", &key(b));
        assert_eq!(cache.get("ka").map(|k| k.connector_uuid), Some(a));
        cache.forget_connector(a);
        assert!(cache.get("ka").is_none());
        assert!(cache.get("kb").is_some());
        std::thread::sleep(KEY_CACHE_TTL + Duration::from_millis(50));
        assert!(cache.get("kb").is_none(), "expired");
    }
}
