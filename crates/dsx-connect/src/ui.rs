//! The operator web UI: three static files compiled into the binary and served at `/`.
//!
//! The files are open (docs/wire-protocol.md, "Open routes"); every API call the
//! page makes carries the operator token the user enters. The page runs under a strict
//! Content-Security-Policy: scripts and styles only from these files, API calls only to this
//! origin, no framing.

use axum::http::{header, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};

const INDEX_HTML: &str = include_str!("../ui/index.html");
const APP_JS: &str = include_str!("../ui/app.js");
const STYLE_CSS: &str = include_str!("../ui/style.css");

/// No inline script or style, no other origin: connector-supplied strings the page shows can
/// never run as code even if one slipped past the page's own escaping.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; object-src 'none'; frame-ancestors 'none'; base-uri 'none'";

/// `GET /` (routed from the table in `api.rs`).
pub async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML, true)
}

/// `GET /ui/app.js`.
pub async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS, false)
}

/// `GET /ui/style.css`.
pub async fn style_css() -> Response {
    asset("text/css; charset=utf-8", STYLE_CSS, false)
}

fn asset(content_type: &'static str, body: &'static str, document: bool) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // Revalidate on every load, so an upgraded server never runs with a cached older page.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if document {
        headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
        headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
        headers.insert(HeaderName::from_static("x-frame-options"), HeaderValue::from_static("DENY"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CSP forbids inline code: the page must load everything from the files it names.
    #[test]
    fn page_has_no_inline_script_or_style() {
        let html = INDEX_HTML.to_ascii_lowercase();
        assert!(!html.contains("<style"), "inline <style> element");
        assert!(!html.contains(" style="), "inline style attribute");
        assert!(!html.contains("javascript:"), "javascript: URL");
        for attr in ["onclick=", "onload=", "onsubmit=", "onerror="] {
            assert!(!html.contains(attr), "inline event handler {attr}");
        }
        let scripts: Vec<&str> = html.match_indices("<script").map(|(i, _)| &html[i..]).collect();
        assert_eq!(scripts.len(), 1, "one script, the served file");
        assert!(scripts[0].starts_with(r#"<script src="ui/app.js" defer></script>"#));
        assert!(html.contains(r#"<link rel="stylesheet" href="ui/style.css">"#));
    }

    /// Data reaches the DOM through textContent only (the Python UI had a stored XSS through
    /// connector names rendered with innerHTML).
    #[test]
    fn script_never_parses_strings_as_html() {
        for sink in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"] {
            assert!(!APP_JS.contains(sink), "app.js uses {sink}");
        }
    }
}
