//! The component that keeps this instance registered: it registers once
//! the service is ready, renews the lease every third of the TTL while it
//! stays ready (a not-ready service lets its lease lapse, and registers
//! again when ready), and revokes it at the shutdown signal. With Consul
//! the agent also checks `/ready` itself; renewing only makes sure the
//! registration is still there.

use std::sync::Arc;
use std::time::Duration;

use crate::component::{Component, ComponentContext, ComponentInfo};
use crate::config::DiscoveryConfig;
use crate::discovery::{Discovery, DiscoveryError, Instance, Lease, Registry};
use crate::error::Error;
use crate::http::builtin::Management;

/// Keeps one instance registered; see the module doc.
pub(crate) struct Registration {
    registry: Arc<dyn Registry>,
    instance: Instance,
    /// `http` or `https`: how the registry reaches `/ready`.
    scheme: &'static str,
    ttl: Duration,
    /// What "ready" means; set once the service has built it.
    management: Option<Arc<Management>>,
}

impl Registration {
    /// `None` for a registry that takes no registrations (DNS).
    pub(crate) fn new(
        config: &DiscoveryConfig,
        instance: Instance,
        tls: bool,
    ) -> Result<Option<Self>, DiscoveryError> {
        let registry = Discovery::new(config)?.registry_arc();
        if !registry.registers() {
            return Ok(None);
        }
        Ok(Some(Registration {
            registry,
            instance,
            scheme: if tls { "https" } else { "http" },
            ttl: config.ttl,
            management: None,
        }))
    }

    /// The HTTP port as bound (port 0 picks one at bind time).
    pub(crate) fn bound_at(&mut self, http_port: u16) {
        self.instance.http_port = http_port;
    }

    /// Registers only while `management` says the service is ready.
    pub(crate) fn follow(&mut self, management: Arc<Management>) {
        self.management = Some(management);
    }

    fn health_url(&self) -> String {
        format!(
            "{}://{}:{}/ready",
            self.scheme,
            self.instance.url_host(),
            self.instance.http_port
        )
    }

    /// Registers anew; the lease held.
    async fn register(&self) -> Result<Lease, String> {
        self.registry
            .register(&self.instance, self.ttl, &self.health_url())
            .await
            .map_err(|e| e.to_string())
    }

    /// One renewal round: the lease held afterwards.
    async fn tend(&self, lease: Option<Lease>) -> Option<Lease> {
        let ready = match &self.management {
            Some(m) => m.is_ready().await,
            None => false,
        };
        match (ready, lease) {
            (false, held) => {
                if held.is_some() {
                    tracing::warn!(service = %self.instance.service, "not ready: letting the discovery registration lapse");
                }
                None
            }
            (true, Some(lease)) => match self.registry.renew(&lease).await {
                Ok(true) => Some(lease),
                Ok(false) => {
                    tracing::warn!("the discovery registration expired; registering again");
                    self.fresh().await
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot renew the discovery registration");
                    Some(lease)
                }
            },
            (true, None) => self.fresh().await,
        }
    }

    async fn fresh(&self) -> Option<Lease> {
        match self.register().await {
            Ok(lease) => {
                tracing::info!(service = %self.instance.service, id = %self.instance.id, address = %self.instance.address, port = self.instance.http_port, "registered for discovery");
                Some(lease)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot register for discovery; trying again");
                None
            }
        }
    }
}

impl Component for Registration {
    fn info(&self) -> ComponentInfo {
        ComponentInfo::new("discovery", "discovery")
            .detail("service", self.instance.service.clone())
            .detail("id", self.instance.id.clone())
            .detail("ttl_seconds", self.ttl.as_secs())
    }

    async fn run(self, ctx: ComponentContext) -> Result<(), Error> {
        let mut lease = None;
        let every = self.ttl / 3;
        loop {
            lease = self.tend(lease).await;
            tokio::select! {
                _ = ctx.draining().cancelled() => break,
                _ = tokio::time::sleep(every) => {}
            }
        }
        if let Some(lease) = lease {
            match self.registry.deregister(&lease).await {
                Ok(()) => {
                    tracing::info!(service = %self.instance.service, id = %self.instance.id, "deregistered from discovery")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot deregister; the registration lapses with its lease")
                }
            }
        }
        ctx.shutdown().cancelled().await;
        Ok(())
    }
}
