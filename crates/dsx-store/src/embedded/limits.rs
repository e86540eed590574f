//! The embedded store's side of one capability (see the trait for the contract).

use super::*;

#[async_trait]
impl Limits for EmbeddedStore {
    async fn acquire_slot(&self, slot: &str, max: usize, lease: Duration) -> StoreResult<bool> {
        let now = std::time::Instant::now();
        let mut slots = self.inner.slots.lock().expect("slots lock");
        slots.retain(|_, until| *until > now);
        if slots.contains_key(slot) || slots.len() < max {
            slots.insert(slot.to_owned(), now + lease);
            return Ok(true);
        }
        Ok(false)
    }

    async fn release_slot(&self, slot: &str) -> StoreResult<()> {
        self.inner.slots.lock().expect("slots lock").remove(slot);
        Ok(())
    }

    async fn renew_slots(&self, held: &[String], ttl: Duration) -> StoreResult<Vec<String>> {
        let now = std::time::Instant::now();
        let mut slots = self.inner.slots.lock().expect("slots lock");
        let mut lost = Vec::new();
        for slot in held {
            match slots.get_mut(slot) {
                Some(until) if *until > now => *until = now + ttl,
                _ => {
                    slots.remove(slot);
                    lost.push(slot.clone());
                }
            }
        }
        Ok(lost)
    }

    async fn slots_in_use(&self) -> StoreResult<u64> {
        let now = std::time::Instant::now();
        let mut slots = self.inner.slots.lock().expect("slots lock");
        slots.retain(|_, until| *until > now);
        Ok(slots.len() as u64)
    }

    async fn hit_rate_limit(&self, bucket: &str, window: Duration) -> StoreResult<RateWindow> {
        let bucket = bucket.to_owned();
        let window_secs = window.as_secs().max(1);
        self.run(move |inner| {
            inner.write(false, |txn| {
                let now = now_secs();
                let mut table = txn.open_table(RATE).map_err(unavailable)?;
                let (end, count) = match table.get(bucket.as_str()).map_err(unavailable)?.map(|g| g.value()) {
                    Some((end, count)) if end > now => (end, count + 1),
                    _ => ((now / window_secs + 1) * window_secs, 1),
                };
                table.insert(bucket.as_str(), (end, count)).map_err(unavailable)?;
                Ok(RateWindow { count, reset_in_secs: (end - now).max(1) })
            })
        })
        .await
    }
}
