//! dsx-connect's route table: one declaration per route (`dsx_service::routes`), from which
//! the router, the access layer of each route and the OpenAPI document (`openapi.rs`) are
//! all derived, so none of them can list a route the others miss.

use axum::http::Method;
use axum::middleware::from_fn_with_state;
use axum::Router;
use dsx_model::{
    AuthCheckResponse, Estimate, RegistrationResponse, ScanRequest, ScanRequestBatch, StatusResponse, TokenResponse,
    API_PREFIX,
};

use crate::auth::{guard, Access};
use crate::routes::{connectors, events, proxy, registration, results, scan, system};
use crate::state::SharedState;

/// Who may call a route when auth is enabled (docs/wire-protocol.md, "Open routes").
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Rule {
    /// DSX-HMAC signed by an enrolled connector.
    Connector,
    /// As `Connector`, for the scan intake: the handler records the request's nonce with
    /// its enqueue (`Access::ConnectorIntake`).
    ConnectorIntake,
    /// An enrolled connector (its own uuid) or an operator.
    ConnectorOrOperator,
    /// `Authorization: Bearer <operator token>` (open when auth is disabled).
    Operator,
    /// The enrollment token (`X-Enrollment-Token`), or a signed refresh; the handler checks it.
    Enrollment,
    /// No credentials.
    Open,
}

impl Rule {
    /// The rule's name in the document (`x-dsx-access`).
    pub fn name(self) -> &'static str {
        match self {
            Rule::Connector | Rule::ConnectorIntake => "connector",
            Rule::ConnectorOrOperator => "connector-or-operator",
            Rule::Operator => "operator",
            Rule::Enrollment => "enrollment",
            Rule::Open => "open",
        }
    }

    /// The guard enforcing the rule in front of the handler, if any.
    fn access(self) -> Option<Access> {
        match self {
            Rule::Connector => Some(Access::Connector),
            Rule::ConnectorIntake => Some(Access::ConnectorIntake),
            Rule::ConnectorOrOperator => Some(Access::ConnectorOrOperator),
            Rule::Operator => Some(Access::Operator),
            Rule::Enrollment | Rule::Open => None,
        }
    }

    /// With a client CA configured, connector-facing routes also need a client certificate;
    /// probes, the UI and the operator API keep working without one.
    pub fn mutual_tls(self) -> bool {
        matches!(self, Rule::Connector | Rule::ConnectorIntake | Rule::Enrollment)
    }
}

/// One route of dsx-connect; its path is below the API prefix, or absolute when it starts
/// with `/`.
pub type Route = dsx_service::routes::Route<SharedState, Rule>;

/// The absolute path of a table path, in axum's `{param}` syntax (which is also OpenAPI's).
pub fn full_path(path: &str) -> String {
    if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("{API_PREFIX}/{path}")
    }
}

/// Every route dsx-connect serves.
pub fn routes() -> Vec<Route> {
    use Rule::*;
    vec![
        Route::new(
            Method::POST,
            "connectors/register",
            Enrollment,
            "registerConnector",
            "Register a connector (enrollment token) or refresh it (signed); `?rotate=true` asks for a new key",
            registration::register,
        )
        .body::<dsx_model::Connector>()
        .returns::<RegistrationResponse>()
        .status(201),
        Route::new(
            Method::POST,
            "connectors/token",
            Enrollment,
            "exchangeEnrollmentToken",
            "Exchange an enrollment token for the compatibility bearer token",
            registration::token,
        )
        .returns::<TokenResponse>(),
        Route::new(
            Method::DELETE,
            "connectors/unregister/{connector_uuid}",
            ConnectorOrOperator,
            "unregisterConnector",
            "Unregister a connector and revoke its keys (by an operator: also keep the uuid out until readmitted)",
            connectors::unregister,
        )
        .status(204),
        Route::new(
            Method::GET,
            "connectors/list",
            Operator,
            "listConnectors",
            "Registered connectors with their auth state (never a secret); revoked ones too",
            connectors::list,
        )
        .returns::<Vec<dsx_model::Connector>>(),
        Route::new(
            Method::POST,
            "connectors/readmit/{connector_uuid}",
            Operator,
            "readmitConnector",
            "Lift an operator revocation: the uuid may enroll again",
            connectors::readmit,
        ),
        Route::new(
            Method::POST,
            "connectors/release/{connector_uuid}",
            Operator,
            "releaseItem",
            "Restore a quarantined item (`{\"location\": …}`) to where it was found, tagged released; audited",
            proxy::release,
        ),
        Route::new(
            Method::POST,
            "connectors/rotate/{connector_uuid}",
            Operator,
            "rotateConnectorKey",
            "Rotate a connector's key at its next heartbeat; `?revoke_now=true` revokes at once",
            connectors::rotate,
        )
        .status(202),
        Route::new(
            Method::POST,
            "connectors/full_scan/{connector_uuid}",
            Operator,
            "startFullScan",
            "Start a full scan on the connector; the job id is in `X-Job-Id`",
            proxy::full_scan,
        )
        .status(202),
        Route::new(
            Method::GET,
            "connectors/config/{connector_uuid}",
            Operator,
            "getConnectorConfig",
            "The connector's configuration (secrets masked)",
            proxy::get_config,
        ),
        Route::new(
            Method::PUT,
            "connectors/config/{connector_uuid}",
            Operator,
            "updateConnectorConfig",
            "Change the connector's configuration",
            proxy::put_config,
        ),
        Route::new(
            Method::GET,
            "connectors/repo_check/{connector_uuid}",
            Operator,
            "checkConnectorRepository",
            "Check the connector can reach its repository; `?preview=N`",
            proxy::repo_check,
        ),
        Route::new(
            Method::GET,
            "connectors/estimate/{connector_uuid}",
            Operator,
            "estimateFullScan",
            "How many items a full scan would enqueue",
            proxy::estimate,
        )
        .returns::<Estimate>(),
        Route::new(
            Method::GET,
            "connectors/healthz/{connector_uuid}",
            Operator,
            "getConnectorHealth",
            "The connector's liveness",
            proxy::healthz,
        ),
        Route::new(
            Method::GET,
            "connectors/readyz/{connector_uuid}",
            Operator,
            "getConnectorReadiness",
            "The connector's readiness",
            proxy::readyz,
        ),
        Route::new(
            Method::GET,
            "connectors/auth_check/{connector_uuid}",
            Operator,
            "checkConnectorAuth",
            "A signed call to the connector: do both sides agree on its key?",
            proxy::auth_check,
        ),
        Route::new(
            Method::GET,
            "connectors/state/{connector_uuid}/{ns}/{key}",
            Connector,
            "getConnectorState",
            "Read a connector state value (`{\"value\": …}`)",
            connectors::get_state,
        ),
        Route::new(
            Method::PUT,
            "connectors/state/{connector_uuid}/{ns}/{key}",
            Connector,
            "putConnectorState",
            "Write a connector state value (raw text body)",
            connectors::put_state,
        )
        .status(204),
        Route::new(
            Method::POST,
            "scan/auth_check",
            Connector,
            "checkSignature",
            "Verify the caller's DSX-HMAC signature",
            system::auth_check,
        )
        .returns::<AuthCheckResponse>(),
        Route::new(
            Method::POST,
            "scan/request",
            ConnectorIntake,
            "requestScan",
            "Queue one item for scanning",
            scan::request,
        )
        .body::<ScanRequest>()
        .returns::<StatusResponse>()
        .status(202),
        Route::new(
            Method::POST,
            "scan/request_batch",
            ConnectorIntake,
            "requestScanBatch",
            "Queue many items for scanning",
            scan::request_batch,
        )
        .body::<ScanRequestBatch>()
        .status(202),
        Route::new(
            Method::POST,
            "scan/jobs/{job_id}/enqueue_done",
            Connector,
            "markJobEnqueued",
            "The connector has enqueued every item of a job (`{\"enqueued_total\": N}`)",
            scan::enqueue_done,
        ),
        Route::new(
            Method::GET,
            "scan/jobs/{job_id}/raw",
            Open,
            "getJobRaw",
            "A job's control flags and counters (open: connectors poll it)",
            scan::job_raw,
        ),
        Route::new(
            Method::GET,
            "scan/request/{task_id}",
            Operator,
            "getTaskStatus",
            "The state of one scan task",
            results::task_status,
        ),
        Route::new(
            Method::GET,
            "scan/results",
            Operator,
            "listResults",
            "The newest results; `?limit&job_id`",
            results::list,
        ),
        Route::new(
            Method::DELETE,
            "scan/results",
            Operator,
            "deleteResults",
            "Delete every stored result",
            results::delete_results,
        ),
        Route::new(
            Method::GET,
            "scan/results/job/{job_id}",
            Operator,
            "listJobResults",
            "The results of one job",
            results::for_job,
        ),
        Route::new(
            Method::GET,
            "scan/results/{task_id}",
            Operator,
            "getTaskResult",
            "The result of one task, as a list ([] when unknown)",
            results::one,
        ),
        Route::new(Method::GET, "scan/stats", Operator, "getScanStats", "Verdict counters", results::stats),
        Route::new(Method::GET, "scan/jobs", Operator, "listJobs", "Every job with its counters", results::jobs),
        Route::new(Method::DELETE, "scan/jobs", Operator, "deleteJobs", "Delete every job", results::delete_jobs),
        Route::new(Method::GET, "scan/jobs/{job_id}", Operator, "getJob", "One job with its counters", results::job),
        Route::new(Method::POST, "scan/jobs/{job_id}/pause", Operator, "pauseJob", "Pause a job", results::pause),
        Route::new(
            Method::POST,
            "scan/jobs/{job_id}/resume",
            Operator,
            "resumeJob",
            "Resume a paused job",
            results::resume,
        ),
        Route::new(Method::POST, "scan/jobs/{job_id}/cancel", Operator, "cancelJob", "Cancel a job", results::cancel),
        Route::new(
            Method::GET,
            "admin/dead-letter/stats",
            Operator,
            "getDeadLetterStats",
            "Dead-letter counts per queue",
            results::dlq_stats,
        ),
        Route::new(
            Method::GET,
            "admin/dead-letter/stats/{queue_type}",
            Operator,
            "getDeadLetterQueueStats",
            "Dead-letter count of one queue",
            results::dlq_stats_one,
        ),
        Route::new(
            Method::GET,
            "admin/dead-letter/items/{queue_type}",
            Operator,
            "listDeadLetters",
            "Dead letters with their reasons; `?start&end`",
            results::dlq_items,
        ),
        Route::new(
            Method::POST,
            "admin/dead-letter/requeue",
            Operator,
            "requeueDeadLetters",
            "Requeue dead letters; `?max_items`",
            results::dlq_requeue,
        ),
        Route::new(
            Method::POST,
            "admin/dead-letter/requeue/{queue_type}",
            Operator,
            "requeueDeadLetterQueue",
            "Requeue the dead letters of one queue",
            results::dlq_requeue_one,
        ),
        Route::new(
            Method::DELETE,
            "admin/dead-letter/clear",
            Operator,
            "clearDeadLetters",
            "Drop every dead letter",
            results::dlq_clear,
        ),
        Route::new(
            Method::DELETE,
            "admin/dead-letter/clear/{queue_type}",
            Operator,
            "clearDeadLetterQueue",
            "Drop the dead letters of one queue",
            results::dlq_clear_one,
        ),
        Route::new(
            Method::GET,
            "admin/dead-letter/health",
            Operator,
            "getDeadLetterHealth",
            "Dead-letter queue health",
            results::dlq_health,
        ),
        Route::new(
            Method::GET,
            "subscribe/scan-result",
            Operator,
            "subscribeScanResults",
            "Live results (text/event-stream)",
            events::scan_results,
        )
        .media("text/event-stream"),
        Route::new(
            Method::GET,
            "subscribe/connector-registered",
            Operator,
            "subscribeConnectorChanges",
            "Live registry changes (text/event-stream)",
            events::connectors,
        )
        .media("text/event-stream"),
        Route::new(
            Method::GET,
            "subscribe/job-summary/{job_id}",
            Operator,
            "subscribeJobSummary",
            "Live job progress (text/event-stream); `?interval`",
            events::job_summary,
        )
        .media("text/event-stream"),
        Route::new(
            Method::GET,
            "test/dsxa-connection",
            Operator,
            "testScannerConnection",
            "Can the workers reach the scanner?",
            system::test_scanner,
        ),
        Route::new(
            Method::GET,
            "test/connection",
            Open,
            "testConnection",
            "Can the caller reach dsx-connect?",
            system::test_connection,
        )
        .returns::<StatusResponse>(),
        Route::new(
            Method::GET,
            "connection/test",
            Open,
            "testConnectionAlias",
            "Alias of test/connection (the path Python connectors call)",
            system::test_connection,
        )
        .returns::<StatusResponse>(),
        Route::new(
            Method::GET,
            "config",
            Open,
            "getConfig",
            "Configuration: the public subset without an operator token, secrets always redacted",
            system::config,
        ),
        Route::new(Method::GET, "meta", Open, "getMeta", "Build and deployment metadata", system::meta),
        Route::new(Method::GET, "version", Open, "getVersion", "Version", system::version),
        Route::new(Method::GET, "healthz", Open, "getHealth", "Liveness", system::healthz),
        Route::new(Method::GET, "readyz", Open, "getReadiness", "Readiness (the store answers)", system::readyz),
        Route::new(
            Method::GET,
            "openapi.json",
            Operator,
            "getOpenApiDocument",
            "This document (open when auth is disabled)",
            crate::openapi::serve,
        ),
        Route::new(
            Method::GET,
            "/metrics",
            Operator,
            "getMetrics",
            "Prometheus metrics (open when auth is disabled)",
            crate::metrics::render,
        )
        .media("text/plain"),
        Route::new(Method::GET, "/", Open, "getWebUi", "The operator web UI", crate::ui::index).media("text/html"),
        Route::new(Method::GET, "/ui/app.js", Open, "getWebUiScript", "The web UI's script", crate::ui::app_js)
            .media("text/javascript"),
        Route::new(
            Method::GET,
            "/ui/style.css",
            Open,
            "getWebUiStyle",
            "The web UI's style sheet",
            crate::ui::style_css,
        )
        .media("text/css"),
    ]
}

/// The API routes, each behind the layers of its rule.
pub fn router(state: &SharedState) -> Router<SharedState> {
    let mutual_tls = state.server_tls.as_ref().is_some_and(|t| t.verifies_clients());
    dsx_service::routes::router(routes(), full_path, |rule, mut group| {
        if let Some(access) = rule.access() {
            group = group.route_layer(from_fn_with_state((state.clone(), access), guard));
        }
        if mutual_tls && rule.mutual_tls() {
            group = group.route_layer(axum::middleware::from_fn(dsx_service::tls::require_client_cert));
        }
        group
    })
}
