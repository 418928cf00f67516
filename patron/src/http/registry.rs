//! The route registry: what `#[patron::route]` submits through `inventory`,
//! and the collection of it at start-up.

use std::any::TypeId;
use std::time::Duration;

use super::RouteCtx;
use crate::deps::DepSpec;

/// One route, as registered by `#[patron::route]`.
#[doc(hidden)]
#[derive(Debug)]
pub struct RouteDef {
    /// Upper-case HTTP method.
    pub method: &'static str,
    /// Path template in axum syntax (`/users/{id}`).
    pub path: &'static str,
    /// `"METHOD /path"`, the span name.
    pub span_name: &'static str,
    /// The handler function's name.
    pub handler: &'static str,
    /// `module_path!()` of the handler.
    pub module: &'static str,
    /// `file!()` of the handler.
    pub file: &'static str,
    /// `line!()` of the handler's name.
    pub line: u32,
    /// The `auth = T` argument.
    pub auth: Option<AuthSpec>,
    /// The `middleware = [...]` argument, as written.
    pub middleware: &'static [&'static str],
    /// `trace = false` turns the request span off.
    pub trace: bool,
    /// The `timeout` argument.
    pub timeout: Option<Duration>,
    /// The `body_limit` argument in bytes.
    pub body_limit: Option<usize>,
    /// The `rate_limit` argument.
    pub rate_limit: Option<RateSpec>,
    /// The `cache` argument: the freshness lifetime of responses that set
    /// none themselves.
    pub cache: Option<std::time::Duration>,
    /// The `Dep<T>` arguments.
    pub deps: &'static [DepSpec],
    /// Builds the route's method router.
    pub build: fn(&RouteCtx) -> axum::routing::MethodRouter<crate::deps::AppState>,
    /// What the OpenAPI document says of the route; `None` when the route
    /// is marked `openapi = false` and left out of it.
    pub doc: Option<RouteDoc>,
}

/// A route's OpenAPI description: the attribute's doc keys, the handler's
/// doc comment, and what its argument and return types describe.
#[doc(hidden)]
#[derive(Debug)]
pub struct RouteDoc {
    /// `summary = "…"`, else the doc comment's first line.
    pub summary: Option<&'static str>,
    /// The doc comment after its first line (or all of it when `summary`
    /// is given).
    pub description: Option<&'static str>,
    /// `tags = ["…"]`.
    pub tags: &'static [&'static str],
    /// `deprecated = true`.
    pub deprecated: bool,
    /// Adds the request and response the handler's types describe.
    pub describe: fn(&mut crate::describe::Operation<'_>),
}

impl RouteDef {
    /// `file:line` of the handler.
    pub fn location(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }

    /// `module::handler`.
    pub fn qualified_handler(&self) -> String {
        format!("{}::{}", self.module, self.handler)
    }
}

/// The authenticator type a route requires.
#[doc(hidden)]
#[derive(Debug)]
pub struct AuthSpec {
    /// The type as written in the attribute.
    pub type_name: &'static str,
    /// Its `TypeId`.
    pub type_id: fn() -> TypeId,
}

/// A route's `rate_limit = "count/period"`: a token bucket holding `count`
/// tokens, refilled evenly over `per`.
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct RateSpec {
    /// Requests allowed per period (also the burst).
    pub count: u32,
    /// The period.
    pub per: Duration,
}

inventory::collect!(RouteDef);

/// Every route linked into this binary, ordered by path then method.
pub fn routes() -> Vec<&'static RouteDef> {
    let mut all: Vec<&'static RouteDef> = inventory::iter::<RouteDef>.into_iter().collect();
    all.sort_by(|a, b| (a.path, a.method, a.file, a.line).cmp(&(b.path, b.method, b.file, b.line)));
    all
}
