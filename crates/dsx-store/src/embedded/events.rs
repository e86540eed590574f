//! The embedded store's side of one capability (see the trait for the contract).

use super::*;

#[async_trait]
impl Events for EmbeddedStore {
    fn may_have_listeners(&self, channel: &str) -> bool {
        self.inner.channel(channel).receiver_count() > 0
    }

    async fn publish(&self, channel: &str, message: &str) -> StoreResult<()> {
        // No subscriber is not an error.
        let _ = self.inner.channel(channel).send(message.to_owned());
        Ok(())
    }

    async fn subscribe(&self, channel: &str) -> StoreResult<tokio::sync::mpsc::Receiver<String>> {
        let mut source = self.inner.channel(channel).subscribe();
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        tokio::spawn(async move {
            loop {
                match source.recv().await {
                    Ok(msg) => {
                        if tx.send(msg).await.is_err() {
                            return;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "slow subscriber missed notifications");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(rx)
    }
}
