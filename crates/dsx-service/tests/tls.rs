//! HTTPS in the one server loop, against real loopback connections: certificate hot reload
//! (new connections get the new certificate, open ones stay, bad files keep the old one),
//! refusal of clients that do not trust the CA (with the cause), mutual TLS on the routes
//! that ask for it, and the slowloris limits holding for TLS handshakes. Certificates are
//! made by the test CA at test time.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use dsx_service::tls::certgen::{Ca, Pem};
use dsx_service::tls::{ServerTlsFiles, VerifiedClientCert};
use dsx_service::{ClientTls, ServerLimits, ServerTls};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn hosts() -> Vec<String> {
    vec!["127.0.0.1".into(), "localhost".into()]
}

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Self {
        Self { dir: tempfile::tempdir().unwrap() }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        path
    }
    fn pair(&self, prefix: &str, pem: &Pem) -> (PathBuf, PathBuf) {
        (self.write(&format!("{prefix}.crt"), &pem.cert), self.write(&format!("{prefix}.key"), &pem.key))
    }
}

fn der(pem: &Pem) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.cert.as_bytes()).unwrap().to_vec()
}

fn app() -> Router {
    let mtls = Router::new()
        .route("/mtls", get(|| async { "client certificate seen" }))
        .route_layer(axum::middleware::from_fn(dsx_service::tls::require_client_cert));
    Router::new()
        .route("/hello", get(|| async { "hi" }))
        .route(
            "/cert",
            get(|ext: Option<axum::Extension<VerifiedClientCert>>| async move { format!("{}", ext.is_some()) }),
        )
        .merge(mtls)
}

struct Server {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn serve(tls: ServerTls, limits: ServerLimits) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(dsx_service::serve(listener, app(), limits, Some(tls), async {
        let _ = stopped.await;
    }));
    Server { addr, stop: Some(stop) }
}

/// A raw TLS connection trusting `ca` (keep-alive requests by hand), and the certificate
/// the server presented.
async fn connect(
    addr: SocketAddr,
    ca: &Path,
) -> std::io::Result<(tokio_rustls::client::TlsStream<TcpStream>, Vec<u8>)> {
    let tls = ClientTls { ca_bundle: Some(ca.to_owned()), ..Default::default() };
    let config = dsx_service::tls::client_config(&tls).unwrap();
    let tcp = TcpStream::connect(addr).await?;
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await?;
    let cert = stream.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    Ok((stream, cert))
}

/// One HTTP/1.1 request on an open connection; the status code and body.
async fn request(stream: &mut tokio_rustls::client::TlsStream<TcpStream>, path: &str) -> (u16, String) {
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk)).await.unwrap().unwrap();
        assert!(n > 0, "connection closed mid-answer: {}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
                .unwrap_or(0);
            if body.len() >= len {
                let status = head[9..12].parse().unwrap();
                return (status, body[..len].to_owned());
            }
        }
    }
}

/// Connect until the served certificate is `want` (the reloader polls), or fail.
async fn wait_for_cert(addr: SocketAddr, ca: &Path, want: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, got) = connect(addr, ca).await.unwrap();
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "the new certificate was not served within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_certificate_swapped_on_disk_is_served_to_the_next_connection_and_open_ones_stay() {
    let ca = Ca::new("reload CA").unwrap();
    let files = Files::new();
    let ca_path = files.write("ca.crt", &ca.cert_pem());
    let first = ca.server(&hosts()).unwrap();
    let (cert, key) = files.pair("tls", &first);
    let tls = ServerTls::load(&ServerTlsFiles { cert: cert.clone(), key: key.clone(), client_ca: None })
        .unwrap()
        .reload_every(Duration::from_millis(100));
    let server = serve(tls, ServerLimits::default()).await;

    let (mut open, served) = connect(server.addr, &ca_path).await.unwrap();
    assert_eq!(served, der(&first));
    assert_eq!(request(&mut open, "/hello").await, (200, "hi".into()));

    // Rotation as Kubernetes does it: new contents in place, no restart.
    let second = ca.server(&hosts()).unwrap();
    files.pair("tls", &second);
    wait_for_cert(server.addr, &ca_path, &der(&second)).await;
    // The keep-alive connection made before the swap still answers.
    assert_eq!(request(&mut open, "/hello").await, (200, "hi".into()), "open connection dropped by the reload");

    // A bad certificate file: the previous certificate stays.
    files.write("tls.crt", "not a certificate\n");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (mut conn, served) = connect(server.addr, &ca_path).await.unwrap();
    assert_eq!(served, der(&second), "a bad file replaced the served certificate");
    assert_eq!(request(&mut conn, "/hello").await.0, 200);

    // A certificate with someone else's key: refused the same way.
    let third = ca.server(&hosts()).unwrap();
    files.write("tls.crt", &third.cert);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(connect(server.addr, &ca_path).await.unwrap().1, der(&second), "mismatched key accepted");

    // And the reloader keeps going: a good pair afterwards is picked up.
    files.write("tls.key", &third.key);
    wait_for_cert(server.addr, &ca_path, &der(&third)).await;
}

#[tokio::test]
async fn clients_that_do_not_trust_the_ca_are_refused_and_the_error_names_the_cause() {
    let ca = Ca::new("server CA").unwrap();
    let other = Ca::new("some other CA").unwrap();
    let files = Files::new();
    let ca_path = files.write("ca.crt", &ca.cert_pem());
    let other_path = files.write("other.crt", &other.cert_pem());
    let (cert, key) = files.pair("tls", &ca.server(&hosts()).unwrap());
    let server =
        serve(ServerTls::load(&ServerTlsFiles { cert, key, client_ca: None }).unwrap(), ServerLimits::default()).await;
    let url = format!("https://127.0.0.1:{}/hello", server.addr.port());
    let client = |tls: ClientTls| dsx_service::http_client(reqwest::Client::builder(), &tls).unwrap();

    for (what, tls) in [
        ("another CA", ClientTls { ca_bundle: Some(other_path), ..Default::default() }),
        ("the public roots", ClientTls::default()),
    ] {
        let err = client(tls).get(&url).send().await.expect_err(what);
        let text = dsx_service::error_chain(&err);
        assert!(text.contains("UnknownIssuer"), "{what}: the cause is not named: {text}");
    }
    let ok = client(ClientTls { ca_bundle: Some(ca_path), ..Default::default() }).get(&url).send().await.unwrap();
    assert_eq!(ok.text().await.unwrap(), "hi");
    // Only by explicit choice: no verification at all.
    let insecure = client(ClientTls { verify: false, ..Default::default() }).get(&url).send().await.unwrap();
    assert_eq!(insecure.status(), 200);
    // Plain HTTP to the HTTPS port gets no HTTP answer.
    assert!(reqwest::get(format!("http://127.0.0.1:{}/hello", server.addr.port())).await.is_err());
}

#[tokio::test]
async fn mutual_tls_routes_need_a_client_certificate_from_the_configured_ca() {
    let ca = Ca::new("mtls CA").unwrap();
    let other = Ca::new("rogue CA").unwrap();
    let files = Files::new();
    let ca_path = files.write("ca.crt", &ca.cert_pem());
    let (cert, key) = files.pair("tls", &ca.server(&hosts()).unwrap());
    let good = files.pair("client", &ca.client("connector").unwrap());
    let rogue = files.pair("rogue", &other.client("connector").unwrap());
    let tls = ServerTls::load(&ServerTlsFiles { cert, key, client_ca: Some(ca_path.clone()) }).unwrap();
    assert!(tls.verifies_clients());
    let server = serve(tls, ServerLimits::default()).await;
    let base = format!("https://127.0.0.1:{}", server.addr.port());
    let client = |identity: Option<(PathBuf, PathBuf)>| {
        let tls = ClientTls { ca_bundle: Some(ca_path.clone()), identity, ..Default::default() };
        dsx_service::http_client(reqwest::Client::builder(), &tls).unwrap()
    };

    let anonymous = client(None);
    assert_eq!(anonymous.get(format!("{base}/hello")).send().await.unwrap().status(), 200, "probes stay open");
    let refused = anonymous.get(format!("{base}/mtls")).send().await.unwrap();
    assert_eq!(refused.status(), 403);
    assert!(refused.text().await.unwrap().contains("client_certificate_required"));
    assert_eq!(anonymous.get(format!("{base}/cert")).send().await.unwrap().text().await.unwrap(), "false");

    let with_cert = client(Some(good));
    let ok = with_cert.get(format!("{base}/mtls")).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(with_cert.get(format!("{base}/cert")).send().await.unwrap().text().await.unwrap(), "true");

    // A certificate from another CA does not get through the handshake at all.
    assert!(client(Some(rogue)).get(format!("{base}/mtls")).send().await.is_err());
}

#[tokio::test]
async fn a_stalled_tls_handshake_holds_a_connection_slot_only_until_the_deadline() {
    let ca = Ca::new("limits CA").unwrap();
    let files = Files::new();
    let ca_path = files.write("ca.crt", &ca.cert_pem());
    let (cert, key) = files.pair("tls", &ca.server(&hosts()).unwrap());
    let limits =
        ServerLimits { header_read_timeout: Duration::from_secs(1), max_connections: 1, ..ServerLimits::default() };
    let server = serve(ServerTls::load(&ServerTlsFiles { cert, key, client_ca: None }).unwrap(), limits).await;

    // A client that connects and never sends its ClientHello takes the only slot...
    let mut stalled = TcpStream::connect(server.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    // ...so a real client waits until the handshake deadline frees it.
    let (mut conn, _) = tokio::time::timeout(Duration::from_secs(8), connect(server.addr, &ca_path))
        .await
        .expect("the stalled handshake kept the only slot: no handshake deadline")
        .unwrap();
    let waited = started.elapsed();
    assert_eq!(request(&mut conn, "/hello").await.0, 200);
    assert!(waited >= Duration::from_millis(700), "the stalled handshake did not hold the slot ({waited:?})");
    assert!(waited < Duration::from_secs(5), "the handshake deadline did not free the slot ({waited:?})");
    // And the stalled connection was closed by the server.
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(2), stalled.read(&mut byte)).await.unwrap();
    assert!(matches!(read, Ok(0) | Err(_)), "stalled connection still open");
}

#[test]
fn bad_files_are_refused_with_the_path_and_the_reason_and_never_the_key() {
    let ca = Ca::new("files CA").unwrap();
    let files = Files::new();
    let (cert, key) = files.pair("tls", &ca.server(&hosts()).unwrap());
    let load = |cert: &Path, key: &Path| {
        ServerTls::load(&ServerTlsFiles { cert: cert.to_owned(), key: key.to_owned(), client_ca: None }).unwrap_err()
    };

    let missing = files.path("missing.crt");
    let err = load(&missing, &key);
    assert!(err.contains(&missing.display().to_string()) && err.contains("No such file"), "{err}");

    let junk =
        files.write("junk.key", "-----BEGIN PRIVATE KEY-----\nSENTINEL-KEY-MATERIAL\n-----END PRIVATE KEY-----\n");
    let err = load(&cert, &junk);
    assert!(err.contains(&junk.display().to_string()), "{err}");
    assert!(!err.contains("SENTINEL"), "key file contents in an error: {err}");

    let (_, other_key) = files.pair("other", &ca.server(&hosts()).unwrap());
    let err = load(&cert, &other_key);
    assert!(err.contains("does not belong to the certificate"), "{err}");

    let not_pem = files.write("empty.crt", "");
    let err = load(&not_pem, &key);
    assert!(err.contains("no PEM certificate"), "{err}");

    // The client side names its files the same way.
    let err = dsx_service::http_client(
        reqwest::Client::builder(),
        &ClientTls { ca_bundle: Some(missing.clone()), ..Default::default() },
    )
    .unwrap_err();
    assert!(err.contains(&missing.display().to_string()), "{err}");
}
