//! The connector's OpenAPI 3.1 document (`GET /<name>/openapi.json`). Like the Python
//! connectors' docs, it is hidden (404) when DSX-HMAC verification is on: it tells an
//! unauthenticated scanner of the network nothing about the signed routes.

use dsx_model::{Estimate, ItemActionStatusResponse, ScanRequest, StatusResponse};
use schemars::generate::SchemaSettings;
use schemars::SchemaGenerator;
use serde_json::{json, Map, Value};

/// (method, path below `/<name>`, signed?, summary, request body model, response model)
type Route = (&'static str, &'static str, bool, &'static str, Option<&'static str>, Option<&'static str>);

pub const ROUTES: &[Route] = &[
    ("POST", "/read_file", true, "The item's bytes, streamed (application/octet-stream)", Some("ScanRequest"), None),
    (
        "PUT",
        "/item_action",
        true,
        "Apply the configured (or requested) action to an item",
        Some("ScanRequest"),
        Some("ItemActionStatusResponse"),
    ),
    (
        "POST",
        "/full_scan",
        true,
        "Enumerate the asset and enqueue every matching item; `?limit&batch&batch_size&job_id`",
        None,
        Some("StatusResponse"),
    ),
    ("GET", "/repo_check", true, "Can the connector reach its repository? `?preview=N`", None, Some("StatusResponse")),
    ("GET", "/estimate", true, "How many items a full scan would enqueue", None, Some("Estimate")),
    ("GET", "/config", true, "The connector's configuration (secrets masked)", None, None),
    ("PUT", "/config", true, "Change filter, item action or quarantine", None, None),
    ("GET", "/assets", true, "The asset this connector scans", None, None),
    ("GET", "/objects", true, "A page of the asset's items", None, None),
    ("GET", "/healthz", false, "Liveness", None, None),
    ("GET", "/readyz", false, "Readiness: the connector model, 503 until registered", None, None),
    ("GET", "/version", false, "Version", None, None),
    ("GET", "/", false, "Name, version and asset", None, None),
    ("GET", "/openapi.json", false, "This document (404 when DSX-HMAC verification is on)", None, None),
];

fn schemas() -> Map<String, Value> {
    let settings = SchemaSettings::draft2020_12().with(|s| s.definitions_path = "/components/schemas".into());
    let mut generator = SchemaGenerator::new(settings);
    generator.subschema_for::<ScanRequest>();
    generator.subschema_for::<StatusResponse>();
    generator.subschema_for::<ItemActionStatusResponse>();
    generator.subschema_for::<Estimate>();
    generator.take_definitions(true)
}

fn schema_ref(model: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{model}") })
}

/// The document for a connector served under `/<name>`.
pub fn document(name: &str) -> Value {
    let mut paths = Map::new();
    for (method, path, signed, summary, body, response) in ROUTES {
        let ok = match response {
            Some(model) => {
                json!({ "description": "OK", "content": { "application/json": { "schema": schema_ref(model) } } })
            }
            None => json!({ "description": "OK" }),
        };
        let mut op = json!({
            "summary": summary,
            "operationId": format!("{} {path}", method.to_lowercase()),
            "security": if *signed { json!([{ "dsxHmac": [] }]) } else { json!([]) },
            "responses": { "200": ok, "default": { "description": "An error code in `detail`" } },
        });
        if let Some(model) = body {
            op["requestBody"] =
                json!({ "required": true, "content": { "application/json": { "schema": schema_ref(model) } } });
        }
        let entry = paths.entry(format!("/{name}{}", path.trim_end_matches('/'))).or_insert_with(|| json!({}));
        entry[method.to_lowercase()] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": name, "version": env!("CARGO_PKG_VERSION"),
                  "description": "A dsx-connect connector: dsx-connect calls these routes, signed with DSX-HMAC when auth is on." },
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": { "dsxHmac": { "type": "apiKey", "in": "header", "name": "Authorization" } },
        },
    })
}
