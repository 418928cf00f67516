//! Assembles the [`App`] the server runs: the axum router built from the
//! registry — each route's own layers (from the macro) under the service's
//! global middleware, routes grouped by path with a problem-body 405, a
//! problem-body 404, the management routes beside them — and the path index
//! that finds a request's per-route settings for the request guard.

use std::collections::{BTreeMap, HashMap};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use axum::routing::future::RouteFuture;
use futures_util::future::Either;
use http::{HeaderValue, Method, StatusCode, header};
use std::convert::Infallible;
use tower::Service;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{DefaultPredicate, Predicate};
use tower_http::cors::CorsLayer;

use super::auth::{Authenticator, authenticate};
use super::body::BodyWatch;
use super::builtin::{self, Management, RESERVED};
use super::debug;
use super::debug::DebugAuth;
use super::guard::{GuardFuture, ResponseSettings, RouteRuntime, guard};
use super::head::Head;
use super::registry::{RateSpec, RouteDef};
use crate::cache::Caches;
use crate::config::Config;
use crate::deps::{AppState, Deps};
use crate::error::{Error, problem};
use crate::observe::metrics::{HttpMetrics, Metrics};
use crate::observe::otlp;
use crate::panic::panic_message;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;

/// The limit axum's body extractors apply when no `DefaultBodyLimit` is set.
const AXUM_DEFAULT_BODY_LIMIT: usize = 2 * 1024 * 1024;

/// A global middleware, applied to each user route's method router.
pub(crate) type GlobalLayer =
    Arc<dyn Fn(MethodRouter<AppState>) -> MethodRouter<AppState> + Send + Sync>;

/// What a route's generated builder gets.
#[doc(hidden)]
pub struct RouteCtx {
    deps: Arc<Deps>,
    def: &'static RouteDef,
    caches: Option<Caches>,
}

impl RouteCtx {
    /// Puts the route's response cache (`cache = "…"`) right around its
    /// handler, inside its authenticator and middleware.
    pub fn with_cache(&self, mr: MethodRouter<AppState>) -> MethodRouter<AppState> {
        match (self.def.cache, &self.caches) {
            (Some(lifetime), Some(caches)) => mr.layer(caches.layer(self.def.path, lifetime)),
            _ => mr,
        }
    }

    /// Wraps the route in the authenticator `A` the service provided.
    pub fn with_auth<A: Authenticator>(
        &self,
        mr: MethodRouter<AppState>,
    ) -> MethodRouter<AppState> {
        match self.deps.get::<A>() {
            Some(auth) => mr.layer(from_fn_with_state(auth, authenticate::<A>)),
            None => {
                // Start-up validation rejects this; fail closed regardless.
                let route = self.def.span_name;
                mr.layer(axum::middleware::from_fn(
                    move |_: axum::extract::Request, _: axum::middleware::Next| async move {
                        Error::internal(format!(
                            "the authenticator of route {route} was not provided"
                        ))
                        .into_response()
                    },
                ))
            }
        }
    }
}

/// Everything the application is built from.
pub(crate) struct AppParts<'a> {
    pub routes: &'a [&'static RouteDef],
    pub deps: Arc<Deps>,
    pub globals: &'a [GlobalLayer],
    pub config: &'a Config,
    pub shared: Arc<Management>,
    pub metrics: &'a Metrics,
    pub http_metrics: &'a HttpMetrics,
    pub debug_auth: Option<&'a DebugAuth>,
    pub name: &'a str,
    pub version: &'a str,
    pub cors: Option<&'a CorsLayer>,
    pub files: &'a [super::Files],
}

/// Builds the complete router. Route conflicts must have been rejected by
/// validation; any that slip through become an error here, not a panic.
pub(crate) fn build(parts: AppParts<'_>) -> Result<App, String> {
    let AppParts {
        routes,
        deps,
        globals,
        config,
        shared,
        metrics,
        http_metrics,
        debug_auth,
        name,
        version,
        cors,
        files,
    } = parts;
    let app_headers = if config.http_app_headers {
        let value = |v: &str, what: &str| {
            HeaderValue::from_str(v)
                .map_err(|_| format!("the service {what} {v:?} cannot be sent as a header"))
        };
        Some((value(name, "name")?, value(version, "version")?))
    } else {
        None
    };
    let http_shared: &'static ResponseSettings = Box::leak(Box::new(ResponseSettings {
        status_rules: config.http_status_error_logging.clone(),
        app_headers,
    }));
    let mut index = PathIndex::default();
    let mut settings: BTreeMap<&'static str, Vec<(Method, &'static RouteRuntime)>> =
        BTreeMap::new();
    let mut by_path: BTreeMap<&'static str, (MethodRouter<AppState>, Vec<&'static str>)> =
        BTreeMap::new();
    let caches = if routes.iter().any(|r| r.cache.is_some()) {
        Some(Caches::new(&config.http_cache, metrics)?)
    } else {
        None
    };
    for def in routes {
        let ctx = RouteCtx {
            deps: Arc::clone(&deps),
            def,
            caches: caches.clone(),
        };
        let mut mr = (def.build)(&ctx);
        for global in globals {
            mr = global(mr);
        }
        let limit = def.body_limit.unwrap_or(config.http_body_limit);
        let runtime: &'static RouteRuntime = Box::leak(Box::new(RouteRuntime {
            method: def.method,
            route: def.path,
            span_name: def.span_name,
            span_attributes: otlp::route_attributes(def.method, def.path),
            trace: def.trace,
            timeout: def.timeout.unwrap_or(config.http_handler_timeout),
            body_limit: limit,
            metrics: def.trace.then(|| http_metrics.route(def.method, def.path)),
            shared: http_shared,
            rate_limit: def
                .rate_limit
                .map(limiter)
                .transpose()
                .map_err(|e| format!("route {}: {e}", def.span_name))?,
        }));
        let method = Method::from_bytes(def.method.as_bytes())
            .map_err(|e| format!("route {} has an invalid method: {e}", def.span_name))?;
        settings
            .entry(def.path)
            .or_default()
            .push((method, runtime));
        // axum's extractors already enforce 2 MiB; only a different limit
        // needs the extra layer.
        if limit != AXUM_DEFAULT_BODY_LIMIT {
            mr = mr.layer(DefaultBodyLimit::max(limit));
        }
        match by_path.remove(def.path) {
            Some((existing, mut methods)) => {
                methods.push(def.method);
                let merged = std::panic::catch_unwind(AssertUnwindSafe(|| existing.merge(mr)))
                    .map_err(|p| {
                        format!(
                            "cannot add {} ({}): {}",
                            def.span_name,
                            def.location(),
                            panic_message(p.as_ref())
                        )
                    })?;
                by_path.insert(def.path, (merged, methods));
            }
            None => {
                by_path.insert(def.path, (mr, vec![def.method]));
            }
        }
    }
    let mut router: Router<AppState> = Router::new();
    for (path, (mr, methods)) in by_path {
        let allow = allow_header(&methods);
        let mr = mr.fallback(move || async move { method_not_allowed(allow) });
        router = std::panic::catch_unwind(AssertUnwindSafe(|| router.route(path, mr)))
            .map_err(|p| format!("cannot add path {path}: {}", panic_message(p.as_ref())))?;
    }
    let mut root_files = None;
    for mount in files {
        let service = mount.service()?;
        let pattern: &'static str = Box::leak(mount.pattern().into_boxed_str());
        let runtime: &'static RouteRuntime = Box::leak(Box::new(RouteRuntime {
            method: "GET",
            route: pattern,
            span_name: Box::leak(format!("GET {pattern}").into_boxed_str()),
            span_attributes: otlp::route_attributes("GET", pattern),
            trace: true,
            timeout: config.http_handler_timeout,
            body_limit: config.http_body_limit,
            metrics: Some(http_metrics.route("GET", pattern)),
            shared: http_shared,
            rate_limit: None,
        }));
        let methods = vec![(Method::GET, runtime)];
        index
            .add(pattern, PathSettings::User(methods.clone()))
            .map_err(|e| format!("cannot serve files at {pattern}: {e}"))?;
        if mount.prefix() == "/" {
            root_files = Some(service);
        } else {
            index
                .add(mount.prefix(), PathSettings::User(methods))
                .map_err(|e| format!("cannot serve files at {}: {e}", mount.prefix()))?;
            router = std::panic::catch_unwind(AssertUnwindSafe(|| {
                router.nest_service(mount.prefix(), service)
            }))
            .map_err(|p| {
                format!(
                    "cannot serve files at {}: {}",
                    mount.prefix(),
                    panic_message(p.as_ref())
                )
            })?;
        }
    }
    let user = match root_files {
        Some(files) => router.fallback_service(files),
        None => router
            .fallback(|| async { Error::not_found("no route matches this path").into_response() }),
    }
    .with_state(AppState { deps });
    let mut management = builtin::routes(shared, metrics.clone());
    if config.debug_endpoints {
        let debug = debug::routes();
        management = management.merge(match debug_auth {
            Some(wrap) => wrap(debug),
            None => debug,
        });
    }
    let management = management
        .layer(axum::middleware::from_fn(management_problems))
        .layer(CatchPanicLayer::custom(
            |panic: Box<dyn std::any::Any + Send>| {
                tracing::error!(
                    panic = panic_message(panic.as_ref()),
                    "management route panicked"
                );
                problem(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the management route panicked",
                    Default::default(),
                )
            },
        ));
    for (path, methods) in settings {
        index
            .add(path, PathSettings::User(methods))
            .map_err(|e| format!("cannot index path {path}: {e}"))?;
    }
    for path in RESERVED.iter().chain(debug::PATHS) {
        index
            .add(path, PathSettings::Management)
            .map_err(|e| format!("cannot index path {path}: {e}"))?;
    }
    let unmatched: &'static RouteRuntime = Box::leak(Box::new(RouteRuntime {
        method: "",
        route: "unmatched",
        span_name: "unmatched route",
        span_attributes: otlp::route_attributes("", "unmatched"),
        trace: true,
        timeout: config.http_handler_timeout,
        body_limit: config.http_body_limit,
        metrics: Some(http_metrics.route("", "unmatched")),
        shared: http_shared,
        rate_limit: None,
    }));
    let router = management.merge(user);
    let user = match cors {
        Some(layer) => router.clone().layer(layer.clone()),
        None => router.clone(),
    };
    let compressed = config.http_compression.then(|| {
        user.clone().layer(
            CompressionLayer::new().compress_when(DefaultPredicate::new().and(CompressibleStatus)),
        )
    });
    let PathIndex { tree, exact } = index;
    Ok(App {
        router,
        user,
        compressed,
        index: tree,
        exact,
        unmatched,
    })
}

/// What the index holds for a path.
#[derive(Clone)]
enum PathSettings {
    /// A built-in management route: panic recovery only.
    Management,
    /// User routes on this path, by method.
    User(Vec<(Method, &'static RouteRuntime)>),
}

/// The path index as it is built: every pattern in the tree, the ones
/// without parameters also by their whole text.
#[derive(Default)]
struct PathIndex {
    tree: matchit::Router<PathSettings>,
    exact: HashMap<Box<str>, PathSettings, foldhash::fast::RandomState>,
}

impl PathIndex {
    fn add(&mut self, path: &str, settings: PathSettings) -> Result<(), matchit::InsertError> {
        self.tree.insert(path, settings.clone())?;
        if !path.contains(['{', '}']) {
            self.exact.insert(path.into(), settings);
        }
        Ok(())
    }
}

/// The complete HTTP application: the router plus the settings the core
/// middleware applies to each user request.
pub(crate) struct App {
    /// Management and user routes, with no response layers.
    router: Router,
    /// The same with the service's CORS layer, for user requests.
    user: Router,
    /// `user` with response compression, for requests that accept an encoding.
    compressed: Option<Router>,
    /// Every path pattern's settings, by matchit as axum routes.
    index: matchit::Router<PathSettings>,
    /// The settings of each path without parameters, looked up by the whole
    /// path first: a hash and one comparison instead of a walk of the tree
    /// (a static path wins over a parameter in matchit too).
    exact: HashMap<Box<str>, PathSettings, foldhash::fast::RandomState>,
    unmatched: &'static RouteRuntime,
}

/// The future of one request through [`App::call`].
pub(crate) type AppFuture = Either<RouteFuture<Infallible>, GuardFuture<RouteFuture<Infallible>>>;

impl App {
    /// Handles one request: an HTTP/1.1 request without exactly one `Host`
    /// is refused, management routes go straight to the router, everything
    /// else through the request guard with its route's settings (or the
    /// service defaults when no route matches).
    pub(crate) fn call(&self, req: Request, watch: Option<Arc<BodyWatch>>) -> AppFuture {
        let head = Head::read(req.headers());
        if req.version() == http::Version::HTTP_11 && head.hosts != 1 {
            return Either::Right(GuardFuture::ready(host_problem(head)));
        }
        let path = req.uri().path();
        let settings = match self.exact.get(path) {
            Some(found) => Some(found),
            None => self.index.at(path).ok().map(|found| found.value),
        };
        let route = match settings {
            Some(PathSettings::Management) => return Either::Left(self.route(req)),
            Some(PathSettings::User(methods)) => {
                let wanted = if req.method() == Method::HEAD {
                    &Method::GET
                } else {
                    req.method()
                };
                methods
                    .iter()
                    .find(|(m, _)| m == req.method())
                    .or_else(|| methods.iter().find(|(m, _)| m == wanted))
                    .map_or(self.unmatched, |(_, r)| *r)
            }
            None => self.unmatched,
        };
        let router = match &self.compressed {
            Some(compressed) if head.accept_encoding => compressed,
            _ => &self.user,
        };
        Either::Right(guard(route, req, head, watch, |req| dispatch(router, req)))
    }

    /// Dispatches to the axum router.
    fn route(&self, req: Request) -> RouteFuture<Infallible> {
        dispatch(&self.router, req)
    }
}

/// Calls `router` with `req`. A `Router` is always ready (its `poll_ready`
/// is `Ready(Ok(()))` without looking at the context), so it is called
/// directly rather than through `Oneshot`'s readiness state machine.
fn dispatch(router: &Router, req: Request) -> RouteFuture<Infallible> {
    router.clone().call(req)
}

/// The 400 for an HTTP/1.1 request without exactly one `Host` header.
fn host_problem(head: Head) -> Response {
    let detail = if head.hosts == 0 {
        "an HTTP/1.1 request needs a Host header (RFC 9112 section 3.2)"
    } else {
        "an HTTP/1.1 request must carry exactly one Host header, not several (RFC 9112 section 3.2)"
    };
    let mut response = problem(StatusCode::BAD_REQUEST, detail, Default::default());
    response.headers_mut().insert(
        super::X_CORRELATION_ID,
        crate::context::correlation::or_generate(head.correlation_id),
    );
    response
}

/// A token bucket of `spec.count` tokens refilled evenly over `spec.per`.
fn limiter(spec: RateSpec) -> Result<DefaultDirectRateLimiter, String> {
    let count = NonZeroU32::new(spec.count).ok_or("a rate limit needs a count above zero")?;
    let quota = Quota::with_period(spec.per / spec.count)
        .ok_or("a rate limit needs a period longer than zero")?
        .allow_burst(count);
    Ok(RateLimiter::direct(quota))
}

/// Never compress informational, 204 and 304 responses: they carry no body
/// that could be encoded.
#[derive(Clone, Copy)]
struct CompressibleStatus;

impl Predicate for CompressibleStatus {
    fn should_compress<B: http_body::Body>(&self, response: &http::Response<B>) -> bool {
        // Error bodies stay plain: they are small, and the status log
        // line shows them as sent.
        let status = response.status();
        !(status.is_informational()
            || status.is_client_error()
            || status.is_server_error()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED)
    }
}

fn allow_header(methods: &[&str]) -> HeaderValue {
    let mut all: Vec<&str> = methods.to_vec();
    if all.contains(&"GET") && !all.contains(&"HEAD") {
        all.push("HEAD");
    }
    all.sort_unstable();
    all.dedup();
    HeaderValue::from_str(&all.join(", ")).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Gives the management and debug routes' 405 what user routes' has: a
/// problem body, the `Allow` header and the correlation id.
async fn management_problems(req: Request, next: axum::middleware::Next) -> Response {
    let id = req.headers().get(super::X_CORRELATION_ID).cloned();
    // Every management route is a GET but `POST /debug/log/{level}`.
    let allow = if req.uri().path().starts_with("/debug/log/") {
        HeaderValue::from_static("POST")
    } else {
        HeaderValue::from_static("GET, HEAD")
    };
    let response = next.run(req).await;
    if response.status() != StatusCode::METHOD_NOT_ALLOWED {
        return response;
    }
    let mut response = method_not_allowed(allow);
    response.headers_mut().insert(
        super::X_CORRELATION_ID,
        crate::context::correlation::or_generate(id),
    );
    response
}

fn method_not_allowed(allow: HeaderValue) -> Response {
    let detail = format!(
        "this path does not accept the request's method; allowed: {}",
        allow.to_str().unwrap_or_default()
    );
    let mut response = problem(StatusCode::METHOD_NOT_ALLOWED, &detail, Default::default());
    response.headers_mut().insert(header::ALLOW, allow);
    response
}
