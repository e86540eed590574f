//! Redis backend. STUB: being implemented.
use std::time::Duration;

use async_trait::async_trait;
use dsx_model::Connector;
use uuid::Uuid;

use crate::*;

/// Which deployment environment the keys belong to (`DSXCONNECT_APP_ENV`, default `dev`).
#[derive(Clone, Debug)]
pub struct Namespace {
    pub env: String,
}

pub struct RedisStore {}

impl RedisStore {
    /// A store for `url`. Connects lazily: a server started while Redis is down comes up
    /// (not ready) and recovers when Redis returns. Errors only on an invalid URL.
    pub fn new(_url: &str, _ns: Namespace, _codec: SecretCodec) -> StoreResult<Self> {
        todo!()
    }
}

#[async_trait]
impl Store for RedisStore {
    fn backend(&self) -> &'static str { "redis" }
    async fn ping(&self) -> StoreResult<()> { todo!() }
    async fn put_presence(&self, _c: &Connector, _ttl: Duration) -> StoreResult<()> { todo!() }
    async fn get_presence(&self, _uuid: Uuid) -> StoreResult<Option<Connector>> { todo!() }
    async fn list_presence(&self) -> StoreResult<Vec<Connector>> { todo!() }
    async fn delete_presence(&self, _uuid: Uuid) -> StoreResult<bool> { todo!() }
    async fn install_credential(&self, _uuid: Uuid, _new: &Credential, _grace: Duration) -> StoreResult<()> { todo!() }
    async fn current_credential(&self, _uuid: Uuid) -> StoreResult<Option<Credential>> { todo!() }
    async fn resolve_key(&self, _key_id: &str) -> StoreResult<Option<ResolvedKey>> { todo!() }
    async fn revoke_credentials(&self, _uuid: Uuid) -> StoreResult<bool> { todo!() }
    async fn put_registration(&self, _uuid: Uuid, _r: &RegistrationRecord) -> StoreResult<()> { todo!() }
    async fn get_registration(&self, _uuid: Uuid) -> StoreResult<Option<RegistrationRecord>> { todo!() }
    async fn delete_registration(&self, _uuid: Uuid) -> StoreResult<()> { todo!() }
    async fn remember_nonce(&self, _k: &str, _n: &str, _ttl: Duration) -> StoreResult<bool> { todo!() }
    async fn put_state(&self, _u: Uuid, _ns: &str, _k: &str, _v: &str) -> StoreResult<()> { todo!() }
    async fn get_state(&self, _u: Uuid, _ns: &str, _k: &str) -> StoreResult<Option<String>> { todo!() }
    async fn hit_rate_limit(&self, _b: &str, _w: Duration) -> StoreResult<RateWindow> { todo!() }
}
