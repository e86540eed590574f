//! The Redis store's side of one capability (see the trait for the contract).

use super::*;

#[async_trait]
impl Limits for RedisStore {
    async fn acquire_slot(&self, slot: &str, max: usize, lease: Duration) -> StoreResult<bool> {
        let mut conn = self.conn().await?;
        let now = crate::now_millis();
        let taken: i64 = scripts::SLOT
            .key(self.keys.inflight())
            .arg(now)
            .arg(max)
            .arg(slot)
            .arg(now + ttl_ms(lease))
            .invoke_async(&mut conn)
            .await
            .map_err(map_err)?;
        Ok(taken == 1)
    }

    async fn acquire_slots(&self, slots: &[String], max: usize, lease: Duration) -> StoreResult<usize> {
        if slots.is_empty() {
            return Ok(0);
        }
        let mut conn = self.conn().await?;
        let now = crate::now_millis();
        let mut invocation = scripts::SLOTS.key(self.keys.inflight());
        invocation.arg(now).arg(max).arg(now + ttl_ms(lease));
        for slot in slots {
            invocation.arg(slot);
        }
        let taken: usize = invocation.invoke_async(&mut conn).await.map_err(map_err)?;
        Ok(taken)
    }

    async fn release_slots(&self, slots: &[String]) -> StoreResult<()> {
        if slots.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn().await?;
        conn.zrem::<_, _, ()>(self.keys.inflight(), slots).await.map_err(map_err)
    }

    async fn release_slot(&self, slot: &str) -> StoreResult<()> {
        let mut conn = self.conn().await?;
        conn.zrem::<_, _, ()>(self.keys.inflight(), slot).await.map_err(map_err)
    }

    async fn renew_slots(&self, slots: &[String], ttl: Duration) -> StoreResult<Vec<String>> {
        if slots.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn().await?;
        let now = crate::now_millis();
        let script = &*scripts::RENEW_SLOTS;
        let mut invocation = script.key(self.keys.inflight());
        invocation.arg(now).arg(now + ttl_ms(ttl));
        for slot in slots {
            invocation.arg(slot);
        }
        invocation.invoke_async(&mut conn).await.map_err(map_err)
    }

    async fn slots_in_use(&self) -> StoreResult<u64> {
        let mut conn = self.conn().await?;
        let key = self.keys.inflight();
        let (_, n): (u64, u64) = redis::pipe()
            .atomic()
            .cmd("ZREMRANGEBYSCORE")
            .arg(&key)
            .arg("-inf")
            .arg(crate::now_millis())
            .zcard(&key)
            .query_async(&mut conn)
            .await
            .map_err(map_err)?;
        Ok(n)
    }

    async fn hit_rate_limit(&self, bucket: &str, window: Duration) -> StoreResult<RateWindow> {
        let window_secs = window.as_secs().max(1);
        let now = now_secs();
        let index = now / window_secs;
        let key = self.keys.rate_window(bucket, index);
        let mut conn = self.conn().await?;
        let (count,): (u64,) = redis::pipe()
            .atomic()
            .incr(&key, 1u64)
            .expire(&key, (window_secs + 1) as i64)
            .ignore()
            .query_async(&mut conn)
            .await
            .map_err(map_err)?;
        Ok(RateWindow { count, reset_in_secs: ((index + 1) * window_secs - now).max(1) })
    }
}
