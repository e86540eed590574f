//! The Redis store's side of one capability (see the trait for the contract).

use super::*;

#[async_trait]
impl Events for RedisStore {
    /// From a count of subscribers across every replica (`PUBSUB NUMSUB`), refreshed in the
    /// background at most every [`LISTENERS_RECHECK`]: a subscriber on another replica may
    /// miss the events of its first moments, as any subscriber that is not listening yet
    /// does. A subscription made through this store counts at once.
    fn may_have_listeners(&self, channel: &str) -> bool {
        let name = self.keys.channel(channel);
        let mut known = self.listeners.lock().expect("listeners lock");
        let entry = known.entry(name.clone()).or_insert(ListenerCount { checked: None, any: true, refreshing: false });
        let stale = entry.checked.is_none_or(|at| at.elapsed() > LISTENERS_RECHECK);
        let conn = self.conn.get().cloned();
        if let (true, false, Some(mut conn), Ok(runtime)) =
            (stale, entry.refreshing, conn, tokio::runtime::Handle::try_current())
        {
            entry.refreshing = true;
            let listeners = Arc::clone(&self.listeners);
            runtime.spawn(async move {
                let counted: Result<(String, u64), _> =
                    redis::cmd("PUBSUB").arg("NUMSUB").arg(&name).query_async(&mut conn).await;
                let mut known = listeners.lock().expect("listeners lock");
                if let Some(entry) = known.get_mut(&name) {
                    entry.refreshing = false;
                    entry.checked = Some(std::time::Instant::now());
                    // Unknown (Redis away): assume someone listens.
                    entry.any = counted.map(|(_, n)| n > 0).unwrap_or(true);
                }
            });
        }
        entry.any
    }

    async fn publish(&self, channel: &str, message: &str) -> StoreResult<()> {
        let mut conn = self.conn().await?;
        conn.publish::<_, _, ()>(self.keys.channel(channel), message).await.map_err(map_err)
    }

    async fn subscribe(&self, channel: &str) -> StoreResult<tokio::sync::mpsc::Receiver<String>> {
        // Pub/sub needs a connection of its own; it is re-made if Redis goes away.
        let name = self.keys.channel(channel);
        let client = self.client.clone();
        let mut pubsub = client.get_async_pubsub().await.map_err(map_err)?;
        pubsub.subscribe(&name).await.map_err(map_err)?;
        self.listeners.lock().expect("listeners lock").insert(
            name.clone(),
            ListenerCount { checked: Some(std::time::Instant::now()), any: true, refreshing: false },
        );
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        tokio::spawn(async move {
            use futures_util::StreamExt;
            loop {
                {
                    let mut messages = pubsub.on_message();
                    while let Some(msg) = messages.next().await {
                        let Ok(text) = msg.get_payload::<String>() else { continue };
                        if tx.send(text).await.is_err() {
                            return;
                        }
                    }
                }
                if tx.is_closed() {
                    return;
                }
                tracing::warn!(channel = %name, "notification connection lost; reconnecting");
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if tx.is_closed() {
                        return;
                    }
                    if let Ok(mut fresh) = client.get_async_pubsub().await {
                        if fresh.subscribe(&name).await.is_ok() {
                            pubsub = fresh;
                            break;
                        }
                    }
                }
            }
        });
        Ok(rx)
    }
}
