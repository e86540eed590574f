//! The S3-specific `DSXCONNECTOR_*` settings: where the asset and the quarantine are, how to
//! reach the store, and the event queue. Bad input is refused at start with the variable's name.

use std::path::PathBuf;

use axum::http::Uri;

/// A bucket and a key prefix in it (`""`, or ending in `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketPrefix {
    pub bucket: String,
    pub prefix: String,
}

impl BucketPrefix {
    /// `bucket` or `bucket/prefix` (an `s3://` scheme is accepted too).
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        let raw = raw.strip_prefix("s3://").unwrap_or(raw);
        let (bucket, prefix) = raw.split_once('/').unwrap_or((raw, ""));
        check_bucket(bucket)?;
        Ok(Self { bucket: bucket.to_owned(), prefix: normalize_prefix(prefix) })
    }

    /// Is `key` (in `bucket`) at or below this prefix?
    pub fn holds(&self, bucket: &str, key: &str) -> bool {
        bucket == self.bucket && key.starts_with(&self.prefix)
    }
}

impl std::fmt::Display for BucketPrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.bucket, self.prefix.trim_end_matches('/'))
    }
}

/// `a/b` → `a/b/`; `""` and `/` → `""`.
fn normalize_prefix(prefix: &str) -> String {
    let p = prefix.trim_matches('/');
    if p.is_empty() {
        String::new()
    } else {
        format!("{p}/")
    }
}

/// S3's bucket naming rules (general purpose buckets), so a typo fails at start, not at the
/// first listing.
fn check_bucket(name: &str) -> Result<(), String> {
    let ok_chars = name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
    let ends_ok = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !(3..=63).contains(&name.len())
        || !ok_chars
        || !ends_ok(name.bytes().next())
        || !ends_ok(name.bytes().last())
        || name.contains("..")
    {
        return Err(format!(
            "{name:?} is not a valid bucket name (3-63 lowercase letters, digits, dots and hyphens); expected `bucket` or `bucket/prefix`"
        ));
    }
    Ok(())
}

/// How the connector trusts the endpoint's TLS certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verify {
    /// The platform's roots (default).
    System,
    /// The platform's roots plus this PEM bundle (a private CA of an S3-compatible store).
    CaBundle(PathBuf),
    /// `false` on a plain-`http` endpoint, where there is nothing to verify.
    NotApplicable,
}

#[derive(Debug, Clone)]
pub struct S3Settings {
    pub asset: BucketPrefix,
    pub quarantine: BucketPrefix,
    pub endpoint_url: Option<String>,
    pub verify: Verify,
    pub region: Option<String>,
    pub sqs_queue_url: Option<String>,
    /// Larger objects are reported unscannable without being read (`None`: no limit here;
    /// dsx-connect's own size limit still applies).
    pub max_object_size: Option<u64>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{var}: {reason}")]
pub struct SettingsError {
    pub var: &'static str,
    pub reason: String,
}

fn err(var: &'static str, reason: impl Into<String>) -> SettingsError {
    SettingsError { var, reason: reason.into() }
}

impl S3Settings {
    pub fn from_env(asset: &str, quarantine: &str) -> Result<Self, SettingsError> {
        Self::from_lookup(asset, quarantine, |k| std::env::var(k).ok())
    }

    /// `asset` and `quarantine` are the framework's `DSXCONNECTOR_ASSET` and
    /// `DSXCONNECTOR_ITEM_ACTION_MOVE_METAINFO`.
    pub fn from_lookup(
        asset: &str,
        quarantine: &str,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, SettingsError> {
        let setting = |name: &str| get(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        if asset.trim().is_empty() {
            return Err(err("DSXCONNECTOR_ASSET", "must name the bucket to scan: `bucket` or `bucket/prefix`"));
        }
        let asset = BucketPrefix::parse(asset).map_err(|r| err("DSXCONNECTOR_ASSET", r))?;
        let quarantine = parse_quarantine(&asset, quarantine)?;
        if quarantine.bucket == asset.bucket && quarantine.prefix.is_empty() {
            return Err(err(
                "DSXCONNECTOR_ITEM_ACTION_MOVE_METAINFO",
                "the quarantine must be a prefix, not a whole scanned bucket",
            ));
        }
        let endpoint_url = setting("DSXCONNECTOR_S3_ENDPOINT_URL").map(|u| check_endpoint(&u)).transpose()?;
        let verify = parse_verify(setting("DSXCONNECTOR_S3_ENDPOINT_VERIFY").as_deref(), endpoint_url.as_deref())?;
        let max_object_size = match setting("DSXCONNECTOR_S3_MAX_OBJECT_SIZE_BYTES") {
            None => None,
            Some(v) => Some(v.parse::<u64>().map_err(|_| {
                err("DSXCONNECTOR_S3_MAX_OBJECT_SIZE_BYTES", format!("expected a whole number of bytes, got {v:?}"))
            })?)
            .filter(|n| *n > 0),
        };
        let sqs_queue_url = setting("DSXCONNECTOR_S3_SQS_QUEUE_URL")
            .map(|u| {
                check_url(&u).map_err(|r| err("DSXCONNECTOR_S3_SQS_QUEUE_URL", r))?;
                Ok(u)
            })
            .transpose()?;
        Ok(Self {
            asset,
            quarantine,
            endpoint_url,
            verify,
            region: setting("AWS_REGION").or_else(|| setting("AWS_DEFAULT_REGION")),
            sqs_queue_url,
            max_object_size,
        })
    }
}

/// `prefix` (no `/`): a prefix in the asset's bucket; `bucket/prefix`: elsewhere.
pub fn parse_quarantine(asset: &BucketPrefix, raw: &str) -> Result<BucketPrefix, SettingsError> {
    const VAR: &str = "DSXCONNECTOR_ITEM_ACTION_MOVE_METAINFO";
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(err(VAR, "empty; expected a quarantine `prefix` or `bucket/prefix`"));
    }
    if raw.starts_with("s3://") || raw.trim_matches('/').contains('/') {
        return BucketPrefix::parse(raw).map_err(|r| err(VAR, r));
    }
    Ok(BucketPrefix { bucket: asset.bucket.clone(), prefix: normalize_prefix(raw) })
}

fn check_url(raw: &str) -> Result<(), String> {
    let uri: Uri = raw.parse().map_err(|e| format!("{raw:?} is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(format!("{raw:?} must start with http:// or https://")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("{raw:?} has no host"));
    }
    Ok(())
}

fn check_endpoint(raw: &str) -> Result<String, SettingsError> {
    check_url(raw).map_err(|r| err("DSXCONNECTOR_S3_ENDPOINT_URL", r))?;
    Ok(raw.trim_end_matches('/').to_owned())
}

/// `true` (default), a CA bundle path, or `false` — which is refused for `https`: turning
/// verification off would let anyone on the path read and change what is scanned.
fn parse_verify(raw: Option<&str>, endpoint: Option<&str>) -> Result<Verify, SettingsError> {
    const VAR: &str = "DSXCONNECTOR_S3_ENDPOINT_VERIFY";
    let plain_http = endpoint.is_some_and(|e| e.starts_with("http://"));
    match raw.map(|v| (v, v.to_ascii_lowercase())) {
        None => Ok(Verify::System),
        Some((_, l)) if ["1", "true", "yes", "on"].contains(&l.as_str()) => Ok(Verify::System),
        Some((_, l)) if ["0", "false", "no", "off"].contains(&l.as_str()) => {
            if plain_http {
                Ok(Verify::NotApplicable)
            } else {
                Err(err(
                    VAR,
                    "false is refused for an https endpoint (its certificate would not be checked); set it to the path of the endpoint's CA bundle (PEM) instead",
                ))
            }
        }
        Some((path, _)) => {
            let path = PathBuf::from(path);
            if !path.is_file() {
                return Err(err(
                    VAR,
                    format!("expected true, false or a CA bundle file; {} is not a file", path.display()),
                ));
            }
            Ok(Verify::CaBundle(path))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(asset: &str, quarantine: &str, pairs: &[(&str, &str)]) -> Result<S3Settings, SettingsError> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        S3Settings::from_lookup(asset, quarantine, |k| map.get(k).cloned())
    }

    #[test]
    fn asset_and_quarantine_forms() {
        let s = settings("my-bucket", "dsxconnect-quarantine", &[]).unwrap();
        assert_eq!(s.asset, BucketPrefix { bucket: "my-bucket".into(), prefix: "".into() });
        assert_eq!(s.quarantine, BucketPrefix { bucket: "my-bucket".into(), prefix: "dsxconnect-quarantine/".into() });
        let s = settings("s3://my-bucket/in/box/", "quarantine-bucket/held", &[]).unwrap();
        assert_eq!(s.asset.prefix, "in/box/");
        assert_eq!(s.quarantine, BucketPrefix { bucket: "quarantine-bucket".into(), prefix: "held/".into() });
        assert!(s.asset.holds("my-bucket", "in/box/a.txt"));
        assert!(!s.asset.holds("my-bucket", "in/boxes/a.txt"));
        assert!(!s.asset.holds("other", "in/box/a.txt"));
    }

    #[test]
    fn bad_input_names_the_variable() {
        for bad in ["", "B", "ab", "Upper", "bad_bucket/x", "-dash", "a..b", &"x".repeat(64)] {
            assert_eq!(settings(bad, "q", &[]).unwrap_err().var, "DSXCONNECTOR_ASSET", "{bad:?}");
        }
        assert_eq!(settings("bkt", "", &[]).unwrap_err().var, "DSXCONNECTOR_ITEM_ACTION_MOVE_METAINFO");
        assert_eq!(settings("bkt", "s3://bkt/", &[]).unwrap_err().var, "DSXCONNECTOR_ITEM_ACTION_MOVE_METAINFO");
        for bad in ["localhost:9000", "ftp://x", "http://", "not a url"] {
            let e = settings("bkt", "q", &[("DSXCONNECTOR_S3_ENDPOINT_URL", bad)]).unwrap_err();
            assert_eq!(e.var, "DSXCONNECTOR_S3_ENDPOINT_URL", "{bad:?}");
        }
        let e = settings("bkt", "q", &[("DSXCONNECTOR_S3_MAX_OBJECT_SIZE_BYTES", "1GB")]).unwrap_err();
        assert_eq!(e.var, "DSXCONNECTOR_S3_MAX_OBJECT_SIZE_BYTES");
        let e = settings("bkt", "q", &[("DSXCONNECTOR_S3_SQS_QUEUE_URL", "queue-name")]).unwrap_err();
        assert_eq!(e.var, "DSXCONNECTOR_S3_SQS_QUEUE_URL");
    }

    #[test]
    fn verify_is_never_silently_off_for_https() {
        let https = [
            ("DSXCONNECTOR_S3_ENDPOINT_URL", "https://minio.example:9000"),
            ("DSXCONNECTOR_S3_ENDPOINT_VERIFY", "false"),
        ];
        assert!(settings("bkt", "q", &https).unwrap_err().reason.contains("CA bundle"));
        let http =
            [("DSXCONNECTOR_S3_ENDPOINT_URL", "http://127.0.0.1:9000"), ("DSXCONNECTOR_S3_ENDPOINT_VERIFY", "false")];
        assert_eq!(settings("bkt", "q", &http).unwrap().verify, Verify::NotApplicable);
        let missing = [("DSXCONNECTOR_S3_ENDPOINT_VERIFY", "/nonexistent/ca.pem")];
        assert_eq!(settings("bkt", "q", &missing).unwrap_err().var, "DSXCONNECTOR_S3_ENDPOINT_VERIFY");
        assert_eq!(settings("bkt", "q", &[]).unwrap().verify, Verify::System);
    }
}
