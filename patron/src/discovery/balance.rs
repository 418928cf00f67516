//! Client-side load balancing over a service's instances: one [`Pool`] per
//! service looked up, filled by a first lookup and kept current by a task
//! watching the registry; picks by the power of two choices (the one with
//! fewer calls in flight of two at random); an instance that refuses
//! connections [`Ejection::after`] times in a row is left out for
//! [`Ejection::duration`] (unless every instance is).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use super::metrics::families;
use super::{DiscoveryError, Instance, Registry};

/// How long a watch waits for a change before asking again.
const WATCH_WAIT: Duration = Duration::from_secs(30);
/// The least time between two watch calls, so a registry that answers at
/// once cannot make the watcher spin.
const WATCH_GAP: Duration = Duration::from_millis(100);

/// When an instance is left out of picks: after `after` refused connections
/// in a row, for `duration` (3 and 15 s by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ejection {
    /// Consecutive connection failures that eject an instance.
    pub after: u32,
    /// How long it stays out before it is tried again.
    pub duration: Duration,
}

impl Default for Ejection {
    fn default() -> Self {
        Ejection {
            after: 3,
            duration: Duration::from_secs(15),
        }
    }
}

/// Every service looked up through one [`Discovery`](super::Discovery).
pub(crate) struct Pools {
    registry: Arc<dyn Registry>,
    pools: Mutex<HashMap<String, Arc<Pool>>>,
    ejection: Mutex<Ejection>,
    /// Stops the watch tasks when the last `Discovery` clone goes.
    stop: CancellationToken,
}

impl std::fmt::Debug for Pools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let services: Vec<String> = lock(&self.pools).keys().cloned().collect();
        f.debug_struct("Pools")
            .field("services", &services)
            .finish()
    }
}

impl Drop for Pools {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One service's instances and their balancing state.
struct Pool {
    service: String,
    endpoints: RwLock<Arc<Vec<Arc<Endpoint>>>>,
    started: OnceCell<()>,
    ejection: Ejection,
}

/// One instance and how calls to it went.
struct Endpoint {
    instance: Instance,
    in_flight: AtomicUsize,
    failures: AtomicU32,
    ejected_until: Mutex<Option<Instant>>,
}

impl Endpoint {
    fn ejected(&self, now: Instant) -> bool {
        lock(&self.ejected_until).is_some_and(|until| until > now)
    }
}

/// An instance picked for one call. Say how the call went with
/// [`reached`](Self::reached) or [`unreachable`](Self::unreachable); it
/// counts as in flight until dropped.
pub struct Picked {
    endpoint: Arc<Endpoint>,
    pool: Arc<Pool>,
}

impl std::fmt::Debug for Picked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Picked")
            .field("instance", &self.endpoint.instance)
            .finish()
    }
}

impl Picked {
    /// The instance to call.
    pub fn instance(&self) -> &Instance {
        &self.endpoint.instance
    }

    /// The instance answered (whatever the status): its refusals are
    /// forgotten.
    pub fn reached(&self) {
        self.endpoint.failures.store(0, Ordering::Relaxed);
    }

    /// The instance could not be connected to; the last of
    /// [`Ejection::after`] such failures in a row ejects it.
    pub fn unreachable(&self) {
        let failures = self.endpoint.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let ejection = self.pool.ejection;
        if failures < ejection.after {
            return;
        }
        self.endpoint.failures.store(0, Ordering::Relaxed);
        *lock(&self.endpoint.ejected_until) = Some(Instant::now() + ejection.duration);
        if let Some(f) = families() {
            f.ejections.with_label_values(&[&self.pool.service]).inc();
        }
        let i = &self.endpoint.instance;
        tracing::warn!(
            service = %self.pool.service,
            instance = %i.id,
            address = %format!("{}:{}", i.address, i.http_port),
            seconds = ejection.duration.as_secs_f64(),
            "instance refused {failures} connections in a row: left out for a while"
        );
    }
}

impl Drop for Picked {
    fn drop(&mut self) {
        self.endpoint.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Pools {
    pub(crate) fn new(registry: Arc<dyn Registry>) -> Pools {
        Pools {
            registry,
            pools: Mutex::default(),
            ejection: Mutex::new(Ejection::default()),
            stop: CancellationToken::new(),
        }
    }

    pub(crate) fn set_ejection(&self, ejection: Ejection) {
        *lock(&self.ejection) = ejection;
    }

    fn pool(&self, service: &str) -> Arc<Pool> {
        let mut pools = lock(&self.pools);
        if let Some(pool) = pools.get(service) {
            return Arc::clone(pool);
        }
        let ejection = *lock(&self.ejection);
        Arc::clone(pools.entry(service.to_string()).or_insert_with(|| {
            Arc::new(Pool {
                service: service.to_string(),
                endpoints: RwLock::default(),
                started: OnceCell::new(),
                ejection,
            })
        }))
    }

    pub(crate) fn known(&self, service: &str) -> Vec<Instance> {
        let pool = lock(&self.pools).get(service).cloned();
        pool.map(|p| p.current().iter().map(|e| e.instance.clone()).collect())
            .unwrap_or_default()
    }

    pub(crate) async fn pick(
        &self,
        service: &str,
        tried: &[String],
    ) -> Result<Picked, DiscoveryError> {
        let pool = self.started(service).await?;
        let endpoint = pool.choose(tried)?;
        endpoint.in_flight.fetch_add(1, Ordering::Relaxed);
        Ok(Picked { endpoint, pool })
    }

    /// `service`'s pool, looked up and watched from the first call on.
    async fn started(&self, service: &str) -> Result<Arc<Pool>, DiscoveryError> {
        let pool = self.pool(service);
        pool.started
            .get_or_try_init(|| async {
                let first = self
                    .registry
                    .watch(service, None, Duration::ZERO)
                    .await
                    .inspect_err(|_| count(service, "error"))
                    .map_err(|e| DiscoveryError::NoInstance {
                        service: service.to_string(),
                        reason: e.to_string(),
                    })?;
                count(service, "ok");
                pool.update(first.instances);
                tokio::spawn(watch(
                    Arc::downgrade(&pool),
                    Arc::clone(&self.registry),
                    first.index,
                    self.stop.clone(),
                ));
                Ok::<_, DiscoveryError>(())
            })
            .await?;
        Ok(pool)
    }
}

fn count(service: &str, outcome: &str) {
    if let Some(f) = families() {
        f.resolutions.with_label_values(&[service, outcome]).inc();
    }
}

impl Pool {
    fn current(&self) -> Arc<Vec<Arc<Endpoint>>> {
        Arc::clone(&self.endpoints.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Takes the registry's list, keeping the state of instances still in
    /// it.
    fn update(&self, mut instances: Vec<Instance>) {
        instances.sort_by(|a, b| a.id.cmp(&b.id));
        let old = self.current();
        let same = old.len() == instances.len()
            && old.iter().zip(&instances).all(|(e, i)| e.instance == *i);
        if same {
            return;
        }
        let next: Vec<Arc<Endpoint>> = instances
            .into_iter()
            .map(|instance| {
                old.iter()
                    .find(|e| e.instance == instance)
                    .cloned()
                    .unwrap_or_else(|| {
                        Arc::new(Endpoint {
                            instance,
                            in_flight: AtomicUsize::new(0),
                            failures: AtomicU32::new(0),
                            ejected_until: Mutex::new(None),
                        })
                    })
            })
            .collect();
        tracing::info!(
            service = %self.service,
            instances = next.len(),
            addresses = ?next.iter().map(|e| format!("{}:{}", e.instance.address, e.instance.http_port)).collect::<Vec<_>>(),
            "instances of the service changed"
        );
        if let Some(f) = families() {
            f.instances
                .with_label_values(&[&self.service])
                .set(i64::try_from(next.len()).unwrap_or(i64::MAX));
        }
        *self.endpoints.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
    }

    /// The power of two choices among the instances not tried and not
    /// ejected — or, when every untried one is ejected, among those.
    fn choose(&self, tried: &[String]) -> Result<Arc<Endpoint>, DiscoveryError> {
        let all = self.current();
        let now = Instant::now();
        let untried = |e: &&Arc<Endpoint>| !tried.contains(&e.instance.id);
        let healthy = |e: &&Arc<Endpoint>| untried(e) && !e.ejected(now);
        let n = all.iter().filter(healthy).count();
        // Nth of the candidates, without collecting them.
        let nth = |i: usize| {
            if n > 0 {
                all.iter().filter(healthy).nth(i)
            } else {
                all.iter().filter(untried).nth(i)
            }
        };
        let n = if n > 0 {
            n
        } else {
            all.iter().filter(untried).count()
        };
        let pick = match n {
            0 => None,
            1 => nth(0),
            n => {
                let a = fastrand::usize(..n);
                let b = (a + 1 + fastrand::usize(..n - 1)) % n;
                match (nth(a), nth(b)) {
                    (Some(x), Some(y))
                        if y.in_flight.load(Ordering::Relaxed)
                            < x.in_flight.load(Ordering::Relaxed) =>
                    {
                        Some(y)
                    }
                    (x, _) => x,
                }
            }
        };
        pick.map(Arc::clone)
            .ok_or_else(|| DiscoveryError::NoInstance {
                service: self.service.clone(),
                reason: if all.is_empty() {
                    "the registry lists none".to_string()
                } else {
                    format!("all {} tried", all.len())
                },
            })
    }
}

/// Keeps `pool` current until it or its `Discovery` goes.
async fn watch(
    pool: Weak<Pool>,
    registry: Arc<dyn Registry>,
    mut index: u64,
    stop: CancellationToken,
) {
    let Some(service) = pool.upgrade().map(|p| p.service.clone()) else {
        return;
    };
    let mut backoff = Duration::from_secs(1);
    loop {
        let answer = tokio::select! {
            _ = stop.cancelled() => return,
            a = registry.watch(&service, Some(index), WATCH_WAIT) => a,
        };
        let Some(pool) = pool.upgrade() else { return };
        let pause = match answer {
            Ok(snapshot) => {
                count(&service, "ok");
                backoff = Duration::from_secs(1);
                index = snapshot.index;
                pool.update(snapshot.instances);
                WATCH_GAP
            }
            Err(e) => {
                count(&service, "error");
                tracing::warn!(service = %service, error = %e, "cannot watch the service's instances; keeping the last known");
                let pause = backoff;
                backoff = (backoff * 2).min(Duration::from_secs(10));
                pause
            }
        };
        drop(pool);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(id: &str) -> Instance {
        Instance {
            service: "svc".into(),
            id: id.into(),
            address: "127.0.0.1".into(),
            http_port: 1,
            grpc_port: None,
            version: String::new(),
        }
    }

    fn pool(ids: &[&str], ejection: Ejection) -> Arc<Pool> {
        let pool = Arc::new(Pool {
            service: "svc".into(),
            endpoints: RwLock::default(),
            started: OnceCell::new(),
            ejection,
        });
        pool.update(ids.iter().map(|i| instance(i)).collect());
        pool
    }

    fn picked(pool: &Arc<Pool>, tried: &[String]) -> Picked {
        let endpoint = pool.choose(tried).unwrap();
        endpoint.in_flight.fetch_add(1, Ordering::Relaxed);
        Picked {
            endpoint,
            pool: Arc::clone(pool),
        }
    }

    #[test]
    fn two_choices_prefer_the_less_busy_instance() {
        let pool = pool(&["a", "b"], Ejection::default());
        // Hold ten calls on whichever comes first: every later pick of two
        // (there are only two) goes to the other.
        let busy: Vec<Picked> = (0..10).map(|_| picked(&pool, &["b".into()])).collect();
        assert!(busy.iter().all(|p| p.instance().id == "a"));
        for _ in 0..20 {
            assert_eq!(picked(&pool, &[]).instance().id, "b");
        }
        drop(busy);
        let ids: std::collections::HashSet<String> = (0..50)
            .map(|_| picked(&pool, &[]).instance().id.clone())
            .collect();
        assert_eq!(ids.len(), 2, "idle instances are both picked: {ids:?}");
    }

    #[test]
    fn refusals_in_a_row_eject_until_the_time_is_up_and_a_reach_resets_them() {
        let ejection = Ejection {
            after: 2,
            duration: Duration::from_millis(200),
        };
        let pool = pool(&["a", "b"], ejection);
        let a = || picked(&pool, &["b".into()]);
        a().unreachable();
        a().reached();
        a().unreachable();
        // Not two in a row: still picked.
        let ids: std::collections::HashSet<String> = (0..50)
            .map(|_| picked(&pool, &[]).instance().id.clone())
            .collect();
        assert_eq!(ids.len(), 2);
        a().unreachable();
        for _ in 0..50 {
            assert_eq!(picked(&pool, &[]).instance().id, "b", "a is ejected");
        }
        // Everything else tried: the ejected one is still a last resort.
        assert_eq!(picked(&pool, &["b".into()]).instance().id, "a");
        std::thread::sleep(Duration::from_millis(250));
        let ids: std::collections::HashSet<String> = (0..50)
            .map(|_| picked(&pool, &[]).instance().id.clone())
            .collect();
        assert_eq!(ids.len(), 2, "back after the ejection time");
    }

    #[test]
    fn tried_instances_are_skipped_and_an_empty_pool_says_why() {
        let pool = pool(&["a", "b"], Ejection::default());
        assert_eq!(picked(&pool, &["a".into()]).instance().id, "b");
        let err = pool
            .choose(&["a".into(), "b".into()])
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("\"svc\"") && err.contains("all 2 tried"),
            "{err}"
        );
        let empty = self::pool(&[], Ejection::default());
        let err = empty.choose(&[]).err().unwrap().to_string();
        assert!(err.contains("the registry lists none"), "{err}");
    }

    #[test]
    fn an_update_keeps_the_state_of_instances_still_listed() {
        let pool = pool(&["a", "b"], Ejection::default());
        let held = picked(&pool, &["b".into()]);
        pool.update(vec![instance("a"), instance("c")]);
        let ids: Vec<String> = pool
            .current()
            .iter()
            .map(|e| e.instance.id.clone())
            .collect();
        assert_eq!(ids, ["a", "c"]);
        assert_eq!(pool.current()[0].in_flight.load(Ordering::Relaxed), 1);
        drop(held);
        assert_eq!(pool.current()[0].in_flight.load(Ordering::Relaxed), 0);
    }
}
