//! Scan results to syslog, over UDP, TCP or TLS, in one of two frame formats:
//! - [`Format::Rfc5424`]: RFC 5424 messages (TCP and TLS with octet counting, RFC 6587/5425);
//! - [`Format::Python`]: what Python dsx-connect 1.x sends, so its log pipelines keep parsing:
//!   `<134>dsx-connect {"timestamp","source","scan_request","verdict","item_action"}\n\0`.

use std::sync::Arc;
use std::time::Duration;

use dsx_util::unix_now;
use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Mutex};

/// Facility `local0`; severity notice (5) for clean results, warning (4) for malicious ones.
const FACILITY: u8 = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
    /// TCP inside TLS, the server certificate verified (`DSXCONNECT_SYSLOG__TLS_*`).
    Tls,
}

impl std::str::FromStr for Transport {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "udp" => Ok(Transport::Udp),
            "tcp" => Ok(Transport::Tcp),
            "tls" => Ok(Transport::Tls),
            other => Err(format!("expected udp, tcp or tls, got {other:?}")),
        }
    }
}

/// Which frame each result is sent in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Rfc5424,
    Python,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "rfc5424" => Ok(Format::Rfc5424),
            "python" => Ok(Format::Python),
            other => Err(format!("expected rfc5424 or python, got {other:?}")),
        }
    }
}

#[derive(Clone, Debug)]
pub struct SyslogSettings {
    pub host: String,
    pub port: u16,
    pub transport: Transport,
    pub format: Format,
    /// Events waiting for delivery at most (`DSXCONNECT_SYSLOG__QUEUE_SIZE`); more are dropped
    /// and counted.
    pub queue_size: usize,
    /// With [`Transport::Tls`]: CA file, client identity, verification switch.
    pub tls: dsx_service::ClientTls,
}

/// Default of `DSXCONNECT_SYSLOG__QUEUE_SIZE`.
pub const DEFAULT_QUEUE_SIZE: usize = 10_000;

/// Syslog delivery off the scan path: events go into a bounded queue that one background task
/// drains. A slow, silent or unreachable syslog server never holds up a scan; when the queue is
/// full, new events are dropped and counted (`dsxconnect_syslog_dropped_total`).
pub struct Syslog {
    queue: mpsc::Sender<(bool, String)>,
    /// Taken by the first event, which starts the delivery task (inside the runtime).
    pending: std::sync::Mutex<Option<mpsc::Receiver<(bool, String)>>>,
    sink: Arc<Sink>,
    dropped: Counter,
}

struct Sink {
    settings: SyslogSettings,
    hostname: String,
    tcp: Mutex<Option<Box<dyn AsyncWrite + Send + Unpin>>>,
}

/// How long one connect or one write to a TCP syslog server may take.
const TCP_TIMEOUT: Duration = Duration::from_secs(5);

impl Syslog {
    pub fn new(settings: SyslogSettings) -> Self {
        let hostname = std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "-".into());
        let (queue, pending) = mpsc::channel(settings.queue_size.max(1));
        Self {
            queue,
            pending: std::sync::Mutex::new(Some(pending)),
            sink: Arc::new(Sink { settings, hostname, tcp: Mutex::new(None) }),
            dropped: Counter::default(),
        }
    }

    /// Count dropped events into `counter` (the metrics registry's).
    pub fn counting_drops(mut self, counter: Counter) -> Self {
        self.dropped = counter;
        self
    }

    /// Events dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.get()
    }

    /// Queue one result for delivery; never waits for the syslog server.
    pub async fn send(&self, malicious: bool, json: &str) {
        if let Some(pending) = self.pending.lock().expect("syslog lock").take() {
            tokio::spawn(Arc::clone(&self.sink).deliver_all(pending));
        }
        if let Err(mpsc::error::TrySendError::Full(_)) = self.queue.try_send((malicious, json.to_owned())) {
            // Logged on the first drop and every 1000th after, not per event.
            if self.dropped.inc().is_multiple_of(1000) {
                tracing::warn!(dropped = self.dropped.get(), "syslog queue full: events dropped");
            }
        }
    }
}

impl Sink {
    async fn deliver_all(self: Arc<Self>, mut queue: mpsc::Receiver<(bool, String)>) {
        while let Some((malicious, json)) = queue.recv().await {
            self.send(malicious, &json).await;
        }
    }

    /// One result. Failures are logged, never fatal: syslog is a copy, the store is the truth.
    async fn send(&self, malicious: bool, json: &str) {
        let sent = match (self.settings.format, self.settings.transport) {
            (Format::Rfc5424, Transport::Udp) => {
                self.send_udp(&format_rfc5424(malicious, unix_now(), &self.hostname, json)).await
            }
            (Format::Rfc5424, Transport::Tcp | Transport::Tls) => {
                let line = format_rfc5424(malicious, unix_now(), &self.hostname, json);
                self.send_tcp(&format!("{} {line}", line.len())).await
            }
            // Python frames carry their own terminator, on either transport.
            (Format::Python, Transport::Udp) => self.send_udp(&format_python(unix_now(), json)).await,
            (Format::Python, Transport::Tcp | Transport::Tls) => self.send_tcp(&format_python(unix_now(), json)).await,
        };
        if let Err(err) = sent {
            tracing::warn!(error = %err, "syslog delivery failed");
        }
    }

    async fn send_udp(&self, line: &str) -> std::io::Result<()> {
        let socket = tokio::net::UdpSocket::bind("0.0.0.0:0").await?;
        socket.send_to(line.as_bytes(), (self.settings.host.as_str(), self.settings.port)).await.map(|_| ())
    }

    async fn send_tcp(&self, framed: &str) -> std::io::Result<()> {
        let mut conn = self.tcp.lock().await;
        for _ in 0..2 {
            if conn.is_none() {
                *conn = Some(tokio::time::timeout(TCP_TIMEOUT, self.connect()).await??);
            }
            let write = conn.as_mut().expect("connected").write_all(framed.as_bytes());
            match tokio::time::timeout(TCP_TIMEOUT, write).await {
                Ok(Ok(())) => return Ok(()),
                _ => *conn = None, // reconnect once
            }
        }
        Err(std::io::Error::other("syslog connection lost"))
    }

    async fn connect(&self) -> std::io::Result<Box<dyn AsyncWrite + Send + Unpin>> {
        let host = self.settings.host.as_str();
        let tcp = tokio::net::TcpStream::connect((host, self.settings.port)).await?;
        if self.settings.transport != Transport::Tls {
            return Ok(Box::new(tcp));
        }
        // The files were checked at start; re-read here so a rotated CA or client
        // certificate is used from the next connection on.
        let config = dsx_service::tls::client_config(&self.settings.tls).map_err(std::io::Error::other)?;
        let name = rustls_pki_types::ServerName::try_from(host.to_owned())
            .map_err(|e| std::io::Error::other(format!("syslog host {host:?}: {e}")))?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| std::io::Error::other(format!("TLS to syslog {host}: {}", dsx_service::error_chain(&e))))?;
        Ok(Box::new(tls))
    }
}

/// `<PRI>1 TIMESTAMP HOSTNAME dsx-connect PROCID scan_result - MSG`.
pub fn format_rfc5424(malicious: bool, unix: u64, hostname: &str, msg: &str) -> String {
    let severity = if malicious { 4 } else { 5 };
    let pri = FACILITY * 8 + severity;
    format!("<{pri}>1 {} {hostname} dsx-connect {} scan_result - {msg}", rfc3339(unix), std::process::id())
}

/// Python 1.x's frame: facility local0, severity info (134) whatever the verdict, a JSON
/// body of the result's request, verdict and action, then `\n\0`.
pub fn format_python(unix: u64, result_json: &str) -> String {
    let result: serde_json::Value = serde_json::from_str(result_json).unwrap_or_default();
    let body = serde_json::json!({
        "timestamp": rfc3339(unix),
        "source": "dsx-connect",
        "scan_request": result.get("scan_request"),
        "verdict": result.get("verdict"),
        "item_action": result.get("item_action"),
    });
    format!("<134>dsx-connect {body}\n\0")
}

/// UTC RFC 3339 timestamp from Unix seconds (civil-from-days, no calendar crate needed).
fn rfc3339(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs % 3600 / 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_735_689_600), "2025-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_709_164_799), "2024-02-28T23:59:59Z");
        assert_eq!(rfc3339(1_709_251_199), "2024-02-29T23:59:59Z");
    }

    #[test]
    fn priority_reflects_the_verdict() {
        assert!(format_rfc5424(true, 0, "h", "{}").starts_with("<132>1 1970-01-01T00:00:00Z h dsx-connect "));
        assert!(format_rfc5424(false, 0, "h", "{}").starts_with("<133>1 "));
        assert!(format_rfc5424(false, 0, "h", "{\"a\":1}").ends_with(" scan_result - {\"a\":1}"));
    }

    #[tokio::test]
    async fn udp_and_tcp_deliver_to_real_sockets() {
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = udp.local_addr().unwrap().port();
        let s = Syslog::new(SyslogSettings {
            host: "127.0.0.1".into(),
            port,
            transport: Transport::Udp,
            format: Format::Rfc5424,
            queue_size: DEFAULT_QUEUE_SIZE,
            tls: Default::default(),
        });
        s.send(true, "{\"verdict\":\"Malicious\"}").await;
        let mut buf = [0u8; 2048];
        let n = tokio::time::timeout(Duration::from_secs(5), udp.recv(&mut buf)).await.unwrap().unwrap();
        let got = String::from_utf8_lossy(&buf[..n]);
        assert!(got.starts_with("<132>1 ") && got.ends_with("{\"verdict\":\"Malicious\"}"), "{got}");

        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = tcp.local_addr().unwrap().port();
        let s = Syslog::new(SyslogSettings {
            host: "127.0.0.1".into(),
            port,
            transport: Transport::Tcp,
            format: Format::Rfc5424,
            queue_size: DEFAULT_QUEUE_SIZE,
            tls: Default::default(),
        });
        let reader = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let (mut sock, _) = tcp.accept().await.unwrap();
            let mut out = Vec::new();
            while out.len() < 2 || !String::from_utf8_lossy(&out).contains("second") {
                let mut chunk = [0u8; 1024];
                let n = sock.read(&mut chunk).await.unwrap();
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&chunk[..n]);
            }
            String::from_utf8(out).unwrap()
        });
        s.send(false, "first").await;
        s.send(false, "second").await;
        let stream = tokio::time::timeout(Duration::from_secs(5), reader).await.unwrap().unwrap();
        // Octet counting: "<len> <msg>" back to back.
        let (len, rest) = stream.split_once(' ').unwrap();
        let first = &rest[..len.parse::<usize>().unwrap()];
        assert!(first.ends_with(" scan_result - first"), "{stream}");
        assert!(stream.ends_with(" scan_result - second"));
        assert_eq!("TLS".parse::<Transport>(), Ok(Transport::Tls));
        assert!("ssl".parse::<Transport>().unwrap_err().contains("udp, tcp or tls"));
    }

    const RESULT: &str = r#"{"id":3,"scan_request":{"location":"/a/eicar.txt"},"verdict":{"verdict":"Malicious"},"item_action":{"status":"success","item_action":"move"},"status":"action succeeded"}"#;

    fn parse_python_frame(frame: &[u8]) -> serde_json::Value {
        let text = std::str::from_utf8(frame).unwrap();
        let json = text.strip_prefix("<134>dsx-connect ").and_then(|t| t.strip_suffix("\n\0"));
        serde_json::from_str(json.unwrap_or_else(|| panic!("not a Python frame: {text:?}"))).unwrap()
    }

    #[tokio::test]
    async fn python_frames_over_real_udp_and_tcp() {
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let s = Syslog::new(SyslogSettings {
            host: "127.0.0.1".into(),
            port: udp.local_addr().unwrap().port(),
            transport: Transport::Udp,
            format: Format::Python,
            queue_size: DEFAULT_QUEUE_SIZE,
            tls: Default::default(),
        });
        s.send(true, RESULT).await;
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), udp.recv(&mut buf)).await.unwrap().unwrap();
        let doc = parse_python_frame(&buf[..n]);
        assert_eq!(doc["source"], "dsx-connect");
        assert_eq!(doc["verdict"]["verdict"], "Malicious");
        assert_eq!(doc["scan_request"]["location"], "/a/eicar.txt");
        assert_eq!(doc["item_action"]["item_action"], "move");
        assert!(doc["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{doc}");
        let keys: Vec<&str> = doc.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 5, "only Python's five fields: {keys:?}");

        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let s = Syslog::new(SyslogSettings {
            host: "127.0.0.1".into(),
            port: tcp.local_addr().unwrap().port(),
            transport: Transport::Tcp,
            format: Format::Python,
            queue_size: DEFAULT_QUEUE_SIZE,
            tls: Default::default(),
        });
        let reader = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let (mut sock, _) = tcp.accept().await.unwrap();
            let mut out = Vec::new();
            while out.iter().filter(|b| **b == 0).count() < 2 {
                let mut chunk = [0u8; 4096];
                let n = sock.read(&mut chunk).await.unwrap();
                assert!(n > 0, "connection closed early");
                out.extend_from_slice(&chunk[..n]);
            }
            out
        });
        s.send(true, RESULT).await;
        s.send(false, RESULT).await;
        let stream = tokio::time::timeout(Duration::from_secs(5), reader).await.unwrap().unwrap();
        // No octet counting: frames back to back, each ending in "\n\0".
        let frames: Vec<&[u8]> = stream.split_inclusive(|b| *b == 0).collect();
        assert_eq!(frames.len(), 2);
        for frame in frames {
            assert_eq!(parse_python_frame(frame)["verdict"]["verdict"], "Malicious");
        }
    }

    /// A TLS syslog listener in this process that requires a client certificate from `ca`;
    /// what the first accepted connection sends, until `want` octet-counted frames arrived.
    async fn tls_listener(
        ca: &dsx_service::tls::certgen::Ca,
        dir: &std::path::Path,
        want: usize,
    ) -> (u16, tokio::task::JoinHandle<String>) {
        use tokio::io::AsyncReadExt;
        let server = ca.server(&["127.0.0.1".into()]).unwrap();
        std::fs::write(dir.join("srv.crt"), &server.cert).unwrap();
        std::fs::write(dir.join("srv.key"), &server.key).unwrap();
        std::fs::write(dir.join("listener-ca.crt"), ca.cert_pem()).unwrap();
        let cert = dsx_service::tls::ReloadingCert::load(&dir.join("srv.crt"), &dir.join("srv.key")).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for cert in dsx_service::tls::read_certs(&dir.join("listener-ca.crt")).unwrap() {
            roots.add(cert).unwrap();
        }
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), dsx_service::tls::provider())
                .build()
                .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(dsx_service::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(cert));
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let reader = tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                // Handshakes that fail (an untrusting client) are skipped.
                let Ok(mut tls) = acceptor.accept(tcp).await else { continue };
                let mut out = String::new();
                while out.matches(" scan_result - ").count() < want {
                    let mut chunk = [0u8; 4096];
                    let n = tls.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    out.push_str(&String::from_utf8_lossy(&chunk[..n]));
                }
                return out;
            }
        });
        (port, reader)
    }

    #[tokio::test]
    async fn tls_delivers_to_a_tls_listener_with_a_client_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dsx_service::tls::certgen::Ca::new("syslog CA").unwrap();
        let client = ca.client("dsx-connect").unwrap();
        std::fs::write(dir.path().join("ca.crt"), ca.cert_pem()).unwrap();
        std::fs::write(dir.path().join("client.crt"), &client.cert).unwrap();
        std::fs::write(dir.path().join("client.key"), &client.key).unwrap();
        let (port, reader) = tls_listener(&ca, dir.path(), 2).await;
        let s = Syslog::new(SyslogSettings {
            host: "127.0.0.1".into(),
            port,
            transport: Transport::Tls,
            format: Format::Rfc5424,
            queue_size: DEFAULT_QUEUE_SIZE,
            tls: dsx_service::ClientTls {
                verify: true,
                ca_bundle: Some(dir.path().join("ca.crt")),
                identity: Some((dir.path().join("client.crt"), dir.path().join("client.key"))),
            },
        });
        s.send(true, "first").await;
        s.send(false, "second").await;
        let stream = tokio::time::timeout(Duration::from_secs(10), reader).await.unwrap().unwrap();
        // Octet counting inside TLS, as over TCP.
        let (len, rest) = stream.split_once(' ').unwrap();
        assert!(rest[..len.parse::<usize>().unwrap()].ends_with(" scan_result - first"), "{stream}");
        assert!(stream.ends_with(" scan_result - second"), "{stream}");
    }

    #[tokio::test]
    async fn tls_refuses_a_listener_it_does_not_trust_unless_insecure() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dsx_service::tls::certgen::Ca::new("listener CA").unwrap();
        let other = dsx_service::tls::certgen::Ca::new("other CA").unwrap();
        let client = ca.client("dsx-connect").unwrap();
        std::fs::write(dir.path().join("other.crt"), other.cert_pem()).unwrap();
        std::fs::write(dir.path().join("client.crt"), &client.cert).unwrap();
        std::fs::write(dir.path().join("client.key"), &client.key).unwrap();
        let (port, reader) = tls_listener(&ca, dir.path(), 1).await;
        let settings = |verify: bool| SyslogSettings {
            host: "127.0.0.1".into(),
            port,
            transport: Transport::Tls,
            format: Format::Rfc5424,
            queue_size: DEFAULT_QUEUE_SIZE,
            tls: dsx_service::ClientTls {
                verify,
                ca_bundle: Some(dir.path().join("other.crt")),
                identity: Some((dir.path().join("client.crt"), dir.path().join("client.key"))),
            },
        };
        let verifying = Syslog::new(settings(true));
        verifying.send(false, "must not arrive").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!reader.is_finished(), "delivered to an untrusted listener");
        let insecure = Syslog::new(settings(false));
        insecure.send(false, "arrives").await;
        let stream = tokio::time::timeout(Duration::from_secs(10), reader).await.unwrap().unwrap();
        assert!(stream.ends_with(" scan_result - arrives") && !stream.contains("must not arrive"), "{stream}");
    }
}
