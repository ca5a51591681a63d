//! Requests to other servers: allow/deny lists, per-server overrides, discovery (cached),
//! X-Matrix signing, timeouts, and backing off from servers that keep failing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moka::future::Cache;
use reqwest::header::{AUTHORIZATION, HOST};
use url::Url;

use super::discovery::{self, Endpoint, NetLookups};
use super::guard::{Blocklist, GuardedResolver};
use super::{ServerKey, authorization};
use crate::config::FederationSettings;
use crate::domain::ServerName;
use crate::telemetry::error_chain;

#[derive(Debug, Clone, thiserror::Error)]
pub enum FederationError {
    #[error("{0} is not allowed by the federation allow/deny lists")]
    Denied(ServerName),
    #[error("no signing key is configured (federation.signing_key_path)")]
    NoSigningKey,
    #[error("{0} failed recently; not asking again yet")]
    BackedOff(ServerName),
    #[error("cannot reach {server}: {reason}")]
    Unreachable { server: ServerName, reason: String },
    #[error("{server} answered unexpectedly: {reason}")]
    BadResponse { server: ServerName, reason: String },
}

/// How long a discovered destination (and its connection pool) is kept; discovering it
/// again uses the cached well-known answer and DNS's own caching.
const DESTINATION_TTL: Duration = Duration::from_secs(10 * 60);
/// How long a failed discovery is kept before trying again.
const DISCOVERY_FAILURE_TTL: Duration = Duration::from_secs(2 * 60);

/// Allow and deny lists of server names (`name` or `*.domain`).
#[derive(Debug, Clone, Default)]
struct Policy {
    allow: Vec<String>,
    deny: Vec<String>,
}

impl Policy {
    fn matches(pattern: &str, server: &ServerName) -> bool {
        let name = server.as_str();
        let host = discovery::split_host_port(name).map_or_else(|| name.to_owned(), |(h, _)| h);
        match pattern.strip_prefix("*.") {
            Some(domain) => host
                .strip_suffix(domain)
                .is_some_and(|sub| sub.ends_with('.') && sub.len() > 1),
            None => pattern == name || pattern == host,
        }
    }

    fn allows(&self, server: &ServerName) -> bool {
        let listed = |list: &[String]| list.iter().any(|p| Self::matches(p, server));
        !listed(&self.deny) && (self.allow.is_empty() || listed(&self.allow))
    }
}

/// Consecutive failures of one server and when it may be asked again.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    failures: u32,
    until: Instant,
}

/// A circuit breaker per server: after a failure the server is not contacted for
/// `initial`, doubling with each consecutive failure up to `max`; one success resets it.
#[derive(Debug)]
struct Breaker {
    initial: Duration,
    max: Duration,
    state: Mutex<HashMap<ServerName, Backoff>>,
}

impl Breaker {
    fn check(&self, server: &ServerName) -> Result<(), FederationError> {
        let state = self.state.lock().expect("breaker lock");
        match state.get(server) {
            Some(b) if b.until > Instant::now() => Err(FederationError::BackedOff(server.clone())),
            _ => Ok(()),
        }
    }

    fn failed(&self, server: &ServerName) {
        let mut state = self.state.lock().expect("breaker lock");
        let failures = state.get(server).map_or(0, |b| b.failures) + 1;
        let delay = self
            .initial
            .saturating_mul(1 << (failures - 1).min(20))
            .min(self.max);
        tracing::info!(%server, failures, backoff_secs = delay.as_secs(), "backing off a failing server");
        state.insert(
            server.clone(),
            Backoff {
                failures,
                until: Instant::now() + delay,
            },
        );
    }

    fn succeeded(&self, server: &ServerName) {
        let mut state = self.state.lock().expect("breaker lock");
        if state.remove(server).is_some() {
            tracing::info!(%server, "server is reachable again");
        }
    }
}

/// Where requests to one server go.
#[derive(Debug)]
struct Destination {
    /// `scheme://host:port` requests are made to.
    base: Url,
    /// The `Host` header, when it differs from `base`'s.
    host_header: Option<String>,
    client: reqwest::Client,
}

#[derive(Clone)]
pub struct FederationClient {
    inner: Arc<Inner>,
}

struct Inner {
    us: ServerName,
    key: Option<Arc<ServerKey>>,
    overrides: HashMap<String, Url>,
    policy: Policy,
    lookups: NetLookups,
    destinations: Cache<ServerName, Arc<Destination>>,
    failed_discovery: Cache<ServerName, ()>,
    breaker: Breaker,
    request_timeout: Duration,
    blocklist: Blocklist,
    /// For overrides, which may point anywhere.
    plain: reqwest::Client,
    /// For following `Location`s: never to blocked addresses.
    guarded: reqwest::Client,
}

fn builder(request_timeout: Duration) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .connect_timeout(request_timeout)
        .read_timeout(request_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("mxcd/", env!("CARGO_PKG_VERSION")))
}

impl FederationClient {
    pub fn new(us: ServerName, key: Option<Arc<ServerKey>>, settings: &FederationSettings) -> Self {
        let request_timeout = Duration::from_secs(settings.request_timeout_secs);
        // Validated with the configuration.
        let blocklist = Blocklist::parse(&settings.ip_blocklist).unwrap_or_default();
        let overrides = settings
            .overrides
            .iter()
            .filter_map(|(name, url)| Some((name.clone(), Url::parse(url).ok()?)))
            .collect();
        Self {
            inner: Arc::new(Inner {
                us,
                key,
                overrides,
                policy: Policy {
                    allow: settings.allow.clone(),
                    deny: settings.deny.clone(),
                },
                lookups: NetLookups::new(request_timeout, blocklist.clone()),
                destinations: Cache::builder()
                    .max_capacity(10_000)
                    .time_to_live(DESTINATION_TTL)
                    .build(),
                failed_discovery: Cache::builder()
                    .max_capacity(10_000)
                    .time_to_live(DISCOVERY_FAILURE_TTL)
                    .build(),
                breaker: Breaker {
                    initial: Duration::from_secs(settings.backoff_initial_secs),
                    max: Duration::from_secs(settings.backoff_max_secs),
                    state: Mutex::default(),
                },
                request_timeout,
                plain: builder(request_timeout)
                    .build()
                    .expect("a plain HTTP client builds"),
                guarded: builder(request_timeout)
                    .dns_resolver(Arc::new(GuardedResolver(blocklist.clone())))
                    .build()
                    .expect("a plain HTTP client builds"),
                blocklist,
            }),
        }
    }

    /// Our own server name.
    pub fn server_name(&self) -> &ServerName {
        &self.inner.us
    }

    pub fn can_sign(&self) -> bool {
        self.inner.key.is_some()
    }

    /// Whether the allow/deny lists let us talk to `server`.
    pub fn allows(&self, server: &ServerName) -> bool {
        self.inner.policy.allows(server)
    }

    /// `GET path_and_query` on `server`, X-Matrix signed when `signed`. Any answer is
    /// returned; failing to connect or a 5xx counts against the server's backoff.
    pub async fn get(
        &self,
        server: &ServerName,
        path_and_query: &str,
        signed: bool,
        total_timeout: Duration,
    ) -> Result<reqwest::Response, FederationError> {
        let inner = &self.inner;
        if !self.allows(server) {
            return Err(FederationError::Denied(server.clone()));
        }
        inner.breaker.check(server)?;
        let destination = self.destination(server).await?;
        let url =
            destination
                .base
                .join(path_and_query)
                .map_err(|e| FederationError::BadResponse {
                    server: server.clone(),
                    reason: format!("bad request path: {e}"),
                })?;
        let mut request = destination.client.get(url).timeout(total_timeout);
        if let Some(host) = &destination.host_header {
            request = request.header(HOST, host);
        }
        if signed {
            let key = inner.key.as_ref().ok_or(FederationError::NoSigningKey)?;
            request = request.header(
                AUTHORIZATION,
                authorization(key, &inner.us, server, "GET", path_and_query),
            );
        }
        match request.send().await {
            Ok(res) if res.status().is_server_error() => {
                inner.breaker.failed(server);
                Ok(res)
            }
            Ok(res) => {
                inner.breaker.succeeded(server);
                Ok(res)
            }
            Err(e) => {
                inner.breaker.failed(server);
                Err(FederationError::Unreachable {
                    server: server.clone(),
                    reason: error_chain(&e),
                })
            }
        }
    }

    /// Record that talking to `server` failed after the answer began (a body that broke
    /// off or timed out).
    pub fn record_failure(&self, server: &ServerName) {
        self.inner.breaker.failed(server);
    }

    /// `GET url` without credentials (a `Location` a server pointed us to).
    pub async fn get_location(
        &self,
        server: &ServerName,
        url: &Url,
        total_timeout: Duration,
    ) -> Result<reqwest::Response, FederationError> {
        if !matches!(url.scheme(), "https" | "http") {
            return Err(FederationError::BadResponse {
                server: server.clone(),
                reason: format!("unsupported Location scheme {:?}", url.scheme()),
            });
        }
        let literal = match url.host() {
            Some(url::Host::Ipv4(v4)) => Some(std::net::IpAddr::V4(v4)),
            Some(url::Host::Ipv6(v6)) => Some(std::net::IpAddr::V6(v6)),
            _ => None,
        };
        if literal.is_some_and(|ip| self.inner.blocklist.blocks(ip)) {
            return Err(FederationError::BadResponse {
                server: server.clone(),
                reason: format!("Location {url} is in federation.ip_blocklist"),
            });
        }
        self.inner
            .guarded
            .get(url.clone())
            .timeout(total_timeout)
            .send()
            .await
            .map_err(|e| FederationError::Unreachable {
                server: server.clone(),
                reason: error_chain(&e),
            })
    }

    async fn destination(&self, server: &ServerName) -> Result<Arc<Destination>, FederationError> {
        let inner = &self.inner;
        if let Some(base) = inner.overrides.get(server.as_str()) {
            return Ok(Arc::new(Destination {
                base: base.clone(),
                host_header: None,
                client: inner.plain.clone(),
            }));
        }
        let unreachable = |reason: &str| FederationError::Unreachable {
            server: server.clone(),
            reason: reason.to_owned(),
        };
        if inner.failed_discovery.contains_key(server) {
            return Err(unreachable("discovery failed recently"));
        }
        let found = inner
            .destinations
            .try_get_with(server.clone(), self.discover(server))
            .await;
        match found {
            Ok(d) => Ok(d),
            Err(reason) => {
                inner.failed_discovery.insert(server.clone(), ()).await;
                Err(unreachable(&reason))
            }
        }
    }

    async fn discover(&self, server: &ServerName) -> Result<Arc<Destination>, String> {
        let inner = &self.inner;
        let endpoint = discovery::resolve(server.as_str(), &inner.lookups)
            .await
            .ok_or("not a resolvable server name")?;
        tracing::debug!(%server, ?endpoint, "discovered");
        let Endpoint {
            tls_name,
            port,
            connect_host,
            host_header,
        } = endpoint;
        let host = if tls_name.contains(':') {
            format!("[{tls_name}]")
        } else {
            tls_name.clone()
        };
        let base = Url::parse(&format!("https://{host}:{port}/")).map_err(|e| e.to_string())?;
        if let Ok(ip) = tls_name.parse()
            && inner.blocklist.blocks(ip)
        {
            return Err(format!("{ip} is in federation.ip_blocklist"));
        }
        let mut client = builder(inner.request_timeout)
            .dns_resolver(Arc::new(GuardedResolver(inner.blocklist.clone())));
        if let Some(target) = connect_host {
            let addrs: Vec<SocketAddr> = inner
                .lookups
                .addresses(&target)
                .await
                .into_iter()
                .filter(|ip| !inner.blocklist.blocks(*ip))
                .map(|ip| SocketAddr::new(ip, port))
                .collect();
            if addrs.is_empty() {
                return Err(format!(
                    "SRV target {target} has no addresses outside federation.ip_blocklist"
                ));
            }
            client = client.resolve_to_addrs(&tls_name, &addrs);
        }
        let client = client.build().map_err(|e| e.to_string())?;
        Ok(Arc::new(Destination {
            host_header: Some(host_header),
            base,
            client,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> ServerName {
        ServerName::parse(s).unwrap()
    }

    #[test]
    fn allow_and_deny_patterns() {
        let p = Policy {
            allow: vec![],
            deny: vec!["bad.org".into(), "*.evil.net".into()],
        };
        assert!(p.allows(&name("good.org")));
        assert!(!p.allows(&name("bad.org")));
        assert!(!p.allows(&name("bad.org:8448")));
        assert!(!p.allows(&name("a.evil.net")));
        assert!(!p.allows(&name("a.b.evil.net:443")));
        // The wildcard covers subdomains only, and not names merely ending alike.
        assert!(p.allows(&name("evil.net")));
        assert!(p.allows(&name("notevil.net")));

        let p = Policy {
            allow: vec!["*.corp.example".into(), "partner.org".into()],
            deny: vec!["bad.corp.example".into()],
        };
        assert!(p.allows(&name("hs.corp.example")));
        assert!(p.allows(&name("partner.org")));
        assert!(!p.allows(&name("other.org")));
        assert!(!p.allows(&name("bad.corp.example")));
        assert!(!p.allows(&name("[::1]:8448")));
    }

    #[test]
    fn backoff_doubles_and_resets() {
        let b = Breaker {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(25),
            state: Mutex::default(),
        };
        let s = name("down.org");
        assert!(b.check(&s).is_ok());
        b.failed(&s);
        assert!(matches!(b.check(&s), Err(FederationError::BackedOff(_))));
        let wait = |b: &Breaker| b.state.lock().unwrap()[&s].until - Instant::now();
        assert!(wait(&b) <= Duration::from_secs(10) && wait(&b) > Duration::from_secs(9));
        b.failed(&s);
        assert!(wait(&b) > Duration::from_secs(19));
        b.failed(&s);
        assert!(wait(&b) <= Duration::from_secs(25) && wait(&b) > Duration::from_secs(24));
        b.succeeded(&s);
        assert!(b.check(&s).is_ok());
    }
}
