//! The service's gRPC side: adding services, and binding the gRPC server
//! component when there is at least one.

use std::sync::Arc;

use tonic::body::Body;
use tonic::server::NamedService;

use super::Service;
use super::signals::Reloads;
use crate::config::Config;
use crate::deps::Deps;
use crate::error::Error;
use crate::grpc::component::GrpcServer;
use crate::grpc::registry::{self, GrpcDef};
use crate::grpc::{GrpcService, services};
use crate::observe::metrics::Metrics;

impl Service {
    /// Serves a tonic-generated server, such as `GreeterServer::new(imp)`,
    /// on the gRPC server (`PATRON_GRPC_PORT`). For an authenticator, a
    /// timeout or a reflection descriptor, give a
    /// [`GrpcService`] to [`with_grpc_service`](Self::with_grpc_service).
    pub fn with_grpc<S>(self, server: S) -> Self
    where
        S: tower::Service<
                http::Request<Body>,
                Response = http::Response<Body>,
                Error = std::convert::Infallible,
            > + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.with_grpc_service(GrpcService::new(server))
    }

    /// Serves a gRPC service with its settings.
    pub fn with_grpc_service(mut self, service: GrpcService) -> Self {
        self.grpc.push(service);
        self
    }

    /// Serves only these `#[patron::grpc]` services instead of every one
    /// linked into the binary (tests use it to pick theirs).
    pub fn with_grpc_registered(
        mut self,
        defs: impl IntoIterator<Item = &'static GrpcDef>,
    ) -> Self {
        self.grpc_defs = Some(defs.into_iter().collect());
        self
    }
}

/// The `#[patron::grpc]` services this service serves.
pub(crate) fn defs(chosen: Option<Vec<&'static GrpcDef>>) -> Vec<&'static GrpcDef> {
    chosen.unwrap_or_else(services)
}

/// What stops start-up on the gRPC side.
pub(crate) fn problems(
    manual: &[GrpcService],
    defs: &[&'static GrpcDef],
    deps: &Deps,
) -> Vec<String> {
    let manual: Vec<&'static str> = manual.iter().map(GrpcService::name).collect();
    registry::problems(defs, &manual, deps)
}

/// Binds the gRPC server when there is a service to serve.
pub(crate) async fn bind(
    config: &Config,
    manual: Vec<GrpcService>,
    defs: &[&'static GrpcDef],
    deps: &Deps,
    metrics: &Metrics,
    reloads: &Reloads,
) -> Result<Option<GrpcServer>, Error> {
    let mut all: Vec<GrpcService> = defs.iter().filter_map(|d| (d.build)(deps)).collect();
    all.extend(manual);
    if all.is_empty() {
        return Ok(None);
    }
    let server = GrpcServer::bind(config, all, metrics).await?;
    if let Some(tls) = server.tls() {
        let tls = Arc::clone(tls);
        reloads.add("the gRPC server's TLS certificate", move || tls.reload());
    }
    Ok(Some(server))
}
