//! What the gRPC server serves: [`GrpcService`] values given to
//! `Service::with_grpc`, and the [`GrpcDef`]s `#[patron::grpc]` registers
//! through `inventory`.

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::request::Parts;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;

use crate::deps::{DepSpec, Deps};
use crate::error::Error;
use crate::http::Authenticator;
use crate::http::registry::AuthSpec;

/// An authenticator applied to every call of one gRPC service.
pub(crate) type CallAuth = Arc<dyn Fn(&Parts) -> BoxFuture<'_, Result<bool, Error>> + Send + Sync>;

/// One gRPC service for the server: a tonic-generated server (such as
/// `GreeterServer::new(imp)`) with what patron applies to its calls.
///
/// ```
/// # use patron::grpc::GrpcService;
/// # use patron::http::ApiKey;
/// # fn doc<S>(server: S) where S: tonic::codegen::Service<http::Request<tonic::body::Body>, Error = std::convert::Infallible, Response = http::Response<tonic::body::Body>> + tonic::server::NamedService + Clone + Send + Sync + 'static, S::Future: Send + 'static {
/// let service = GrpcService::new(server)
///     .auth(ApiKey::new(["k1"]))
///     .timeout(std::time::Duration::from_secs(5));
/// # }
/// ```
pub struct GrpcService {
    pub(crate) name: &'static str,
    pub(crate) add: Box<dyn FnOnce(&mut RoutesBuilder) + Send>,
    pub(crate) auth: Option<CallAuth>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) descriptor: Option<&'static [u8]>,
}

impl fmt::Debug for GrpcService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcService")
            .field("name", &self.name)
            .field("auth", &self.auth.is_some())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl GrpcService {
    /// Wraps a tonic-generated server, e.g. `GreeterServer::new(imp)`.
    pub fn new<S>(server: S) -> Self
    where
        S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        GrpcService {
            name: S::NAME,
            add: Box::new(move |routes: &mut RoutesBuilder| {
                routes.add_service(server);
            }),
            auth: None,
            timeout: None,
            descriptor: None,
        }
    }

    /// Every call must pass `auth` first: a refused call ends with
    /// `UNAUTHENTICATED`, an authenticator error with `INTERNAL`. The
    /// authenticator reads the call's metadata as HTTP headers (`ApiKey`
    /// reads `authorization: Apikey …`).
    pub fn auth<A: Authenticator>(self, auth: A) -> Self {
        self.auth_arc(Arc::new(auth))
    }

    /// [`auth`](Self::auth) with a shared authenticator.
    pub fn auth_arc<A: Authenticator>(mut self, auth: Arc<A>) -> Self {
        self.auth = Some(Arc::new(move |parts: &Parts| {
            let auth = Arc::clone(&auth);
            let parts = parts.clone();
            Box::pin(async move { auth.authenticate(&parts).await })
        }));
        self
    }

    /// How long a call may take to produce its response when the client
    /// sets no shorter deadline (`PATRON_GRPC_HANDLER_TIMEOUT` otherwise).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The encoded `FileDescriptorSet` of the service's proto files (what
    /// `tonic_prost_build`'s `file_descriptor_set_path` writes), served by
    /// server reflection when `PATRON_GRPC_REFLECTION` is on.
    pub fn descriptor(mut self, encoded: &'static [u8]) -> Self {
        self.descriptor = Some(encoded);
        self
    }

    /// The full service name, such as `greeter.v1.Greeter`.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// One gRPC service, as registered by `#[patron::grpc]`.
#[doc(hidden)]
#[derive(Debug)]
pub struct GrpcDef {
    /// The full service name (`NamedService::NAME`).
    pub name: &'static str,
    /// The implementing type, as written.
    pub implementation: &'static str,
    /// `file!()` of the `impl`.
    pub file: &'static str,
    /// `line!()` of the `impl`.
    pub line: u32,
    /// The implementing type, taken from the provided values.
    pub dep: DepSpec,
    /// The `auth = T` argument.
    pub auth: Option<AuthSpec>,
    /// Builds the service from the provided values (`None` when one is
    /// missing; start-up validation reports it first).
    pub build: fn(&Deps) -> Option<GrpcService>,
}

impl GrpcDef {
    /// `file:line` of the `impl`.
    pub fn location(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }
}

inventory::collect!(GrpcDef);

/// Every `#[patron::grpc]` service linked into this binary, by name.
pub fn services() -> Vec<&'static GrpcDef> {
    let mut all: Vec<&'static GrpcDef> = inventory::iter::<GrpcDef>.into_iter().collect();
    all.sort_by(|a, b| (a.name, a.file, a.line).cmp(&(b.name, b.file, b.line)));
    all
}

/// What stops start-up in the registered services: an implementation or
/// authenticator that was not provided, a service registered twice.
pub(crate) fn problems(
    defs: &[&'static GrpcDef],
    manual: &[&'static str],
    deps: &Deps,
) -> Vec<String> {
    let mut problems = Vec::new();
    for def in defs {
        if !deps.contains((def.dep.type_id)()) {
            problems.push(format!(
                "gRPC service {} ({}) is implemented by `{}`, but no `{}` was provided: call `service.provide(…)` with one in `#[patron::main]`",
                def.name,
                def.location(),
                def.implementation,
                def.dep.type_name
            ));
        }
        if let Some(auth) = &def.auth
            && !deps.contains((auth.type_id)())
        {
            problems.push(format!(
                "gRPC service {} ({}) requires `auth = {}`, but no `{}` was provided: call `service.provide({}::…)` in `#[patron::main]`",
                def.name,
                def.location(),
                auth.type_name,
                auth.type_name,
                auth.type_name
            ));
        }
    }
    let mut names: Vec<(&str, String)> = defs
        .iter()
        .map(|d| (d.name, d.location()))
        .chain(
            manual
                .iter()
                .map(|n| (*n, "Service::with_grpc".to_string())),
        )
        .collect();
    names.sort();
    for pair in names.windows(2) {
        if pair[0].0 == pair[1].0 {
            problems.push(format!(
                "gRPC service {} is registered twice: at {} and at {}; remove one",
                pair[0].0, pair[0].1, pair[1].1
            ));
        }
    }
    problems
}
