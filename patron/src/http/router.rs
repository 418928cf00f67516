//! Assembles the axum router from the registry: each route's own layers
//! (from the macro), then the service's global middleware, then the core
//! layer; routes grouped by path with a problem-body 405; a problem-body
//! 404; and the management routes beside them.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use http::{HeaderValue, StatusCode, header};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;

use super::auth::{Authenticator, authenticate};
use super::builtin::{self, Shared};
use super::core::{CoreLayer, RouteRuntime, panic_message};
use crate::config::Config;
use crate::deps::{AppState, Deps};
use crate::error::{Error, problem};
use crate::registry::RouteDef;

/// A global middleware, applied to each user route's method router.
pub(crate) type GlobalLayer =
    Arc<dyn Fn(MethodRouter<AppState>) -> MethodRouter<AppState> + Send + Sync>;

/// What a route's generated builder gets.
#[doc(hidden)]
pub struct RouteCtx {
    deps: Arc<Deps>,
    def: &'static RouteDef,
}

impl RouteCtx {
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

/// Builds the complete router. Route conflicts must have been rejected by
/// validation; any that slip through become an error here, not a panic.
pub(crate) fn build(
    routes: &[&'static RouteDef],
    deps: Arc<Deps>,
    globals: &[GlobalLayer],
    config: &Config,
    shared: Arc<Shared>,
) -> Result<Router, String> {
    let mut by_path: BTreeMap<&'static str, (MethodRouter<AppState>, Vec<&'static str>)> =
        BTreeMap::new();
    for def in routes {
        let ctx = RouteCtx {
            deps: Arc::clone(&deps),
            def,
        };
        let mut mr = (def.build)(&ctx);
        for global in globals {
            mr = global(mr);
        }
        let limit = def.body_limit.unwrap_or(config.http_body_limit);
        let core = CoreLayer::new(RouteRuntime {
            method: def.method,
            route: def.path,
            span_name: def.span_name,
            trace: def.trace,
            timeout: def.timeout.unwrap_or(config.http_handler_timeout),
            body_limit: limit,
        });
        mr = mr.layer(
            ServiceBuilder::new()
                .layer(core)
                .layer(DefaultBodyLimit::max(limit))
                .into_inner(),
        );
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
    let user = router
        .fallback(|| async { Error::not_found("no route matches this path").into_response() })
        .with_state(AppState { deps });
    let management = builtin::routes(shared).layer(CatchPanicLayer::custom(
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
    Ok(management.merge(user))
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

fn method_not_allowed(allow: HeaderValue) -> Response {
    let detail = format!(
        "this path does not accept the request's method; allowed: {}",
        allow.to_str().unwrap_or_default()
    );
    let mut response = problem(StatusCode::METHOD_NOT_ALLOWED, &detail, Default::default());
    response.headers_mut().insert(header::ALLOW, allow);
    response
}
