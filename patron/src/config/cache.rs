//! The route cache's settings: `PATRON_HTTP_CACHE` (where entries live)
//! and `PATRON_HTTP_CACHE_SIZE` (the in-memory store's bound).

use patron_units as units;

use super::{BrokerUrl, ConfigError, invalid};

/// Where `cache = "…"` routes keep their responses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheBackend {
    /// In the process, bounded by `PATRON_HTTP_CACHE_SIZE` (the default).
    Memory,
    /// In Redis (feature `redis`), shared by every instance.
    Redis(BrokerUrl),
}

/// The route cache's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// `PATRON_HTTP_CACHE`: `memory` (default) or a `redis://` URL.
    pub backend: CacheBackend,
    /// `PATRON_HTTP_CACHE_SIZE`: the most the in-memory store holds, in
    /// bytes of response bodies and headers (64 MiB).
    pub size: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            backend: CacheBackend::Memory,
            size: 64 << 20,
        }
    }
}

/// Reads the `PATRON_HTTP_CACHE*` variables through `get`.
pub(crate) fn from_vars(get: &impl Fn(&str) -> Option<String>) -> Result<CacheConfig, ConfigError> {
    let mut c = CacheConfig::default();
    if let Some(v) = get("PATRON_HTTP_CACHE") {
        let t = v.trim();
        c.backend = if t.eq_ignore_ascii_case("memory") {
            CacheBackend::Memory
        } else if t.starts_with("redis://") || t.starts_with("rediss://") {
            CacheBackend::Redis(BrokerUrl::new(t))
        } else {
            return Err(invalid(
                "PATRON_HTTP_CACHE",
                &super::redact(t),
                "memory, or a redis:// URL such as redis://127.0.0.1:6379",
            ));
        };
    }
    if let Some(v) = get("PATRON_HTTP_CACHE_SIZE") {
        let expected = "a size such as 64MiB, greater than zero";
        let bytes =
            units::parse_size(&v).map_err(|_| invalid("PATRON_HTTP_CACHE_SIZE", &v, expected))?;
        if bytes == 0 {
            return Err(invalid("PATRON_HTTP_CACHE_SIZE", &v, expected));
        }
        c.size = bytes;
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)]) -> Result<CacheConfig, ConfigError> {
        from_vars(&crate::config::test_lookup(pairs))
    }

    #[test]
    fn backends_and_sizes() {
        assert_eq!(read(&[]).unwrap(), CacheConfig::default());
        let c = read(&[
            ("PATRON_HTTP_CACHE", "redis://:pw@h:6379"),
            ("PATRON_HTTP_CACHE_SIZE", "1MiB"),
        ])
        .unwrap();
        assert_eq!(
            c.backend,
            CacheBackend::Redis(BrokerUrl::new("redis://:pw@h:6379"))
        );
        assert_eq!(c.size, 1 << 20);
        let err = read(&[("PATRON_HTTP_CACHE", "memcached://u:pw@h")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("PATRON_HTTP_CACHE") && !err.contains("pw"),
            "{err}"
        );
        assert!(read(&[("PATRON_HTTP_CACHE_SIZE", "0")]).is_err());
    }
}
