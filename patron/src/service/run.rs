//! Binding and running a validated service.
//!
//! Shutdown sequence, on a signal, on [`BoundService::run_until`]'s token,
//! or when any component ends: `/ready` turns 503 → wait
//! `PATRON_SHUTDOWN_DELAY` (signals only) → every component is told to
//! stop (the HTTP server, a component like the others, stops accepting and
//! drains) → all of it bounded by `PATRON_SHUTDOWN_TIMEOUT`. Every
//! component's error is reported.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{Service, signals, validate, write_list};
use crate::client::Client;
use crate::component::{ComponentContext, ComponentInfo, DynComponent, Readiness};
use crate::config::Config;
use crate::consumer::registry::{self as consumer_registry, ConsumerDef};
use crate::deps::Deps;
use crate::error::Error;
use crate::http::builtin::Management;
use crate::http::component::HttpServer;
use crate::http::registry::{self as route_registry, RouteDef};
use crate::http::router::{self, AppParts};
use crate::observe::metrics::{HttpMetrics, Metrics};

/// Why a service stopped with a failure: every component error, joined.
#[derive(Debug, thiserror::Error)]
pub struct ServiceError {
    /// `component: error`, one per failure.
    pub errors: Vec<String>,
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_list(
            f,
            &self.errors,
            "the service stopped with an error: ",
            |n| format!("the service stopped with {n} errors:"),
        )
    }
}

/// A validated service whose HTTP port is bound but not yet serving.
pub struct BoundService {
    name: String,
    config: Arc<Config>,
    deps: Arc<Deps>,
    addr: SocketAddr,
    grpc_addr: Option<SocketAddr>,
    shared: Arc<Management>,
    /// The HTTP server first, then the other components in the order given.
    components: Vec<(ComponentInfo, Readiness, Box<dyn DynComponent>)>,
    clients: Vec<Arc<dyn Client>>,
    metrics: Metrics,
}

impl fmt::Debug for BoundService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundService")
            .field("name", &self.name)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Service {
    /// Validates the service and binds its HTTP port, so the address is known
    /// before serving starts (port 0 picks a free one).
    #[cfg_attr(not(feature = "grpc"), allow(unused_mut))]
    pub async fn bind(mut self) -> Result<BoundService, Error> {
        let routes: Vec<&'static RouteDef> = match &self.routes {
            Some(r) => r.clone(),
            None => route_registry::routes(),
        };
        let consumers: Vec<&'static ConsumerDef> = match &self.consumers {
            Some(c) => c.clone(),
            None => consumer_registry::consumers(),
        };
        #[cfg(feature = "grpc")]
        let grpc_defs = super::grpc::defs(self.grpc_defs.take());
        #[cfg(feature = "grpc")]
        let grpc_count = grpc_defs.len() + self.grpc.len();
        #[cfg(not(feature = "grpc"))]
        let grpc_count = 0;
        // Handlers may take `Dep<Metrics>`: provide it before validation.
        let metrics = self.metrics;
        let mut deps = self.deps;
        deps.insert(metrics.clone());
        let mut problems = validate::check(
            &routes,
            &consumers,
            &deps,
            self.components.len() + consumers.len() + grpc_count + self.files.len(),
        )
        .err()
        .map(|e| e.problems)
        .unwrap_or_default();
        problems.extend(self.files.iter().flat_map(crate::http::Files::problems));
        #[cfg(feature = "grpc")]
        problems.extend(super::grpc::problems(&self.grpc, &grpc_defs, &deps));
        problems.extend(crate::contract::path_problems(&self.config, &routes));
        if !problems.is_empty() {
            return Err(validate::StartupError { problems }.into());
        }
        if self.config.debug_endpoints && self.debug_auth.is_none() {
            if !self.config.debug_unauthenticated {
                return Err(validate::StartupError {
                    problems: vec![format!(
                        "the debug endpoints (PATRON_DEBUG_ENDPOINTS or with_debug_endpoints) are on without an authenticator, so anyone reaching port {} could profile the process or change its log level: give them one with Service::with_debug_auth(…), or open them on purpose with PATRON_DEBUG_ENDPOINTS=unauthenticated (or Service::with_unauthenticated_debug_endpoints())",
                        self.config.http_port
                    )],
                }
                .into());
            }
            tracing::warn!(
                port = self.config.http_port,
                "the debug endpoints are on without authentication: anyone reaching the port can profile the process or change its log level"
            );
        }
        metrics.register_runtime()?;
        let http_metrics = HttpMetrics::register(&metrics)?;
        let deps = Arc::new(deps);

        #[cfg(feature = "grpc")]
        let mut grpc = super::grpc::bind(
            &self.config,
            std::mem::take(&mut self.grpc),
            &grpc_defs,
            &deps,
            &metrics,
            &self.reloads,
        )
        .await?;
        #[cfg(feature = "grpc")]
        let grpc_addr = grpc.as_ref().map(|g| g.local_addr());
        #[cfg(not(feature = "grpc"))]
        let grpc_addr = None;
        let mut all_components = self.components;
        all_components.extend(consumers.iter().map(|c| (c.build)().component.0));
        let mut all_info = vec![HttpServer::describe(&self.config, routes.len())];
        #[cfg(feature = "discovery")]
        let mut registration = match self.config.discovery.as_ref() {
            Some(d) => super::registration::Registration::new(
                d,
                registered_instance(&self.name, &self.version, &self.config, d, grpc_addr),
                self.config.http_tls.is_some(),
            )
            .map_err(|e| validate::StartupError {
                problems: vec![format!("service discovery: {e}")],
            })?,
            None => None,
        };
        #[cfg(feature = "grpc")]
        all_info.extend(grpc.as_ref().map(crate::component::Component::info));
        all_info.extend(all_components.iter().map(|c| c.info()));
        #[cfg(feature = "discovery")]
        all_info.extend(registration.as_ref().map(crate::component::Component::info));
        let info = json!({
            "name": self.name,
            "version": self.version,
            "framework": { "name": "patron", "version": env!("CARGO_PKG_VERSION") },
            "routes": routes.iter().map(|r| json!({
                "method": r.method,
                "path": r.path,
                "handler": r.qualified_handler(),
                "auth": r.auth.as_ref().map(|a| a.type_name),
                "middleware": r.middleware,
                "location": r.location(),
            })).collect::<Vec<_>>(),
            "components": all_info,
        });
        let readiness: Vec<Readiness> = all_info.iter().map(|i| Readiness::new(&i.name)).collect();
        let crate::contract::Documents { openapi, asyncapi } =
            crate::contract::documents(&self.config, &self.name, &self.version, &routes, &all_info);
        let shared = Arc::new(Management {
            shutting_down: AtomicBool::new(false),
            checks: self.checks,
            readiness: std::sync::Mutex::new(readiness.clone()),
            info: serde_json::to_vec(&info).unwrap_or_default().into(),
            openapi,
            asyncapi,
        });
        let app = router::build(AppParts {
            routes: &routes,
            deps: Arc::clone(&deps),
            globals: &self.globals,
            config: &self.config,
            shared: Arc::clone(&shared),
            metrics: &metrics,
            http_metrics: &http_metrics,
            debug_auth: self.debug_auth.as_ref(),
            name: &self.name,
            version: &self.version,
            cors: self.cors.as_ref(),
            files: &self.files,
        })
        .map_err(|e| validate::StartupError { problems: vec![e] })?;
        let http = HttpServer::bind(&self.config, app, routes.len()).await?;
        if let Some(tls) = http.tls() {
            let tls = Arc::clone(tls);
            self.reloads
                .add("the HTTP server's TLS certificate", move || tls.reload());
        }
        let addr = http.local_addr();
        let mut boxed: Vec<Box<dyn DynComponent>> = vec![Box::new(http)];
        #[cfg(feature = "grpc")]
        if let Some(mut grpc) = grpc.take() {
            grpc.follow(Arc::clone(&shared));
            boxed.push(Box::new(grpc));
        }
        boxed.extend(all_components);
        #[cfg(feature = "discovery")]
        if let Some(mut registration) = registration.take() {
            registration.bound_at(addr.port());
            registration.follow(Arc::clone(&shared));
            boxed.push(Box::new(registration));
        }
        let components = all_info
            .into_iter()
            .zip(readiness)
            .zip(boxed)
            .map(|((info, readiness), component)| (info, readiness, component))
            .collect();
        Ok(BoundService {
            name: self.name,
            config: Arc::new(self.config),
            deps,
            addr,
            grpc_addr,
            shared,
            components,
            clients: self.clients,
            metrics,
        })
    }

    /// Validates, binds and runs the service until SIGINT or SIGTERM (or a
    /// component ends); SIGHUP runs the `on_sighup` hook.
    pub async fn run(self) -> Result<(), Error> {
        // Handlers go in before the port opens: a signal that arrives as soon
        // as the service answers must not kill it with the default action.
        let stop = CancellationToken::new();
        let hook = self.sighup.clone();
        let signals = signals::listen(stop.clone(), hook, Arc::clone(&self.reloads))?;
        let bound = self.bind().await?;
        let result = bound.run_until(stop).await;
        signals.abort();
        result
    }
}

impl BoundService {
    /// The contract document the service serves, if it serves it.
    pub(crate) fn contract(&self, which: crate::config::Contract) -> Option<bytes::Bytes> {
        match which {
            crate::config::Contract::OpenApi => self.shared.openapi.clone(),
            crate::config::Contract::AsyncApi => self.shared.asyncapi.clone(),
        }
    }

    /// The address the HTTP server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address the gRPC server listens on, when the service has gRPC
    /// services (feature `grpc`).
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc_addr
    }

    /// Runs until `stop` is cancelled or a component ends, then shuts down
    /// gracefully. `Err` lists every component failure.
    pub async fn run_until(self, stop: CancellationToken) -> Result<(), Error> {
        let draining = CancellationToken::new();
        let shutdown = CancellationToken::new();
        let drain = self.config.shutdown_timeout;
        let mut tasks: JoinSet<(String, Result<(), Error>)> = JoinSet::new();
        for (info, readiness, component) in self.components {
            let ctx = ComponentContext::new(
                draining.clone(),
                shutdown.clone(),
                readiness,
                self.metrics.clone(),
                Arc::clone(&self.deps),
                Arc::clone(&self.config),
            );
            let name = info.name.clone();
            tracing::info!(kind = %info.kind, component = %name, "starting component");
            tasks.spawn(async move { (name, component.run_boxed(ctx).await) });
        }

        let mut errors = Vec::new();
        let by_signal = tokio::select! {
            _ = stop.cancelled() => true,
            Some(first) = tasks.join_next() => {
                record(first, &mut errors, true);
                false
            }
        };
        self.shared.shutting_down.store(true, Ordering::Release);
        draining.cancel();
        tracing::info!("shutting down: readiness is now 503");
        if by_signal && !self.config.shutdown_delay.is_zero() {
            tokio::time::sleep(self.config.shutdown_delay).await;
        }
        shutdown.cancel();
        // Components bound their own drain by `drain` (the HTTP server does);
        // allow a little more for them to report before giving up on them.
        let deadline = drain + Duration::from_millis(500);
        let waited = tokio::time::timeout(deadline, async {
            while let Some(joined) = tasks.join_next().await {
                record(joined, &mut errors, false);
            }
        })
        .await;
        if waited.is_err() {
            errors.push(format!(
                "components still running after the shutdown timeout of {}; they were aborted",
                humantime::format_duration(drain)
            ));
            tasks.abort_all();
        }
        close_clients(&self.clients, drain, &mut errors).await;
        if errors.is_empty() {
            tracing::info!("service stopped");
            Ok(())
        } else {
            Err(ServiceError { errors }.into())
        }
    }
}

/// What this instance registers: the advertised address
/// (`PATRON_DISCOVERY_ADDRESS`, else the HTTP host when it is a specific
/// address, else the host name) and its ports. The HTTP port is fixed up
/// once bound.
#[cfg(feature = "discovery")]
fn registered_instance(
    name: &str,
    version: &str,
    config: &Config,
    discovery: &crate::config::DiscoveryConfig,
    grpc: Option<SocketAddr>,
) -> crate::discovery::Instance {
    let address = discovery.address.clone().unwrap_or_else(|| {
        if config.http_host.is_unspecified() {
            gethostname::gethostname().to_string_lossy().into_owned()
        } else {
            config.http_host.to_string()
        }
    });
    crate::discovery::Instance {
        service: name.to_string(),
        id: uuid::Uuid::new_v4().to_string(),
        address,
        http_port: config.http_port,
        grpc_port: grpc.map(|a| a.port()),
        version: version.to_string(),
    }
}

/// Closes every client at once, each bounded by `timeout`; failures and
/// clients that did not finish in time are added to `errors`.
async fn close_clients(clients: &[Arc<dyn Client>], timeout: Duration, errors: &mut Vec<String>) {
    let closing = clients.iter().map(|client| async move {
        let name = client.name();
        match tokio::time::timeout(timeout, client.close()).await {
            Ok(Ok(())) => {
                tracing::debug!(client = %name, "client closed");
                None
            }
            Ok(Err(e)) => {
                tracing::error!(client = %name, error = %e, "client failed to close");
                Some(format!("{name}: {e}"))
            }
            Err(_) => Some(format!(
                "{name}: not closed within the shutdown timeout of {}",
                humantime::format_duration(timeout)
            )),
        }
    });
    errors.extend(
        futures_util::future::join_all(closing)
            .await
            .into_iter()
            .flatten(),
    );
}

fn record(
    joined: Result<(String, Result<(), Error>), tokio::task::JoinError>,
    errors: &mut Vec<String>,
    early: bool,
) {
    match joined {
        Ok((name, Ok(()))) => {
            if early {
                tracing::warn!(component = %name, "component stopped on its own; stopping the service");
            }
        }
        Ok((name, Err(e))) => {
            tracing::error!(component = %name, error = %e, "component failed");
            errors.push(format!("{name}: {e}"));
        }
        Err(join) if join.is_panic() => {
            let panic = join.into_panic();
            let message = crate::panic::panic_message(panic.as_ref()).to_string();
            tracing::error!(panic = %message, "component panicked");
            errors.push(format!("a component panicked: {message}"));
        }
        Err(join) => errors.push(format!("a component was cancelled: {join}")),
    }
}
