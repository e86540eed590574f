//! The connector framework. A repository kind (filesystem, S3, …) implements
//! [`Repository`]; [`run`] does the rest: configuration, a stable uuid, enrollment and signed
//! heartbeats, DSX-HMAC on every inbound and outbound call, the routes, full scans, monitoring,
//! and a signed unregister on shutdown.

#![forbid(unsafe_code)]

pub mod dsx_client;
pub mod full_scan;
pub mod inbound;
pub mod openapi;
pub mod repository;
pub mod routes;
pub mod settings;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use dsx_filter::Filter;
use dsx_model::{Connector, ConnectorStatus};
use uuid::Uuid;

pub use dsx_client::{backoff, DsxClient};
pub use repository::{ActionOutcome, ActionPlan, EventBatch, Item, RepoError, Repository, RuntimeConfig};
pub use settings::{ConnectorDefaults, ConnectorSettings};

/// Everything a request handler or background task of a connector needs.
pub struct ConnectorContext {
    pub settings: ConnectorSettings,
    pub dsx: DsxClient,
    pub repo: Arc<dyn Repository>,
    pub replay: inbound::ReplayCache,
    pub runtime: RwLock<RuntimeConfig>,
    registered: AtomicBool,
    /// Scan requests dsx-connect accepted since start (shown by `GET /`).
    enqueued: AtomicU64,
}

impl ConnectorContext {
    pub fn new(settings: ConnectorSettings, repo: Arc<dyn Repository>, uuid: Uuid) -> anyhow::Result<Arc<Self>> {
        let filter =
            Filter::parse(&settings.filter).with_context(|| format!("DSXCONNECTOR_FILTER {:?}", settings.filter))?;
        let model = Connector {
            name: settings.name.clone(),
            display_name: Some(settings.display_name.clone()).filter(|s| !s.is_empty()),
            display_icon: Some(settings.display_icon.clone()).filter(|s| !s.is_empty()),
            uuid,
            url: settings.base_url(),
            status: ConnectorStatus::Ready,
            item_action: settings.item_action,
            item_action_move_metainfo: settings.item_action_move_metainfo.clone(),
            asset: settings.asset.clone(),
            asset_display_name: Some(settings.asset_display_name.clone()).filter(|s| !s.is_empty()),
            filter: settings.filter.clone(),
            ..Connector::default()
        };
        let dsx = DsxClient::with_tls(
            &settings.dsx_connect_url,
            settings.enrollment_token.clone(),
            settings.clock_skew,
            model,
            &settings.dsx_tls,
        )
        .map_err(|reason| anyhow::anyhow!("DSXCONNECTOR_CA_BUNDLE/TLS_CLIENT_*: {reason}"))?;
        if !settings.dsx_tls.verify {
            tracing::warn!("DSXCONNECTOR_VERIFY_TLS=false: dsx-connect's certificate is not checked; the registration answer carries this connector's secret");
        }
        let runtime = RwLock::new(RuntimeConfig {
            filter: Arc::new(filter),
            item_action: settings.item_action,
            item_action_move_metainfo: settings.item_action_move_metainfo.clone(),
        });
        Ok(Arc::new(Self {
            settings,
            dsx,
            repo,
            replay: Default::default(),
            runtime,
            registered: AtomicBool::new(false),
            enqueued: AtomicU64::new(0),
        }))
    }

    /// Registered with dsx-connect at least once and, with DSX-HMAC on, holding the key
    /// dsx-connect signs its calls with (before that, a full scan would be refused with
    /// `401 unknown_key_id`).
    pub fn is_ready(&self) -> bool {
        self.registered.load(Ordering::Relaxed) && (!self.settings.auth_enabled || self.dsx.key_id().is_some())
    }

    pub fn count_enqueued(&self, n: u64) {
        self.enqueued.fetch_add(n, Ordering::Relaxed);
    }

    pub fn enqueued_since_start(&self) -> u64 {
        self.enqueued.load(Ordering::Relaxed)
    }

    /// Enroll (with backoff until it works), then heartbeat with signed refreshes forever.
    pub async fn keep_registered(self: Arc<Self>) {
        let mut attempt = 0;
        loop {
            match self.dsx.register(false).await {
                Ok(status) => {
                    if !self.registered.swap(true, Ordering::Relaxed) {
                        tracing::info!(%status, url = %self.settings.base_url(), "registered with dsx-connect");
                        self.confirm_auth().await;
                    }
                    attempt = 0;
                    tokio::time::sleep(self.settings.heartbeat_interval).await;
                }
                Err(err) => {
                    let delay = backoff(attempt);
                    attempt += 1;
                    tracing::warn!(error = %err, retry_in = ?delay, "registration failed");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// One signed `scan/auth_check` after enrolling, so a key mismatch shows in the log at once.
    async fn confirm_auth(&self) {
        match self.dsx.call(reqwest::Method::POST, "scan/auth_check", Vec::new()).await {
            Ok(_) => tracing::info!("dsx-connect verified this connector's DSX-HMAC signature"),
            Err(err) => tracing::warn!(error = %err, "scan/auth_check failed"),
        }
    }

    /// Monitor mode: enqueue each new or changed item as its own job.
    pub fn spawn_monitor(self: &Arc<Self>) {
        let filter = self.runtime.read().expect("runtime lock").filter.clone();
        if let Some(batches) = self.repo.watch_batches(Arc::clone(&filter)) {
            tokio::spawn(Arc::clone(self).enqueue_batches(batches));
            return;
        }
        let Some(mut changes) =
            self.repo.watch(filter, self.settings.monitor_force_polling, self.settings.monitor_poll_interval)
        else {
            tracing::warn!("DSXCONNECTOR_MONITOR is on but this connector kind cannot watch");
            return;
        };
        let ctx = Arc::clone(self);
        tokio::spawn(async move {
            while let Some(item) = changes.recv().await {
                tokio::spawn(Arc::clone(&ctx).enqueue_single(item));
            }
        });
    }
}

impl ConnectorContext {
    /// Each event batch's items as single-item jobs; the batch is acknowledged only when all
    /// of them were accepted.
    async fn enqueue_batches(self: Arc<Self>, mut batches: tokio::sync::mpsc::Receiver<EventBatch>) {
        while let Some(batch) = batches.recv().await {
            let mut all = true;
            for item in &batch.items {
                match self.enqueue_item(item).await {
                    Ok(job_id) => tracing::info!(location = %item.location, job_id, "event enqueued"),
                    Err(err) => {
                        all = false;
                        tracing::error!(location = %item.location, error = %err, "could not enqueue event");
                    }
                }
            }
            let _ = batch.done.send(all);
        }
    }
}

/// The connector's uuid, kept in `<data_dir>/connector_uuid.txt` so it survives restarts.
/// Nothing else (and never a credential) is written there.
pub fn load_or_create_uuid(data_dir: &Path) -> anyhow::Result<Uuid> {
    let path = data_dir.join("connector_uuid.txt");
    if let Ok(text) = std::fs::read_to_string(&path) {
        return text.trim().parse().with_context(|| format!("{} does not hold a uuid", path.display()));
    }
    std::fs::create_dir_all(data_dir).with_context(|| format!("create {}", data_dir.display()))?;
    let uuid = Uuid::new_v4();
    std::fs::write(&path, format!("{uuid}\n")).with_context(|| format!("write {}", path.display()))?;
    Ok(uuid)
}

/// Run a connector until SIGTERM/Ctrl-C: serve its routes on `listen`, keep it registered,
/// and unregister (signed) on the way out.
pub async fn run(settings: ConnectorSettings, repo: Arc<dyn Repository>, listen: SocketAddr) -> anyhow::Result<()> {
    run_until(settings, repo, listen, dsx_service::shutdown_signal()).await
}

/// [`run`], stopping when `shutdown` resolves instead of on a signal (an embedding program,
/// e.g. the quickstart, decides when). The signed unregister still happens on the way out.
pub async fn run_until(
    settings: ConnectorSettings,
    repo: Arc<dyn Repository>,
    listen: SocketAddr,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // Refuse first: the boot line would otherwise claim "verification disabled" just before
    // an auth-on refusal.
    if settings.auth_enabled && settings.enrollment_token.is_none() {
        anyhow::bail!(
            "DSXCONNECTOR_AUTH__ENABLED=true needs an enrollment token (DSXCONNECT_ENROLLMENT_TOKEN or DSXCONNECT_ENROLLMENT_TOKEN_FILE) to obtain the key it verifies with"
        );
    }
    tracing::info!("{}", settings.auth_boot_line());
    let limits =
        dsx_service::ServerLimits::from_env(dsx_service::http::DSXCONNECTOR_LIMITS).map_err(anyhow::Error::msg)?;
    let tls = match &settings.tls {
        Some(files) => Some(
            dsx_service::ServerTls::load(files)
                .map_err(|reason| anyhow::anyhow!("DSXCONNECTOR_TLS_CERTFILE/KEYFILE/CLIENT_CA: {reason}"))?,
        ),
        None => None,
    };
    let uuid = load_or_create_uuid(&settings.data_dir)?;
    let ctx = ConnectorContext::new(settings, repo, uuid)?;
    if let Err(reason) = ctx.repo.check().await {
        tracing::warn!(%reason, "repository not reachable yet");
    }
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("listen on {listen}"))?;
    tracing::info!(%uuid, listen = %listener.local_addr()?, url = %ctx.settings.base_url(), asset = %ctx.settings.asset, tls = tls.is_some(), "connector serving");
    let registration = tokio::spawn(Arc::clone(&ctx).keep_registered());
    if ctx.settings.monitor {
        ctx.spawn_monitor();
    }
    let mutual_tls = tls.as_ref().is_some_and(|t| t.verifies_clients());
    dsx_service::serve(listener, routes::router_with(Arc::clone(&ctx), mutual_tls), limits, tls, shutdown).await?;
    registration.abort();
    if ctx.registered.load(Ordering::Relaxed) {
        match tokio::time::timeout(Duration::from_secs(5), ctx.dsx.unregister()).await {
            Ok(Ok(())) => tracing::info!("unregistered from dsx-connect"),
            Ok(Err(err)) => tracing::warn!(error = %err, "unregister failed"),
            Err(_) => tracing::warn!("unregister timed out"),
        }
    }
    Ok(())
}
