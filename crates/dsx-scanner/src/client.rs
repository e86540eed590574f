use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use futures_util::TryStreamExt;
use percent_encoding::{utf8_percent_encode, CONTROLS};
use reqwest::StatusCode;

use crate::{ByteStream, ScanError, ScanInput, Scanner, Verdict};

pub const SCAN_BINARY_PATH: &str = "/scan/binary/v2";

/// Verdicts are small; anything bigger is not a DSXA response.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
const MAX_ERROR_TEXT: usize = 512;

#[derive(Debug, Clone)]
pub struct DsxaConfig {
    /// Base URL (e.g. `http://dsxa:5000`); a full `.../scan/binary/v2` URL is also accepted.
    pub base_url: String,
    pub auth_token: Option<String>,
    /// Verify the scanner's certificate (https URLs; webpki roots). Off only for lab setups.
    pub verify_tls: bool,
    /// Trust only this CA bundle (PEM) for the scanner's certificate.
    pub ca_bundle: Option<std::path::PathBuf>,
    /// Total wall-clock limit for one request, body upload included.
    pub timeout: Duration,
    /// Archive password; sent base64-encoded in the `scan_password` header.
    pub scan_password: Option<String>,
}

impl DsxaConfig {
    pub fn new(url: impl Into<String>) -> Self {
        DsxaConfig {
            base_url: url.into(),
            auth_token: None,
            verify_tls: true,
            ca_bundle: None,
            timeout: Duration::from_secs(600),
            scan_password: None,
        }
    }

    /// `base_url` with any trailing `/` and `/scan/binary/v2` removed.
    pub fn base(&self) -> &str {
        let b = self.base_url.trim().trim_end_matches('/');
        b.strip_suffix(SCAN_BINARY_PATH).unwrap_or(b).trim_end_matches('/')
    }
}

/// `file-loc:<location>,file-meta:<metainfo>,dsx-connect:<connector>,scan_request_task_id:<id>`, with
/// non-ASCII and control characters percent-encoded so the value is a legal header.
pub fn custom_metadata_header(input: &ScanInput) -> String {
    let enc = |s: &str| utf8_percent_encode(s, CONTROLS).to_string();
    format!(
        "file-loc:{},file-meta:{},dsx-connect:{},scan_request_task_id:{}",
        enc(&input.location),
        enc(&input.metainfo),
        enc(&input.connector_name),
        enc(&input.task_id)
    )
}

/// DSXA HTTP client. Does not retry: classify with [`ScanError::is_retryable`] and retry in the caller.
#[derive(Debug, Clone)]
pub struct DsxaClient {
    http: reqwest::Client,
    scan_url: String,
    config: DsxaConfig,
}

impl DsxaClient {
    pub fn new(config: DsxaConfig) -> Result<Self, ScanError> {
        let base = config.base();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ScanError::Protocol(format!("scanner URL must be http(s): {:?}", config.base_url)));
        }
        let scan_url = format!("{base}{SCAN_BINARY_PATH}");
        let builder = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(30)))
            // A streamed body cannot be replayed to a redirect target.
            .redirect(reqwest::redirect::Policy::none());
        let tls =
            dsx_service::ClientTls { verify: config.verify_tls, ca_bundle: config.ca_bundle.clone(), identity: None };
        let http = dsx_service::http_client(builder, &tls)
            .map_err(|e| ScanError::Protocol(format!("building HTTP client: {e}")))?;
        Ok(DsxaClient { http, scan_url, config })
    }

    pub fn scan_url(&self) -> &str {
        &self.scan_url
    }

    fn request(&self, input: &ScanInput) -> reqwest::RequestBuilder {
        let mut req = self
            .http
            .post(&self.scan_url)
            .header("content-type", "application/octet-stream")
            .header("X-Custom-Metadata", custom_metadata_header(input));
        if let Some(token) = &self.config.auth_token {
            req = req.header("AUTH_TOKEN", token).header("AUTH", token);
        }
        if let Some(pe) = &input.protected_entity {
            req = req.header("protected_entity", pe);
        }
        if let Some(pw) = &self.config.scan_password {
            req = req.header("scan_password", base64::engine::general_purpose::STANDARD.encode(pw));
        }
        req
    }

    async fn send(&self, req: reqwest::RequestBuilder, body_err: &Mutex<Option<String>>) -> Result<Verdict, ScanError> {
        let mut resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                // A failing source stream surfaces as a reqwest error; report it as the connector's fault.
                if let Some(msg) = body_err.lock().unwrap().take() {
                    return Err(ScanError::Body(msg));
                }
                return Err(classify(e));
            }
        };
        let status = resp.status();
        let mut buf = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(classify)? {
            if buf.len() + chunk.len() > MAX_RESPONSE_BYTES {
                if !status.is_success() {
                    break; // the error text gets truncated anyway
                }
                return Err(ScanError::Protocol(format!("response larger than {MAX_RESPONSE_BYTES} bytes")));
            }
            buf.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            return Err(status_error(status, &buf));
        }
        crate::verdict::reject_initializing(crate::verdict::parse(&buf)?)
    }
}

fn status_error(status: StatusCode, body: &[u8]) -> ScanError {
    let mut text = String::from_utf8_lossy(body).trim().to_string();
    if text.len() > MAX_ERROR_TEXT {
        let mut cut = MAX_ERROR_TEXT;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    let code = status.as_u16();
    match code {
        401 | 403 => ScanError::Auth(format!("HTTP {code}: {text}")),
        400..=499 => ScanError::Client(code, text),
        500..=599 => ScanError::Server(code, text),
        _ => ScanError::Protocol(format!("unexpected HTTP {code}: {text}")),
    }
}

fn classify(e: reqwest::Error) -> ScanError {
    // Include the source chain: reqwest's top-level message alone is rarely useful (a
    // refused certificate only says why in the innermost error).
    let msg = dsx_service::error_chain(&e);
    if e.is_timeout() {
        ScanError::Timeout(msg)
    } else if e.is_builder() || e.is_decode() {
        ScanError::Protocol(msg)
    } else {
        // Connect failures and connections dropped mid-request are both transient.
        ScanError::Unreachable(msg)
    }
}

#[async_trait]
impl Scanner for DsxaClient {
    async fn scan(&self, input: &ScanInput, body: ByteStream) -> Result<Verdict, ScanError> {
        let body_err = Arc::new(Mutex::new(None));
        let sink = body_err.clone();
        let body = body.inspect_err(move |e| *sink.lock().unwrap() = Some(e.to_string()));
        let req = self.request(input).body(reqwest::Body::wrap_stream(body));
        self.send(req, &body_err).await
    }

    fn kind(&self) -> &'static str {
        "dsxa"
    }

    /// Scans an empty body: proves reachability, auth and readiness (not initializing) at negligible cost,
    /// since the DSXA API has no documented health endpoint.
    async fn check(&self) -> Result<(), ScanError> {
        let input = ScanInput {
            location: "dsx-connect-health-check".into(),
            connector_name: "dsx-connect".into(),
            task_id: "health-check".into(),
            size: Some(0),
            ..Default::default()
        };
        let req = self.request(&input).body(Vec::<u8>::new());
        self.send(req, &Mutex::new(None)).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_derivation() {
        for (url, base) in [
            ("http://dsxa:5000", "http://dsxa:5000"),
            ("http://dsxa:5000/", "http://dsxa:5000"),
            ("http://dsxa:5000/scan/binary/v2", "http://dsxa:5000"),
            ("http://dsxa:5000/scan/binary/v2/", "http://dsxa:5000"),
            ("http://h/prefix/scan/binary/v2", "http://h/prefix"),
        ] {
            let c = DsxaConfig::new(url);
            assert_eq!(c.base(), base, "{url}");
            assert_eq!(DsxaClient::new(c).unwrap().scan_url(), format!("{base}/scan/binary/v2"));
        }
        assert!(matches!(DsxaClient::new(DsxaConfig::new("dsxa:5000")), Err(ScanError::Protocol(_))));
    }

    #[test]
    fn metadata_header_encodes_non_ascii_only() {
        let input = ScanInput {
            location: "/data/été report,v2.txt".into(),
            metainfo: "x\ny".into(),
            connector_name: "fs".into(),
            task_id: "t-1".into(),
            ..Default::default()
        };
        assert_eq!(
            custom_metadata_header(&input),
            "file-loc:/data/%C3%A9t%C3%A9 report,v2.txt,file-meta:x%0Ay,dsx-connect:fs,scan_request_task_id:t-1"
        );
    }

    #[test]
    fn status_classification() {
        assert!(matches!(status_error(StatusCode::UNAUTHORIZED, b""), ScanError::Auth(_)));
        assert!(matches!(status_error(StatusCode::FORBIDDEN, b""), ScanError::Auth(_)));
        assert!(matches!(status_error(StatusCode::NOT_FOUND, b"nope"), ScanError::Client(404, m) if m == "nope"));
        assert!(matches!(status_error(StatusCode::BAD_GATEWAY, b""), ScanError::Server(502, _)));
        assert!(matches!(status_error(StatusCode::FOUND, b""), ScanError::Protocol(_)));
        let long = "é".repeat(1000);
        match status_error(StatusCode::INTERNAL_SERVER_ERROR, long.as_bytes()) {
            ScanError::Server(500, m) => assert!(m.len() <= MAX_ERROR_TEXT),
            other => panic!("{other:?}"),
        }
    }
}
