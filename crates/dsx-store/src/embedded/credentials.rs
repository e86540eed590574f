//! The embedded store's side of one capability (see the trait for the contract).

use super::*;

#[async_trait]
impl Credentials for EmbeddedStore {
    async fn install_credential(&self, uuid: Uuid, new: &Credential, grace: Duration) -> StoreResult<()> {
        let stored = StoredCredential {
            key_id: new.key_id.clone(),
            secret: self.inner.codec.seal(&new.secret),
            issued_at: new.issued_at,
        };
        self.run(move |inner| {
            let key = uuid.to_string();
            inner.write(true, |txn| {
                // Read the previous key inside the write transaction: concurrent installs serialize.
                let mut credentials = txn.open_table(CREDENTIALS).map_err(unavailable)?;
                let previous = credential_in(&credentials, &key)?;
                let mut kids = txn.open_table(KEY_IDS).map_err(unavailable)?;
                if let Some(old) = previous.filter(|old| old.key_id != stored.key_id) {
                    if grace.is_zero() {
                        kids.remove(old.key_id.as_str()).map_err(unavailable)?;
                    } else {
                        let entry =
                            serde_json::to_vec(&KidEntry { uuid, grace_secret: Some(old.secret) }).map_err(corrupt)?;
                        kids.insert(old.key_id.as_str(), (expiry_ms(grace), entry.as_slice())).map_err(unavailable)?;
                    }
                }
                let entry = serde_json::to_vec(&KidEntry { uuid, grace_secret: None }).map_err(corrupt)?;
                kids.insert(stored.key_id.as_str(), (0, entry.as_slice())).map_err(unavailable)?;
                put_json(&mut credentials, &key, &stored)
            })
        })
        .await
    }

    async fn current_credential(&self, uuid: Uuid) -> StoreResult<Option<Credential>> {
        self.read_now(move |inner| {
            let Some(stored) = inner.read_credential(&uuid.to_string())? else { return Ok(None) };
            Ok(Some(Credential {
                key_id: stored.key_id,
                secret: inner.codec.open(&stored.secret)?,
                issued_at: stored.issued_at,
            }))
        })
    }

    async fn resolve_key(&self, key_id: &str) -> StoreResult<Option<ResolvedKey>> {
        let key_id = key_id.to_owned();
        self.read_now(move |inner| {
            // One read transaction: the index and the credential are seen at the same instant.
            let txn = inner.db()?.begin_read().map_err(unavailable)?;
            let entry: KidEntry = {
                let table = txn.open_table(KEY_IDS).map_err(unavailable)?;
                let Some(guard) = table.get(key_id.as_str()).map_err(unavailable)? else { return Ok(None) };
                let (exp, json) = guard.value();
                if !live(exp, now_millis()) {
                    return Ok(None);
                }
                serde_json::from_slice(json).map_err(corrupt)?
            };
            let sealed = match entry.grace_secret {
                Some(sealed) => sealed,
                None => {
                    match credential_in(&txn.open_table(CREDENTIALS).map_err(unavailable)?, &entry.uuid.to_string())? {
                        Some(current) if current.key_id == key_id => current.secret,
                        _ => return Ok(None),
                    }
                }
            };
            Ok(Some(ResolvedKey { connector_uuid: entry.uuid, secret: inner.codec.open(&sealed)? }))
        })
    }

    async fn revoke_credentials(&self, uuid: Uuid) -> StoreResult<bool> {
        self.run(move |inner| {
            inner.write(true, |txn| {
                let key = uuid.to_string();
                let had_current = txn
                    .open_table(CREDENTIALS)
                    .map_err(unavailable)?
                    .remove(key.as_str())
                    .map_err(unavailable)?
                    .is_some();
                let mut kids = txn.open_table(KEY_IDS).map_err(unavailable)?;
                let mut had_keys = false;
                kids.retain(|_, (_, json)| {
                    let mine = serde_json::from_slice::<KidEntry>(json).is_ok_and(|e| e.uuid == uuid);
                    had_keys |= mine;
                    !mine
                })
                .map_err(unavailable)?;
                Ok(had_current || had_keys)
            })
        })
        .await
    }

    async fn remember_nonce(&self, key_id: &str, nonce: &str, ttl: Duration) -> StoreResult<bool> {
        let (key_id, nonce) = (key_id.to_owned(), nonce.to_owned());
        let ttl = ttl.max(crate::MIN_NONCE_TTL);
        self.run(move |inner| {
            inner.write(false, |txn| {
                let mut table = txn.open_table(NONCES).map_err(unavailable)?;
                let now = now_millis();
                let seen =
                    table.get((key_id.as_str(), nonce.as_str())).map_err(unavailable)?.is_some_and(|g| g.value() > now);
                if !seen {
                    table.insert((key_id.as_str(), nonce.as_str()), expiry_ms(ttl)).map_err(unavailable)?;
                }
                Ok(!seen)
            })
        })
        .await
    }
}
