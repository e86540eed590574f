//! The Redis store's side of one capability (see the trait for the contract).

use super::*;

#[async_trait]
impl Health for RedisStore {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn ping(&self) -> StoreResult<()> {
        let mut conn = self.conn().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await.map(|_| ()).map_err(map_err)
    }
}
