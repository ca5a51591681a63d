//! Keeping federation requests away from addresses they must not reach: a remote server
//! (through DNS, SRV, `.well-known` or a `Location`) could otherwise point mxcd at the
//! operator's internal network. Addresses in the blocklist are refused after every name
//! resolution and for IP literals; `federation.overrides` are the operator's own and
//! exempt.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;

/// Private, loopback, link-local, shared, documentation, multicast and reserved ranges.
pub const DEFAULT_BLOCKLIST: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/128",
    "::1/128",
    "64:ff9b:1::/48",
    "2001:db8::/32",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
];

#[derive(Debug, Clone, Default)]
pub struct Blocklist(Arc<Vec<IpNet>>);

impl Blocklist {
    /// Parse CIDR ranges (`10.0.0.0/8`, `fc00::/7`); the error names the bad one.
    pub fn parse<S: AsRef<str>>(ranges: &[S]) -> Result<Self, String> {
        ranges
            .iter()
            .map(|r| {
                r.as_ref()
                    .parse::<IpNet>()
                    .map_err(|_| format!("{:?} is not a CIDR range", r.as_ref()))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|nets| Self(Arc::new(nets)))
    }

    pub fn blocks(&self, ip: IpAddr) -> bool {
        // An IPv4 address written as IPv6 (::ffff:a.b.c.d) is judged as itself.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.0.iter().any(|net| net.contains(&ip))
    }
}

/// A reqwest resolver that drops blocked addresses (and fails when none is left).
pub struct GuardedResolver(pub Blocklist);

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let blocklist = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let allowed: Vec<SocketAddr> = found.filter(|a| !blocklist.blocks(a.ip())).collect();
            if allowed.is_empty() {
                return Err(
                    format!("{host} has no address outside federation.ip_blocklist").into(),
                );
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_list_blocks_internal_addresses_only() {
        let list = Blocklist::parse(DEFAULT_BLOCKLIST).unwrap();
        for blocked in [
            "127.0.0.1",
            "10.1.2.3",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(list.blocks(blocked.parse().unwrap()), "{blocked}");
        }
        for allowed in ["1.1.1.1", "172.32.0.1", "8.8.8.8", "2a00:1450::1"] {
            assert!(!list.blocks(allowed.parse().unwrap()), "{allowed}");
        }
        assert!(!Blocklist::default().blocks("127.0.0.1".parse().unwrap()));
        assert!(Blocklist::parse(&["10.0.0.0/33"]).is_err());
    }

    #[tokio::test]
    async fn the_resolver_drops_blocked_addresses() {
        use reqwest::dns::Resolve;
        let name = |s: &str| s.parse::<reqwest::dns::Name>().unwrap();
        let guarded = GuardedResolver(Blocklist::parse(DEFAULT_BLOCKLIST).unwrap());
        let Err(e) = guarded.resolve(name("localhost")).await else {
            panic!("localhost resolves to blocked addresses only");
        };
        assert!(e.to_string().contains("ip_blocklist"), "{e}");
        let open = GuardedResolver(Blocklist::default());
        let addrs: Vec<_> = open.resolve(name("localhost")).await.unwrap().collect();
        assert!(addrs.iter().any(|a| a.ip().is_loopback()));
    }
}
