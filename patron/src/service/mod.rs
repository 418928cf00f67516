//! [`Service`]: the builder a `#[patron::main]` body configures, and the
//! lifecycle that runs it — validation before any port opens, concurrent
//! components, signals, and a bounded graceful shutdown.

#[cfg(feature = "grpc")]
mod grpc;
#[cfg(feature = "discovery")]
mod registration;
mod run;
pub(crate) mod signals;
pub(crate) mod validate;

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use axum::extract::Request;
use axum::response::Response;
use axum::routing::{MethodRouter, Route};
use futures_util::FutureExt;
use tower::{Layer, Service as TowerService};

pub use run::{BoundService, ServiceError};
pub use validate::StartupError;

use crate::client::Client;
use crate::component::{Component, DynComponent};
use crate::config::Config;
use crate::consumer::registry::ConsumerDef;
use crate::deps::{AppState, Deps};
use crate::http::Authenticator;
use crate::http::builtin::CheckFn;
use crate::http::debug::DebugAuth;
use crate::http::registry::RouteDef;
use crate::http::router::GlobalLayer;
use crate::observe::metrics::Metrics;

pub(crate) type SighupFn =
    Arc<dyn Fn() -> futures_util::future::BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// A service: its name and version, configuration, the dependencies handlers
/// take, extra components, global middleware, health checks and hooks.
///
/// `#[patron::main]` hands one to `main`; tests build one and start it with
/// [`crate::test::TestServer`].
///
/// ```no_run
/// use patron::prelude::*;
///
/// struct Db;
///
/// #[patron::main]
/// async fn main(service: Service) -> patron::Result<Service> {
///     Ok(service
///         .provide(Db)
///         .with_health_check("db", || async { Ok::<_, patron::Error>(()) })
///         .on_sighup(|| async { tracing::info!("reloading"); Ok::<_, patron::Error>(()) }))
/// }
/// ```
pub struct Service {
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) config: Config,
    pub(crate) deps: Deps,
    pub(crate) components: Vec<Box<dyn DynComponent>>,
    pub(crate) globals: Vec<GlobalLayer>,
    pub(crate) checks: Vec<(String, CheckFn)>,
    pub(crate) sighup: Option<SighupFn>,
    pub(crate) routes: Option<Vec<&'static RouteDef>>,
    pub(crate) consumers: Option<Vec<&'static ConsumerDef>>,
    pub(crate) metrics: Metrics,
    pub(crate) debug_auth: Option<DebugAuth>,
    pub(crate) cors: Option<tower_http::cors::CorsLayer>,
    /// Directories served with `with_files`.
    pub(crate) files: Vec<crate::http::Files>,
    pub(crate) clients: Vec<Arc<dyn Client>>,
    /// What SIGHUP reloads besides the hook (the HTTP server's
    /// certificate), registered by `bind`.
    pub(crate) reloads: Arc<signals::Reloads>,
    /// gRPC services given with `with_grpc`.
    #[cfg(feature = "grpc")]
    pub(crate) grpc: Vec<crate::grpc::GrpcService>,
    /// The `#[patron::grpc]` services to serve (`None`: every one linked in).
    #[cfg(feature = "grpc")]
    pub(crate) grpc_defs: Option<Vec<&'static crate::grpc::GrpcDef>>,
}

/// Writes one item as `single` + item, or several as `many(count)` followed
/// by a bulleted list: the shape of every multi-error message patron prints.
pub(crate) fn write_list(
    f: &mut fmt::Formatter<'_>,
    items: &[String],
    single: &str,
    many: impl Fn(usize) -> String,
) -> fmt::Result {
    if let [one] = items {
        return write!(f, "{single}{one}");
    }
    f.write_str(&many(items.len()))?;
    for item in items {
        write!(f, "\n  - {item}")?;
    }
    Ok(())
}

impl fmt::Debug for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Service")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("components", &self.components.len())
            .finish_non_exhaustive()
    }
}

impl Service {
    /// A service with default configuration. `#[patron::main]` instead
    /// passes one configured from the environment.
    pub fn new(name: impl Into<String>) -> Self {
        Service {
            name: name.into(),
            version: "dev".to_string(),
            config: Config::default(),
            deps: Deps::default(),
            components: Vec::new(),
            globals: Vec::new(),
            checks: Vec::new(),
            sighup: None,
            routes: None,
            consumers: None,
            metrics: Metrics::new(),
            debug_auth: None,
            cors: None,
            files: Vec::new(),
            clients: Vec::new(),
            reloads: Arc::default(),
            #[cfg(feature = "grpc")]
            grpc: Vec::new(),
            #[cfg(feature = "grpc")]
            grpc_defs: None,
        }
    }

    /// Sets the name shown in logs and `/info`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Sets the version shown in logs and `/info` (`dev` when empty).
    pub fn version(mut self, version: impl Into<String>) -> Self {
        let v = version.into();
        self.version = if v.trim().is_empty() {
            "dev".to_string()
        } else {
            v
        };
        self
    }

    /// Replaces the configuration.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// The configuration in effect.
    pub fn current_config(&self) -> &Config {
        &self.config
    }

    /// Mutable access to the configuration, e.g. to change the port in code.
    pub fn config_mut(&mut self) -> &mut Config {
        &mut self.config
    }

    /// The service's metric registry, scraped at `GET /metrics`. Register
    /// your own metrics on it; handlers can also take it as `Dep<Metrics>`.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Provides a value that handlers take as `Dep<T>` and that `auth = T`
    /// routes use. One value per type; a later call replaces an earlier one.
    pub fn provide<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.deps.insert(value);
        self
    }

    /// Provides an already shared value.
    pub fn provide_arc<T: Send + Sync + 'static>(mut self, value: Arc<T>) -> Self {
        self.deps.insert_arc(value);
        self
    }

    /// Adds a component that runs beside the HTTP server.
    pub fn with_component<C: Component>(mut self, component: C) -> Self {
        self.components.push(Box::new(component));
        self
    }

    /// Applies a tower layer to every user route, after the built-in
    /// middleware and before the route's own auth and middleware. Layers
    /// apply in the order added, the first outermost. The layer's service
    /// must not fail (`Error = Infallible`), as with axum's `Router::layer`.
    pub fn with_middleware<L>(mut self, layer: L) -> Self
    where
        L: Layer<Route> + Clone + Send + Sync + 'static,
        L::Service: TowerService<Request, Response = Response, Error = std::convert::Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        <L::Service as TowerService<Request>>::Future: Send + 'static,
    {
        let apply: GlobalLayer =
            Arc::new(move |mr: MethodRouter<AppState>| mr.layer(layer.clone()));
        // Later layers sit inside earlier ones: keep insertion order and
        // apply in reverse when building.
        self.globals.insert(0, apply);
        self
    }

    /// Provides `client` as `Dep<C>` and manages it: its readiness check
    /// (if it has one) joins `GET /ready` under the client's name, and it is
    /// closed — producers flushed, pools closed — after every component has
    /// stopped at shutdown. A close that fails is reported like a component
    /// failure.
    ///
    /// ```no_run
    /// # #[cfg(feature = "kafka")]
    /// use patron::client::kafka::KafkaProducer;
    /// use patron::prelude::*;
    ///
    /// # #[cfg(feature = "kafka")]
    /// #[patron::main]
    /// async fn main(service: Service) -> patron::Result<Service> {
    ///     let producer = KafkaProducer::from_config(service.current_config())?;
    ///     Ok(service.with_client(producer))
    /// }
    /// # #[cfg(not(feature = "kafka"))]
    /// # fn main() {}
    /// ```
    pub fn with_client<C: Client>(mut self, client: C) -> Self {
        let client = Arc::new(client);
        if client.has_readiness() {
            let checked = Arc::clone(&client);
            let check: CheckFn = Arc::new(move || {
                let client = Arc::clone(&checked);
                async move { client.ready().await.map_err(|e| e.to_string()) }.boxed()
            });
            self.checks.push((client.name(), check));
        }
        self.deps.insert_arc(Arc::clone(&client));
        self.clients.push(client);
        self
    }

    /// Adds a check that `GET /ready` runs; an `Err` (or no answer within
    /// 5 s) makes `/ready` answer 503 naming the check.
    pub fn with_health_check<F, Fut, E>(mut self, name: impl Into<String>, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: fmt::Display,
    {
        let check: CheckFn =
            Arc::new(move || check().map(|r| r.map_err(|e| e.to_string())).boxed());
        self.checks.push((name.into(), check));
        self
    }

    /// Runs `hook` on SIGHUP; the service keeps running. (Go Patron also
    /// runs a hook; unlike Go's default signal handling, SIGHUP never stops
    /// a patron service.)
    pub fn on_sighup<F, Fut, E>(mut self, hook: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: fmt::Display,
    {
        self.sighup = Some(Arc::new(move || {
            hook().map(|r| r.map_err(|e| e.to_string())).boxed()
        }));
        self
    }

    /// Turns on the debug endpoints (`GET /debug/pprof/profile`,
    /// `POST /debug/log/{level}`), as `PATRON_DEBUG_ENDPOINTS=true` does.
    /// They are never on by default, and the service refuses to start with
    /// them on unless they have an authenticator
    /// ([`with_debug_auth`](Self::with_debug_auth)) or are opened on purpose
    /// ([`with_unauthenticated_debug_endpoints`](Self::with_unauthenticated_debug_endpoints)):
    /// anyone reaching the port could otherwise profile the process or turn
    /// on trace logging.
    pub fn with_debug_endpoints(mut self) -> Self {
        self.config.debug_endpoints = true;
        self
    }

    /// Turns on the debug endpoints with no authentication, as
    /// `PATRON_DEBUG_ENDPOINTS=unauthenticated` does: for a port only
    /// trusted hosts reach (a sidecar, a local run). Logged at WARN on start.
    pub fn with_unauthenticated_debug_endpoints(mut self) -> Self {
        self.config.debug_endpoints = true;
        self.config.debug_unauthenticated = true;
        self
    }

    /// Serves the files under `dir` at `prefix` (`/static/app.css` is
    /// `dir/app.css`), through the same guard as routes; see
    /// [`Files`](crate::http::Files). A missing directory stops start-up.
    ///
    /// ```
    /// let service = patron::Service::new("site").with_files("/static", "public");
    /// # drop(service);
    /// ```
    pub fn with_files(self, prefix: impl Into<String>, dir: impl Into<std::path::PathBuf>) -> Self {
        self.with_file_mount(crate::http::Files::new(prefix, dir))
    }

    /// Serves a [`Files`](crate::http::Files) mount (SPA fallback,
    /// `Cache-Control`).
    pub fn with_file_mount(mut self, files: crate::http::Files) -> Self {
        self.files.push(files);
        self
    }

    /// Answers CORS requests on user routes with `cors` (tower-http's
    /// `CorsLayer`, re-exported as `patron::http::cors::CorsLayer`),
    /// including preflight `OPTIONS` requests to any path.
    pub fn with_cors(mut self, cors: tower_http::cors::CorsLayer) -> Self {
        self.cors = Some(cors);
        self
    }

    /// Adds `X-App-Name` and `X-App-Version` (the service's name and version)
    /// to every user response, as `PATRON_HTTP_APP_HEADERS=true` does.
    pub fn with_app_headers(mut self) -> Self {
        self.config.http_app_headers = true;
        self
    }

    /// Requires `auth` on the debug endpoints (it does not turn them on).
    pub fn with_debug_auth<A: Authenticator>(mut self, auth: A) -> Self {
        let auth = Arc::new(auth);
        self.debug_auth = Some(Arc::new(move |router: axum::Router| {
            router.route_layer(axum::middleware::from_fn_with_state(
                Arc::clone(&auth),
                crate::http::authenticate::<A>,
            ))
        }));
        self
    }

    /// Serves exactly these routes instead of the whole registry.
    #[doc(hidden)]
    pub fn with_routes(mut self, routes: impl IntoIterator<Item = &'static RouteDef>) -> Self {
        self.routes = Some(routes.into_iter().collect());
        self
    }

    /// Runs exactly these `#[patron::consumer]` consumers instead of every
    /// registered one: `patron::registered_consumers()` filtered, or all of
    /// them. A [`TestServer`](crate::test::TestServer) runs none unless told
    /// with this.
    pub fn with_consumers(
        mut self,
        consumers: impl IntoIterator<Item = &'static ConsumerDef>,
    ) -> Self {
        self.consumers = Some(consumers.into_iter().collect());
        self
    }
}

/// What `#[patron::main] async fn main()` (without a `Service` argument)
/// may return: `()` or `Result<(), E>` with `E: Into<patron::Error>`; an
/// error ends the process with exit code 1.
#[diagnostic::on_unimplemented(
    message = "`#[patron::main] async fn main()` must return `()` or `patron::Result<()>`, not `{Self}`",
    note = "to configure the service, take it as an argument: `async fn main(service: Service) -> patron::Result<Service>`"
)]
pub trait MainOutput {
    /// The outcome as a `Result`.
    fn into_result(self) -> crate::Result<()>;
}

impl MainOutput for () {
    fn into_result(self) -> crate::Result<()> {
        Ok(())
    }
}

impl<E: Into<crate::Error>> MainOutput for std::result::Result<(), E> {
    fn into_result(self) -> crate::Result<()> {
        self.map_err(Into::into)
    }
}
