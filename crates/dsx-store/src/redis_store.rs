//! Redis backend: shared by every API and worker replica. Key names follow the Python 1.x
//! layout where Python components read them (AUTH.md §7, API.md "Redis layout").

use std::time::Duration;

use async_trait::async_trait;
use dsx_model::Connector;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, ErrorKind, RedisError};
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::{
    now_secs, Credential, RateWindow, RegistrationRecord, ResolvedKey, SecretCodec, Store, StoreError, StoreResult,
};

/// Connect and response timeouts: a store that is away answers `Unavailable` quickly.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Which deployment environment the keys belong to (`DSXCONNECT_APP_ENV`, default `dev`).
#[derive(Clone, Debug)]
pub struct Namespace {
    pub env: String,
}

impl Namespace {
    fn prefix(&self) -> String {
        format!("{}:dsx-connect", self.env)
    }
}

pub struct RedisStore {
    client: redis::Client,
    /// Created on first use and kept; `ConnectionManager` reconnects by itself afterwards.
    conn: Mutex<Option<ConnectionManager>>,
    ns: String,
    codec: SecretCodec,
}

fn map_err(err: RedisError) -> StoreError {
    match err.kind() {
        ErrorKind::TypeError => StoreError::Corrupt(err.to_string()),
        _ => StoreError::Unavailable(err.to_string()),
    }
}

fn corrupt(err: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(err.to_string())
}

fn ttl_ms(ttl: Duration) -> u64 {
    (ttl.as_millis() as u64).max(1)
}

/// The index Python components use to find a key's connector.
fn kid_key(key_id: &str) -> String {
    format!("dsxconnect:hmac:kid:{key_id}")
}

impl RedisStore {
    /// A store for `url`. Connects lazily: a server started while Redis is down comes up
    /// (not ready) and recovers when Redis returns. Errors only on an invalid URL.
    pub fn new(url: &str, ns: Namespace, codec: SecretCodec) -> StoreResult<Self> {
        let client =
            redis::Client::open(url).map_err(|e| StoreError::Unavailable(format!("invalid Redis URL: {e}")))?;
        Ok(Self { client, conn: Mutex::new(None), ns: ns.prefix(), codec })
    }

    async fn conn(&self) -> StoreResult<ConnectionManager> {
        let mut slot = self.conn.lock().await;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(RESPONSE_TIMEOUT)
            .set_number_of_retries(1);
        let conn =
            tokio::time::timeout(CONNECT_TIMEOUT * 2, ConnectionManager::new_with_config(self.client.clone(), config))
                .await
                .map_err(|_| StoreError::Unavailable("timed out connecting to Redis".into()))?
                .map_err(map_err)?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    fn presence_key(&self, uuid: Uuid) -> String {
        format!("{}:connectors:presence:{uuid}", self.ns)
    }
    fn config_key(&self, uuid: Uuid) -> String {
        format!("{}:connectors:config:{uuid}", self.ns)
    }
    fn grace_key(&self, key_id: &str) -> String {
        format!("{}:connectors:grace:{key_id}", self.ns)
    }
    fn grace_set_key(&self, uuid: Uuid) -> String {
        format!("{}:connectors:grace_kids:{uuid}", self.ns)
    }
    fn registration_key(&self, uuid: Uuid) -> String {
        format!("{}:connectors:registration:{uuid}", self.ns)
    }

    async fn current_key_id(&self, conn: &mut ConnectionManager, uuid: Uuid) -> StoreResult<Option<String>> {
        conn.hget(self.config_key(uuid), "hmac_key_id").await.map_err(map_err)
    }
}

#[async_trait]
impl Store for RedisStore {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn ping(&self) -> StoreResult<()> {
        let mut conn = self.conn().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await.map(|_| ()).map_err(map_err)
    }

    async fn put_presence(&self, connector: &Connector, ttl: Duration) -> StoreResult<()> {
        let json = serde_json::to_string(connector).map_err(corrupt)?;
        let mut conn = self.conn().await?;
        conn.pset_ex::<_, _, ()>(self.presence_key(connector.uuid), json, ttl_ms(ttl)).await.map_err(map_err)
    }

    async fn get_presence(&self, uuid: Uuid) -> StoreResult<Option<Connector>> {
        let mut conn = self.conn().await?;
        let json: Option<String> = conn.get(self.presence_key(uuid)).await.map_err(map_err)?;
        json.map(|j| serde_json::from_str(&j).map_err(corrupt)).transpose()
    }

    async fn list_presence(&self) -> StoreResult<Vec<Connector>> {
        let mut conn = self.conn().await?;
        let pattern = format!("{}:connectors:presence:*", self.ns);
        let keys: Vec<String> = {
            let mut iter = conn.scan_match::<_, String>(&pattern).await.map_err(map_err)?;
            let mut keys = Vec::new();
            while let Some(key) = iter.next_item().await {
                keys.push(key);
            }
            keys
        };
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let values: Vec<Option<String>> =
            redis::cmd("MGET").arg(&keys).query_async(&mut conn).await.map_err(map_err)?;
        // Entries that expired between SCAN and MGET come back as nil.
        values.into_iter().flatten().map(|j| serde_json::from_str(&j).map_err(corrupt)).collect()
    }

    async fn delete_presence(&self, uuid: Uuid) -> StoreResult<bool> {
        let mut conn = self.conn().await?;
        let removed: u64 = conn.del(self.presence_key(uuid)).await.map_err(map_err)?;
        Ok(removed > 0)
    }

    async fn install_credential(&self, uuid: Uuid, new: &Credential, grace: Duration) -> StoreResult<()> {
        let mut conn = self.conn().await?;
        let config_key = self.config_key(uuid);
        let (old_kid, old_secret): (Option<String>, Option<String>) =
            conn.hget(&config_key, &["hmac_key_id", "hmac_secret"]).await.map_err(map_err)?;
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.hset_multiple(
            &config_key,
            &[
                ("hmac_key_id", new.key_id.clone()),
                ("hmac_secret", self.codec.seal(&new.secret)),
                ("issued_at", new.issued_at.to_string()),
            ],
        )
        .ignore();
        pipe.set(kid_key(&new.key_id), uuid.to_string()).ignore();
        if let Some(old_kid) = old_kid.filter(|kid| *kid != new.key_id) {
            match old_secret.filter(|_| !grace.is_zero()) {
                None => {
                    pipe.del(kid_key(&old_kid)).ignore();
                }
                Some(sealed) => {
                    // The old secret moves to its own record (sealed as it was stored).
                    let ms = ttl_ms(grace);
                    pipe.pset_ex(self.grace_key(&old_kid), sealed, ms).ignore();
                    pipe.pexpire(kid_key(&old_kid), ms as i64).ignore();
                    pipe.sadd(self.grace_set_key(uuid), &old_kid).ignore();
                }
            }
        }
        pipe.query_async::<()>(&mut conn).await.map_err(map_err)
    }

    async fn current_credential(&self, uuid: Uuid) -> StoreResult<Option<Credential>> {
        let mut conn = self.conn().await?;
        let (kid, secret, issued): (Option<String>, Option<String>, Option<u64>) =
            conn.hget(self.config_key(uuid), &["hmac_key_id", "hmac_secret", "issued_at"]).await.map_err(map_err)?;
        match (kid, secret) {
            (Some(key_id), Some(sealed)) => {
                Ok(Some(Credential { key_id, secret: self.codec.open(&sealed)?, issued_at: issued.unwrap_or(0) }))
            }
            _ => Ok(None),
        }
    }

    async fn resolve_key(&self, key_id: &str) -> StoreResult<Option<ResolvedKey>> {
        let mut conn = self.conn().await?;
        let owner: Option<String> = conn.get(kid_key(key_id)).await.map_err(map_err)?;
        let Some(owner) = owner else { return Ok(None) };
        let uuid: Uuid =
            owner.parse().map_err(|_| StoreError::Corrupt(format!("key index of {key_id} holds no uuid")))?;
        let (current, secret): (Option<String>, Option<String>) =
            conn.hget(self.config_key(uuid), &["hmac_key_id", "hmac_secret"]).await.map_err(map_err)?;
        let sealed = match (current, secret) {
            (Some(current), Some(secret)) if current == key_id => Some(secret),
            _ => conn.get(self.grace_key(key_id)).await.map_err(map_err)?,
        };
        match sealed {
            Some(sealed) => Ok(Some(ResolvedKey { connector_uuid: uuid, secret: self.codec.open(&sealed)? })),
            None => Ok(None),
        }
    }

    async fn revoke_credentials(&self, uuid: Uuid) -> StoreResult<bool> {
        let mut conn = self.conn().await?;
        let current = self.current_key_id(&mut conn, uuid).await?;
        let grace_kids: Vec<String> = conn.smembers(self.grace_set_key(uuid)).await.map_err(map_err)?;
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.del(self.config_key(uuid));
        pipe.del(self.grace_set_key(uuid)).ignore();
        for kid in current.iter().chain(grace_kids.iter()) {
            pipe.del(kid_key(kid));
        }
        for kid in &grace_kids {
            pipe.del(self.grace_key(kid)).ignore();
        }
        let removed: Vec<u64> = pipe.query_async(&mut conn).await.map_err(map_err)?;
        Ok(removed.iter().any(|n| *n > 0))
    }

    async fn put_registration(&self, uuid: Uuid, record: &RegistrationRecord) -> StoreResult<()> {
        let json = serde_json::to_string(record).map_err(corrupt)?;
        let mut conn = self.conn().await?;
        conn.set::<_, _, ()>(self.registration_key(uuid), json).await.map_err(map_err)
    }

    async fn get_registration(&self, uuid: Uuid) -> StoreResult<Option<RegistrationRecord>> {
        let mut conn = self.conn().await?;
        let json: Option<String> = conn.get(self.registration_key(uuid)).await.map_err(map_err)?;
        json.map(|j| serde_json::from_str(&j).map_err(corrupt)).transpose()
    }

    async fn delete_registration(&self, uuid: Uuid) -> StoreResult<()> {
        let mut conn = self.conn().await?;
        conn.del::<_, ()>(self.registration_key(uuid)).await.map_err(map_err)
    }

    async fn remember_nonce(&self, key_id: &str, nonce: &str, ttl: Duration) -> StoreResult<bool> {
        let mut conn = self.conn().await?;
        let set: Option<String> = redis::cmd("SET")
            .arg(format!("{}:hmac:nonce:{key_id}:{nonce}", self.ns))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms(ttl))
            .query_async(&mut conn)
            .await
            .map_err(map_err)?;
        Ok(set.is_some())
    }

    async fn put_state(&self, uuid: Uuid, ns: &str, key: &str, value: &str) -> StoreResult<()> {
        let mut conn = self.conn().await?;
        conn.set::<_, _, ()>(format!("dsxconnect:connector_state:{uuid}:{ns}:{key}"), value).await.map_err(map_err)
    }

    async fn get_state(&self, uuid: Uuid, ns: &str, key: &str) -> StoreResult<Option<String>> {
        let mut conn = self.conn().await?;
        conn.get(format!("dsxconnect:connector_state:{uuid}:{ns}:{key}")).await.map_err(map_err)
    }

    async fn hit_rate_limit(&self, bucket: &str, window: Duration) -> StoreResult<RateWindow> {
        let window_secs = window.as_secs().max(1);
        let now = now_secs();
        let index = now / window_secs;
        let key = format!("{}:ratelimit:{bucket}:{index}", self.ns);
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
