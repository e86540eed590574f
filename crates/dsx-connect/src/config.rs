//! `DSXCONNECT_*` environment → [`Settings`]. Every variable is read here and nowhere else,
//! so `docs/configuration.md` can list exactly what exists.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;

use crate::tokens::TokenSources;

/// Where the registry, credentials and queues live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreSettings {
    /// `DSXCONNECT_REDIS_URL` set: shared Redis (production, several replicas).
    Redis { url: String },
    /// Otherwise: embedded durable store under `DSXCONNECT_DATA_DIR` (single node).
    Embedded { data_dir: PathBuf },
}

impl StoreSettings {
    /// Where the store is, for logs and error messages: the Redis URL with its password
    /// replaced by `***`, or the embedded store's folder.
    pub fn location(&self) -> String {
        match self {
            StoreSettings::Redis { url } => redact_url(url),
            StoreSettings::Embedded { data_dir } => format!("embedded store in {}", data_dir.display()),
        }
    }
}

/// `url` with any password replaced by `***` (`redis://:***@host:6379/0`). A URL that does
/// not parse is shown as its scheme only, since its parts cannot be told apart.
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) => {
            let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or("?");
            format!("{scheme}://<unparseable URL>")
        }
    }
}

/// The store's [`StoreSettings::location`], recorded once at start so every store error
/// can name it.
pub static STORE_LOCATION: std::sync::OnceLock<String> = std::sync::OnceLock::new();

#[derive(Clone, Debug)]
pub struct AuthSettings {
    pub enabled: bool,
    pub enrollment: TokenSources,
    pub operator: TokenSources,
    /// DSX-HMAC clock-skew window, seconds (inclusive).
    pub max_skew: u64,
    /// How long a replaced key keeps working.
    pub key_grace: Duration,
    pub break_glass: bool,
    pub secret_key: Option<SecretString>,
    /// Registrations per client address per minute.
    pub register_rate_per_minute: u64,
}

/// Which scanner the workers use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScannerKind {
    /// The built-in engine (EICAR + SHA-256 blocklist); the default without a DSXA URL.
    Builtin,
    /// A DSXA scanner over HTTP.
    Dsxa,
}

#[derive(Clone, Debug)]
pub struct ScannerSettings {
    pub kind: ScannerKind,
    pub base_url: Option<String>,
    pub auth_token: Option<SecretString>,
    pub timeout: Duration,
    /// Verify the DSXA certificate on https URLs.
    pub verify_tls: bool,
    /// Trust only this CA bundle for the DSXA certificate (`DSXCONNECT_SCANNER__CA_BUNDLE`).
    pub ca_bundle: Option<PathBuf>,
    pub blocklist_file: Option<PathBuf>,
}

/// `scan/request_batch` intake (Python 1.x names, `DSXCONNECT_WORKERS__SCAN_REQUEST_BATCH_*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchSettings {
    /// On by default here (Python's default is off): we advertise it through `GET config`.
    pub enabled: bool,
    /// `batch_size` is clamped to this.
    pub max_size: usize,
    /// `batch_size` when the request names none.
    pub default_size: usize,
    /// Most items one `scan/request_batch` call may carry; more is refused whole (422).
    pub max_items: usize,
}

#[derive(Clone, Debug)]
pub struct Settings {
    pub app_env: String,
    pub store: StoreSettings,
    pub auth: AuthSettings,
    pub scanner: ScannerSettings,
    pub workers: crate::worker::WorkerSettings,
    /// Results to syslog, when `DSXCONNECT_SYSLOG__ENABLED`.
    pub syslog: Option<crate::syslog::SyslogSettings>,
    pub batch: BatchSettings,
    pub presence_ttl: Duration,
    /// How long finished jobs and their results are kept (`DSXCONNECT_RESULTS_DB__JOB_RETENTION_SECONDS`,
    /// 0 = forever).
    pub job_retention: Option<Duration>,
    pub max_body_bytes: usize,
    /// Which connector URLs may be registered and called (`DSXCONNECT_CONNECTORS__URL_ALLOW`).
    pub connector_urls: crate::url_policy::UrlPolicy,
    /// Header-read deadline, connection cap and shutdown grace (`DSXCONNECT_SERVER__*`).
    pub server_limits: dsx_service::ServerLimits,
    /// HTTPS on the listener (`DSXCONNECT_USE_TLS`, `DSXCONNECT_TLS_*`).
    pub tls: Option<dsx_service::tls::ServerTlsFiles>,
    /// How calls to connectors check them and who dsx-connect is to them
    /// (`DSXCONNECT_CONNECTORS__VERIFY_TLS`, `__CA_BUNDLE`, `__TLS_CLIENT_*`).
    pub connectors_tls: dsx_service::ClientTls,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{var}: {reason}")]
    Invalid { var: &'static str, reason: String },
    #[error(
        "DSXCONNECT_AUTH__ENABLED=true but no enrollment token is configured: set DSXCONNECT_AUTH__ENROLLMENT_TOKEN, \
         DSXCONNECT_AUTH__ENROLLMENT_TOKENS or DSXCONNECT_AUTH__ENROLLMENT_TOKEN_FILE (there is no default token)"
    )]
    NoEnrollmentToken,
}

/// `DSXCONNECT_CONNECTORS__URL_ALLOW` (default: loopback, private networks, cluster names), and
/// never the Redis this server uses.
fn connector_url_policy(
    get: &impl Fn(&str) -> Option<String>,
    store: &StoreSettings,
) -> Result<crate::url_policy::UrlPolicy, ConfigError> {
    const VAR: &str = "DSXCONNECT_CONNECTORS__URL_ALLOW";
    let list = get(VAR).unwrap_or_else(|| crate::url_policy::DEFAULT_ALLOW.to_owned());
    let mut policy =
        crate::url_policy::UrlPolicy::parse(&list).map_err(|reason| ConfigError::Invalid { var: VAR, reason })?;
    if let StoreSettings::Redis { url } = store {
        if let Ok(parsed) = reqwest::Url::parse(url) {
            if let Some(host) = parsed.host_str() {
                policy.deny_endpoint(host.trim_start_matches('[').trim_end_matches(']'), parsed.port().unwrap_or(6379));
            }
        }
    }
    Ok(policy)
}

/// Environments whose presence TTL is the longer development value (600 s instead of 120 s).
const DEV_ENVS: [&str; 4] = ["dev", "development", "local", "test"];

impl Settings {
    /// Read settings from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Read settings through `get` (tests pass a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |k: &str| get(k).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let app_env = get("DSXCONNECT_APP_ENV").unwrap_or_else(|| "dev".into());
        let store = match get("DSXCONNECT_REDIS_URL") {
            Some(url) => StoreSettings::Redis { url },
            None => StoreSettings::Embedded {
                data_dir: get("DSXCONNECT_DATA_DIR").unwrap_or_else(|| "./data".into()).into(),
            },
        };
        let max_skew = parse_num(&get, "DSXCONNECT_AUTH__HMAC_MAX_SKEW", 60)?;
        let auth = AuthSettings {
            enabled: parse_bool(&get, "DSXCONNECT_AUTH__ENABLED", false)?,
            enrollment: TokenSources::from_lookup(
                &get,
                "DSXCONNECT_AUTH__ENROLLMENT_TOKEN",
                "DSXCONNECT_AUTH__ENROLLMENT_TOKENS",
                "DSXCONNECT_AUTH__ENROLLMENT_TOKEN_FILE",
                "DSXCONNECT_AUTH__ENROLLMENT_TOKEN_FILES",
            ),
            operator: TokenSources::from_lookup(
                &get,
                "DSXCONNECT_AUTH__ADMIN_TOKEN",
                "DSXCONNECT_AUTH__ADMIN_TOKENS",
                "DSXCONNECT_AUTH__ADMIN_TOKENS_FILE",
                "DSXCONNECT_AUTH__ADMIN_TOKENS_FILES",
            ),
            max_skew,
            key_grace: Duration::from_secs(parse_num(&get, "DSXCONNECT_AUTH__KEY_GRACE_SECONDS", 2 * max_skew)?),
            break_glass: parse_bool(&get, "DSXCONNECT_AUTH__BREAK_GLASS", false)?,
            secret_key: read_secret_key(&get)?,
            register_rate_per_minute: parse_num(&get, "DSXCONNECT_AUTH__REGISTER_RATE_PER_MINUTE", 60)?,
        };
        // Ours first, then Python 1.x's own names and its legacy flat ones.
        let base_url = get("DSXCONNECT_SCANNER__BASE_URL")
            .or_else(|| get("DSXCONNECT_SCANNER__SCAN_BINARY_URL").map(|u| base_of_scan_binary_url(&u)))
            .or_else(|| get("SCANNER_BASE_URL"))
            .or_else(|| get("SCAN_BINARY_URL").map(|u| base_of_scan_binary_url(&u)));
        let kind = match get("DSXCONNECT_SCANNER__KIND").map(|k| k.to_ascii_lowercase()) {
            None if base_url.is_some() => ScannerKind::Dsxa,
            None => ScannerKind::Builtin,
            Some(k) if k == "builtin" => ScannerKind::Builtin,
            Some(k) if k == "dsxa" => ScannerKind::Dsxa,
            Some(k) => {
                return Err(ConfigError::Invalid {
                    var: "DSXCONNECT_SCANNER__KIND",
                    reason: format!("expected dsxa or builtin, got {k:?}"),
                })
            }
        };
        if kind == ScannerKind::Dsxa && base_url.is_none() {
            return Err(ConfigError::Invalid {
                var: "DSXCONNECT_SCANNER__BASE_URL",
                reason: "DSXCONNECT_SCANNER__KIND=dsxa needs the scanner's URL".into(),
            });
        }
        let scanner = ScannerSettings {
            kind,
            base_url,
            auth_token: get("DSXCONNECT_SCANNER__AUTH_TOKEN")
                .or_else(|| get("SCANNER_AUTH_TOKEN"))
                .or_else(|| get("AUTH_TOKEN"))
                .map(SecretString::from),
            timeout: Duration::from_secs(parse_num(&get, "DSXCONNECT_SCANNER__TIMEOUT_SECONDS", 600)?),
            verify_tls: parse_bool(&get, "DSXCONNECT_SCANNER__VERIFY_TLS", true)?,
            ca_bundle: get("DSXCONNECT_SCANNER__CA_BUNDLE").map(PathBuf::from),
            blocklist_file: get("DSXCONNECT_SCANNER__BLOCKLIST_FILE").map(PathBuf::from),
        };
        let workers = crate::worker::WorkerSettings {
            max_inflight: parse_num(&get, "DSXCONNECT_SCANNER__MAX_INFLIGHT", 16)?.max(1) as usize,
            lease: Duration::from_secs(parse_num(&get, "DSXCONNECT_WORKERS__LEASE_SECONDS", 15)?.max(1)),
            drain: Duration::from_secs(parse_num(&get, "DSXCONNECT_WORKERS__DRAIN_SECONDS", 20)?),
            breaker_threshold: parse_num(&get, "DSXCONNECT_SCANNER__BREAKER_THRESHOLD", 5)? as u32,
            max_retries: parse_num(&get, "DSXCONNECT_WORKERS__SCAN_REQUEST_MAX_RETRIES", 5)? as u32,
            retry_base: Duration::from_millis(parse_num(&get, "DSXCONNECT_WORKERS__RETRY_BASE_MS", 2000)?.max(1)),
            max_file_size: parse_num(&get, "DSXCONNECT_SCANNER__MAX_FILE_SIZE_BYTES", 2 << 30)?,
            results_retain: parse_num(&get, "DSXCONNECT_RESULTS_DB__RETAIN", 1000)?.max(1) as usize,
        };
        let syslog = syslog_settings(&get)?;
        let batch = BatchSettings {
            enabled: parse_bool(&get, "DSXCONNECT_WORKERS__SCAN_REQUEST_BATCH_ENABLED", true)?,
            max_size: parse_num(&get, "DSXCONNECT_WORKERS__SCAN_REQUEST_BATCH_MAX_SIZE", 100)?.max(1) as usize,
            default_size: parse_num(&get, "DSXCONNECT_WORKERS__SCAN_REQUEST_BATCH_DEFAULT_SIZE", 10)?.max(1) as usize,
            max_items: parse_num(&get, "DSXCONNECT_WORKERS__SCAN_REQUEST_BATCH_MAX_ITEMS", 1000)?.max(1) as usize,
        };
        let default_ttl = if DEV_ENVS.contains(&app_env.as_str()) { 600 } else { 120 };
        let connector_urls = connector_url_policy(&get, &store)?;
        let server_limits = dsx_service::ServerLimits::from_lookup(dsx_service::http::DSXCONNECT_LIMITS, get)
            .map_err(|reason| ConfigError::Invalid { var: "DSXCONNECT_SERVER__*", reason })?;
        let tls = dsx_service::tls::ServerTlsFiles::from_lookup(dsx_service::tls::DSXCONNECT_TLS, get)
            .map_err(|reason| ConfigError::Invalid { var: "DSXCONNECT_USE_TLS", reason })?;
        let connectors_tls = dsx_service::ClientTls {
            verify: parse_bool(&get, "DSXCONNECT_CONNECTORS__VERIFY_TLS", true)?,
            ca_bundle: get("DSXCONNECT_CONNECTORS__CA_BUNDLE").map(PathBuf::from),
            identity: identity(
                &get,
                "DSXCONNECT_CONNECTORS__TLS_CLIENT_CERTFILE",
                "DSXCONNECT_CONNECTORS__TLS_CLIENT_KEYFILE",
            )?,
        };
        Ok(Self {
            tls,
            connectors_tls,
            connector_urls,
            server_limits,
            presence_ttl: Duration::from_secs(parse_num(&get, "DSXCONNECT_PRESENCE_TTL_SECONDS", default_ttl)?),
            max_body_bytes: parse_num(&get, "DSXCONNECT_MAX_BODY_BYTES", 16 * 1024 * 1024)? as usize,
            job_retention: Some(parse_num(
                &get,
                "DSXCONNECT_RESULTS_DB__JOB_RETENTION_SECONDS",
                dsx_store::DEFAULT_JOB_RETENTION.as_secs(),
            )?)
            .filter(|s| *s > 0)
            .map(Duration::from_secs),
            app_env,
            store,
            auth,
            scanner,
            workers,
            syslog,
            batch,
        })
    }

    /// Checks that need the token files read: auth on with no token refuses to start (H2).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.auth.enabled && self.auth.enrollment.load().is_empty() {
            return Err(ConfigError::NoEnrollmentToken);
        }
        Ok(())
    }
}

/// The DSXA base URL from a `…/scan/binary/v2` URL: everything before `/scan/binary`.
fn base_of_scan_binary_url(url: &str) -> String {
    let url = url.trim_end_matches('/');
    url.find("/scan/binary").map_or(url, |at| &url[..at]).to_owned()
}

/// Syslog from our names (`__ENABLED`, `__HOST`, `__PORT`) or Python 1.x's
/// (`__SYSLOG_SERVER_URL`, `__SYSLOG_SERVER_PORT`); ours win when both are set. Python has
/// no on/off switch, so naming its server turns syslog on, in Python's frame format and
/// with its tcp default, unless our variables say otherwise.
fn syslog_settings(
    get: &impl Fn(&str) -> Option<String>,
) -> Result<Option<crate::syslog::SyslogSettings>, ConfigError> {
    use crate::syslog::{Format, SyslogSettings};
    let ours = get("DSXCONNECT_SYSLOG__HOST");
    let python = get("DSXCONNECT_SYSLOG__SYSLOG_SERVER_URL");
    let python_style = ours.is_none() && python.is_some();
    if !parse_bool(get, "DSXCONNECT_SYSLOG__ENABLED", python_style)? {
        return Ok(None);
    }
    let host = ours.or(python).ok_or(ConfigError::Invalid {
        var: "DSXCONNECT_SYSLOG__HOST",
        reason: "DSXCONNECT_SYSLOG__ENABLED=true needs the syslog server's host".into(),
    })?;
    let port = match get("DSXCONNECT_SYSLOG__PORT") {
        Some(_) => parse_num(get, "DSXCONNECT_SYSLOG__PORT", 514)?,
        None => parse_num(get, "DSXCONNECT_SYSLOG__SYSLOG_SERVER_PORT", 514)?,
    };
    let port = u16::try_from(port).map_err(|_| ConfigError::Invalid {
        var: "DSXCONNECT_SYSLOG__PORT",
        reason: format!("{port} is not a port number"),
    })?;
    let transport = get("DSXCONNECT_SYSLOG__TRANSPORT")
        .unwrap_or_else(|| if python_style { "tcp" } else { "udp" }.into())
        .parse()
        .map_err(|reason| ConfigError::Invalid { var: "DSXCONNECT_SYSLOG__TRANSPORT", reason })?;
    let format = match get("DSXCONNECT_SYSLOG__FORMAT") {
        Some(f) => f.parse().map_err(|reason| ConfigError::Invalid { var: "DSXCONNECT_SYSLOG__FORMAT", reason })?,
        None if python_style => Format::Python,
        None => Format::Rfc5424,
    };
    let queue_size =
        parse_num(get, "DSXCONNECT_SYSLOG__QUEUE_SIZE", crate::syslog::DEFAULT_QUEUE_SIZE as u64)?.max(1) as usize;
    let tls = dsx_service::ClientTls {
        verify: !parse_bool(get, "DSXCONNECT_SYSLOG__TLS_INSECURE", false)?,
        ca_bundle: get("DSXCONNECT_SYSLOG__TLS_CA_FILE").map(PathBuf::from),
        identity: identity(get, "DSXCONNECT_SYSLOG__TLS_CERT_FILE", "DSXCONNECT_SYSLOG__TLS_KEY_FILE")?,
    };
    if transport == crate::syslog::Transport::Tls {
        // Bad files stop the start, not every later delivery.
        if let Err(reason) = dsx_service::tls::client_config(&tls) {
            let var = if tls.ca_bundle.as_ref().is_some_and(|p| reason.contains(&*p.to_string_lossy())) {
                "DSXCONNECT_SYSLOG__TLS_CA_FILE"
            } else {
                "DSXCONNECT_SYSLOG__TLS_CERT_FILE"
            };
            return Err(ConfigError::Invalid { var, reason });
        }
    }
    Ok(Some(SyslogSettings { host, port, transport, format, queue_size, tls }))
}

/// A client certificate and key: both or neither.
fn identity(
    get: &impl Fn(&str) -> Option<String>,
    cert_var: &'static str,
    key_var: &'static str,
) -> Result<Option<(PathBuf, PathBuf)>, ConfigError> {
    match (get(cert_var), get(key_var)) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => Ok(Some((cert.into(), key.into()))),
        (Some(_), None) => {
            Err(ConfigError::Invalid { var: key_var, reason: format!("{cert_var} is set, so is needed") })
        }
        (None, Some(_)) => {
            Err(ConfigError::Invalid { var: cert_var, reason: format!("{key_var} is set, so is needed") })
        }
    }
}

fn parse_bool(get: &impl Fn(&str) -> Option<String>, var: &'static str, default: bool) -> Result<bool, ConfigError> {
    dsx_util::env::parse_bool(var, get(var).as_deref(), default)
        .map_err(|e| ConfigError::Invalid { var, reason: e.reason })
}

fn parse_num(get: &impl Fn(&str) -> Option<String>, var: &'static str, default: u64) -> Result<u64, ConfigError> {
    dsx_util::env::parse_num(var, get(var).as_deref(), default)
        .map_err(|e| ConfigError::Invalid { var, reason: e.reason })
}

fn read_secret_key(get: &impl Fn(&str) -> Option<String>) -> Result<Option<SecretString>, ConfigError> {
    if let Some(key) = get("DSXCONNECT_AUTH__SECRET_KEY") {
        return Ok(Some(SecretString::from(key)));
    }
    let Some(path) = get("DSXCONNECT_AUTH__SECRET_KEY_FILE") else { return Ok(None) };
    std::fs::read_to_string(&path)
        .map(|text| Some(SecretString::from(text.trim().to_owned())))
        .map_err(|e| ConfigError::Invalid { var: "DSXCONNECT_AUTH__SECRET_KEY_FILE", reason: format!("{path}: {e}") })
}

/// Parse `--listen`.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|e| format!("{s:?} is not an address like 0.0.0.0:8586 ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Settings::from_lookup(|k| map.get(k).cloned())
    }

    use std::path::Path;

    #[test]
    fn defaults_are_local_and_safe() {
        let s = settings(&[]).unwrap();
        assert!(!s.auth.enabled);
        assert!(!s.auth.break_glass, "break-glass defaults off");
        assert_eq!(s.store, StoreSettings::Embedded { data_dir: "./data".into() });
        assert_eq!(s.auth.max_skew, 60);
        assert_eq!(s.auth.key_grace, Duration::from_secs(120));
        assert_eq!(s.presence_ttl, Duration::from_secs(600));
        assert_eq!(s.max_body_bytes, 16 << 20);
        assert!(s.scanner.verify_tls, "scanner certificates are verified by default");
        assert_eq!(s.job_retention, Some(Duration::from_secs(7 * 24 * 3600)), "finished jobs kept 7 days");
    }

    #[test]
    fn job_retention_reads_seconds_and_zero_keeps_forever() {
        let s = settings(&[("DSXCONNECT_RESULTS_DB__JOB_RETENTION_SECONDS", "3600")]).unwrap();
        assert_eq!(s.job_retention, Some(Duration::from_secs(3600)));
        let s = settings(&[("DSXCONNECT_RESULTS_DB__JOB_RETENTION_SECONDS", "0")]).unwrap();
        assert_eq!(s.job_retention, None);
    }

    #[test]
    fn scanner_settings() {
        let s = settings(&[("DSXCONNECT_SCANNER__SCAN_BINARY_URL", "https://dsxa:5000/scan/binary/v2/")]).unwrap();
        assert_eq!(s.scanner.kind, ScannerKind::Dsxa);
        assert_eq!(s.scanner.base_url.as_deref(), Some("https://dsxa:5000"));
        let s = settings(&[("DSXCONNECT_SCANNER__BASE_URL", "https://d"), ("DSXCONNECT_SCANNER__VERIFY_TLS", "false")])
            .unwrap();
        assert!(!s.scanner.verify_tls);
        let err = settings(&[("DSXCONNECT_SCANNER__VERIFY_TLS", "sometimes")]).unwrap_err();
        assert!(err.to_string().starts_with("DSXCONNECT_SCANNER__VERIFY_TLS:"), "{err}");
        let err = settings(&[("DSXCONNECT_SCANNER__KIND", "dsxa")]).unwrap_err();
        assert!(err.to_string().contains("DSXCONNECT_SCANNER__BASE_URL"), "{err}");
    }

    #[test]
    fn python_scanner_names_are_aliases() {
        let s = settings(&[("SCAN_BINARY_URL", "http://dsxa:5000/scan/binary/v2")]).unwrap();
        assert_eq!((s.scanner.kind, s.scanner.base_url.as_deref()), (ScannerKind::Dsxa, Some("http://dsxa:5000")));
        let s =
            settings(&[("SCANNER_BASE_URL", "http://b:5000"), ("SCAN_BINARY_URL", "http://x/scan/binary/v2")]).unwrap();
        assert_eq!(s.scanner.base_url.as_deref(), Some("http://b:5000"));
        let s = settings(&[
            ("DSXCONNECT_SCANNER__SCAN_BINARY_URL", "http://ours:5000/api/scan/binary/v2"),
            ("SCANNER_BASE_URL", "http://legacy:5000"),
        ])
        .unwrap();
        assert_eq!(s.scanner.base_url.as_deref(), Some("http://ours:5000/api"), "ours win, cut at /scan/binary");
        let token = |pairs: &[(&str, &str)]| {
            settings(pairs).unwrap().scanner.auth_token.map(|t| secrecy::ExposeSecret::expose_secret(&t).to_owned())
        };
        assert_eq!(token(&[("AUTH_TOKEN", "a")]).as_deref(), Some("a"));
        assert_eq!(token(&[("AUTH_TOKEN", "a"), ("SCANNER_AUTH_TOKEN", "s")]).as_deref(), Some("s"));
        assert_eq!(
            token(&[("SCANNER_AUTH_TOKEN", "s"), ("DSXCONNECT_SCANNER__AUTH_TOKEN", "o")]).as_deref(),
            Some("o")
        );
    }

    #[test]
    fn syslog_reads_ours_and_python_names() {
        use crate::syslog::{Format, Transport};
        assert!(settings(&[]).unwrap().syslog.is_none(), "off unless configured");
        let py = settings(&[
            ("DSXCONNECT_SYSLOG__SYSLOG_SERVER_URL", "10.0.0.9"),
            ("DSXCONNECT_SYSLOG__SYSLOG_SERVER_PORT", "5514"),
        ])
        .unwrap()
        .syslog
        .unwrap();
        assert_eq!(
            (py.host.as_str(), py.port, py.transport, py.format),
            ("10.0.0.9", 5514, Transport::Tcp, Format::Python)
        );
        let ours = settings(&[
            ("DSXCONNECT_SYSLOG__ENABLED", "true"),
            ("DSXCONNECT_SYSLOG__HOST", "ours"),
            ("DSXCONNECT_SYSLOG__PORT", "600"),
            ("DSXCONNECT_SYSLOG__SYSLOG_SERVER_URL", "python"),
            ("DSXCONNECT_SYSLOG__SYSLOG_SERVER_PORT", "700"),
        ])
        .unwrap()
        .syslog
        .unwrap();
        assert_eq!(
            (ours.host.as_str(), ours.port, ours.transport, ours.format),
            ("ours", 600, Transport::Udp, Format::Rfc5424)
        );
        let chosen = settings(&[
            ("DSXCONNECT_SYSLOG__SYSLOG_SERVER_URL", "h"),
            ("DSXCONNECT_SYSLOG__TRANSPORT", "udp"),
            ("DSXCONNECT_SYSLOG__FORMAT", "rfc5424"),
        ])
        .unwrap()
        .syslog
        .unwrap();
        assert_eq!((chosen.transport, chosen.format), (Transport::Udp, Format::Rfc5424));
        assert!(settings(&[("DSXCONNECT_SYSLOG__SYSLOG_SERVER_URL", "h"), ("DSXCONNECT_SYSLOG__ENABLED", "false")])
            .unwrap()
            .syslog
            .is_none());
        let tls = settings(&[
            ("DSXCONNECT_SYSLOG__SYSLOG_SERVER_URL", "h"),
            ("DSXCONNECT_SYSLOG__TRANSPORT", "tls"),
            ("DSXCONNECT_SYSLOG__TLS_INSECURE", "true"),
        ])
        .unwrap()
        .syslog
        .unwrap();
        assert_eq!(tls.transport, Transport::Tls);
        assert!(!tls.tls.verify);
        let err = settings(&[("DSXCONNECT_SYSLOG__SYSLOG_SERVER_URL", "h"), ("DSXCONNECT_SYSLOG__TRANSPORT", "ssl")])
            .unwrap_err();
        assert!(err.to_string().contains("DSXCONNECT_SYSLOG__TRANSPORT") && err.to_string().contains("ssl"), "{err}");
        let err = settings(&[
            ("DSXCONNECT_SYSLOG__HOST", "h"),
            ("DSXCONNECT_SYSLOG__ENABLED", "true"),
            ("DSXCONNECT_SYSLOG__TRANSPORT", "tls"),
            ("DSXCONNECT_SYSLOG__TLS_CA_FILE", "/nonexistent/ca.pem"),
        ])
        .unwrap_err();
        assert!(
            err.to_string().contains("DSXCONNECT_SYSLOG__TLS_CA_FILE")
                && err.to_string().contains("/nonexistent/ca.pem"),
            "{err}"
        );
    }

    #[test]
    fn tls_settings() {
        let s = settings(&[]).unwrap();
        assert!(s.tls.is_none(), "plain HTTP unless DSXCONNECT_USE_TLS");
        assert!(s.connectors_tls.verify && s.connectors_tls.ca_bundle.is_none());
        let err = settings(&[("DSXCONNECT_USE_TLS", "true")]).unwrap_err();
        assert!(err.to_string().contains("DSXCONNECT_TLS_CERTFILE"), "{err}");
        let s = settings(&[
            ("DSXCONNECT_USE_TLS", "true"),
            ("DSXCONNECT_TLS_CERTFILE", "/c.pem"),
            ("DSXCONNECT_TLS_KEYFILE", "/k.pem"),
            ("DSXCONNECT_TLS_CLIENT_CA", "/ca.pem"),
            ("DSXCONNECT_CONNECTORS__CA_BUNDLE", "/cb.pem"),
            ("DSXCONNECT_CONNECTORS__TLS_CLIENT_CERTFILE", "/cc.pem"),
            ("DSXCONNECT_CONNECTORS__TLS_CLIENT_KEYFILE", "/ck.pem"),
            ("DSXCONNECT_SCANNER__CA_BUNDLE", "/sb.pem"),
        ])
        .unwrap();
        let files = s.tls.unwrap();
        assert_eq!((files.cert.to_str(), files.client_ca.as_deref()), (Some("/c.pem"), Some(Path::new("/ca.pem"))));
        assert_eq!(s.connectors_tls.ca_bundle.as_deref(), Some(Path::new("/cb.pem")));
        assert_eq!(s.connectors_tls.identity, Some(("/cc.pem".into(), "/ck.pem".into())));
        assert_eq!(s.scanner.ca_bundle.as_deref(), Some(Path::new("/sb.pem")));
        let err = settings(&[("DSXCONNECT_CONNECTORS__TLS_CLIENT_CERTFILE", "/cc.pem")]).unwrap_err();
        assert!(err.to_string().contains("DSXCONNECT_CONNECTORS__TLS_CLIENT_KEYFILE"), "{err}");
    }

    #[test]
    fn batch_intake_defaults_on_and_reads_python_names() {
        let b = settings(&[]).unwrap().batch;
        assert_eq!(b, BatchSettings { enabled: true, max_size: 100, default_size: 10, max_items: 1000 });
        let b = settings(&[
            ("DSXCONNECT_WORKERS__SCAN_REQUEST_BATCH_ENABLED", "false"),
            ("DSXCONNECT_WORKERS__SCAN_REQUEST_BATCH_MAX_SIZE", "7"),
            ("DSXCONNECT_WORKERS__SCAN_REQUEST_BATCH_DEFAULT_SIZE", "3"),
        ])
        .unwrap()
        .batch;
        assert_eq!(b, BatchSettings { enabled: false, max_size: 7, default_size: 3, max_items: 1000 });
    }

    #[test]
    fn production_env_uses_short_presence_ttl_and_redis() {
        let s = settings(&[("DSXCONNECT_APP_ENV", "prod"), ("DSXCONNECT_REDIS_URL", "redis://r:6379/0")]).unwrap();
        assert_eq!(s.presence_ttl, Duration::from_secs(120));
        assert_eq!(s.store, StoreSettings::Redis { url: "redis://r:6379/0".into() });
    }

    #[test]
    fn auth_enabled_without_token_refuses_to_start() {
        let s = settings(&[("DSXCONNECT_AUTH__ENABLED", "true")]).unwrap();
        assert_eq!(s.validate(), Err(ConfigError::NoEnrollmentToken));
        let s =
            settings(&[("DSXCONNECT_AUTH__ENABLED", "true"), ("DSXCONNECT_AUTH__ENROLLMENT_TOKENS", " , ")]).unwrap();
        assert_eq!(s.validate(), Err(ConfigError::NoEnrollmentToken));
        let s = settings(&[("DSXCONNECT_AUTH__ENABLED", "true"), ("DSXCONNECT_AUTH__ENROLLMENT_TOKEN", "t")]).unwrap();
        assert_eq!(s.validate(), Ok(()));
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err = settings(&[("DSXCONNECT_AUTH__ENABLED", "maybe")]).unwrap_err();
        assert!(err.to_string().starts_with("DSXCONNECT_AUTH__ENABLED:"), "{err}");
        let err = settings(&[("DSXCONNECT_AUTH__HMAC_MAX_SKEW", "-5")]).unwrap_err();
        assert!(err.to_string().starts_with("DSXCONNECT_AUTH__HMAC_MAX_SKEW:"), "{err}");
    }

    #[test]
    fn redis_passwords_are_redacted() {
        assert_eq!(redact_url("redis://:hunter2@redis:6379/0"), "redis://:***@redis:6379/0");
        assert_eq!(redact_url("rediss://user:p%40ss@r.example:6380/1"), "rediss://user:***@r.example:6380/1");
        assert_eq!(redact_url("redis://redis:6379/0"), "redis://redis:6379/0");
        assert_eq!(redact_url("redis//:hunter2@x"), "?://<unparseable URL>");
        let shown = StoreSettings::Redis { url: "redis://:hunter2@127.0.0.1:1/0".into() }.location();
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
