//! Service discovery settings: `PATRON_DISCOVERY` (the registry),
//! `PATRON_DISCOVERY_TTL` (how long a registration outlives its last
//! renewal) and `PATRON_DISCOVERY_ADDRESS` (the address other services
//! reach this instance at).

use std::time::Duration;

use super::{ConfigError, duration, invalid};

/// Where this service registers itself (feature `discovery`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiscoveryBackend {
    /// etcd's v3 API, at these `http://host:port` endpoints.
    Etcd(Vec<String>),
}

/// The discovery settings; `None` in [`Config`](super::Config) when
/// `PATRON_DISCOVERY` is unset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryConfig {
    /// `PATRON_DISCOVERY`: `etcd://host:2379[,host:2379…]`.
    pub backend: DiscoveryBackend,
    /// `PATRON_DISCOVERY_TTL`: a registration expires this long after its
    /// last renewal (10s); renewed every third of it while ready.
    pub ttl: Duration,
    /// `PATRON_DISCOVERY_ADDRESS`: the host or IP advertised (the HTTP host
    /// when it is a specific address, else this machine's host name).
    pub address: Option<String>,
}

/// Reads the `PATRON_DISCOVERY*` variables through `get`.
pub(crate) fn from_vars(
    get: &impl Fn(&str) -> Option<String>,
) -> Result<Option<DiscoveryConfig>, ConfigError> {
    let Some(v) = get("PATRON_DISCOVERY") else {
        return Ok(None);
    };
    let expected = "etcd://host:port (several separated by commas), e.g. etcd://127.0.0.1:2379";
    let Some(hosts) = v.trim().strip_prefix("etcd://") else {
        return Err(invalid("PATRON_DISCOVERY", &v, expected));
    };
    let endpoints: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|h| format!("http://{}", h.trim_end_matches('/')))
        .collect();
    if endpoints.is_empty() || hosts.contains(['/', '@', '?']) {
        return Err(invalid("PATRON_DISCOVERY", &v, expected));
    }
    let mut c = DiscoveryConfig {
        backend: DiscoveryBackend::Etcd(endpoints),
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
    fn other_registries_and_short_ttls_are_refused() {
        for bad in [
            "consul://h:8500",
            "etcd://",
            "http://h:2379",
            "etcd://h:2379/x",
        ] {
            let err = read(&[("PATRON_DISCOVERY", bad)]).unwrap_err().to_string();
            assert!(
                err.contains("PATRON_DISCOVERY") && err.contains("etcd://"),
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
