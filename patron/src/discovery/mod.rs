//! Service discovery (feature `discovery`): with `PATRON_DISCOVERY` set,
//! the service registers itself in a registry once it is ready, stays
//! registered only while `/ready` would answer 200, and leaves at the
//! shutdown signal, before connections drain — so callers stop picking it
//! before its listener closes. A crashed instance drops out when its
//! registration expires (etcd's lease, Consul's health check).
//!
//! Callers reach a service by its name: [`HttpClient`] sends
//! `http://invoice.discover/…` (and the gRPC channel `http://invoice.discover`)
//! to one of `invoice`'s instances, picked by the power of two choices
//! (fewest requests in flight of two at random), kept current by watching
//! the registry, with an instance that refuses connections three times in
//! a row left out for a while and an idempotent request that could not
//! reach one instance retried on another.
//!
//! Registries ([`Registry`]), chosen by `PATRON_DISCOVERY`:
//!
//! - `etcd://host:2379` — each instance is a key
//!   `patron/services/{name}/{id}` holding its [`Instance`] as JSON,
//!   attached to a lease of `PATRON_DISCOVERY_TTL` renewed while ready;
//!   changes are watched.
//! - `consul://host:8500` — the local agent's service registration with an
//!   HTTP check on `/ready`; instances from `health/service/{name}?passing`
//!   with blocking queries.
//! - `dns://[server:port]` — Kubernetes-style headless services: instances
//!   from SRV records `_http._tcp.{name}` (A/AAAA records of `{name}` with
//!   a default port when there are none), polled; registration is the
//!   platform's job.
//!
//! [`HttpClient`]: crate::client::http::HttpClient

mod balance;
mod consul;
mod dns;
mod error;
mod etcd;
mod metrics;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

pub use balance::{Ejection, Picked};
pub use consul::Consul;
pub use dns::Dns;
pub use error::DiscoveryError;
pub use etcd::Etcd;

use crate::config::{DiscoveryBackend, DiscoveryConfig};

/// One registered instance of a service.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Instance {
    /// The service's name.
    pub service: String,
    /// This instance's id (unique per process start).
    pub id: String,
    /// The host or IP it is reached at.
    pub address: String,
    /// Its HTTP port.
    pub http_port: u16,
    /// Its gRPC port, when it serves gRPC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_port: Option<u16>,
    /// The service's version.
    pub version: String,
}

impl Instance {
    /// The address as a URL's host: an IPv6 address in brackets.
    pub fn url_host(&self) -> std::borrow::Cow<'_, str> {
        match self.address.parse::<std::net::Ipv6Addr>() {
            Ok(v6) => format!("[{v6}]").into(),
            Err(_) => self.address.as_str().into(),
        }
    }
}

/// What a registry answered about a service: its instances now, and an
/// index that changes when they may have.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The healthy instances.
    pub instances: Vec<Instance>,
    /// Opaque to callers; passed back to [`Registry::watch`].
    pub index: u64,
}

/// A registration held in a registry, to renew and to end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The registry's handle: etcd's lease id, Consul's service id.
    pub id: String,
}

/// A service registry: register this instance, keep it registered, leave,
/// and list or watch another service's healthy instances. patron's three
/// backends implement it; implement it to use another registry with
/// [`Discovery::from_registry`].
pub trait Registry: fmt::Debug + Send + Sync + 'static {
    /// Whether this registry takes registrations (DNS does not: the
    /// platform publishes the records).
    fn registers(&self) -> bool {
        true
    }

    /// Registers `instance`, to expire about `ttl` after the last renewal
    /// (or when `health_url` stops answering 200, for a registry that
    /// checks health itself).
    fn register<'a>(
        &'a self,
        instance: &'a Instance,
        ttl: Duration,
        health_url: &'a str,
    ) -> BoxFuture<'a, Result<Lease, DiscoveryError>>;

    /// Keeps `lease` alive; `Ok(false)` when it is gone (register again).
    fn renew<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<bool, DiscoveryError>>;

    /// Ends `lease`: the instance is no longer listed.
    fn deregister<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<(), DiscoveryError>>;

    /// `service`'s healthy instances now, or — given the `index` of an
    /// earlier answer — once they may differ from it, waiting at most about
    /// `wait` (then the same instances may come back).
    fn watch<'a>(
        &'a self,
        service: &'a str,
        index: Option<u64>,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Snapshot, DiscoveryError>>;
}

/// A registry to register in and look services up in, with the
/// load-balancing state of the services looked up; cheap to clone (clones
/// share that state).
#[derive(Debug, Clone)]
pub struct Discovery {
    registry: Arc<dyn Registry>,
    pools: Arc<balance::Pools>,
}

impl Discovery {
    /// The registry `config` names.
    pub fn new(config: &DiscoveryConfig) -> Result<Discovery, DiscoveryError> {
        let registry: Arc<dyn Registry> = match &config.backend {
            DiscoveryBackend::Etcd(endpoints) => Arc::new(Etcd::new(endpoints.clone())),
            DiscoveryBackend::Consul { endpoint, token } => {
                Arc::new(Consul::new(endpoint.clone(), token.clone()))
            }
            DiscoveryBackend::Dns {
                server,
                domain,
                port,
            } => Arc::new(Dns::new(*server, domain.clone(), *port)?),
        };
        Ok(Discovery::from_registry_arc(registry))
    }

    /// The registry `PATRON_DISCOVERY` names, `None` when it is unset.
    pub fn from_env() -> Result<Option<Discovery>, DiscoveryError> {
        match crate::config::discovery_from_env()? {
            Some(config) => Discovery::new(&config).map(Some),
            None => Ok(None),
        }
    }

    /// The registry `PATRON_DISCOVERY` names, made once per process and
    /// shared (with its balancing state) by every client that asks;
    /// `None` when it is unset.
    pub fn shared_from_env() -> Result<Option<Discovery>, DiscoveryError> {
        static SHARED: std::sync::OnceLock<Option<Discovery>> = std::sync::OnceLock::new();
        if let Some(d) = SHARED.get() {
            return Ok(d.clone());
        }
        let made = Discovery::from_env()?;
        Ok(SHARED.get_or_init(|| made).clone())
    }

    /// Another registry.
    pub fn from_registry(registry: impl Registry) -> Discovery {
        Discovery::from_registry_arc(Arc::new(registry))
    }

    fn from_registry_arc(registry: Arc<dyn Registry>) -> Discovery {
        Discovery {
            pools: Arc::new(balance::Pools::new(Arc::clone(&registry))),
            registry,
        }
    }

    /// Sets how long an instance that refused connections is left out, and
    /// after how many refusals in a row (3, for 15 s).
    pub fn ejection(self, ejection: Ejection) -> Discovery {
        self.pools.set_ejection(ejection);
        self
    }

    /// The registry underneath.
    pub fn registry(&self) -> &dyn Registry {
        self.registry.as_ref()
    }

    pub(crate) fn registry_arc(&self) -> Arc<dyn Registry> {
        Arc::clone(&self.registry)
    }

    /// The instances of `service` healthy now, asked of the registry.
    pub async fn resolve(&self, service: &str) -> Result<Vec<Instance>, DiscoveryError> {
        Ok(self
            .registry
            .watch(service, None, Duration::ZERO)
            .await?
            .instances)
    }

    /// One instance of `service` to call, other than those in `tried` while
    /// another is known: the less busy of two picked at random among those
    /// not ejected. The first pick of a service resolves it and starts
    /// watching it. Report how the call went on the [`Picked`].
    pub async fn pick(&self, service: &str, tried: &[String]) -> Result<Picked, DiscoveryError> {
        self.pools.pick(service, tried).await
    }

    /// The instances of `service` the balancer knows now (empty before its
    /// first [`pick`](Self::pick)).
    pub fn known(&self, service: &str) -> Vec<Instance> {
        self.pools.known(service)
    }
}
