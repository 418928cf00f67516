//! Service discovery settings: `PATRON_DISCOVERY` (the registry: etcd,
//! Consul or DNS),
//! `PATRON_DISCOVERY_TTL` (how long a registration outlives its last
//! renewal) and `PATRON_DISCOVERY_ADDRESS` (the address other services
//! reach this instance at).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::{ConfigError, duration, invalid};

/// Where this service registers itself and looks others up (feature
/// `discovery`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiscoveryBackend {
    /// etcd's v3 API, at these `http://host:port` endpoints.
    Etcd(Vec<String>),
    /// A Consul agent's HTTP API.
    Consul {
        /// `http://host:port`.
        endpoint: String,
        /// The ACL token sent as `X-Consul-Token`, from `CONSUL_HTTP_TOKEN`.
        token: Option<String>,
    },
    /// DNS records (SRV, else A/AAAA), as Kubernetes publishes for
    /// headless services.
    Dns {
        /// The DNS server to ask; the system's resolver when `None`.
        server: Option<SocketAddr>,
        /// Appended to a service name to make the name looked up
        /// (`?domain=ns.svc.cluster.local`); none by default, so the
        /// resolver's search domains apply.
        domain: Option<String>,
        /// The HTTP port of instances found by A/AAAA records, which carry
        /// none (`?port=`, 50000).
        port: u16,
    },
}

/// The discovery settings; `None` in [`Config`](super::Config) when
/// `PATRON_DISCOVERY` is unset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryConfig {
    /// `PATRON_DISCOVERY`: `etcd://host:2379[,host:2379…]`,
    /// `consul://host:8500` or `dns://[server:port][?domain=…&port=…]`.
    pub backend: DiscoveryBackend,
    /// `PATRON_DISCOVERY_TTL`: a registration expires this long after its
    /// last renewal (10s); renewed every third of it while ready. For
    /// Consul, the health check's interval is a third of it.
    pub ttl: Duration,
    /// `PATRON_DISCOVERY_ADDRESS`: the host or IP advertised (the HTTP host
    /// when it is a specific address, else this machine's host name).
    pub address: Option<String>,
}

const EXPECTED: &str = "etcd://host:port (several separated by commas), consul://host:port or dns://[server:port][?domain=…&port=…], e.g. etcd://127.0.0.1:2379";

/// Reads the `PATRON_DISCOVERY*` variables through `get`.
pub(crate) fn from_vars(
    get: &impl Fn(&str) -> Option<String>,
) -> Result<Option<DiscoveryConfig>, ConfigError> {
    let Some(v) = get("PATRON_DISCOVERY") else {
        return Ok(None);
    };
    let bad = || invalid("PATRON_DISCOVERY", &v, EXPECTED);
    let v = v.trim();
    let backend = if let Some(hosts) = v.strip_prefix("etcd://") {
        let endpoints: Vec<String> = hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(|h| format!("http://{}", h.trim_end_matches('/')))
            .collect();
        if endpoints.is_empty() || hosts.contains(['/', '@', '?']) {
            return Err(bad());
        }
        DiscoveryBackend::Etcd(endpoints)
    } else if let Some(host) = v.strip_prefix("consul://") {
        let host = host.trim_end_matches('/');
        if host.is_empty() || host.contains(['/', '@', '?', ',']) {
            return Err(bad());
        }
        DiscoveryBackend::Consul {
            endpoint: format!("http://{host}"),
            token: get("CONSUL_HTTP_TOKEN").map(|t| t.trim().to_string()),
        }
    } else if let Some(rest) = v.strip_prefix("dns://") {
        dns(rest).ok_or_else(bad)?
    } else {
        return Err(bad());
    };
    let mut c = DiscoveryConfig {
        backend,
        ttl: Duration::from_secs(10),
        address: get("PATRON_DISCOVERY_ADDRESS").map(|a| a.trim().to_string()),
    };
    duration(get, "PATRON_DISCOVERY_TTL", &mut c.ttl, false)?;
    if c.ttl < Duration::from_secs(2) {
        return Err(invalid(
            "PATRON_DISCOVERY_TTL",
            &get("PATRON_DISCOVERY_TTL").unwrap_or_default(),
            "a duration of at least 2s (etcd leases count whole seconds)",
        ));
    }
    Ok(Some(c))
}

/// `[server:port][/][?domain=…&port=…]` after `dns://`.
fn dns(rest: &str) -> Option<DiscoveryBackend> {
    let (server, query) = rest.split_once('?').unwrap_or((rest, ""));
    let server = server.trim_end_matches('/');
    let server = if server.is_empty() {
        None
    } else {
        Some(
            server
                .parse::<SocketAddr>()
                .or_else(|_| server.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                .ok()?,
        )
    };
    let mut domain = None;
    let mut port = patron_units::defaults::HTTP_PORT;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=')? {
            ("domain", d) if !d.is_empty() && !d.contains(['/', ' ']) => {
                domain = Some(d.trim_matches('.').to_string());
            }
            ("port", p) => port = p.parse().ok().filter(|p| *p > 0)?,
            _ => return None,
        }
    }
    Some(DiscoveryBackend::Dns {
        server,
        domain,
        port,
    })
}

/// The discovery settings from the process environment (for clients built
/// outside a service).
pub fn discovery_from_env() -> Result<Option<DiscoveryConfig>, ConfigError> {
    from_vars(&|name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)]) -> Result<Option<DiscoveryConfig>, ConfigError> {
        from_vars(&crate::config::test_lookup(pairs))
    }

    #[test]
    fn etcd_endpoints_ttl_and_address() {
        assert_eq!(read(&[]).unwrap(), None);
        let c = read(&[
            ("PATRON_DISCOVERY", "etcd://10.0.0.1:2379, 10.0.0.2:2379"),
            ("PATRON_DISCOVERY_TTL", "6s"),
            ("PATRON_DISCOVERY_ADDRESS", "10.1.2.3"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            c.backend,
            DiscoveryBackend::Etcd(vec![
                "http://10.0.0.1:2379".into(),
                "http://10.0.0.2:2379".into()
            ])
        );
        assert_eq!(c.ttl, Duration::from_secs(6));
        assert_eq!(c.address.as_deref(), Some("10.1.2.3"));
    }

    #[test]
    fn consul_and_dns() {
        let c = read(&[("PATRON_DISCOVERY", "consul://10.0.0.1:8500")])
            .unwrap()
            .unwrap();
        assert_eq!(
            c.backend,
            DiscoveryBackend::Consul {
                endpoint: "http://10.0.0.1:8500".into(),
                token: None
            }
        );
        let c = read(&[("PATRON_DISCOVERY", "dns://")]).unwrap().unwrap();
        assert_eq!(
            c.backend,
            DiscoveryBackend::Dns {
                server: None,
                domain: None,
                port: 50000
            }
        );
        let c = read(&[(
            "PATRON_DISCOVERY",
            "dns://127.0.0.1:5353?domain=default.svc.cluster.local.&port=8080",
        )])
        .unwrap()
        .unwrap();
        assert_eq!(
            c.backend,
            DiscoveryBackend::Dns {
                server: Some("127.0.0.1:5353".parse().unwrap()),
                domain: Some("default.svc.cluster.local".into()),
                port: 8080
            }
        );
        let c = read(&[("PATRON_DISCOVERY", "dns://10.0.0.10")])
            .unwrap()
            .unwrap();
        assert!(
            matches!(c.backend, DiscoveryBackend::Dns { server: Some(s), .. } if s.port() == 53)
        );
    }

    #[test]
    fn other_registries_and_short_ttls_are_refused() {
        for bad in [
            "zookeeper://h:2181",
            "etcd://",
            "http://h:2379",
            "etcd://h:2379/x",
            "consul://",
            "consul://a:1,b:2",
            "dns://not-an-ip:53",
            "dns://?port=0",
            "dns://?color=blue",
        ] {
            let err = read(&[("PATRON_DISCOVERY", bad)]).unwrap_err().to_string();
            assert!(
                err.contains("PATRON_DISCOVERY")
                    && err.contains("etcd://")
                    && err.contains("consul://")
                    && err.contains("dns://"),
                "{bad}: {err}"
            );
        }
        let err = read(&[
            ("PATRON_DISCOVERY", "etcd://h:1"),
            ("PATRON_DISCOVERY_TTL", "1s"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("at least 2s"), "{err}");
    }
}
