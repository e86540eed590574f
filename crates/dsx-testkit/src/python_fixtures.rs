//! The captured wire traffic of a Python dsx-connect 1.x server and its Python filesystem
//! connector (`fixtures/python-1x/`, indexed by its README): every request and response byte
//! for byte, with the throwaway credentials that signed them. Interop tests replay the requests
//! against our server and connector, and serve the recorded answers as a stand-in Python peer.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::Value;

/// The enrollment token the capture used.
pub const ENROLLMENT_TOKEN: &str = "vx2ltIDbf_hFffgwKNqhGaE2FT3I2p5L";
/// The captured connector's uuid.
pub const CONNECTOR_UUID: &str = "5d84f8ce-d115-4201-9a07-11af8531faa7";
/// The key pair the Python server issued (used as the UTF-8 bytes of the secret string).
pub const HMAC_KEY_ID: &str = "TKSODngjSl19YC+o";
pub const HMAC_SECRET: &str = "O4d5jcAPKUmX706+wSBCEnh6GeTgPNDeqGjo+8qYxcY=";

/// Who sent the request of an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The Python connector calling the Python server.
    ConnectorToServer,
    /// The Python server (API or worker) calling the Python connector.
    ServerToConnector,
    /// An operator (curl, or the capture harness signing with the connector's key) calling the server.
    ClientToServer,
    /// A direct call to connector routes.
    ClientToConnector,
}

#[derive(Debug, Clone)]
pub struct Message {
    pub headers: Vec<(String, String)>,
    /// The exact bytes on the wire (de-chunked).
    pub body: Vec<u8>,
}

impl Message {
    /// First header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Raw query string without `?`.
    pub query: Option<String>,
    pub message: Message,
}

impl Request {
    /// The request target as signed: path plus `?query` when there is one.
    pub fn path_and_query(&self) -> String {
        match self.query.as_deref() {
            Some(q) if !q.is_empty() => format!("{}?{q}", self.path),
            _ => self.path.clone(),
        }
    }

    /// Whether the capture carried a DSX-HMAC signature.
    pub fn was_signed(&self) -> bool {
        self.message.header("authorization").is_some_and(|v| v.starts_with("DSX-HMAC "))
    }
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub message: Message,
}

/// One captured exchange, `NN-name.json`.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// File stem, e.g. `01-register-first`.
    pub name: String,
    pub direction: Direction,
    pub scenario: String,
    pub request: Request,
    pub response: Response,
    pub notes: String,
    raw: Value,
}

impl Fixture {
    /// The signature of the captured request re-verified with the recorded secret.
    pub fn signature_valid(&self) -> Option<bool> {
        self.raw.get("hmac")?.get("signature_valid_with_recorded_secret")?.as_bool()
    }
}

/// Where the fixtures live.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/python-1x")
}

/// Every exchange, in file order.
pub fn all() -> Vec<Fixture> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir())
        .expect("fixtures/python-1x")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    names.sort();
    names.iter().map(|p| load(p)).collect()
}

/// The exchange whose file name starts with `prefix` (`"01"` or `"01-register-first"`).
pub fn get(prefix: &str) -> Fixture {
    let mut found: Vec<Fixture> = all().into_iter().filter(|f| f.name.starts_with(prefix)).collect();
    assert_eq!(found.len(), 1, "exactly one fixture starts with {prefix:?}");
    found.remove(0)
}

fn load(path: &Path) -> Fixture {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let raw: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let direction = match raw["direction"].as_str() {
        Some("connector->server") => Direction::ConnectorToServer,
        Some("server->connector") => Direction::ServerToConnector,
        Some("client->server") => Direction::ClientToServer,
        Some("client->connector") => Direction::ClientToConnector,
        other => panic!("{}: unknown direction {other:?}", path.display()),
    };
    let req = &raw["request"];
    let resp = &raw["response"];
    Fixture {
        name: path.file_stem().expect("stem").to_string_lossy().into_owned(),
        direction,
        scenario: raw["scenario"].as_str().unwrap_or_default().to_owned(),
        request: Request {
            method: req["method"].as_str().expect("method").to_owned(),
            path: req["path"].as_str().expect("path").to_owned(),
            query: req["query"].as_str().map(str::to_owned),
            message: message(req),
        },
        response: Response { status: resp["status"].as_u64().expect("status") as u16, message: message(resp) },
        notes: raw["notes"].as_str().unwrap_or_default().to_owned(),
        raw,
    }
}

fn message(part: &Value) -> Message {
    let headers = part["headers"]
        .as_array()
        .map(|hs| {
            hs.iter().filter_map(|h| Some((h.get(0)?.as_str()?.to_owned(), h.get(1)?.as_str()?.to_owned()))).collect()
        })
        .unwrap_or_default();
    // `body_text` is the exact body; `body_json` is only its parsed form.
    let body = if let Some(text) = part["body_text"].as_str() {
        text.as_bytes().to_vec()
    } else if let Some(b64) = part["body_b64"].as_str() {
        STANDARD.decode(b64).expect("body_b64")
    } else {
        Vec::new()
    };
    Message { headers, body }
}

/// A fresh DSX-HMAC header for `request`'s exact bytes, as the Python peer would sign it now.
pub fn resign(request: &Request, key_id: &str, secret: &str) -> String {
    let key = dsx_hmac::SigningKey::new(secret);
    dsx_hmac::sign_request(&key, key_id, &request.method, &request.path_and_query(), &request.message.body)
}
