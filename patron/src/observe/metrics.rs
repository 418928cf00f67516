//! Prometheus metrics: one registry per service, scraped at `GET /metrics`.
//!
//! Everything patron measures — HTTP server metrics now, consumers and
//! clients later — registers on the service's [`Metrics`], and so can user
//! code: take it as `Dep<Metrics>` in a handler, from
//! [`Service::metrics`](crate::Service::metrics) in `main`, or from
//! [`ComponentContext::metrics`](crate::component::ComponentContext::metrics)
//! in a component.
//!
//! HTTP server metrics follow the OpenTelemetry semantic conventions in
//! Prometheus form: `http_server_request_duration_seconds` (labels
//! `http_request_method`, `http_route` — the template, or `unmatched` — and
//! `http_response_status_code`) and `http_server_active_requests`. Each
//! route's histogram children are resolved once per status code and cached
//! (for the first 16 codes a route answers with), so a request does no
//! label lookup or allocation.

use std::sync::OnceLock;

/// The `prometheus` crate patron uses, so your metrics match its version
/// without a dependency of your own.
pub use prometheus;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntGauge, Opts, Registry, TextEncoder,
};

use crate::error::Error;

mod process;

/// Bucket boundaries for request durations, in seconds: the ones the
/// OpenTelemetry HTTP semantic conventions recommend.
pub const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// The service's metric registry.
///
/// ```
/// use patron::observe::metrics::Metrics;
/// use patron::observe::metrics::prometheus::IntCounter;
///
/// let metrics = Metrics::new();
/// let orders = IntCounter::new("orders_total", "Orders accepted").unwrap();
/// metrics.register(orders.clone()).unwrap();
/// orders.inc();
/// assert!(metrics.render().contains("orders_total 1"));
/// ```
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    /// Metric families patron's components share, by name, registered on
    /// first use (see [`Metrics::shared`]).
    shared: std::sync::Arc<
        std::sync::Mutex<
            std::collections::HashMap<&'static str, Box<dyn std::any::Any + Send + Sync>>,
        >,
    >,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Self {
        Metrics {
            registry: Registry::new(),
            shared: Default::default(),
        }
    }

    /// The underlying `prometheus` registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Registers a collector (a counter, gauge, histogram, a `*Vec` of them,
    /// or a custom collector). Registering the same name twice is an error.
    pub fn register<C: Collector + 'static>(&self, collector: C) -> Result<(), Error> {
        self.registry
            .register(Box::new(collector))
            .map_err(|e| Error::msg(format!("cannot register metric: {e}")))
    }

    /// The family stored under `key`, creating and registering it with
    /// `make` the first time: several components (every consumer, say) then
    /// share one family instead of failing to register it twice.
    pub(crate) fn shared<T>(
        &self,
        key: &'static str,
        make: impl FnOnce() -> Result<T, Error>,
    ) -> Result<T, Error>
    where
        T: Collector + Clone + Send + Sync + 'static,
    {
        let mut families = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = families.get(key).and_then(|f| f.downcast_ref::<T>()) {
            return Ok(existing.clone());
        }
        let family = make()?;
        self.register(family.clone())?;
        families.insert(key, Box::new(family.clone()));
        Ok(family)
    }

    /// A duration histogram (seconds, [`DURATION_BUCKETS`]) in this
    /// registry, created once and kept in `cell`: what every instrumented
    /// client records its calls in. `None`, with a warning logged once, if
    /// it cannot be created — a client then works without the metric.
    #[cfg_attr(
        not(any(
            feature = "http-client",
            feature = "sql",
            feature = "kafka",
            feature = "amqp",
            feature = "sqs",
            feature = "redis",
            feature = "grpc"
        )),
        allow(dead_code)
    )]
    pub(crate) fn duration_histogram(
        &self,
        cell: &'static std::sync::OnceLock<Option<prometheus::HistogramVec>>,
        name: &'static str,
        help: &'static str,
        labels: &[&str],
    ) -> Option<&'static prometheus::HistogramVec> {
        cell.get_or_init(|| {
            self.shared(name, || {
                prometheus::HistogramVec::new(
                    prometheus::HistogramOpts::new(name, help).buckets(DURATION_BUCKETS.to_vec()),
                    labels,
                )
                .map_err(|e| Error::msg(format!("cannot create the histogram {name}: {e}")))
            })
            .map_err(|e| tracing::warn!(error = %e, metric = name, "client metrics unavailable"))
            .ok()
        })
        .as_ref()
    }

    /// The registry in the Prometheus text exposition format, followed by
    /// the process-wide [`global`] registry's metrics.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let mut families = self.registry.gather();
        let global = global();
        if !std::ptr::eq(self, global) {
            families.extend(global.registry.gather());
        }
        if let Err(e) = TextEncoder::new().encode(&families, &mut buf) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        String::from_utf8(buf).unwrap_or_default()
    }

    /// Registers process metrics (CPU, resident memory, open and max file
    /// descriptors, start time) and tokio runtime metrics.
    pub(crate) fn register_runtime(&self) -> Result<(), Error> {
        self.register(process::ProcessMetrics::new()?)?;
        self.register(TokioCollector::new()?)
    }
}

/// The process-wide registry, for metrics of plain values made without a
/// service at hand (circuit breakers, clients). Every service's `/metrics`
/// serves it after its own registry, so its family names must not be
/// registered on a service too.
pub fn global() -> &'static Metrics {
    static GLOBAL: OnceLock<Metrics> = OnceLock::new();
    GLOBAL.get_or_init(Metrics::new)
}

/// The HTTP server's metrics.
#[derive(Clone)]
pub(crate) struct HttpMetrics {
    duration: HistogramVec,
    pub(crate) active: IntGauge,
}

impl HttpMetrics {
    pub(crate) fn register(metrics: &Metrics) -> Result<Self, Error> {
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "http_server_request_duration_seconds",
                "Duration of HTTP server requests.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &[
                "http_request_method",
                "http_route",
                "http_response_status_code",
            ],
        )
        .map_err(|e| Error::msg(format!("cannot create the HTTP duration histogram: {e}")))?;
        let active = IntGauge::new(
            "http_server_active_requests",
            "Number of active HTTP server requests.",
        )
        .map_err(|e| Error::msg(format!("cannot create the active requests gauge: {e}")))?;
        metrics.register(duration.clone())?;
        metrics.register(active.clone())?;
        Ok(HttpMetrics { duration, active })
    }

    /// The per-route handle for `method` and `route`.
    pub(crate) fn route(&self, method: &'static str, route: &'static str) -> RouteMetrics {
        RouteMetrics {
            duration: self.duration.clone(),
            method,
            route,
            by_status: std::array::from_fn(|_| OnceLock::new()),
            active: self.active.clone(),
        }
    }
}

/// How many status codes a route keeps a histogram child for. A route
/// answers with a handful (200, a 4xx or two, a 5xx); codes past these go
/// through the vector's label lookup, as the unmatched route's do.
const STATUS_SLOTS: usize = 16;

/// One route's metric handles, with a histogram child per status code it
/// has answered with, resolved on first use.
pub(crate) struct RouteMetrics {
    duration: HistogramVec,
    method: &'static str,
    route: &'static str,
    /// Filled in order, each slot once: its status code and that code's
    /// child. (A slot per possible code took 9.6 kB a route.)
    by_status: [OnceLock<(u16, Histogram)>; STATUS_SLOTS],
    pub(crate) active: IntGauge,
}

impl RouteMetrics {
    /// Records one finished request with its method label. Routes with a
    /// fixed method cache their histogram child per status; the unmatched
    /// route, whose method varies, looks its child up.
    pub(crate) fn observe(&self, method: &'static str, status: http::StatusCode, seconds: f64) {
        if !self.method.is_empty() {
            let code = status.as_u16();
            // The first slot holding this code, or the first free one, which
            // this code takes unless another thread's fills it first.
            for slot in &self.by_status {
                let (cached, child) = slot.get_or_init(|| (code, self.child(method, status)));
                if *cached == code {
                    child.observe(seconds);
                    return;
                }
            }
        }
        self.child(method, status).observe(seconds);
    }

    /// The histogram child of `method` and `status` on this route.
    fn child(&self, method: &'static str, status: http::StatusCode) -> Histogram {
        self.duration
            .with_label_values(&[method, self.route, status.as_str()])
    }
}

/// A bounded label for a request method: the standard ones, else `_OTHER`
/// (as the OpenTelemetry conventions say), so clients cannot grow the
/// label set.
pub(crate) fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::CONNECT => "CONNECT",
        http::Method::TRACE => "TRACE",
        _ => "_OTHER",
    }
}

/// tokio runtime gauges, read at scrape time.
struct TokioCollector {
    workers: IntGauge,
    alive_tasks: IntGauge,
    global_queue: IntGauge,
    descs: Vec<Desc>,
}

impl TokioCollector {
    fn new() -> Result<Self, Error> {
        let gauge = |name: &str, help: &str| {
            IntGauge::with_opts(Opts::new(name, help))
                .map_err(|e| Error::msg(format!("cannot create the {name} gauge: {e}")))
        };
        let workers = gauge("tokio_workers", "Worker threads of the tokio runtime.")?;
        let alive_tasks = gauge("tokio_alive_tasks", "Tasks alive in the tokio runtime.")?;
        let global_queue = gauge(
            "tokio_global_queue_depth",
            "Tasks waiting in the tokio runtime's global queue.",
        )?;
        let descs = [&workers, &alive_tasks, &global_queue]
            .iter()
            .flat_map(|g| g.desc().into_iter().cloned())
            .collect();
        Ok(TokioCollector {
            workers,
            alive_tasks,
            global_queue,
            descs,
        })
    }
}

impl Collector for TokioCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return Vec::new();
        };
        let m = handle.metrics();
        self.workers.set(m.num_workers() as i64);
        self.alive_tasks.set(m.num_alive_tasks() as i64);
        self.global_queue.set(m.global_queue_depth() as i64);
        [&self.workers, &self.alive_tasks, &self.global_queue]
            .iter()
            .flat_map(|g| g.collect())
            .collect()
    }
}

#[cfg(test)]
mod tests;
