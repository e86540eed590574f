//! The Redis store's side of one capability (see the trait for the contract).

use super::*;

#[async_trait]
impl Credentials for RedisStore {
    async fn install_credential(&self, uuid: Uuid, new: &Credential, grace: Duration) -> StoreResult<()> {
        let grace_ms = if grace.is_zero() { 0 } else { ttl_ms(grace) };
        let mut conn = self.conn().await?;
        redis::cmd("EVAL")
            .arg(INSTALL_SCRIPT)
            .arg(3)
            .arg(self.keys.config(uuid))
            .arg(self.keys.kid(&new.key_id))
            .arg(self.keys.grace_set(uuid))
            .arg(&new.key_id)
            .arg(self.codec.seal(&new.secret))
            .arg(new.issued_at)
            .arg(uuid.to_string())
            .arg(grace_ms)
            .arg(self.keys.kid(""))
            .arg(self.keys.grace(""))
            .query_async::<()>(&mut conn)
            .await
            .map_err(map_err)
    }

    async fn current_credential(&self, uuid: Uuid) -> StoreResult<Option<Credential>> {
        let mut conn = self.conn().await?;
        let (kid, secret, issued): (Option<String>, Option<String>, Option<u64>) =
            conn.hget(self.keys.config(uuid), &["hmac_key_id", "hmac_secret", "issued_at"]).await.map_err(map_err)?;
        match (kid, secret) {
            (Some(key_id), Some(sealed)) => {
                Ok(Some(Credential { key_id, secret: self.codec.open(&sealed)?, issued_at: issued.unwrap_or(0) }))
            }
            _ => Ok(None),
        }
    }

    async fn resolve_key(&self, key_id: &str) -> StoreResult<Option<ResolvedKey>> {
        // One round trip on the hot path of every signed request.
        let mut conn = self.conn().await?;
        let found: Option<(String, String)> = scripts::RESOLVE
            .key(self.keys.kid(key_id))
            .key(self.keys.grace(key_id))
            .arg(self.keys.config_prefix())
            .arg(key_id)
            .invoke_async(&mut conn)
            .await
            .map_err(map_err)?;
        let Some((owner, sealed)) = found else { return Ok(None) };
        let uuid: Uuid =
            owner.parse().map_err(|_| StoreError::Corrupt(format!("key index of {key_id} holds no uuid")))?;
        Ok(Some(ResolvedKey { connector_uuid: uuid, secret: self.codec.open(&sealed)? }))
    }

    async fn revoke_credentials(&self, uuid: Uuid) -> StoreResult<bool> {
        let mut conn = self.conn().await?;
        let removed: u64 = redis::cmd("EVAL")
            .arg(REVOKE_SCRIPT)
            .arg(2)
            .arg(self.keys.config(uuid))
            .arg(self.keys.grace_set(uuid))
            .arg(uuid.to_string())
            .arg(self.keys.kid(""))
            .arg(self.keys.grace(""))
            .query_async(&mut conn)
            .await
            .map_err(map_err)?;
        Ok(removed > 0)
    }

    async fn remember_nonce(&self, key_id: &str, nonce: &str, ttl: Duration) -> StoreResult<bool> {
        let ttl = ttl.max(crate::MIN_NONCE_TTL);
        let mut conn = self.conn().await?;
        let set: Option<String> = redis::cmd("SET")
            .arg(self.keys.nonce(key_id, nonce))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms(ttl))
            .query_async(&mut conn)
            .await
            .map_err(map_err)?;
        Ok(set.is_some())
    }
}
