//! The OpenAPI 3.1 document of dsx-connect's HTTP API (`GET openapi.json`).
//!
//! Operations come from one table below; body schemas are derived from the wire models in
//! `dsx-model` (schemars follows their serde attributes, so the schemas cannot drift from
//! what the server parses). A test checks the table against the router in both directions.

use dsx_model::{
    AuthCheckResponse, Connector, ErrorBody, Estimate, RegistrationResponse, ScanRequest, ScanRequestBatch,
    StatusResponse, TokenResponse, API_PREFIX,
};
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{json, Map, Value};

/// Who may call an operation when auth is enabled (docs/wire-protocol.md, "Open routes").
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Caller {
    /// DSX-HMAC signed by an enrolled connector.
    Connector,
    /// An enrolled connector (its own uuid) or an operator.
    ConnectorOrOperator,
    /// `Authorization: Bearer <operator token>`.
    Operator,
    /// The enrollment token (`X-Enrollment-Token`), or a signed refresh.
    Enrollment,
    /// No credentials.
    Open,
}

/// One operation: method, path below the API prefix (or absolute when it starts with `/`),
/// caller, summary, request body model, success status.
pub struct Operation {
    pub method: &'static str,
    pub path: &'static str,
    pub caller: Caller,
    pub summary: &'static str,
    pub body: Option<&'static str>,
    pub status: u16,
}

const fn op(method: &'static str, path: &'static str, caller: Caller, summary: &'static str) -> Operation {
    Operation { method, path, caller, summary, body: None, status: 200 }
}

const fn with_body(mut o: Operation, model: &'static str, status: u16) -> Operation {
    o.body = Some(model);
    o.status = status;
    o
}

const fn status(mut o: Operation, status: u16) -> Operation {
    o.status = status;
    o
}

use Caller::*;

/// Every route dsx-connect serves.
pub const OPERATIONS: &[Operation] = &[
    with_body(
        op(
            "POST",
            "connectors/register",
            Enrollment,
            "Register a connector (enrollment token) or refresh it (signed); `?rotate=true` asks for a new key",
        ),
        "Connector",
        201,
    ),
    op("POST", "connectors/token", Enrollment, "Exchange an enrollment token for the compatibility bearer token"),
    status(
        op(
            "DELETE",
            "connectors/unregister/{connector_uuid}",
            ConnectorOrOperator,
            "Unregister a connector and revoke its keys (by an operator: also keep the uuid out until readmitted)",
        ),
        204,
    ),
    op(
        "GET",
        "connectors/list",
        Operator,
        "Registered connectors with their auth state (never a secret); revoked ones too",
    ),
    op(
        "POST",
        "connectors/readmit/{connector_uuid}",
        Operator,
        "Lift an operator revocation: the uuid may enroll again",
    ),
    op(
        "POST",
        "connectors/release/{connector_uuid}",
        Operator,
        "Restore a quarantined item (`{\"location\": …}`) to where it was found, tagged released; audited",
    ),
    status(
        op(
            "POST",
            "connectors/rotate/{connector_uuid}",
            Operator,
            "Rotate a connector's key at its next heartbeat; `?revoke_now=true` revokes at once",
        ),
        202,
    ),
    status(
        op(
            "POST",
            "connectors/full_scan/{connector_uuid}",
            Operator,
            "Start a full scan on the connector; the job id is in `X-Job-Id`",
        ),
        202,
    ),
    op("GET", "connectors/config/{connector_uuid}", Operator, "The connector's configuration (secrets masked)"),
    op("PUT", "connectors/config/{connector_uuid}", Operator, "Change the connector's configuration"),
    op(
        "GET",
        "connectors/repo_check/{connector_uuid}",
        Operator,
        "Check the connector can reach its repository; `?preview=N`",
    ),
    op("GET", "connectors/estimate/{connector_uuid}", Operator, "How many items a full scan would enqueue"),
    op("GET", "connectors/healthz/{connector_uuid}", Operator, "The connector's liveness"),
    op("GET", "connectors/readyz/{connector_uuid}", Operator, "The connector's readiness"),
    op(
        "GET",
        "connectors/auth_check/{connector_uuid}",
        Operator,
        "A signed call to the connector: do both sides agree on its key?",
    ),
    op(
        "GET",
        "connectors/state/{connector_uuid}/{ns}/{key}",
        Connector,
        "Read a connector state value (`{\"value\": …}`)",
    ),
    status(
        op(
            "PUT",
            "connectors/state/{connector_uuid}/{ns}/{key}",
            Connector,
            "Write a connector state value (raw text body)",
        ),
        204,
    ),
    op("POST", "scan/auth_check", Connector, "Verify the caller's DSX-HMAC signature"),
    with_body(op("POST", "scan/request", Connector, "Queue one item for scanning"), "ScanRequest", 202),
    with_body(op("POST", "scan/request_batch", Connector, "Queue many items for scanning"), "ScanRequestBatch", 202),
    op(
        "POST",
        "scan/jobs/{job_id}/enqueue_done",
        Connector,
        "The connector has enqueued every item of a job (`{\"enqueued_total\": N}`)",
    ),
    op("GET", "scan/jobs/{job_id}/raw", Open, "A job's control flags and counters (open: connectors poll it)"),
    op("GET", "scan/request/{task_id}", Operator, "The state of one scan task"),
    op("GET", "scan/results", Operator, "The newest results; `?limit&job_id`"),
    op("DELETE", "scan/results", Operator, "Delete every stored result"),
    op("GET", "scan/results/job/{job_id}", Operator, "The results of one job"),
    op("GET", "scan/results/{task_id}", Operator, "The result of one task, as a list ([] when unknown)"),
    op("GET", "scan/stats", Operator, "Verdict counters"),
    op("GET", "scan/jobs", Operator, "Every job with its counters"),
    op("DELETE", "scan/jobs", Operator, "Delete every job"),
    op("GET", "scan/jobs/{job_id}", Operator, "One job with its counters"),
    op("POST", "scan/jobs/{job_id}/pause", Operator, "Pause a job"),
    op("POST", "scan/jobs/{job_id}/resume", Operator, "Resume a paused job"),
    op("POST", "scan/jobs/{job_id}/cancel", Operator, "Cancel a job"),
    op("GET", "admin/dead-letter/stats", Operator, "Dead-letter counts per queue"),
    op("GET", "admin/dead-letter/stats/{queue_type}", Operator, "Dead-letter count of one queue"),
    op("GET", "admin/dead-letter/items/{queue_type}", Operator, "Dead letters with their reasons; `?start&end`"),
    op("POST", "admin/dead-letter/requeue", Operator, "Requeue dead letters; `?max_items`"),
    op("POST", "admin/dead-letter/requeue/{queue_type}", Operator, "Requeue the dead letters of one queue"),
    op("DELETE", "admin/dead-letter/clear", Operator, "Drop every dead letter"),
    op("DELETE", "admin/dead-letter/clear/{queue_type}", Operator, "Drop the dead letters of one queue"),
    op("GET", "admin/dead-letter/health", Operator, "Dead-letter queue health"),
    op("GET", "subscribe/scan-result", Operator, "Live results (text/event-stream)"),
    op("GET", "subscribe/connector-registered", Operator, "Live registry changes (text/event-stream)"),
    op("GET", "subscribe/job-summary/{job_id}", Operator, "Live job progress (text/event-stream); `?interval`"),
    op("GET", "test/dsxa-connection", Operator, "Can the workers reach the scanner?"),
    op("GET", "test/connection", Open, "Can the caller reach dsx-connect?"),
    op("GET", "connection/test", Open, "Alias of test/connection (the path Python connectors call)"),
    op("GET", "config", Open, "Configuration: the public subset without an operator token, secrets always redacted"),
    op("GET", "meta", Open, "Build and deployment metadata"),
    op("GET", "version", Open, "Version"),
    op("GET", "healthz", Open, "Liveness"),
    op("GET", "readyz", Open, "Readiness (the store answers)"),
    op("GET", "openapi.json", Operator, "This document (open when auth is disabled)"),
    op("GET", "/metrics", Operator, "Prometheus metrics (open when auth is disabled)"),
];

/// The absolute path of an operation.
pub fn full_path(path: &str) -> String {
    if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("{API_PREFIX}/{path}")
    }
}

fn schemas() -> Map<String, Value> {
    let settings = SchemaSettings::draft2020_12().with(|s| s.definitions_path = "/components/schemas".into());
    let mut generator = SchemaGenerator::new(settings);
    fn add<T: JsonSchema>(g: &mut SchemaGenerator) {
        g.subschema_for::<T>();
    }
    add::<Connector>(&mut generator);
    add::<ScanRequest>(&mut generator);
    add::<ScanRequestBatch>(&mut generator);
    add::<StatusResponse>(&mut generator);
    add::<RegistrationResponse>(&mut generator);
    add::<TokenResponse>(&mut generator);
    add::<AuthCheckResponse>(&mut generator);
    add::<ErrorBody>(&mut generator);
    add::<Estimate>(&mut generator);
    generator.take_definitions(true)
}

fn security(caller: Caller) -> Value {
    match caller {
        Connector => json!([{ "dsxHmac": [] }]),
        ConnectorOrOperator => json!([{ "dsxHmac": [] }, { "operatorToken": [] }]),
        Operator => json!([{ "operatorToken": [] }]),
        Enrollment => json!([{ "enrollmentToken": [] }, { "dsxHmac": [] }]),
        Open => json!([]),
    }
}

fn operation(o: &Operation) -> Value {
    let mut params = Vec::new();
    for segment in o.path.split('/') {
        if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            params.push(json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }));
        }
    }
    let ok = match o.status {
        204 => json!({ "description": "Done (no body)" }),
        s => {
            let schema = match (o.method, o.path) {
                (_, "connectors/register") => json!({ "$ref": "#/components/schemas/RegistrationResponse" }),
                (_, "connectors/token") => json!({ "$ref": "#/components/schemas/TokenResponse" }),
                (_, "scan/auth_check") => json!({ "$ref": "#/components/schemas/AuthCheckResponse" }),
                (_, "scan/request") => json!({ "$ref": "#/components/schemas/StatusResponse" }),
                (_, "connectors/estimate/{connector_uuid}") => json!({ "$ref": "#/components/schemas/Estimate" }),
                (_, "connectors/list") => {
                    json!({ "type": "array", "items": { "$ref": "#/components/schemas/Connector" } })
                }
                _ => json!({}),
            };
            let media = if o.path.starts_with("subscribe/") {
                "text/event-stream"
            } else if o.path == "/metrics" {
                "text/plain"
            } else {
                "application/json"
            };
            json!({ "description": if s == 202 { "Accepted" } else { "OK" }, "content": { media: { "schema": schema } } })
        }
    };
    let error = json!({ "$ref": "#/components/responses/Error" });
    let mut responses = Map::new();
    responses.insert(o.status.to_string(), ok);
    if o.caller != Open {
        responses.insert("401".into(), error.clone());
    }
    if o.body.is_some() {
        responses.insert("413".into(), error.clone());
        responses.insert("422".into(), json!({ "$ref": "#/components/responses/ValidationError" }));
    }
    responses.insert("default".into(), error);
    let mut out = json!({
        "summary": o.summary,
        "operationId": format!("{} {}", o.method.to_lowercase(), o.path),
        "tags": [o.path.trim_start_matches('/').split('/').next().unwrap_or("")],
        "parameters": params,
        "security": security(o.caller),
        "responses": responses,
    });
    if let Some(model) = o.body {
        out["requestBody"] = json!({
            "required": true,
            "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{model}") } } }
        });
    }
    out
}

/// The whole document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for o in OPERATIONS {
        let entry = paths.entry(full_path(o.path)).or_insert_with(|| json!({}));
        entry[o.method.to_lowercase()] = operation(o);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "dsx-connect",
            "version": crate::routes::system::VERSION,
            "description": "Orchestrates malware scanning of file repositories through connectors. \
                Connector calls are signed with DSX-HMAC (see docs/authentication.md); operator calls \
                carry `Authorization: Bearer <operator token>` when auth is enabled.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": {
                "dsxHmac": {
                    "type": "apiKey", "in": "header", "name": "Authorization",
                    "description": "`DSX-HMAC key_id=…, ts=…, nonce=…, sig=…` signed with the connector's key (docs/wire-protocol.md)",
                },
                "operatorToken": { "type": "http", "scheme": "bearer" },
                "enrollmentToken": { "type": "apiKey", "in": "header", "name": "X-Enrollment-Token" },
            },
            "responses": {
                "Error": {
                    "description": "An error code in `detail`",
                    "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ErrorBody" } } },
                },
                "ValidationError": {
                    "description": "The field at fault (FastAPI's shape)",
                    "content": { "application/json": { "schema": {
                        "type": "object",
                        "properties": { "detail": { "type": "array", "items": {
                            "type": "object",
                            "properties": { "loc": { "type": "array" }, "msg": { "type": "string" }, "type": { "type": "string" } },
                        } } },
                    } } },
                },
            },
        },
    })
}

/// `GET openapi.json`.
pub async fn serve() -> axum::Json<Value> {
    axum::Json(document())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reference_resolves() {
        let doc = document();
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for (i, _) in text.match_indices("#/components/schemas/") {
            let name: String = text[i + 21..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            assert!(schemas.contains_key(&name), "dangling $ref to {name}");
        }
        assert!(schemas["Connector"]["properties"]["uuid"].is_object());
        assert!(schemas["ScanRequest"]["required"].as_array().unwrap().iter().any(|v| v == "location"));
    }

    #[test]
    fn no_duplicate_operations() {
        let mut seen = std::collections::HashSet::new();
        for o in OPERATIONS {
            assert!(seen.insert((o.method, o.path)), "{} {} listed twice", o.method, o.path);
        }
    }
}
