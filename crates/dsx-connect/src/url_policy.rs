//! Which connector URLs dsx-connect will call (docs/authentication.md, "Connector URLs").
//!
//! A registration names the URL that workers later POST scan requests to, so it is checked like
//! any outbound target chosen by a caller: `http`/`https` only, no credentials, query or
//! fragment in it, and every address it resolves to inside the operator's allow-list
//! (`DSXCONNECT_CONNECTORS__URL_ALLOW`). The same check runs when the call is made (a resolver
//! that drops refused addresses), so a name that changes its answer later gains nothing.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use reqwest::Url;

/// The default allow-list: loopback (the quickstart), the private ranges Kubernetes pod and
/// service networks use, and cluster-local service names.
pub const DEFAULT_ALLOW: &str =
    "127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,100.64.0.0/10,fc00::/7,localhost,*.svc,*.cluster.local";

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum UrlError {
    #[error("not a URL: {0}")]
    Parse(String),
    #[error("scheme {0:?} is not allowed (http or https only)")]
    Scheme(String),
    #[error("a connector URL may not carry a query or fragment")]
    QueryOrFragment,
    #[error("a connector URL may not carry credentials")]
    Credentials,
    #[error("a connector URL needs a host")]
    NoHost,
    #[error("address {0} is not allowed (DSXCONNECT_CONNECTORS__URL_ALLOW)")]
    Address(IpAddr),
    #[error("{0} is dsx-connect's own store")]
    OwnStore(String),
    #[error("cannot resolve {0}")]
    Resolve(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    /// `*.svc` matches any name ending in `.svc`.
    Suffix(String),
}

impl HostPattern {
    fn matches(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        match self {
            HostPattern::Exact(name) => host == *name,
            HostPattern::Suffix(suffix) => host.ends_with(suffix.as_str()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlPolicy {
    nets: Vec<IpNet>,
    hosts: Vec<HostPattern>,
    /// `host:port` pairs that are never a connector (the Redis dsx-connect uses).
    denied: Vec<(String, u16)>,
}

impl Default for UrlPolicy {
    fn default() -> Self {
        Self::parse(DEFAULT_ALLOW).expect("the default allow-list parses")
    }
}

impl UrlPolicy {
    /// A comma-separated list of CIDRs (`10.0.0.0/8`), addresses, host names (`localhost`) and
    /// name suffixes (`*.svc.cluster.local`).
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut policy = Self { nets: Vec::new(), hosts: Vec::new(), denied: Vec::new() };
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if let Ok(net) = entry.parse::<IpNet>() {
                policy.nets.push(net);
            } else if let Ok(ip) = entry.parse::<IpAddr>() {
                policy.nets.push(IpNet::from(ip));
            } else if let Some(suffix) = entry.strip_prefix("*.") {
                policy.hosts.push(HostPattern::Suffix(format!(".{}", suffix.to_ascii_lowercase())));
            } else if entry.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.') {
                policy.hosts.push(HostPattern::Exact(entry.to_ascii_lowercase()));
            } else {
                return Err(format!("{entry:?} is neither a CIDR, an address nor a host name"));
            }
        }
        Ok(policy)
    }

    /// Never call `host:port` (dsx-connect's own Redis).
    pub fn deny_endpoint(&mut self, host: &str, port: u16) {
        self.denied.push((host.to_ascii_lowercase(), port));
    }

    /// Is `ip` a permitted target? Link-local (cloud metadata), multicast and broadcast
    /// addresses need an entry of their own: a catch-all `0.0.0.0/0` does not open them. The
    /// unspecified address counts as loopback.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        let special = is_special(ip);
        self.nets.iter().any(|net| net.contains(&ip) && !(special && net.prefix_len() == 0))
    }

    fn host_listed(&self, host: &str) -> bool {
        self.hosts.iter().any(|p| p.matches(host))
    }

    /// Syntax: scheme, host, nothing after the path. The returned URL is the one to store.
    pub fn parse_url(&self, raw: &str) -> Result<Url, UrlError> {
        let url = Url::parse(raw.trim()).map_err(|e| UrlError::Parse(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(UrlError::Scheme(url.scheme().to_owned()));
        }
        if url.query().is_some() || url.fragment().is_some() || raw.contains('?') || raw.contains('#') {
            return Err(UrlError::QueryOrFragment);
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UrlError::Credentials);
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(UrlError::NoHost);
        }
        Ok(url)
    }

    /// Full check of a registration's URL: syntax, then every address the host stands for.
    /// A listed name is accepted without a lookup (it may not resolve until its pod is up);
    /// its addresses are checked when it is called.
    pub async fn check(&self, raw: &str) -> Result<Url, UrlError> {
        let url = self.parse_url(raw)?;
        let port = url.port_or_known_default().unwrap_or(80);
        let host = url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_owned();
        if let Ok(ip) = host.parse::<IpAddr>() {
            self.check_addr(&host, SocketAddr::new(ip, port))?;
            return Ok(url);
        }
        self.check_denied_name(&host, port)?;
        if self.host_listed(&host) {
            return Ok(url);
        }
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| UrlError::Resolve(format!("{host}: {e}")))?
            .collect();
        if addrs.is_empty() {
            return Err(UrlError::Resolve(host));
        }
        for addr in addrs {
            self.check_addr(&host, addr)?;
        }
        Ok(url)
    }

    fn check_denied_name(&self, host: &str, port: u16) -> Result<(), UrlError> {
        let host = host.to_ascii_lowercase();
        let denied = self
            .denied
            .iter()
            .any(|(h, p)| *p == port && (*h == host || (is_loopback_name(h) && is_loopback_name(&host))));
        if denied {
            return Err(UrlError::OwnStore(format!("{host}:{port}")));
        }
        Ok(())
    }

    /// A resolved (or literal) address of `host`.
    pub fn check_addr(&self, host: &str, addr: SocketAddr) -> Result<(), UrlError> {
        let ip = canonical(addr.ip());
        let store = self.denied.iter().any(|(h, p)| {
            *p == addr.port()
                && (h.parse::<IpAddr>().is_ok_and(|d| canonical(d) == ip) || (is_loopback_name(h) && ip.is_loopback()))
        });
        if store {
            return Err(UrlError::OwnStore(addr.to_string()));
        }
        let listed_name = host.parse::<IpAddr>().is_err() && self.host_listed(host);
        if self.permits(ip) || (listed_name && !is_special(ip)) {
            Ok(())
        } else {
            Err(UrlError::Address(ip))
        }
    }

    /// `base` joined with `path_and_query` by path segments: nothing in the relative part
    /// can change the host or swallow the path into a query.
    pub fn join(base: &Url, path_and_query: &str) -> Url {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        let mut url = base.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty();
            segments.extend(path.split('/').filter(|s| !s.is_empty()));
        }
        url.set_query(query);
        url.set_fragment(None);
        url
    }
}

/// A reqwest resolver that keeps only the addresses the policy permits, so the check and
/// the connection use the same answer.
pub struct PolicyResolver(pub Arc<UrlPolicy>);

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = Arc::clone(&self.0);
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = addrs.into_iter().filter(|a| policy.check_addr(&host, *a).is_ok()).collect();
            if allowed.is_empty() {
                let err: Box<dyn std::error::Error + Send + Sync> =
                    format!("{host} resolves to no address allowed by DSXCONNECT_CONNECTORS__URL_ALLOW").into();
                return Err(err);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

fn is_loopback_name(host: &str) -> bool {
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| canonical(ip).is_loopback())
}

/// IPv4-mapped IPv6 addresses are judged as the IPv4 address they carry. The unspecified
/// address (`0.0.0.0`, `::`) is judged as loopback, because that is where the OS connects it:
/// Python 1.x connectors register `http://0.0.0.0:<port>` by default and work on one host, so
/// such a URL is allowed exactly when loopback is (docs/authentication.md, "Connector URLs").
fn canonical(ip: IpAddr) -> IpAddr {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        other => other,
    }
}

fn is_special(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local() || v4.is_multicast() || v4.is_broadcast(),
        IpAddr::V6(v6) => v6.is_multicast() || (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn default_policy_allows_loopback_and_cluster_networks_only() {
        let p = UrlPolicy::default();
        for ok in [
            "http://127.0.0.1:8620/filesystem-connector",
            "https://10.1.2.3/x",
            "http://[::1]:9/x",
            "http://filesystem-connector.scan.svc.cluster.local:8620/filesystem-connector",
            "http://localhost:8620/c",
            // Python 1.x's default connector URL: the local host, like loopback.
            "http://0.0.0.0:8590/filesystem-connector",
            "http://[::]:8590/filesystem-connector",
        ] {
            assert!(p.check(ok).await.is_ok(), "{ok}: {:?}", p.check(ok).await);
        }
        for (bad, want) in [
            ("file:///etc/passwd", "scheme"),
            ("gopher://127.0.0.1:6379/_x", "scheme"),
            ("http://169.254.169.254/latest/meta-data", "address"),
            ("http://[::ffff:169.254.169.254]/x", "address"),
            ("http://224.0.0.1/x", "address"),
            ("http://8.8.8.8/x", "address"),
            ("http://127.0.0.1:8620/c?x=", "query"),
            ("http://127.0.0.1:8620/c#f", "query"),
            ("http://user:pw@127.0.0.1/c", "credentials"),
            ("not a url", "not a URL"),
        ] {
            let err = p.check(bad).await.unwrap_err().to_string();
            assert!(err.contains(want), "{bad}: {err}");
        }
    }

    #[tokio::test]
    async fn the_unspecified_address_is_loopback() {
        let no_loopback = UrlPolicy::parse("10.0.0.0/8").unwrap();
        for bad in ["http://0.0.0.0:8590/c", "http://[::]:8590/c", "http://127.0.0.1:8590/c"] {
            assert!(matches!(no_loopback.check(bad).await, Err(UrlError::Address(_))), "{bad}");
        }
        let mut p = UrlPolicy::default();
        p.deny_endpoint("127.0.0.1", 6379);
        assert!(matches!(p.check("http://0.0.0.0:6379/x").await, Err(UrlError::OwnStore(_))));
    }

    #[tokio::test]
    async fn catch_all_still_refuses_metadata_unless_listed() {
        let p = UrlPolicy::parse("0.0.0.0/0,::/0").unwrap();
        assert!(p.check("http://8.8.8.8/x").await.is_ok());
        assert!(p.check("http://169.254.169.254/x").await.is_err());
        let p = UrlPolicy::parse("169.254.0.0/16").unwrap();
        assert!(p.check("http://169.254.169.254/x").await.is_ok());
        assert!(UrlPolicy::parse("10.0.0.0/8,bad entry!").is_err());
    }

    #[tokio::test]
    async fn own_redis_is_never_a_connector() {
        let mut p = UrlPolicy::default();
        p.deny_endpoint("127.0.0.1", 6379);
        for bad in ["http://127.0.0.1:6379/x", "http://localhost:6379/x", "http://127.0.0.2:6379/x"] {
            let err = p.check(bad).await.unwrap_err();
            assert!(matches!(err, UrlError::OwnStore(_)), "{bad}: {err}");
        }
        assert!(p.check("http://127.0.0.1:6380/x").await.is_ok());
    }

    #[test]
    fn join_keeps_the_path_and_the_host() {
        let base = Url::parse("http://127.0.0.1:8620/filesystem-connector").unwrap();
        assert_eq!(
            UrlPolicy::join(&base, "read_file").as_str(),
            "http://127.0.0.1:8620/filesystem-connector/read_file"
        );
        assert_eq!(
            UrlPolicy::join(&base, "full_scan?limit=2&job_id=j").as_str(),
            "http://127.0.0.1:8620/filesystem-connector/full_scan?limit=2&job_id=j"
        );
        let slash = Url::parse("http://h/c/").unwrap();
        assert_eq!(UrlPolicy::join(&slash, "/config").as_str(), "http://h/c/config");
        assert_eq!(UrlPolicy::join(&slash, "//evil.example/x").as_str(), "http://h/c/evil.example/x");
    }
}
