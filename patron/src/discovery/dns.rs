//! DNS as a registry, the way Kubernetes publishes a headless service: a
//! service's instances are the SRV records `_http._tcp.{name}` (each
//! target's A/AAAA records give its addresses; `_grpc._tcp.{name}` adds
//! gRPC ports), or, without SRV records, the A/AAAA records of `{name}`
//! with a default port. Registration is the platform's job, so this
//! registry takes none; changes are found by asking again every
//! [`POLL`] (the resolver's cache follows the records' TTLs).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;

use super::{DiscoveryError, Instance, Lease, Registry, Snapshot};

/// How often a watched service is looked up again.
pub const POLL: Duration = Duration::from_secs(2);

/// A DNS server (or the system's resolver) read as a registry.
#[derive(Clone)]
pub struct Dns {
    resolver: TokioResolver,
    server: String,
    domain: Option<String>,
    port: u16,
}

impl std::fmt::Debug for Dns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dns")
            .field("server", &self.server)
            .field("domain", &self.domain)
            .field("port", &self.port)
            .finish()
    }
}

fn fail(server: &str, what: &'static str, reason: impl Into<String>) -> DiscoveryError {
    DiscoveryError::registry("dns", server, what, reason)
}

impl Dns {
    /// Asks `server` (the system's resolver when `None`); names looked up
    /// are `{service}.{domain}` when a domain is given; instances found by
    /// A/AAAA records get `port`.
    pub fn new(
        server: Option<SocketAddr>,
        domain: Option<String>,
        port: u16,
    ) -> Result<Dns, DiscoveryError> {
        let provider = TokioRuntimeProvider::default();
        let (builder, name) = match server {
            Some(addr) => {
                let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
                for connection in &mut ns.connections {
                    connection.port = addr.port();
                }
                let config = ResolverConfig::from_name_servers(vec![ns]);
                (
                    TokioResolver::builder_with_config(config, provider),
                    addr.to_string(),
                )
            }
            None => (
                TokioResolver::builder(provider).map_err(|e| {
                    fail(
                        "system resolver",
                        "read the system's DNS configuration",
                        e.to_string(),
                    )
                })?,
                "system resolver".to_string(),
            ),
        };
        let mut builder = builder;
        builder.options_mut().timeout = Duration::from_secs(2);
        builder.options_mut().attempts = 2;
        let resolver = builder
            .build()
            .map_err(|e| fail(&name, "build the resolver", e.to_string()))?;
        Ok(Dns {
            resolver,
            server: name,
            domain,
            port,
        })
    }

    fn host(&self, service: &str) -> String {
        match &self.domain {
            Some(d) => format!("{service}.{d}."),
            None => service.to_string(),
        }
    }

    /// `(target, port)` of the SRV records of `name`; empty when there are
    /// none.
    async fn srv(&self, name: &str) -> Result<Vec<(String, u16)>, DiscoveryError> {
        match self.resolver.srv_lookup(name).await {
            Ok(lookup) => Ok(lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::SRV(srv) => Some((srv.target.to_utf8(), srv.port)),
                    _ => None,
                })
                .collect()),
            Err(e) if e.is_no_records_found() || e.is_nx_domain() => Ok(Vec::new()),
            Err(e) => Err(fail(&self.server, "SRV lookup", format!("{name}: {e}"))),
        }
    }

    async fn ips(&self, name: &str) -> Result<Vec<IpAddr>, DiscoveryError> {
        match self.resolver.lookup_ip(name).await {
            Ok(lookup) => Ok(lookup.iter().collect()),
            Err(e) if e.is_no_records_found() || e.is_nx_domain() => Ok(Vec::new()),
            Err(e) => Err(fail(&self.server, "address lookup", format!("{name}: {e}"))),
        }
    }

    async fn instances(&self, service: &str) -> Result<Vec<Instance>, DiscoveryError> {
        let host = self.host(service);
        let http = self.srv(&format!("_http._tcp.{host}")).await?;
        let instance = |ip: IpAddr, port: u16, grpc_port: Option<u16>| Instance {
            service: service.to_string(),
            id: SocketAddr::new(ip, port).to_string(),
            address: ip.to_string(),
            http_port: port,
            grpc_port,
            version: String::new(),
        };
        let mut found = Vec::new();
        if http.is_empty() {
            for ip in self.ips(&host).await? {
                found.push(instance(ip, self.port, None));
            }
        } else {
            let grpc = self.srv(&format!("_grpc._tcp.{host}")).await?;
            for (target, port) in http {
                let grpc_port = grpc.iter().find(|(t, _)| *t == target).map(|(_, p)| *p);
                for ip in self.ips(&target).await? {
                    found.push(instance(ip, port, grpc_port));
                }
            }
        }
        found.sort_by(|a, b| a.id.cmp(&b.id));
        found.dedup_by(|a, b| a.id == b.id);
        Ok(found)
    }
}

/// A stable number for a set of instances, standing for DNS's missing
/// change index.
fn fingerprint(instances: &[Instance]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    instances.hash(&mut h);
    h.finish().max(1)
}

impl Registry for Dns {
    fn registers(&self) -> bool {
        false
    }

    fn register<'a>(
        &'a self,
        instance: &'a Instance,
        _ttl: Duration,
        _health_url: &'a str,
    ) -> BoxFuture<'a, Result<Lease, DiscoveryError>> {
        let id = instance.id.clone();
        async move { Ok(Lease { id }) }.boxed()
    }

    fn renew<'a>(&'a self, _lease: &'a Lease) -> BoxFuture<'a, Result<bool, DiscoveryError>> {
        async { Ok(true) }.boxed()
    }

    fn deregister<'a>(&'a self, _lease: &'a Lease) -> BoxFuture<'a, Result<(), DiscoveryError>> {
        async { Ok(()) }.boxed()
    }

    fn watch<'a>(
        &'a self,
        service: &'a str,
        index: Option<u64>,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Snapshot, DiscoveryError>> {
        async move {
            let started = tokio::time::Instant::now();
            loop {
                let instances = self.instances(service).await?;
                let now = fingerprint(&instances);
                if index != Some(now) || started.elapsed() + POLL > wait {
                    return Ok(Snapshot {
                        instances,
                        index: now,
                    });
                }
                tokio::time::sleep(POLL).await;
            }
        }
        .boxed()
    }
}
