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
        "Apply the configured (or requested) action to an item; a failure is a 200 with `status:\"error\"` and `error_code`",
        Some("ScanRequest"),
        Some("ItemActionAnswer"),
    ),
    (
        "POST",
        "/full_scan",
        true,
        "Enumerate the asset and enqueue every matching item; `?limit&batch&batch_size&job_id`",
        None,
        Some("StatusResponse"),
    ),
    (
        "GET",
        "/repo_check",
        true,
        "Can the connector reach its repository? `?preview=N`; unreachable is a 200 with `status:\"error\"`",
        None,
        Some("StatusResponse"),
    ),
    (
        "POST",
        "/release",
        true,
        "Operator action (relayed by dsx-connect): restore a quarantined item, body `{\"location\": …}`",
        None,
        Some("StatusResponse"),
    ),
    ("GET", "/estimate", true, "How many items a full scan would enqueue", None, Some("Estimate")),
    ("GET", "/config", true, "The connector's configuration (secrets masked)", None, None),
    (
        "PUT",
        "/config",
        true,
        "Change `filter`, `item_action`, `item_action_move_metainfo` or `requested_action.type`/`.destination`; \
         answers the GET view, or `{\"error\":\"no_supported_fields\",\"supported\":[…]}`",
        None,
        None,
    ),
    ("GET", "/assets", true, "The asset this connector scans; `?type&source&limit&cursor`", None, Some("AssetsPage")),
    ("GET", "/objects", true, "A page of the asset's items; `?scope&limit&cursor`", None, Some("ObjectsPage")),
    (
        "POST",
        "/webhook/event",
        true,
        "Scan one item named by `location` (or `path`, `file_path`); `?validationToken=X` is answered \
         `X` (text/plain) without a signature, the Microsoft Graph handshake",
        None,
        Some("StatusResponse"),
    ),
    ("GET", "/healthz", false, "Liveness", None, None),
    ("GET", "/readyz", false, "Readiness: the connector model, 503 until registered", None, None),
    ("GET", "/version", false, "Name, id, instance id and version", None, Some("VersionInfo")),
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
    generator.subschema_for::<crate::routes::ItemActionAnswer>();
    generator.subschema_for::<crate::routes::AssetsPage>();
    generator.subschema_for::<crate::routes::ObjectsPage>();
    generator.subschema_for::<crate::routes::VersionInfo>();
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
