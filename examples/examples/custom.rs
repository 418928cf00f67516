//! A service customised through `Service`: a dependency handlers share, a
//! health check, a global middleware, a custom component and a SIGHUP hook.
//!
//! - `GET /visits` counts requests through the shared `Stats` dependency;
//! - `GET /report?delay_ms=N` simulates slow work (for shutdown drills);
//! - `GET /reloads` says how many times SIGHUP reloaded the configuration;
//! - `GET /outbound` shows the trace and correlation headers an outgoing
//!   call would carry;
//! - every response carries `x-served-by` from the global middleware;
//! - `/ready` fails while the file named by `CUSTOM_MAINTENANCE_FILE` exists;
//! - the `heartbeat` component ticks every `CUSTOM_TICK_MS` (1000) ms.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use patron::prelude::*;
use tracing::Instrument;

#[derive(Default)]
struct Stats {
    visits: AtomicU64,
    reloads: AtomicU64,
    ticks: AtomicU64,
}

#[derive(Deserialize, schemars::JsonSchema)]
struct ReportParams {
    delay_ms: Option<u64>,
}

#[patron::route(GET "/visits")]
async fn visits(stats: Dep<Stats>) -> Json<serde_json::Value> {
    let n = stats.visits.fetch_add(1, Ordering::Relaxed) + 1;
    Json(serde_json::json!({ "visits": n, "ticks": stats.ticks.load(Ordering::Relaxed) }))
}

#[patron::route(GET "/report", timeout = "30s")]
async fn report(Query(p): Query<ReportParams>) -> String {
    let delay = p.delay_ms.unwrap_or(0).min(20_000);
    tracing::debug!(requested = ?p.delay_ms, "report parameters parsed");
    tracing::info!(delay_ms = delay, "building report");
    // A span of the handler's own: with trace export on, a child of the
    // request's server span.
    tokio::time::sleep(Duration::from_millis(delay))
        .instrument(tracing::info_span!("render report", delay_ms = delay))
        .await;
    format!("report ready after {delay} ms")
}

#[patron::route(GET "/reloads")]
async fn reloads(stats: Dep<Stats>) -> String {
    stats.reloads.load(Ordering::Relaxed).to_string()
}

/// The headers an outgoing call made now would carry: correlation id and
/// W3C trace context (see `patron::observe::trace::inject`).
#[patron::route(GET "/outbound")]
async fn outbound() -> Json<serde_json::Value> {
    let mut headers = http::HeaderMap::new();
    patron::observe::trace::inject(&mut headers);
    let pairs = headers.iter().map(|(k, v)| {
        (
            k.to_string(),
            serde_json::Value::from(v.to_str().unwrap_or_default()),
        )
    });
    Json(serde_json::Value::Object(pairs.collect()))
}

/// Global middleware: marks every user response.
async fn served_by(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    res.headers_mut().insert(
        "x-served-by",
        http::HeaderValue::from_static("custom-example"),
    );
    res
}

/// A component of our own: a heartbeat that runs until shutdown.
struct Heartbeat {
    stats: std::sync::Arc<Stats>,
    every: Duration,
}

impl Component for Heartbeat {
    fn info(&self) -> ComponentInfo {
        ComponentInfo::new("heartbeat", "heartbeat")
            .detail("every_ms", self.every.as_millis() as u64)
    }

    async fn run(self, ctx: ComponentContext) -> patron::Result<()> {
        let mut tick = tokio::time::interval(self.every);
        loop {
            tokio::select! {
                _ = ctx.shutdown().cancelled() => return Ok(()),
                _ = tick.tick() => {
                    self.stats.ticks.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

#[patron::main]
async fn main(service: Service) -> patron::Result<Service> {
    let stats = std::sync::Arc::new(Stats::default());
    let every = std::env::var("CUSTOM_TICK_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let hook_stats = stats.clone();
    let maintenance = std::env::var("CUSTOM_MAINTENANCE_FILE").ok();
    Ok(service
        .provide_arc(stats.clone())
        .with_middleware(axum::middleware::from_fn(served_by))
        .with_component(Heartbeat {
            stats,
            every: Duration::from_millis(every),
        })
        .with_health_check("maintenance", move || {
            let file = maintenance.clone();
            async move {
                match file {
                    Some(f) if std::path::Path::new(&f).exists() => {
                        Err(format!("maintenance file {f} exists"))
                    }
                    _ => Ok(()),
                }
            }
        })
        .on_sighup(move || {
            let stats = hook_stats.clone();
            async move {
                let n = stats.reloads.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::info!(reloads = n, "configuration reloaded");
                Ok::<_, patron::Error>(())
            }
        }))
}
