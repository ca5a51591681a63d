//! Server discovery, as the server-server spec's "Resolving server names" lays it out:
//! IP literal or explicit port → direct; else `/.well-known/matrix/server` (whose answer
//! goes through the same steps, then SRV `_matrix-fed._tcp`, `_matrix._tcp`, port 8448);
//! else SRV on the server's own name; else port 8448.
//!
//! The steps are pure over [`Lookups`] (well-known fetch and SRV query), so every branch
//! is tested without a network; [`NetLookups`] does them for real.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use headers::HeaderMapExt;
use moka::Expiry;
use moka::future::Cache;
use serde::Deserialize;

use super::guard::{Blocklist, GuardedResolver};
use crate::domain::ServerName;

/// The federation port used when nothing else names one.
pub const DEFAULT_PORT: u16 = 8448;

/// Where and how to talk to a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The name the TLS certificate must be valid for, sent as SNI (a hostname or an IP
    /// literal, IPv6 without brackets).
    pub tls_name: String,
    /// The port to connect to.
    pub port: u16,
    /// Connect to this host's addresses instead of `tls_name`'s (an SRV target).
    pub connect_host: Option<String>,
    /// The `Host` header.
    pub host_header: String,
}

/// One SRV record: target and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvTarget {
    pub host: String,
    pub port: u16,
}

/// What discovery looks up.
#[async_trait]
pub trait Lookups: Send + Sync {
    /// `m.server` of `https://<hostname>/.well-known/matrix/server`, or None when there
    /// is no valid answer.
    async fn well_known(&self, hostname: &str) -> Option<String>;
    /// The SRV records of `name`, best first (empty when there are none).
    async fn srv(&self, name: &str) -> Vec<SrvTarget>;
}

/// A server name split into host and optional port (`[::1]:8448` → `::1`, 8448).
pub(super) fn split_host_port(name: &str) -> Option<(String, Option<u16>)> {
    if let Some(rest) = name.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?.parse().ok()?),
        };
        return Some((ip.to_owned(), port));
    }
    match name.rsplit_once(':') {
        Some((host, port)) => Some((host.to_owned(), Some(port.parse().ok()?))),
        None => Some((name.to_owned(), None)),
    }
}

fn is_ip(host: &str) -> bool {
    host.parse::<IpAddr>().is_ok()
}

/// Resolve `server_name` (already validated) to an endpoint.
pub async fn resolve(server_name: &str, lookups: &dyn Lookups) -> Option<Endpoint> {
    let (host, port) = split_host_port(server_name)?;
    // 1. An IP literal, and 2. a hostname with an explicit port: no lookups.
    if is_ip(&host) || port.is_some() {
        return Some(Endpoint {
            tls_name: host,
            port: port.unwrap_or(DEFAULT_PORT),
            connect_host: None,
            host_header: server_name.to_owned(),
        });
    }
    // 3. Delegation through .well-known.
    if let Some(delegated) = lookups.well_known(&host).await {
        if ServerName::parse(&delegated).is_ok()
            && let Some((d_host, d_port)) = split_host_port(&delegated)
        {
            // 3.1 and 3.2: IP literal or explicit port.
            if is_ip(&d_host) || d_port.is_some() {
                return Some(Endpoint {
                    tls_name: d_host,
                    port: d_port.unwrap_or(DEFAULT_PORT),
                    connect_host: None,
                    host_header: delegated,
                });
            }
            // 3.3–3.5: SRV on the delegated name, then port 8448.
            return Some(via_srv(&d_host, lookups).await);
        }
        tracing::debug!(server_name, %delegated, "ignoring an invalid m.server");
    }
    // 4.–6. SRV on the server's own name, then port 8448.
    Some(via_srv(&host, lookups).await)
}

/// `_matrix-fed._tcp.<host>`, then the deprecated `_matrix._tcp.<host>`, then
/// `<host>:8448`; the certificate and `Host` are `host`'s either way.
async fn via_srv(host: &str, lookups: &dyn Lookups) -> Endpoint {
    for service in ["_matrix-fed._tcp", "_matrix._tcp"] {
        if let Some(target) = lookups.srv(&format!("{service}.{host}")).await.first() {
            return Endpoint {
                tls_name: host.to_owned(),
                port: target.port,
                connect_host: Some(target.host.clone()),
                host_header: host.to_owned(),
            };
        }
    }
    Endpoint {
        tls_name: host.to_owned(),
        port: DEFAULT_PORT,
        connect_host: None,
        host_header: host.to_owned(),
    }
}

/// The largest well-known answer read.
const WELL_KNOWN_MAX_BYTES: usize = 64 * 1024;

/// Well-known over HTTPS and SRV over DNS.
pub struct NetLookups {
    http: reqwest::Client,
    dns: Option<hickory_resolver::TokioResolver>,
    /// Well-known answers (None: no usable answer), each kept for its own time.
    well_known: Cache<String, CachedWellKnown>,
    /// Consecutive failures per host, for backing off.
    failures: Cache<String, u32>,
}

#[derive(Debug, Clone)]
struct CachedWellKnown {
    server: Option<String>,
    ttl: Duration,
}

struct KeepFor;

impl Expiry<String, CachedWellKnown> for KeepFor {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &CachedWellKnown,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// How long a well-known answer is kept without cache headers, at most, and at least.
const WELL_KNOWN_DEFAULT_TTL: Duration = Duration::from_secs(24 * 60 * 60);
const WELL_KNOWN_MAX_TTL: Duration = Duration::from_secs(48 * 60 * 60);
const WELL_KNOWN_MIN_TTL: Duration = Duration::from_secs(5 * 60);
/// A failed lookup is kept for 2 minutes, doubling with each further failure up to 1 hour.
const WELL_KNOWN_FAILURE_TTL: Duration = Duration::from_secs(2 * 60);
const WELL_KNOWN_MAX_FAILURE_TTL: Duration = Duration::from_secs(60 * 60);

/// How long a well-known answer may be kept, from its cache headers: `max-age`, else
/// `Expires`, else a day; never more than two days nor less than five minutes (as Synapse).
fn well_known_ttl(headers: &reqwest::header::HeaderMap) -> Duration {
    let declared = match headers.typed_get::<headers::CacheControl>() {
        Some(cc) if cc.no_store() || cc.no_cache() => Some(Duration::ZERO),
        Some(cc) => cc.max_age(),
        None => None,
    }
    .or_else(|| {
        let expires: std::time::SystemTime = headers.typed_get::<headers::Expires>()?.into();
        Some(
            expires
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default(),
        )
    });
    declared
        .unwrap_or(WELL_KNOWN_DEFAULT_TTL)
        .clamp(WELL_KNOWN_MIN_TTL, WELL_KNOWN_MAX_TTL)
}

impl NetLookups {
    /// Lookups whose HTTPS requests never reach an address in `blocklist`.
    pub fn new(timeout: Duration, blocklist: Blocklist) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .dns_resolver(Arc::new(GuardedResolver(blocklist)))
            // Redirects are followed, up to 10, and loops are refused.
            .redirect(reqwest::redirect::Policy::limited(10))
            .user_agent(concat!("mxcd/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a plain HTTPS client builds");
        let dns = match hickory_resolver::TokioResolver::builder_tokio() {
            Ok(builder) => Some(builder.build().expect("the system DNS resolver builds")),
            Err(e) => {
                tracing::warn!(error = %e, "no DNS configuration: SRV discovery disabled");
                None
            }
        };
        Self {
            http,
            dns,
            well_known: Cache::builder()
                .max_capacity(10_000)
                .expire_after(KeepFor)
                .build(),
            failures: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(2 * WELL_KNOWN_MAX_FAILURE_TTL)
                .build(),
        }
    }

    /// The delegated server name and how long it may be kept.
    async fn fetch_well_known(&self, hostname: &str) -> Result<(String, Duration), String> {
        #[derive(Deserialize)]
        struct WellKnown {
            #[serde(rename = "m.server")]
            server: String,
        }
        let url = format!("https://{hostname}/.well-known/matrix/server");
        let mut res = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !res.status().is_success() {
            return Err(format!("status {}", res.status()));
        }
        let ttl = well_known_ttl(res.headers());
        let mut body = Vec::new();
        while let Some(chunk) = res.chunk().await.map_err(|e| e.to_string())? {
            if body.len() + chunk.len() > WELL_KNOWN_MAX_BYTES {
                return Err("answer too large".into());
            }
            body.extend_from_slice(&chunk);
        }
        // Parsed as JSON whatever its Content-Type says, as the spec asks.
        let parsed: WellKnown = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        Ok((parsed.server, ttl))
    }

    /// Addresses of an SRV target.
    pub async fn addresses(&self, host: &str) -> Vec<IpAddr> {
        if let Ok(ip) = host.parse() {
            return vec![ip];
        }
        match &self.dns {
            Some(dns) => match dns.lookup_ip(host).await {
                Ok(found) => found.iter().collect(),
                Err(e) => {
                    tracing::debug!(host, error = %e, "address lookup failed");
                    Vec::new()
                }
            },
            None => tokio::net::lookup_host((host, 0))
                .await
                .map(|addrs| addrs.map(|a| a.ip()).collect())
                .unwrap_or_default(),
        }
    }
}

#[async_trait]
impl Lookups for NetLookups {
    async fn well_known(&self, hostname: &str) -> Option<String> {
        if let Some(cached) = self.well_known.get(hostname).await {
            return cached.server;
        }
        let cached = match self.fetch_well_known(hostname).await {
            Ok((server, ttl)) => {
                self.failures.invalidate(hostname).await;
                CachedWellKnown {
                    server: Some(server),
                    ttl,
                }
            }
            Err(reason) => {
                let failures = self.failures.get(hostname).await.unwrap_or(0) + 1;
                self.failures.insert(hostname.to_owned(), failures).await;
                let ttl = WELL_KNOWN_FAILURE_TTL
                    .saturating_mul(1 << (failures - 1).min(10))
                    .min(WELL_KNOWN_MAX_FAILURE_TTL);
                tracing::debug!(hostname, %reason, ?ttl, "no usable .well-known/matrix/server");
                CachedWellKnown { server: None, ttl }
            }
        };
        self.well_known
            .insert(hostname.to_owned(), cached.clone())
            .await;
        cached.server
    }

    async fn srv(&self, name: &str) -> Vec<SrvTarget> {
        let Some(dns) = &self.dns else {
            return Vec::new();
        };
        let Ok(found) = dns.srv_lookup(name).await else {
            return Vec::new();
        };
        let mut records: Vec<_> = found
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                hickory_resolver::proto::rr::RData::SRV(srv) => Some(srv.clone()),
                _ => None,
            })
            .collect();
        // Lowest priority first; among equals, the heaviest first.
        records.sort_by_key(|s| (s.priority, std::cmp::Reverse(s.weight)));
        records
            .into_iter()
            .map(|s| SrvTarget {
                host: s.target.to_utf8().trim_end_matches('.').to_owned(),
                port: s.port,
            })
            // A target of "." means the service is decidedly not available.
            .filter(|t| !t.host.is_empty())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[derive(Default)]
    struct Fake {
        well_known: HashMap<&'static str, &'static str>,
        srv: HashMap<&'static str, (&'static str, u16)>,
    }

    #[async_trait]
    impl Lookups for Fake {
        async fn well_known(&self, hostname: &str) -> Option<String> {
            self.well_known.get(hostname).map(|s| s.to_string())
        }
        async fn srv(&self, name: &str) -> Vec<SrvTarget> {
            self.srv
                .get(name)
                .map(|(host, port)| SrvTarget {
                    host: host.to_string(),
                    port: *port,
                })
                .into_iter()
                .collect()
        }
    }

    fn ep(tls: &str, port: u16, connect: Option<&str>, host: &str) -> Endpoint {
        Endpoint {
            tls_name: tls.into(),
            port,
            connect_host: connect.map(Into::into),
            host_header: host.into(),
        }
    }

    async fn run(name: &str, fake: &Fake) -> Endpoint {
        resolve(name, fake).await.expect("resolves")
    }

    #[tokio::test]
    async fn ip_literals_and_explicit_ports_are_used_directly() {
        // Even with a well-known and SRV records present, none of them is consulted.
        let fake = Fake {
            well_known: HashMap::from([("example.org", "elsewhere.net")]),
            srv: HashMap::from([("_matrix-fed._tcp.example.org", ("srv.net", 1))]),
        };
        assert_eq!(
            run("1.2.3.4", &fake).await,
            ep("1.2.3.4", 8448, None, "1.2.3.4")
        );
        assert_eq!(
            run("1.2.3.4:99", &fake).await,
            ep("1.2.3.4", 99, None, "1.2.3.4:99")
        );
        assert_eq!(
            run("[2001:db8::1]", &fake).await,
            ep("2001:db8::1", 8448, None, "[2001:db8::1]")
        );
        assert_eq!(
            run("[::1]:8449", &fake).await,
            ep("::1", 8449, None, "[::1]:8449")
        );
        assert_eq!(
            run("example.org:8000", &fake).await,
            ep("example.org", 8000, None, "example.org:8000")
        );
    }

    #[tokio::test]
    async fn well_known_delegation_follows_the_same_rules() {
        let fake = Fake {
            well_known: HashMap::from([
                ("ip.org", "10.0.0.1"),
                ("ipport.org", "10.0.0.1:1234"),
                ("v6.org", "[fd00::1]:1234"),
                ("port.org", "matrix.port.org:443"),
                ("srv.org", "matrix.srv.org"),
                ("oldsrv.org", "matrix.oldsrv.org"),
                ("plain.org", "matrix.plain.org"),
                ("bad.org", ":443"),
            ]),
            srv: HashMap::from([
                ("_matrix-fed._tcp.matrix.srv.org", ("fed.srv.net", 7000)),
                ("_matrix._tcp.matrix.srv.org", ("old.srv.net", 7001)),
                ("_matrix._tcp.matrix.oldsrv.org", ("old.oldsrv.net", 7002)),
                // SRV on the server's own name is not used once well-known delegates.
                ("_matrix-fed._tcp.plain.org", ("ignored.net", 1)),
            ]),
        };
        assert_eq!(
            run("ip.org", &fake).await,
            ep("10.0.0.1", 8448, None, "10.0.0.1")
        );
        assert_eq!(
            run("ipport.org", &fake).await,
            ep("10.0.0.1", 1234, None, "10.0.0.1:1234")
        );
        assert_eq!(
            run("v6.org", &fake).await,
            ep("fd00::1", 1234, None, "[fd00::1]:1234")
        );
        assert_eq!(
            run("port.org", &fake).await,
            ep("matrix.port.org", 443, None, "matrix.port.org:443")
        );
        assert_eq!(
            run("srv.org", &fake).await,
            ep(
                "matrix.srv.org",
                7000,
                Some("fed.srv.net"),
                "matrix.srv.org"
            )
        );
        assert_eq!(
            run("oldsrv.org", &fake).await,
            ep(
                "matrix.oldsrv.org",
                7002,
                Some("old.oldsrv.net"),
                "matrix.oldsrv.org"
            )
        );
        assert_eq!(
            run("plain.org", &fake).await,
            ep("matrix.plain.org", 8448, None, "matrix.plain.org")
        );
        // An unusable m.server counts as no well-known: on to SRV and 8448.
        assert_eq!(
            run("bad.org", &fake).await,
            ep("bad.org", 8448, None, "bad.org")
        );
    }

    #[tokio::test]
    async fn without_well_known_srv_then_8448_on_the_own_name() {
        let fake = Fake {
            well_known: HashMap::new(),
            srv: HashMap::from([
                ("_matrix-fed._tcp.fed.org", ("a.fed.net", 9000)),
                ("_matrix._tcp.fed.org", ("b.fed.net", 9001)),
                ("_matrix._tcp.old.org", ("c.old.net", 9002)),
            ]),
        };
        assert_eq!(
            run("fed.org", &fake).await,
            ep("fed.org", 9000, Some("a.fed.net"), "fed.org")
        );
        assert_eq!(
            run("old.org", &fake).await,
            ep("old.org", 9002, Some("c.old.net"), "old.org")
        );
        assert_eq!(run("hs1", &fake).await, ep("hs1", 8448, None, "hs1"));
    }

    #[test]
    fn well_known_cache_times_follow_the_headers_within_bounds() {
        let with = |name: &'static str, value: &str| {
            let mut h = reqwest::header::HeaderMap::new();
            h.insert(name, value.parse().unwrap());
            h
        };
        let none = reqwest::header::HeaderMap::new();
        assert_eq!(well_known_ttl(&none), WELL_KNOWN_DEFAULT_TTL);
        let hour = Duration::from_secs(3600);
        assert_eq!(well_known_ttl(&with("cache-control", "max-age=3600")), hour);
        assert_eq!(
            well_known_ttl(&with("cache-control", "public, max-age=999999999")),
            WELL_KNOWN_MAX_TTL
        );
        assert_eq!(
            well_known_ttl(&with("cache-control", "max-age=1")),
            WELL_KNOWN_MIN_TTL
        );
        assert_eq!(
            well_known_ttl(&with("cache-control", "no-store")),
            WELL_KNOWN_MIN_TTL
        );
        let in_two_hours = httpdate::fmt_http_date(std::time::SystemTime::now() + 2 * hour);
        let ttl = well_known_ttl(&with("expires", &in_two_hours));
        assert!(ttl > hour && ttl <= 2 * hour, "{ttl:?}");
    }

    #[test]
    fn host_and_port_split() {
        assert_eq!(split_host_port("a.b"), Some(("a.b".into(), None)));
        assert_eq!(split_host_port("a.b:1"), Some(("a.b".into(), Some(1))));
        assert_eq!(split_host_port("[::1]"), Some(("::1".into(), None)));
        assert_eq!(split_host_port("[::1]:2"), Some(("::1".into(), Some(2))));
        assert_eq!(split_host_port("a.b:x"), None);
        assert_eq!(split_host_port("[::1]x"), None);
    }
}
