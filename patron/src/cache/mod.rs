//! The route cache (`#[patron::route(GET "…", cache = "1m")]`): an HTTP
//! response cache following RFC 9111, as a shared cache in front of the
//! handler. The rules come from `http-cache-semantics` (a port of the
//! widely used npm package); this module adds the storage, the route's
//! default lifetime, single flight and metrics.
//!
//! - Only GET routes take `cache`; a HEAD request is answered from the GET
//!   entry. The key is the route, path and query (not the `Host`: every
//!   instance answers the same service); responses that `Vary` are kept
//!   per variant (up to 8 per URL).
//! - Request `Cache-Control`: `no-store` bypasses the cache; `no-cache` and
//!   `max-age=0` compute a new response (and store it); `max-age`,
//!   `min-fresh` and `max-stale` bound what is served; `only-if-cached`
//!   answers 504 when nothing fits.
//! - Response: only 200s are stored; `no-store`, `private`, `Vary: *`,
//!   `Set-Cookie`, a body over 1 MiB, or an `Authorization` request without
//!   `public`/`s-maxage` keep it out. `max-age`, `s-maxage` or `Expires`
//!   set its lifetime; otherwise the route's `cache` does (and is sent as
//!   `max-age`). Served entries carry `Age`; an `If-None-Match` naming the
//!   entry's `ETag` gets 304.
//! - Concurrent misses for one key compute once. The store is in memory
//!   (bounded by `PATRON_HTTP_CACHE_SIZE`) or Redis (`PATRON_HTTP_CACHE`).
//! - `http_cache_requests_total{route,outcome}` (`hit`, `miss`, `bypass`)
//!   and `http_cache_evictions_total`.

mod entry;
mod store;

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use http::{HeaderValue, Method, StatusCode, header};
use http_body_util::BodyExt;
use http_cache_semantics::{BeforeRequest, CacheOptions, CachePolicy};
use prometheus::{IntCounter, IntCounterVec, Opts};
use tower::{Layer, Service, ServiceExt};

use entry::Entry;
use store::{Flights, Store};

use crate::config::CacheConfig;
use crate::error::Error;
use crate::observe::metrics::Metrics;

/// The largest body the cache stores.
pub(crate) const MAX_BODY: usize = 1 << 20;

/// The service-wide cache: its store, locks and metrics; one
/// [`CacheLayer`] per cached route comes from it.
#[derive(Clone)]
pub(crate) struct Caches {
    store: Store,
    flights: Arc<Flights>,
    requests: IntCounterVec,
}

impl Caches {
    /// The cache `config` describes, its metrics registered in `metrics`.
    pub(crate) fn new(config: &CacheConfig, metrics: &Metrics) -> Result<Caches, String> {
        let requests = metrics
            .shared("http_cache_requests_total", || {
                IntCounterVec::new(
                    Opts::new(
                        "http_cache_requests_total",
                        "Requests to cached routes, by route and outcome (hit, miss, bypass).",
                    ),
                    &["route", "outcome"],
                )
                .map_err(|e| Error::msg(format!("cannot create http_cache_requests_total: {e}")))
            })
            .map_err(|e| e.to_string())?;
        let evictions = metrics
            .shared("http_cache_evictions_total", || {
                IntCounter::new(
                    "http_cache_evictions_total",
                    "Cached responses dropped from the in-memory store for room.",
                )
                .map_err(|e| Error::msg(format!("cannot create http_cache_evictions_total: {e}")))
            })
            .map_err(|e| e.to_string())?;
        let store = Store::new(config, move || evictions.inc())?;
        Ok(Caches {
            store,
            flights: Arc::default(),
            requests,
        })
    }

    /// The layer caching `route`'s responses, `lifetime` when they set none.
    pub(crate) fn layer(&self, route: &'static str, lifetime: Duration) -> CacheLayer {
        CacheLayer(Arc::new(RouteCache {
            caches: self.clone(),
            route,
            lifetime,
        }))
    }
}

struct RouteCache {
    caches: Caches,
    route: &'static str,
    lifetime: Duration,
}

/// Caches one route's responses (a tower layer over its handler).
#[derive(Clone)]
pub(crate) struct CacheLayer(Arc<RouteCache>);

impl<S> Layer<S> for CacheLayer {
    type Service = CacheService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CacheService {
            inner,
            cache: Arc::clone(&self.0),
        }
    }
}

/// [`CacheLayer`]'s service.
#[derive(Clone)]
pub(crate) struct CacheService<S> {
    inner: S,
    cache: Arc<RouteCache>,
}

impl<S> Service<Request> for CacheService<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let (cache, inner) = (Arc::clone(&self.cache), self.inner.clone());
        Box::pin(async move { Ok(cache.handle(inner, req).await) })
    }
}

/// The request as the policy sees it: its head, HEAD looked up as GET, and
/// no `Host` — instances share entries whatever address a client used.
fn lookup_view(req: &Request) -> http::Request<()> {
    let mut view = http::Request::new(());
    *view.method_mut() = if req.method() == Method::HEAD {
        Method::GET
    } else {
        req.method().clone()
    };
    *view.uri_mut() = req.uri().clone();
    *view.headers_mut() = req.headers().clone();
    view.headers_mut().remove(header::HOST);
    view
}

/// Whether the request's `Cache-Control` holds `directive`.
fn requests(req: &Request, directive: &str) -> bool {
    req.headers()
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| {
            d.trim()
                .split('=')
                .next()
                .is_some_and(|name| name.trim().eq_ignore_ascii_case(directive))
        })
}

impl RouteCache {
    fn count(&self, outcome: &str) {
        self.caches
            .requests
            .with_label_values(&[self.route, outcome])
            .inc();
    }

    async fn handle<S>(&self, inner: S, req: Request) -> Response
    where
        S: Service<Request, Response = Response, Error = Infallible>,
    {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return call(inner, req).await;
        }
        if requests(&req, "no-store") {
            self.count("bypass");
            return call(inner, req).await;
        }
        let view = lookup_view(&req);
        let key = format!(
            "{} {}",
            self.route,
            req.uri().path_and_query().map_or("", |p| p.as_str())
        );
        let wanted = req.headers().get(header::IF_NONE_MATCH).cloned();
        if let Some(hit) = self.fresh(&key, &view, wanted.as_ref()).await {
            return hit;
        }
        if requests(&req, "only-if-cached") {
            self.count("miss");
            return Error::new(
                StatusCode::GATEWAY_TIMEOUT,
                "the request asked for a cached response only (only-if-cached), and none fits",
            )
            .into_response();
        }
        // One computation per key at a time: a request that waited finds
        // the entry the first one stored (unless it asked for a new one).
        let _flight = self.caches.flights.enter(&key).await;
        if !requests(&req, "no-cache")
            && let Some(hit) = self.fresh(&key, &view, wanted.as_ref()).await
        {
            return hit;
        }
        self.count("miss");
        let response = call(inner, req).await;
        self.store(key, &view, response).await
    }

    /// A fresh stored response for the request, if there is one.
    async fn fresh(
        &self,
        key: &str,
        view: &http::Request<()>,
        wanted: Option<&HeaderValue>,
    ) -> Option<Response> {
        let now = SystemTime::now();
        let variants = self.caches.store.get(key).await;
        for entry in variants.0 {
            if let BeforeRequest::Fresh(parts) = entry.policy.before_request(view, now) {
                self.count("hit");
                let not_modified = match (parts.headers.get(header::ETAG), wanted) {
                    (Some(tag), Some(wanted)) => etag_matches(wanted, tag),
                    _ => false,
                };
                let mut response = Response::from_parts(parts, Body::from(entry.body));
                if not_modified {
                    *response.status_mut() = StatusCode::NOT_MODIFIED;
                    *response.body_mut() = Body::empty();
                    response.headers_mut().remove(header::CONTENT_LENGTH);
                }
                return Some(response);
            }
        }
        None
    }

    /// Stores `response` when it may be, and returns it.
    async fn store(&self, key: String, view: &http::Request<()>, response: Response) -> Response {
        if response.status() != StatusCode::OK
            || response.headers().contains_key(header::SET_COOKIE)
            || response
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
                .is_some_and(|n| n > MAX_BODY)
        {
            return response;
        }
        let (mut parts, body) = response.into_parts();
        let bytes = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) => {
                return Error::internal(format!("the response body failed: {e}")).into_response();
            }
        };
        if bytes.len() <= MAX_BODY {
            self.default_lifetime(&mut parts.headers);
            let head = http::Response::from_parts(parts.clone(), ());
            let now = SystemTime::now();
            let policy = CachePolicy::new_options(
                view,
                &head,
                now,
                CacheOptions {
                    shared: true,
                    cache_heuristic: 0.0,
                    immutable_min_time_to_live: Duration::ZERO,
                    ignore_cargo_cult: false,
                },
            );
            if policy.is_storable() && !policy.time_to_live(now).is_zero() {
                let mut variants = self.caches.store.get(&key).await;
                variants.insert(
                    Entry {
                        policy,
                        body: bytes.clone(),
                    },
                    |e| match e.policy.before_request(view, now) {
                        BeforeRequest::Fresh(_) => true,
                        BeforeRequest::Stale { matches, .. } => matches,
                    },
                );
                self.caches.store.put(key, variants).await;
            }
        }
        Response::from_parts(parts, Body::from(bytes))
    }

    /// Gives a response that sets no lifetime the route's.
    fn default_lifetime(&self, headers: &mut http::HeaderMap) {
        let directives: Vec<String> = headers
            .get_all(header::CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|d| d.trim().to_ascii_lowercase())
            .filter(|d| !d.is_empty())
            .collect();
        let has_lifetime = headers.contains_key(header::EXPIRES)
            || directives
                .iter()
                .any(|d| d.starts_with("max-age") || d.starts_with("s-maxage"));
        if has_lifetime {
            return;
        }
        let mut all = directives;
        all.push(format!("max-age={}", self.lifetime.as_secs()));
        if let Ok(value) = HeaderValue::from_str(&all.join(", ")) {
            headers.insert(header::CACHE_CONTROL, value);
        }
    }
}

async fn call<S>(inner: S, req: Request) -> Response
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    match inner.oneshot(req).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// RFC 9110 §13.1.2 with weak comparison: whether `If-None-Match` is `*`
/// or lists a tag whose opaque part (no `W/`, no quotes) `accepts` takes.
/// Static files use it too, to accept their encoded variants' tags.
pub(crate) fn if_none_match(wanted: &HeaderValue, accepts: impl Fn(&str) -> bool) -> bool {
    let Ok(wanted) = wanted.to_str() else {
        return false;
    };
    wanted
        .split(',')
        .map(str::trim)
        .any(|candidate| candidate == "*" || accepts(opaque_tag(candidate)))
}

/// An entity tag without its weakness prefix and quotes.
pub(crate) fn opaque_tag(tag: &str) -> &str {
    tag.trim().trim_start_matches("W/").trim_matches('"')
}

/// Whether `If-None-Match` names `tag` (weakly).
fn etag_matches(wanted: &HeaderValue, tag: &HeaderValue) -> bool {
    tag.to_str()
        .is_ok_and(|tag| if_none_match(wanted, |c| c == opaque_tag(tag)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_compare_weakly() {
        let v = HeaderValue::from_static;
        assert!(etag_matches(&v(r#""a""#), &v(r#"W/"a""#)));
        assert!(etag_matches(&v(r#""x", W/"a""#), &v(r#""a""#)));
        assert!(etag_matches(&v("*"), &v(r#""a""#)));
        assert!(!etag_matches(&v(r#""b""#), &v(r#""a""#)));
    }

    #[test]
    fn request_directives_are_found_case_blind() {
        let req = Request::builder()
            .header("cache-control", "Max-Age=0, NO-CACHE")
            .body(Body::empty())
            .unwrap();
        assert!(requests(&req, "no-cache"));
        assert!(requests(&req, "max-age"));
        assert!(!requests(&req, "no-store"));
    }
}
