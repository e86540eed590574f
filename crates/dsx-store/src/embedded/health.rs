//! The embedded store's side of one capability (see the trait for the contract).

use super::*;

#[async_trait]
impl Health for EmbeddedStore {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    async fn ping(&self) -> StoreResult<()> {
        self.run(|inner| {
            if let Some(fault) = inner.fault() {
                return Err(unavailable(fault));
            }
            inner.db()?.begin_read().map(|_| ()).map_err(unavailable)
        })
        .await
    }

    async fn disk_usage(&self) -> StoreResult<Option<DiskUsage>> {
        self.run(|inner| inner.disk_usage().map(Some)).await
    }
}
