//! `DSXCONNECTOR_*` environment → [`ConnectorSettings`] (names from the API contract).

use std::path::PathBuf;
use std::time::Duration;

use dsx_model::ItemAction;
use secrecy::SecretString;

/// Defaults a connector kind supplies (its name and remediation default).
#[derive(Clone, Debug)]
pub struct ConnectorDefaults {
    pub name: &'static str,
    pub display_name: &'static str,
    pub item_action: ItemAction,
    pub port: u16,
}

#[derive(Clone, Debug)]
pub struct ConnectorSettings {
    /// Route base, e.g. `filesystem-connector`.
    pub name: String,
    /// This connector's reachable base URL, without the name.
    pub connector_url: String,
    pub dsx_connect_url: String,
    pub asset: String,
    pub asset_display_name: String,
    pub filter: String,
    pub item_action: ItemAction,
    pub item_action_move_metainfo: String,
    pub display_name: String,
    pub display_icon: String,
    pub monitor: bool,
    pub monitor_force_polling: bool,
    pub monitor_poll_interval: Duration,
    pub full_scan_enqueue_concurrency: usize,
    pub data_dir: PathBuf,
    pub auth_enabled: bool,
    pub clock_skew: u64,
    pub enrollment_token: Option<SecretString>,
    pub heartbeat_interval: Duration,
    /// HTTPS on the connector's listener (`DSXCONNECTOR_USE_TLS`, `DSXCONNECTOR_TLS_*`); with
    /// `DSXCONNECTOR_TLS_CLIENT_CA` the routes dsx-connect calls need its client certificate.
    pub tls: Option<dsx_service::tls::ServerTlsFiles>,
    /// How dsx-connect's certificate is checked and the client certificate presented to it
    /// (`DSXCONNECTOR_VERIFY_TLS`, `DSXCONNECTOR_CA_BUNDLE`, `DSXCONNECTOR_TLS_CLIENT_*`).
    pub dsx_tls: dsx_service::ClientTls,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{var}: {reason}")]
pub struct SettingsError {
    pub var: String,
    pub reason: String,
}

impl From<dsx_util::EnvError> for SettingsError {
    fn from(e: dsx_util::EnvError) -> Self {
        Self { var: e.var, reason: e.reason }
    }
}

impl ConnectorSettings {
    pub fn from_env(defaults: &ConnectorDefaults) -> Result<Self, SettingsError> {
        Self::from_lookup(defaults, |k| std::env::var(k).ok())
    }

    pub fn from_lookup(
        defaults: &ConnectorDefaults,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, SettingsError> {
        let get = |k: &str| get(k).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let var = |name: &str| get(&format!("DSXCONNECTOR_{name}"));
        let bool_var = |name: &str, default: bool| -> Result<bool, SettingsError> {
            Ok(dsx_util::env::parse_bool(&format!("DSXCONNECTOR_{name}"), var(name).as_deref(), default)?)
        };
        let num_var = |name: &str, default: u64| -> Result<u64, SettingsError> {
            Ok(dsx_util::env::parse_num(&format!("DSXCONNECTOR_{name}"), var(name).as_deref(), default)?)
        };
        let item_action = match var("ITEM_ACTION") {
            None => defaults.item_action,
            Some(v) => v.parse().map_err(|reason| SettingsError { var: "DSXCONNECTOR_ITEM_ACTION".into(), reason })?,
        };
        let token = ["DSXCONNECT_ENROLLMENT_TOKEN", "DSXCONNECTOR_ENROLLMENT_TOKEN"].iter().find_map(|k| get(k));
        let token = match token {
            Some(t) => Some(t),
            None => match ["DSXCONNECT_ENROLLMENT_TOKEN_FILE", "DSXCONNECTOR_ENROLLMENT_TOKEN_FILE"]
                .iter()
                .find_map(|k| get(k))
            {
                Some(path) => Some(
                    std::fs::read_to_string(&path)
                        .map_err(|e| SettingsError {
                            var: "DSXCONNECT_ENROLLMENT_TOKEN_FILE".into(),
                            reason: format!("{path}: {e}"),
                        })?
                        .lines()
                        .map(str::trim)
                        // The first token line; `#` comments are skipped as the server does.
                        .find(|l| !l.is_empty() && !l.starts_with('#'))
                        .unwrap_or_default()
                        .to_owned(),
                )
                .filter(|t| !t.is_empty()),
                None => None,
            },
        };
        let concurrency = num_var("FULL_SCAN_ENQUEUE_CONCURRENCY", 8)?.clamp(1, 256) as usize;
        let tls = dsx_service::tls::ServerTlsFiles::from_lookup(dsx_service::tls::DSXCONNECTOR_TLS, get)
            .map_err(|reason| SettingsError { var: "DSXCONNECTOR_USE_TLS".into(), reason })?;
        let identity = match (var("TLS_CLIENT_CERTFILE"), var("TLS_CLIENT_KEYFILE")) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some((cert.into(), key.into())),
            (cert, _) => {
                let missing = if cert.is_some() { "KEYFILE" } else { "CERTFILE" };
                return Err(SettingsError {
                    var: format!("DSXCONNECTOR_TLS_CLIENT_{missing}"),
                    reason: "a client certificate needs both DSXCONNECTOR_TLS_CLIENT_CERTFILE and _KEYFILE".into(),
                });
            }
        };
        let dsx_tls = dsx_service::ClientTls {
            verify: bool_var("VERIFY_TLS", true)?,
            ca_bundle: var("CA_BUNDLE").map(PathBuf::from),
            identity,
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        Ok(Self {
            tls,
            dsx_tls,
            name: var("NAME").unwrap_or_else(|| defaults.name.into()),
            connector_url: var("CONNECTOR_URL").unwrap_or_else(|| format!("{scheme}://127.0.0.1:{}", defaults.port)),
            dsx_connect_url: var("DSX_CONNECT_URL").unwrap_or_else(|| "http://127.0.0.1:8586".into()),
            asset: var("ASSET").unwrap_or_default(),
            asset_display_name: var("ASSET_DISPLAY_NAME").unwrap_or_default(),
            filter: var("FILTER").unwrap_or_default(),
            item_action,
            item_action_move_metainfo: var("ITEM_ACTION_MOVE_METAINFO")
                .unwrap_or_else(|| "dsxconnect-quarantine".into()),
            display_name: var("DISPLAY_NAME").unwrap_or_else(|| defaults.display_name.into()),
            display_icon: var("DISPLAY_ICON").unwrap_or_default(),
            monitor: bool_var("MONITOR", false)?,
            monitor_force_polling: bool_var("MONITOR_FORCE_POLLING", false)?,
            monitor_poll_interval: Duration::from_millis(num_var("MONITOR_POLL_INTERVAL_MS", 1000)?.max(10)),
            full_scan_enqueue_concurrency: concurrency,
            data_dir: var("DATA_DIR").unwrap_or_else(|| "./data".into()).into(),
            auth_enabled: bool_var("AUTH__ENABLED", false)?,
            clock_skew: num_var("AUTH__CLOCK_SKEW_SECONDS", 60)?,
            enrollment_token: token.map(SecretString::from),
            heartbeat_interval: Duration::from_secs(num_var("HEARTBEAT_INTERVAL_SECONDS", 60)?.max(1)),
        })
    }

    /// The registered URL: `<connector_url>/<name>`.
    pub fn base_url(&self) -> String {
        format!("{}/{}", self.connector_url.trim_end_matches('/'), self.name)
    }

    /// The exact boot line of the contract (docs/wire-protocol.md, "Both directions").
    pub fn auth_boot_line(&self) -> &'static str {
        match (self.enrollment_token.is_some(), self.auth_enabled) {
            (true, true) => "Connector authentication: enrollment token provided; DSX-HMAC verification enabled.",
            (true, false) => "Connector authentication: enrollment token provided; DSX-HMAC verification disabled.",
            (false, _) => "Connector authentication: no enrollment token; DSX-HMAC verification disabled.",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const DEFAULTS: ConnectorDefaults = ConnectorDefaults {
        name: "filesystem-connector",
        display_name: "Filesystem",
        item_action: ItemAction::Move,
        port: 8620,
    };

    fn settings(pairs: &[(&str, &str)]) -> Result<ConnectorSettings, SettingsError> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        ConnectorSettings::from_lookup(&DEFAULTS, |k| map.get(k).cloned())
    }

    #[test]
    fn defaults_and_base_url() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.base_url(), "http://127.0.0.1:8620/filesystem-connector");
        assert_eq!(s.item_action, ItemAction::Move);
        assert_eq!(s.full_scan_enqueue_concurrency, 8);
        assert!(!s.auth_enabled);
        assert_eq!(
            s.auth_boot_line(),
            "Connector authentication: no enrollment token; DSX-HMAC verification disabled."
        );
    }

    #[test]
    fn token_names_and_alias() {
        let s = settings(&[("DSXCONNECTOR_ENROLLMENT_TOKEN", "t"), ("DSXCONNECTOR_AUTH__ENABLED", "true")]).unwrap();
        assert!(s.enrollment_token.is_some());
        assert_eq!(
            s.auth_boot_line(),
            "Connector authentication: enrollment token provided; DSX-HMAC verification enabled."
        );
        let dir = std::env::temp_dir().join(format!("tok-{}", uuid::Uuid::new_v4()));
        std::fs::write(&dir, "# enrollment token\n\n  from-file \nnext-token\n").unwrap();
        let s = settings(&[("DSXCONNECT_ENROLLMENT_TOKEN_FILE", dir.to_str().unwrap())]).unwrap();
        use secrecy::ExposeSecret;
        assert_eq!(s.enrollment_token.as_ref().map(|t| t.expose_secret()), Some("from-file"), "comments skipped");
        assert_eq!(
            s.auth_boot_line(),
            "Connector authentication: enrollment token provided; DSX-HMAC verification disabled."
        );
        std::fs::remove_file(dir).unwrap();
    }

    #[test]
    fn tls_settings() {
        let s = settings(&[]).unwrap();
        assert!(s.tls.is_none() && s.dsx_tls.verify, "plain listener, dsx-connect verified by default");
        assert_eq!(
            settings(&[("DSXCONNECTOR_USE_TLS", "true")]).unwrap_err().reason,
            "DSXCONNECTOR_USE_TLS=true needs DSXCONNECTOR_TLS_CERTFILE"
        );
        let s = settings(&[
            ("DSXCONNECTOR_USE_TLS", "true"),
            ("DSXCONNECTOR_TLS_CERTFILE", "/c"),
            ("DSXCONNECTOR_TLS_KEYFILE", "/k"),
            ("DSXCONNECTOR_VERIFY_TLS", "false"),
            ("DSXCONNECTOR_CA_BUNDLE", "/ca"),
            ("DSXCONNECTOR_TLS_CLIENT_CERTFILE", "/cc"),
            ("DSXCONNECTOR_TLS_CLIENT_KEYFILE", "/ck"),
        ])
        .unwrap();
        assert_eq!(s.base_url(), "https://127.0.0.1:8620/filesystem-connector", "https by default with TLS on");
        assert!(!s.dsx_tls.verify);
        assert_eq!(s.dsx_tls.ca_bundle, Some(PathBuf::from("/ca")));
        assert_eq!(s.dsx_tls.identity, Some((PathBuf::from("/cc"), PathBuf::from("/ck"))));
        assert_eq!(
            settings(&[("DSXCONNECTOR_TLS_CLIENT_CERTFILE", "/cc")]).unwrap_err().var,
            "DSXCONNECTOR_TLS_CLIENT_KEYFILE"
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        assert_eq!(settings(&[("DSXCONNECTOR_ITEM_ACTION", "shred")]).unwrap_err().var, "DSXCONNECTOR_ITEM_ACTION");
        assert_eq!(settings(&[("DSXCONNECTOR_MONITOR", "maybe")]).unwrap_err().var, "DSXCONNECTOR_MONITOR");
    }
}
