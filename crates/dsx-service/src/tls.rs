//! TLS for every hop, with rustls and its ring provider: the server side of [`crate::serve`]
//! (certificate re-read when its files change, optional client certificates), the one
//! builder every outbound HTTP client uses, and error text that names the TLS cause.
//!
//! Private keys are read, handed to rustls and dropped; no message here carries key bytes.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// How often certificate files are checked for changes (Kubernetes swaps mounted Secrets
/// in place; a second or two of lag is harmless, polling works on every filesystem).
pub const RELOAD_EVERY: Duration = Duration::from_secs(1);

/// The ring provider, the only one compiled in.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Names of the variables that configure a binary's HTTPS listener.
#[derive(Clone, Copy, Debug)]
pub struct ServerTlsVars {
    pub use_tls: &'static str,
    pub certfile: &'static str,
    pub keyfile: &'static str,
    pub client_ca: &'static str,
}

/// dsx-connect (API, worker health port) and `scanner serve`.
pub const DSXCONNECT_TLS: ServerTlsVars = ServerTlsVars {
    use_tls: "DSXCONNECT_USE_TLS",
    certfile: "DSXCONNECT_TLS_CERTFILE",
    keyfile: "DSXCONNECT_TLS_KEYFILE",
    client_ca: "DSXCONNECT_TLS_CLIENT_CA",
};

/// Every connector.
pub const DSXCONNECTOR_TLS: ServerTlsVars = ServerTlsVars {
    use_tls: "DSXCONNECTOR_USE_TLS",
    certfile: "DSXCONNECTOR_TLS_CERTFILE",
    keyfile: "DSXCONNECTOR_TLS_KEYFILE",
    client_ca: "DSXCONNECTOR_TLS_CLIENT_CA",
};

/// Where a listener's certificate, key and (for mutual TLS) client CA are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerTlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Client certificates signed by this CA are verified; routes that ask for one
    /// ([`require_client_cert`]) refuse callers without.
    pub client_ca: Option<PathBuf>,
}

/// Parse a boolean setting the way every binary does (`dsx_util::env::parse_bool`).
pub fn parse_bool(var: &str, value: Option<String>, default: bool) -> Result<bool, String> {
    dsx_util::env::parse_bool(var, value.as_deref(), default).map_err(|e| e.to_string())
}

impl ServerTlsFiles {
    pub fn from_env(vars: ServerTlsVars) -> Result<Option<Self>, String> {
        Self::from_lookup(vars, |k| std::env::var(k).ok())
    }

    /// `None` unless `<use_tls>` is true; then the certificate and key are required.
    pub fn from_lookup(vars: ServerTlsVars, get: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, String> {
        let get = |k: &str| get(k).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        if !parse_bool(vars.use_tls, get(vars.use_tls), false)? {
            return Ok(None);
        }
        let need = |var: &str| get(var).map(PathBuf::from).ok_or_else(|| format!("{}=true needs {var}", vars.use_tls));
        Ok(Some(Self {
            cert: need(vars.certfile)?,
            key: need(vars.keyfile)?,
            client_ca: get(vars.client_ca).map(PathBuf::from),
        }))
    }
}

/// Certificates from a PEM file; an error names the file and the reason.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not a PEM certificate file ({e})", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate (BEGIN CERTIFICATE) in it", path.display()));
    }
    Ok(certs)
}

/// A private key from a PEM file. The parser's own message is not passed on: it could
/// quote part of the file.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|_| format!("{}: no PEM private key (BEGIN PRIVATE KEY, RSA or EC) in it", path.display()))
}

/// A certificate chain and its key, checked to belong together.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, String> {
    let certs = read_certs(cert)?;
    let der = read_key(key)?;
    let signing = provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| format!("{}: unusable private key ({e})", key.display()))?;
    let certified = CertifiedKey::new(certs, signing);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(certified),
        Err(e) => Err(format!("{} does not belong to the certificate in {} ({e})", key.display(), cert.display())),
    }
}

fn read_roots(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path)? {
        roots.add(cert).map_err(|e| format!("{}: not a usable CA certificate ({e})", path.display()))?;
    }
    Ok(roots)
}

/// The served certificate, swapped when its files change. Connections already open keep
/// the certificate they were made with; the next handshake gets the new one.
#[derive(Debug)]
pub struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: ArcSwap<CertifiedKey>,
    /// Contents last looked at (good or bad), so a bad file is reported once, not every poll.
    seen: Mutex<Vec<u8>>,
}

impl ReloadingCert {
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, String> {
        let seen = Self::snapshot(cert_path, key_path).unwrap_or_default();
        let key = load_certified_key(cert_path, key_path)?;
        Ok(Self {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            current: ArcSwap::from_pointee(key),
            seen: Mutex::new(seen),
        })
    }

    fn snapshot(cert: &Path, key: &Path) -> std::io::Result<Vec<u8>> {
        let mut both = std::fs::read(cert)?;
        both.extend_from_slice(b"\0--key--\0");
        both.extend_from_slice(&std::fs::read(key)?);
        Ok(both)
    }

    /// Re-read the files if they changed. Returns true when a new certificate is served;
    /// a bad pair is logged and the old certificate stays.
    pub fn check(&self) -> bool {
        let snapshot = match Self::snapshot(&self.cert_path, &self.key_path) {
            Ok(s) => s,
            Err(err) => {
                let mut seen = self.seen.lock().expect("seen lock");
                if !seen.is_empty() {
                    tracing::warn!(cert = %self.cert_path.display(), key = %self.key_path.display(), error = %err,
                        "TLS certificate files unreadable; still serving the previous certificate");
                    seen.clear();
                }
                return false;
            }
        };
        let mut seen = self.seen.lock().expect("seen lock");
        if *seen == snapshot {
            return false;
        }
        *seen = snapshot;
        match load_certified_key(&self.cert_path, &self.key_path) {
            Ok(key) => {
                self.current.store(Arc::new(key));
                tracing::info!(cert = %self.cert_path.display(), "TLS certificate reloaded");
                true
            }
            Err(reason) => {
                tracing::warn!(%reason, "TLS certificate not reloaded; still serving the previous certificate");
                false
            }
        }
    }

    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// A loaded HTTPS listener configuration for [`crate::serve`].
#[derive(Clone)]
pub struct ServerTls {
    pub(crate) acceptor: tokio_rustls::TlsAcceptor,
    cert: Arc<ReloadingCert>,
    client_ca: bool,
    reload_every: Duration,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").field("cert", &self.cert.cert_path).field("client_ca", &self.client_ca).finish()
    }
}

impl ServerTls {
    /// Read the files; an error names the file and what is wrong with it.
    pub fn load(files: &ServerTlsFiles) -> Result<Self, String> {
        let cert = Arc::new(ReloadingCert::load(&files.cert, &files.key)?);
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS set-up: {e}"))?;
        let builder = match &files.client_ca {
            Some(path) => {
                // Verified when presented; routes that need one refuse requests without
                // (health probes and operators stay reachable without a client certificate).
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(read_roots(path)?), provider())
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(Arc::clone(&cert) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            cert,
            client_ca: files.client_ca.is_some(),
            reload_every: RELOAD_EVERY,
        })
    }

    /// How often the certificate files are checked (tests shorten it).
    pub fn reload_every(mut self, every: Duration) -> Self {
        self.reload_every = every;
        self
    }

    /// Whether a client CA is configured (mutual TLS on the routes that ask for it).
    pub fn verifies_clients(&self) -> bool {
        self.client_ca
    }

    /// Poll the certificate files until the returned task is aborted.
    pub(crate) fn spawn_reloader(&self) -> tokio::task::JoinHandle<()> {
        let cert = Arc::clone(&self.cert);
        let every = self.reload_every;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let cert = Arc::clone(&cert);
                let _ = tokio::task::spawn_blocking(move || cert.check()).await;
            }
        })
    }
}

/// Request extension [`crate::serve`] adds when the peer presented a client certificate
/// that chains to the configured client CA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifiedClientCert;

/// Middleware for routes that need mutual TLS: 403 `client_certificate_required` without a
/// verified client certificate.
pub async fn require_client_cert(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if req.extensions().get::<VerifiedClientCert>().is_some() {
        return next.run(req).await;
    }
    let body = r#"{"detail":"client_certificate_required","message":"this route needs a TLS client certificate signed by the configured client CA"}"#;
    (axum::http::StatusCode::FORBIDDEN, [(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// How an outbound client checks the server it calls, and who it is when asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientTls {
    /// Verify the server certificate (default). Off only by explicit setting.
    pub verify: bool,
    /// Trust only these CAs instead of the built-in public roots.
    pub ca_bundle: Option<PathBuf>,
    /// Client certificate and key for mutual TLS.
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl Default for ClientTls {
    fn default() -> Self {
        Self { verify: true, ca_bundle: None, identity: None }
    }
}

/// The rustls client side every outbound connection uses (HTTP clients, syslog over TLS):
/// the CA bundle or the public web roots, the verification switch, the client identity.
/// An error names the file and the reason.
pub fn client_config(tls: &ClientTls) -> Result<rustls::ClientConfig, String> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?;
    let builder = if !tls.verify {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert(provider)))
    } else {
        let roots = match &tls.ca_bundle {
            Some(path) => read_roots(path)?,
            None => RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() },
        };
        builder.with_root_certificates(roots)
    };
    match &tls.identity {
        Some((cert, key)) => {
            // Same checks as the server side, for the same clear message.
            load_certified_key(cert, key)?;
            builder.with_client_auth_cert(read_certs(cert)?, read_key(key)?).map_err(|e| {
                format!("{} and {}: not a usable client certificate and key ({e})", cert.display(), key.display())
            })
        }
        None => Ok(builder.with_no_client_auth()),
    }
}

/// Every outbound HTTP client of the project is built here: `builder` carries the caller's
/// timeouts, [`client_config`] the TLS side.
pub fn http_client(builder: reqwest::ClientBuilder, tls: &ClientTls) -> Result<reqwest::Client, String> {
    let mut config = client_config(tls)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    builder.use_preconfigured_tls(config).build().map_err(|e| format!("HTTP client: {}", error_chain(&e)))
}

/// `verify: false`: any certificate is accepted, signatures are still checked so the
/// handshake itself stays sound. Only by explicit setting; callers log a warning.
#[derive(Debug)]
struct AcceptAnyServerCert(Arc<CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// An error with its causes, `outer: inner: innermost`, so a refused certificate reads
/// "… invalid peer certificate: UnknownIssuer" instead of only "error sending request".
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cause = err.source();
    while let Some(e) = cause {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = e.source();
    }
    out
}

#[cfg(feature = "certgen")]
pub mod certgen {
    //! A private test CA and certificates it signs (rcgen), for `dsx-connect admin gen-certs`
    //! and the tests. Not a replacement for a real PKI: no revocation, long validity.

    use std::path::{Path, PathBuf};

    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };

    /// A certificate and its private key, PEM.
    #[derive(Clone)]
    pub struct Pem {
        pub cert: String,
        pub key: String,
    }

    impl std::fmt::Debug for Pem {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Pem").field("cert", &self.cert).field("key", &"<redacted>").finish()
        }
    }

    pub struct Ca {
        cert: rcgen::Certificate,
        key: KeyPair,
    }

    fn err(e: rcgen::Error) -> String {
        format!("certificate generation: {e}")
    }

    impl Ca {
        pub fn new(name: &str) -> Result<Self, String> {
            let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, name);
            params.distinguished_name = dn;
            let key = KeyPair::generate().map_err(err)?;
            let cert = params.self_signed(&key).map_err(err)?;
            Ok(Self { cert, key })
        }

        pub fn cert_pem(&self) -> String {
            self.cert.pem()
        }

        pub fn key_pem(&self) -> String {
            self.key.serialize_pem()
        }

        fn issue(&self, name: &str, hosts: &[String], usage: ExtendedKeyUsagePurpose) -> Result<Pem, String> {
            let mut params = CertificateParams::new(hosts.to_vec()).map_err(err)?;
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, name);
            params.distinguished_name = dn;
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
            params.extended_key_usages = vec![usage];
            let key = KeyPair::generate().map_err(err)?;
            let cert = params.signed_by(&key, &self.cert, &self.key).map_err(err)?;
            Ok(Pem { cert: cert.pem(), key: key.serialize_pem() })
        }

        /// A server certificate for these DNS names and IP addresses.
        pub fn server(&self, hosts: &[String]) -> Result<Pem, String> {
            let name = hosts.first().map(String::as_str).unwrap_or("dsx-connect");
            self.issue(name, hosts, ExtendedKeyUsagePurpose::ServerAuth)
        }

        /// A client certificate (mutual TLS).
        pub fn client(&self, name: &str) -> Result<Pem, String> {
            self.issue(name, &[name.to_owned()], ExtendedKeyUsagePurpose::ClientAuth)
        }
    }

    /// Hosts a local set-up needs by default.
    pub fn default_hosts() -> Vec<String> {
        ["localhost", "127.0.0.1", "::1", "dsx-connect", "dsx-connect-api", "filesystem-connector", "dsx-scanner"]
            .iter()
            .map(|h| h.to_string())
            .collect()
    }

    /// Write a test CA, a server certificate for `hosts` and a client certificate into
    /// `dir`: `ca.crt`, `ca.key`, `tls.crt`, `tls.key`, `client.crt`, `client.key` (the names
    /// cert-manager uses for the server pair). Key files are created owner-only.
    pub fn write_set(dir: &Path, hosts: &[String]) -> Result<Vec<PathBuf>, String> {
        let ca = Ca::new("dsx-connect test CA")?;
        let server = ca.server(hosts)?;
        let client = ca.client("dsx-connector")?;
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let files = [
            ("ca.crt", ca.cert_pem(), false),
            ("ca.key", ca.key_pem(), true),
            ("tls.crt", server.cert, false),
            ("tls.key", server.key, true),
            ("client.crt", client.cert, false),
            ("client.key", client.key, true),
        ];
        let mut written = Vec::new();
        for (name, text, secret) in files {
            let path = dir.join(name);
            write_file(&path, text.as_bytes(), secret).map_err(|e| format!("{}: {e}", path.display()))?;
            written.push(path);
        }
        Ok(written)
    }

    fn write_file(path: &Path, bytes: &[u8], secret: bool) -> std::io::Result<()> {
        use std::io::Write;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        if secret {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        #[cfg(not(unix))]
        let _ = secret;
        opts.open(path)?.write_all(bytes)
    }
}
