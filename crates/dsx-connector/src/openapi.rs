//! The connector's OpenAPI 3.1 document (`GET /<name>/openapi.json`). Like the Python
//! connectors' docs, it is hidden (404) when DSX-HMAC verification is on: it tells an
//! unauthenticated scanner of the network nothing about the signed routes.
//!
//! Operations come from the route table in `routes.rs`, the one the router is built from;
//! each carries its access rule as a `security` requirement and as `x-dsx-access`.

use dsx_model::ItemActionStatusResponse;
use schemars::generate::SchemaSettings;
use schemars::SchemaGenerator;
use serde_json::{json, Map, Value};

use crate::routes::{table, Access};

/// The document for a connector served under `/<name>`.
pub fn document(name: &str) -> Value {
    let settings = SchemaSettings::draft2020_12().with(|s| s.definitions_path = "/components/schemas".into());
    let mut generator = SchemaGenerator::new(settings);
    generator.subschema_for::<ItemActionStatusResponse>();
    let mut paths = Map::new();
    for route in table() {
        let ok = match route.response {
            Some(schema) => json!({
                "description": "OK",
                "content": { "application/json": { "schema": schema(&mut generator).to_value() } },
            }),
            None => json!({ "description": "OK" }),
        };
        let mut op = json!({
            "summary": route.summary,
            "operationId": route.operation_id,
            "security": if route.access == Access::Open { json!([]) } else { json!([{ "dsxHmac": [] }]) },
            "x-dsx-access": route.access.name(),
            "responses": { "200": ok, "default": { "description": "An error code in `detail`" } },
        });
        if let Some(schema) = route.body {
            op["requestBody"] = json!({
                "required": true,
                "content": { "application/json": { "schema": schema(&mut generator).to_value() } },
            });
        }
        let entry = paths.entry(format!("/{name}{}", route.path.trim_end_matches('/'))).or_insert_with(|| json!({}));
        entry[route.method.as_str().to_lowercase()] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": name, "version": env!("CARGO_PKG_VERSION"),
                  "description": "A dsx-connect connector: dsx-connect calls these routes, signed with DSX-HMAC when auth is on." },
        "paths": paths,
        "components": {
            "schemas": generator.take_definitions(true),
            "securitySchemes": { "dsxHmac": { "type": "apiKey", "in": "header", "name": "Authorization" } },
        },
    })
}
