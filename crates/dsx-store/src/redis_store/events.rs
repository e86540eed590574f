//! The Redis store's side of one capability (see the trait for the contract).

use super::*;

#[async_trait]
impl Events for RedisStore {
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
