//! The Redis store's side of one capability (see the trait for the contract).

use super::*;

#[async_trait]
impl Registry for RedisStore {
    async fn put_presence(&self, connector: &Connector, ttl: Duration) -> StoreResult<()> {
        let json = serde_json::to_string(connector).map_err(corrupt)?;
        let mut conn = self.conn().await?;
        conn.pset_ex::<_, _, ()>(self.keys.presence(connector.uuid), json, ttl_ms(ttl)).await.map_err(map_err)
    }

    async fn get_presence(&self, uuid: Uuid) -> StoreResult<Option<Connector>> {
        let mut conn = self.conn().await?;
        let json: Option<String> = conn.get(self.keys.presence(uuid)).await.map_err(map_err)?;
        json.map(|j| serde_json::from_str(&j).map_err(corrupt)).transpose()
    }

    async fn list_presence(&self) -> StoreResult<Vec<Connector>> {
        let mut conn = self.conn().await?;
        let pattern = self.keys.presence_pattern();
        let mut out = Vec::new();
        // A hand-rolled cursor loop: redis-rs' scan iterator ends silently on errors, which
        // would turn a dropped connection into a short list.
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(500)
                .query_async(&mut conn)
                .await
                .map_err(map_err)?;
            if !keys.is_empty() {
                let values: Vec<Option<String>> =
                    redis::cmd("MGET").arg(&keys).query_async(&mut conn).await.map_err(map_err)?;
                // Entries that expired between SCAN and MGET come back as nil.
                for (key, json) in keys.iter().zip(values) {
                    match json.map(|j| serde_json::from_str::<Connector>(&j)) {
                        Some(Ok(connector)) => out.push(connector),
                        // One unreadable entry (e.g. written by another version) must not hide the rest.
                        Some(Err(err)) => {
                            tracing::warn!(key = %key, error = %err, "skipping unreadable presence entry")
                        }
                        None => {}
                    }
                }
            }
            if next == 0 {
                return Ok(out);
            }
            cursor = next;
        }
    }

    async fn delete_presence(&self, uuid: Uuid) -> StoreResult<bool> {
        let mut conn = self.conn().await?;
        let removed: u64 = conn.del(self.keys.presence(uuid)).await.map_err(map_err)?;
        Ok(removed > 0)
    }

    async fn put_registration(&self, uuid: Uuid, record: &RegistrationRecord) -> StoreResult<()> {
        let json = serde_json::to_string(record).map_err(corrupt)?;
        let mut conn = self.conn().await?;
        redis::pipe()
            .atomic()
            .set(self.keys.registration(uuid), json)
            .ignore()
            .sadd(self.keys.registrations(), uuid.to_string())
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(map_err)
    }

    async fn list_registrations(&self) -> StoreResult<Vec<(Uuid, RegistrationRecord)>> {
        let mut conn = self.conn().await?;
        let ids: Vec<String> = conn.smembers(self.keys.registrations()).await.map_err(map_err)?;
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(256) {
            let keys: Vec<String> =
                chunk.iter().filter_map(|id| id.parse().ok()).map(|u| self.keys.registration(u)).collect();
            if keys.is_empty() {
                continue;
            }
            let values: Vec<Option<String>> =
                redis::cmd("MGET").arg(&keys).query_async(&mut conn).await.map_err(map_err)?;
            for (id, value) in chunk.iter().zip(values) {
                if let (Ok(uuid), Some(json)) = (id.parse::<Uuid>(), value) {
                    out.push((uuid, serde_json::from_str(&json).map_err(corrupt)?));
                }
            }
        }
        Ok(out)
    }

    async fn get_registration(&self, uuid: Uuid) -> StoreResult<Option<RegistrationRecord>> {
        let mut conn = self.conn().await?;
        let json: Option<String> = conn.get(self.keys.registration(uuid)).await.map_err(map_err)?;
        json.map(|j| serde_json::from_str(&j).map_err(corrupt)).transpose()
    }

    async fn delete_registration(&self, uuid: Uuid) -> StoreResult<()> {
        let mut conn = self.conn().await?;
        redis::pipe()
            .atomic()
            .del(self.keys.registration(uuid))
            .ignore()
            .srem(self.keys.registrations(), uuid.to_string())
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(map_err)
    }

    async fn put_state(&self, uuid: Uuid, ns: &str, key: &str, value: &str) -> StoreResult<()> {
        let mut conn = self.conn().await?;
        conn.set::<_, _, ()>(self.keys.state(uuid, ns, key), value).await.map_err(map_err)
    }

    async fn get_state(&self, uuid: Uuid, ns: &str, key: &str) -> StoreResult<Option<String>> {
        let mut conn = self.conn().await?;
        conn.get(self.keys.state(uuid, ns, key)).await.map_err(map_err)
    }
}
