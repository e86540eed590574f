//! Scan results to syslog: RFC 5424 messages over UDP, or TCP with RFC 6587 octet counting.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

/// Facility `local0`; severity notice (5) for clean results, warning (4) for malicious ones.
const FACILITY: u8 = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

impl std::str::FromStr for Transport {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "udp" => Ok(Transport::Udp),
            "tcp" => Ok(Transport::Tcp),
            "tls" => Err("tls transport is not supported yet; use tcp through a TLS-terminating relay".into()),
            other => Err(format!("expected udp or tcp, got {other:?}")),
        }
    }
}

#[derive(Clone, Debug)]
pub struct SyslogSettings {
    pub host: String,
    pub port: u16,
    pub transport: Transport,
}

pub struct Syslog {
    settings: SyslogSettings,
    hostname: String,
    tcp: Mutex<Option<tokio::net::TcpStream>>,
}

impl Syslog {
    pub fn new(settings: SyslogSettings) -> Self {
        let hostname = std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "-".into());
        Self { settings, hostname, tcp: Mutex::new(None) }
    }

    /// One result. Failures are logged, never fatal: syslog is a copy, the store is the truth.
    pub async fn send(&self, malicious: bool, json: &str) {
        let line = format_rfc5424(malicious, unix_now(), &self.hostname, json);
        let sent = match self.settings.transport {
            Transport::Udp => self.send_udp(&line).await,
            Transport::Tcp => self.send_tcp(&line).await,
        };
        if let Err(err) = sent {
            tracing::warn!(error = %err, "syslog delivery failed");
        }
    }

    async fn send_udp(&self, line: &str) -> std::io::Result<()> {
        let socket = tokio::net::UdpSocket::bind("0.0.0.0:0").await?;
        socket.send_to(line.as_bytes(), (self.settings.host.as_str(), self.settings.port)).await.map(|_| ())
    }

    async fn send_tcp(&self, line: &str) -> std::io::Result<()> {
        let framed = format!("{} {line}", line.len());
        let mut conn = self.tcp.lock().await;
        for _ in 0..2 {
            if conn.is_none() {
                let addr = (self.settings.host.as_str(), self.settings.port);
                *conn =
                    Some(tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr)).await??);
            }
            match conn.as_mut().expect("connected").write_all(framed.as_bytes()).await {
                Ok(()) => return Ok(()),
                Err(_) => *conn = None, // reconnect once
            }
        }
        Err(std::io::Error::other("syslog connection lost"))
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// `<PRI>1 TIMESTAMP HOSTNAME dsx-connect PROCID scan_result - MSG`.
pub fn format_rfc5424(malicious: bool, unix: u64, hostname: &str, msg: &str) -> String {
    let severity = if malicious { 4 } else { 5 };
    let pri = FACILITY * 8 + severity;
    format!("<{pri}>1 {} {hostname} dsx-connect {} scan_result - {msg}", rfc3339(unix), std::process::id())
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
        let s = Syslog::new(SyslogSettings { host: "127.0.0.1".into(), port, transport: Transport::Udp });
        s.send(true, "{\"verdict\":\"Malicious\"}").await;
        let mut buf = [0u8; 2048];
        let n = tokio::time::timeout(Duration::from_secs(5), udp.recv(&mut buf)).await.unwrap().unwrap();
        let got = String::from_utf8_lossy(&buf[..n]);
        assert!(got.starts_with("<132>1 ") && got.ends_with("{\"verdict\":\"Malicious\"}"), "{got}");

        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = tcp.local_addr().unwrap().port();
        let s = Syslog::new(SyslogSettings { host: "127.0.0.1".into(), port, transport: Transport::Tcp });
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
        assert!("tls".parse::<Transport>().unwrap_err().contains("not supported"));
    }
}
