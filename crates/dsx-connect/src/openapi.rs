//! The OpenAPI 3.1 document of dsx-connect's HTTP API (`GET openapi.json`).
//!
//! Operations come from the route table in `api.rs`, the one the router is built from; body
//! and answer schemas are derived from the wire models in `dsx-model` (schemars follows their
//! serde attributes, so the schemas cannot drift from what the server parses). Each operation
//! carries its access rule twice: as a `security` requirement and as `x-dsx-access`.

use dsx_model::ErrorBody;
use schemars::generate::SchemaSettings;
use schemars::SchemaGenerator;
use serde_json::{json, Map, Value};

use crate::api::{full_path, routes, Route, Rule};

fn security(rule: Rule) -> Value {
    match rule {
        Rule::Connector | Rule::ConnectorIntake => json!([{ "dsxHmac": [] }]),
        Rule::ConnectorOrOperator => json!([{ "dsxHmac": [] }, { "operatorToken": [] }]),
        Rule::Operator => json!([{ "operatorToken": [] }]),
        Rule::Enrollment => json!([{ "enrollmentToken": [] }, { "dsxHmac": [] }]),
        Rule::Open => json!([]),
    }
}

fn operation(r: &Route, generator: &mut SchemaGenerator) -> Value {
    let mut params = Vec::new();
    for segment in r.path.split('/') {
        if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            params.push(json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }));
        }
    }
    let ok = match r.status {
        204 => json!({ "description": "Done (no body)" }),
        s => {
            let schema = r.response.map_or_else(|| json!({}), |f| f(generator).to_value());
            json!({ "description": if s == 202 { "Accepted" } else { "OK" }, "content": { r.media: { "schema": schema } } })
        }
    };
    let error = json!({ "$ref": "#/components/responses/Error" });
    let mut responses = Map::new();
    responses.insert(r.status.to_string(), ok);
    if r.access != Rule::Open {
        responses.insert("401".into(), error.clone());
    }
    if r.body.is_some() {
        responses.insert("413".into(), error.clone());
        responses.insert("422".into(), json!({ "$ref": "#/components/responses/ValidationError" }));
    }
    responses.insert("default".into(), error);
    let tag = match r.path.trim_start_matches('/').split('/').next() {
        Some("") | Some("ui") => "ui",
        Some(first) => first,
        None => "",
    };
    let mut out = json!({
        "summary": r.summary,
        "operationId": r.operation_id,
        "tags": [tag],
        "parameters": params,
        "security": security(r.access),
        "x-dsx-access": r.access.name(),
        "x-dsx-mutual-tls": r.access.mutual_tls(),
        "responses": responses,
    });
    if let Some(body) = r.body {
        out["requestBody"] = json!({
            "required": true,
            "content": { "application/json": { "schema": body(generator).to_value() } }
        });
    }
    out
}

/// The whole document.
pub fn document() -> Value {
    let settings = SchemaSettings::draft2020_12().with(|s| s.definitions_path = "/components/schemas".into());
    let mut generator = SchemaGenerator::new(settings);
    generator.subschema_for::<ErrorBody>();
    let mut paths = Map::new();
    for r in routes() {
        let entry = paths.entry(full_path(r.path)).or_insert_with(|| json!({}));
        entry[r.method.as_str().to_lowercase()] = operation(&r, &mut generator);
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
            "schemas": generator.take_definitions(true),
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
    static DOCUMENT: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    axum::Json(DOCUMENT.get_or_init(document).clone())
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
        for r in routes() {
            assert!(seen.insert((r.method.clone(), r.path)), "{} {} listed twice", r.method, r.path);
        }
    }
}
