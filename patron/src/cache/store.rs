//! Where cached responses live: in memory (moka, bounded by bytes, each
//! URL's entries kept as long as their longest time to live) or in Redis
//! (feature `redis`, shared by every instance); and the per-key lock that
//! makes concurrent misses compute once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use moka::Expiry;
use moka::future::Cache;

use super::entry::Variants;
use crate::config::{CacheBackend, CacheConfig};

/// The longest a Redis read or write may hold a request up: past it the
/// cache is skipped (a read counts as a miss).
#[cfg(feature = "redis")]
const REDIS_TIMEOUT: Duration = Duration::from_millis(250);

/// How long past its freshness an entry is kept, for `max-stale` requests.
pub(crate) const STALE_GRACE: Duration = Duration::from_secs(300);

/// An entry in the memory store, with how long to keep it.
#[derive(Clone)]
pub(crate) struct Stored {
    variants: Arc<Variants>,
    keep: Duration,
}

struct KeepFor;

impl Expiry<String, Stored> for KeepFor {
    fn expire_after_create(&self, _: &String, value: &Stored, _: Instant) -> Option<Duration> {
        Some(value.keep)
    }

    fn expire_after_update(
        &self,
        _: &String,
        value: &Stored,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.keep)
    }
}

/// The cache's storage.
#[derive(Clone)]
pub(crate) enum Store {
    Memory(Cache<String, Stored>),
    #[cfg(feature = "redis")]
    Redis(crate::client::redis::Redis),
}

impl Store {
    /// The store `config` names; `on_evict` hears of each entry the memory
    /// store drops for room.
    pub(crate) fn new(
        config: &CacheConfig,
        on_evict: impl Fn() + Send + Sync + 'static,
    ) -> Result<Store, String> {
        match &config.backend {
            CacheBackend::Memory => Ok(Store::Memory(
                Cache::builder()
                    .max_capacity(config.size)
                    .weigher(|_: &String, v: &Stored| v.variants.weight())
                    .expire_after(KeepFor)
                    .eviction_listener(move |_, _, cause| {
                        if cause == moka::notification::RemovalCause::Size {
                            on_evict();
                        }
                    })
                    .build(),
            )),
            #[cfg(feature = "redis")]
            CacheBackend::Redis(url) => crate::client::redis::Redis::new(url.expose())
                .map(Store::Redis)
                .map_err(|e| format!("PATRON_HTTP_CACHE: {e}")),
            #[cfg(not(feature = "redis"))]
            CacheBackend::Redis(url) => Err(format!(
                "PATRON_HTTP_CACHE={url} needs patron's `redis` cargo feature: in Cargo.toml, write `patron = {{ version = \"…\", features = [\"redis\"] }}`"
            )),
        }
    }

    /// The entries stored under `key`; a store that cannot answer is a
    /// miss (logged), never an error for the request.
    pub(crate) async fn get(&self, key: &str) -> Variants {
        match self {
            Store::Memory(cache) => cache
                .get(key)
                .await
                .map(|s| Variants::clone(&s.variants))
                .unwrap_or_default(),
            #[cfg(feature = "redis")]
            Store::Redis(redis) => {
                use redis::AsyncCommands;
                let mut conn = redis.clone();
                let read = conn.get::<_, Option<Vec<u8>>>(redis_key(key));
                let Ok(read) = tokio::time::timeout(REDIS_TIMEOUT, read).await else {
                    tracing::warn!(
                        "the route cache's Redis did not answer in time; computing the response"
                    );
                    return Variants::default();
                };
                match read {
                    Ok(Some(bytes)) => Variants::decode(&bytes).unwrap_or_else(|e| {
                        tracing::warn!(error = %e, "ignoring an unreadable route cache entry");
                        Variants::default()
                    }),
                    Ok(None) => Variants::default(),
                    Err(e) => {
                        tracing::warn!(error = %e, "the route cache's Redis did not answer; computing the response");
                        Variants::default()
                    }
                }
            }
        }
    }

    /// Stores `variants` under `key`; a failure is logged.
    pub(crate) async fn put(&self, key: String, variants: Variants) {
        let keep = variants.keep_for(SystemTime::now(), STALE_GRACE);
        match self {
            Store::Memory(cache) => {
                cache
                    .insert(
                        key,
                        Stored {
                            variants: Arc::new(variants),
                            keep,
                        },
                    )
                    .await;
            }
            #[cfg(feature = "redis")]
            Store::Redis(redis) => {
                use redis::AsyncCommands;
                let bytes = match variants.encode() {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot store a route cache entry");
                        return;
                    }
                };
                let mut conn = redis.clone();
                let millis = u64::try_from(keep.as_millis()).unwrap_or(u64::MAX).max(1);
                let write = conn.pset_ex::<_, _, ()>(redis_key(&key), bytes, millis);
                match tokio::time::timeout(REDIS_TIMEOUT, write).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "cannot store a route cache entry in Redis");
                    }
                    Err(_) => tracing::warn!(
                        "the route cache's Redis did not answer in time; the entry is not stored"
                    ),
                }
            }
        }
    }
}

#[cfg(feature = "redis")]
fn redis_key(key: &str) -> String {
    format!("patron:http-cache:{key}")
}

/// Per-key async locks: the first miss for a key computes, the others wait
/// for it and then find its entry.
#[derive(Default)]
pub(crate) struct Flights(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl Flights {
    /// The lock of `key`, held until the guard drops.
    pub(crate) async fn enter(self: &Arc<Self>, key: &str) -> Flight {
        let lock = {
            let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(map.entry(key.to_string()).or_default())
        };
        let guard = lock.clone().lock_owned().await;
        Flight {
            flights: Arc::clone(self),
            key: key.to_string(),
            lock,
            _guard: guard,
        }
    }
}

/// A held key lock; forgets the key when no one else waits on it.
pub(crate) struct Flight {
    flights: Arc<Flights>,
    key: String,
    lock: Arc<tokio::sync::Mutex<()>>,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl Drop for Flight {
    fn drop(&mut self) {
        let mut map = self.flights.0.lock().unwrap_or_else(|p| p.into_inner());
        // Ours, the map's and the guard's: nobody else is waiting.
        if Arc::strong_count(&self.lock) <= 3 {
            map.remove(&self.key);
        }
    }
}
