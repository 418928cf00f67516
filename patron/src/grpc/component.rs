//! The gRPC server as a [`Component`] on its own port
//! (`PATRON_GRPC_PORT`), served by the same connection loop as the HTTP
//! server (HTTP/2 only here): TLS with reload, the connection timeouts, and
//! the drain. On the shutdown signal the health service reports
//! NOT_SERVING first, then connections get GOAWAY; when the listener closes
//! open streams end with `UNAVAILABLE` and unary calls get up to
//! `PATRON_SHUTDOWN_TIMEOUT` to finish.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::RoutesBuilder;

use super::call::{GrpcApp, ServiceRuntime};
use super::health::Health;
use super::registry::GrpcService;
use crate::component::{Component, ComponentContext, ComponentInfo};
use crate::config::Config;
use crate::error::Error;
use crate::http::builtin::Management;
use crate::http::server::{self, Timeouts};
use crate::http::tls::Tls;
use crate::observe::metrics::Metrics;

/// The name of the health service.
const HEALTH: &str = "grpc.health.v1.Health";
/// The name of the reflection service.
const REFLECTION: &str = "grpc.reflection.v1.ServerReflection";

/// The service's gRPC server: its bound listener and what it serves.
pub(crate) struct GrpcServer {
    listener: TcpListener,
    addr: SocketAddr,
    app: Arc<GrpcApp>,
    tls: Option<Arc<Tls>>,
    health: Health,
    /// What the health service follows; set once the service has built it.
    management: Option<Arc<Management>>,
    info: ComponentInfo,
}

impl GrpcServer {
    /// Binds `PATRON_HTTP_HOST`:`PATRON_GRPC_PORT` and prepares `services`
    /// with the health service (and reflection when it is on).
    pub(crate) async fn bind(
        config: &Config,
        services: Vec<GrpcService>,
        metrics: &Metrics,
    ) -> Result<Self, Error> {
        let grpc = &config.grpc;
        let tls = match &grpc.tls {
            Some(files) => Some(Arc::new(Tls::load(files)?)),
            None => None,
        };
        let mut routes = RoutesBuilder::default();
        let mut runtimes = HashMap::new();
        let mut names = vec![""];
        let mut descriptors = vec![tonic_health::pb::FILE_DESCRIPTOR_SET];
        let mut missing = Vec::new();
        let listed: Vec<&'static str> = services.iter().map(|s| s.name).collect();
        for service in services {
            names.push(service.name);
            match service.descriptor {
                Some(d) => descriptors.push(d),
                None => missing.push(service.name),
            }
            runtimes.insert(
                service.name,
                ServiceRuntime {
                    auth: service.auth,
                    timeout: service.timeout.unwrap_or(grpc.handler_timeout),
                },
            );
            (service.add)(&mut routes);
        }
        let (reporter, health_service) = tonic_health::server::health_reporter();
        routes.add_service(health_service);
        for builtin in [HEALTH, REFLECTION] {
            runtimes.insert(
                builtin,
                ServiceRuntime {
                    auth: None,
                    timeout: grpc.handler_timeout,
                },
            );
        }
        if grpc.reflection {
            if !missing.is_empty() {
                return Err(Error::msg(format!(
                    "PATRON_GRPC_REFLECTION is on, but these gRPC services have no descriptor for it to serve: {}; give each one (`descriptor = …` in #[patron::grpc], or GrpcService::descriptor) or turn reflection off",
                    missing.join(", ")
                )));
            }
            let reflection = descriptors
                .iter()
                .fold(tonic_reflection::server::Builder::configure(), |b, d| {
                    b.register_encoded_file_descriptor_set(d)
                })
                .build_v1()
                .map_err(|e| {
                    Error::msg(format!(
                        "cannot build gRPC reflection from the services' descriptors: {e}"
                    ))
                })?;
            routes.add_service(reflection);
        }
        let addr = SocketAddr::new(config.http_host, grpc.port);
        let listener = TcpListener::bind(addr).await.map_err(|e| {
            Error::msg(format!(
                "cannot listen on {addr} (PATRON_GRPC_PORT={}): {e}",
                grpc.port
            ))
        })?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::msg(format!("cannot read the bound address of {addr}: {e}")))?;
        let histogram = metrics.shared("rpc_server_duration_seconds", || {
            prometheus::HistogramVec::new(
                prometheus::HistogramOpts::new(
                    "rpc_server_duration_seconds",
                    "Duration of gRPC calls handled, by service, method and status code",
                )
                .buckets(crate::observe::metrics::DURATION_BUCKETS.to_vec()),
                &["service", "method", "code"],
            )
            .map_err(|e| Error::msg(format!("cannot create rpc_server_duration_seconds: {e}")))
        })?;
        let info = ComponentInfo::new("grpc", "grpc")
            .detail("port", addr.port())
            .detail("services", listed)
            .detail("tls", crate::http::tls::mode(grpc.tls.as_ref()))
            .detail("reflection", grpc.reflection);
        Ok(GrpcServer {
            listener,
            addr,
            app: Arc::new(GrpcApp {
                routes: routes.routes(),
                services: runtimes,
                metrics: Some(histogram),
                default_timeout: grpc.handler_timeout,
                cut: CancellationToken::new(),
            }),
            tls,
            health: Health { reporter, names },
            management: None,
            info,
        })
    }

    /// Has the health service follow `management`'s readiness.
    pub(crate) fn follow(&mut self, management: Arc<Management>) {
        self.management = Some(management);
    }

    /// The server's TLS, to reload its certificate on SIGHUP.
    pub(crate) fn tls(&self) -> Option<&Arc<Tls>> {
        self.tls.as_ref()
    }

    /// The address the listener is bound to.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Component for GrpcServer {
    fn info(&self) -> ComponentInfo {
        self.info.clone()
    }

    async fn run(self, ctx: ComponentContext) -> Result<(), Error> {
        let config = ctx.config();
        let timeouts = Timeouts::from_config(config);
        tracing::info!(address = %self.addr, tls = self.tls.is_some(), "gRPC server listening");
        let (draining, shutdown) = (CancellationToken::new(), CancellationToken::new());
        let cut = self.app.cut.clone();
        let management = self.management.ok_or_else(|| {
            Error::msg("the gRPC server was started without the service's readiness")
        })?;
        let health = tokio::spawn(self.health.follow(management, ctx.draining().clone()));
        // NOT_SERVING goes out before GOAWAY; streams end only once the
        // listener closes.
        let control = async {
            ctx.draining().cancelled().await;
            if let Err(e) = health.await {
                tracing::warn!(error = %e, "the gRPC health reporter stopped early");
            }
            draining.cancel();
            ctx.shutdown().cancelled().await;
            cut.cancel();
            shutdown.cancel();
        };
        let serving = server::serve(
            self.listener,
            self.app,
            self.tls,
            timeouts,
            draining.clone(),
            shutdown.clone(),
            config.shutdown_timeout,
        );
        let ((), served) = tokio::join!(control, serving);
        served.map_err(|e| Error::msg(e.replace("HTTP connection", "gRPC connection")))
    }
}
