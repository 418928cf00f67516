//! OpenTelemetry traces, exported over OTLP/HTTP (protobuf) when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is
//! set; without one, no exporter runs. `OTEL_EXPORTER_OTLP_HEADERS` and
//! `OTEL_EXPORTER_OTLP_TIMEOUT` (and their `_TRACES_` forms) are honoured;
//! the endpoint must be `http://` (a local collector forwards over TLS).
//!
//! - Sampling: `OTEL_TRACES_SAMPLER` (`always_on`, `always_off`,
//!   `traceidratio`, `parentbased_always_on`, `parentbased_always_off`,
//!   `parentbased_traceidratio`) and `OTEL_TRACES_SAMPLER_ARG`; by default
//!   parent-based trace-id ratio 0.1, as Go Patron.
//! - Resource: `service.name` (`OTEL_SERVICE_NAME` wins over the service's
//!   name), `service.version`, `host.name`.
//! - Incoming W3C `traceparent` and `baggage` become the server span's
//!   parent; [`inject`] passes the context on to outgoing calls, even when
//!   nothing is exported.
//! - Spans are batched on a background thread and flushed on shutdown,
//!   bounded by the shutdown timeout.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, OnceLock};
use std::time::Duration;

use opentelemetry::propagation::{
    Extractor, Injector, TextMapCompositePropagator, TextMapPropagator,
};

use crate::context::with_current;
use opentelemetry::trace::{Link, SpanKind, TraceContextExt, TraceId, TracerProvider as _};
use opentelemetry::{Context, KeyValue, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_sdk::trace::{
    Sampler, SamplingDecision, SamplingResult, SdkTracerProvider, ShouldSample, Tracer,
};

use crate::config::ConfigError;
use crate::context::traceparent;
use crate::error::Error;
use crate::observe::otlp::{
    self, OtlpConfig, OtlpExporter, QueueConfig, QueueProcessor, RecordQueue,
};

/// Whether an OpenTelemetry layer is installed (so request spans get remote
/// parents).
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are being exported.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Whether the environment asks for trace export.
pub(crate) fn exporter_configured(lookup: &impl Fn(&str) -> Option<String>) -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|v| lookup(v).is_some_and(|s| !s.trim().is_empty()))
}

/// How a request is sampled, decided before its span exists so that
/// unsampled requests cost no span at all.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeadSampling {
    /// Follow a valid incoming `traceparent`'s sampled flag.
    pub parent_based: bool,
    /// The fraction of root requests sampled (0 or 1 for always off or on).
    pub ratio: f64,
}

impl HeadSampling {
    #[cfg(test)]
    fn sample(&self, headers: &http::HeaderMap) -> bool {
        self.sample_parent(headers.get("traceparent").map(|v| v.as_bytes()))
    }

    fn sample_parent(&self, traceparent: Option<&[u8]>) -> bool {
        if self.parent_based
            && let Some(parent) = traceparent.and_then(traceparent::parse)
        {
            return parent.sampled;
        }
        self.ratio >= 1.0 || (self.ratio > 0.0 && fastrand::f64() < self.ratio)
    }
}

static HEAD: OnceLock<HeadSampling> = OnceLock::new();

/// Whether a request or message with this `traceparent` header is sampled
/// (when traces are on).
pub(crate) fn sample_parent(traceparent: Option<&[u8]>) -> bool {
    HEAD.get().is_some_and(|h| h.sample_parent(traceparent))
}

/// The sampling the environment asks for (`OTEL_TRACES_SAMPLER` and
/// `OTEL_TRACES_SAMPLER_ARG`); parent-based ratio 0.1 by default.
pub fn sampling_from(
    lookup: &impl Fn(&str) -> Option<String>,
) -> Result<HeadSampling, ConfigError> {
    let name = lookup("OTEL_TRACES_SAMPLER")
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty());
    let arg = lookup("OTEL_TRACES_SAMPLER_ARG").filter(|s| !s.trim().is_empty());
    let ratio = || -> Result<f64, ConfigError> {
        match &arg {
            None => Ok(if name.is_none() { 0.1 } else { 1.0 }),
            Some(text) => match text.trim().parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
                _ => Err(ConfigError::Invalid {
                    var: "OTEL_TRACES_SAMPLER_ARG".into(),
                    value: text.clone(),
                    expected: "a sampling ratio from 0.0 to 1.0".into(),
                }),
            },
        }
    };
    let head = |parent_based, ratio| HeadSampling {
        parent_based,
        ratio,
    };
    Ok(match name.as_deref() {
        None | Some("parentbased_traceidratio") => head(true, ratio()?),
        Some("always_on") => head(false, 1.0),
        Some("always_off") => head(false, 0.0),
        Some("traceidratio") => head(false, ratio()?),
        Some("parentbased_always_on") => head(true, 1.0),
        Some("parentbased_always_off") => head(true, 0.0),
        Some(other) => {
            return Err(ConfigError::Invalid {
                var: "OTEL_TRACES_SAMPLER".into(),
                value: other.into(),
                expected: "always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio".into(),
            });
        }
    })
}

/// The SDK sampler: message spans carry patron's head decision in
/// `patron.sampled`; any other span follows the configured sampling. (HTTP
/// server spans are patron's own records, made only when sampled.)
#[derive(Debug, Clone)]
struct PatronSampler {
    others: Sampler,
}

impl PatronSampler {
    fn new(head: HeadSampling) -> Self {
        let root = match head.ratio {
            r if r >= 1.0 => Sampler::AlwaysOn,
            r if r <= 0.0 => Sampler::AlwaysOff,
            r => Sampler::TraceIdRatioBased(r),
        };
        let others = if head.parent_based {
            Sampler::ParentBased(Box::new(root))
        } else {
            root
        };
        PatronSampler { others }
    }
}

impl ShouldSample for PatronSampler {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: TraceId,
        name: &str,
        span_kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        let decided = attributes
            .iter()
            .find(|kv| kv.key.as_str() == "patron.sampled")
            .map(|kv| kv.value == Value::Bool(true));
        match decided {
            Some(sampled) => SamplingResult {
                decision: if sampled {
                    SamplingDecision::RecordAndSample
                } else {
                    SamplingDecision::Drop
                },
                attributes: Vec::new(),
                trace_state: parent_context
                    .map(|cx| cx.span().span_context().trace_state().clone())
                    .unwrap_or_default(),
            },
            None => self.others.should_sample(
                parent_context,
                trace_id,
                name,
                span_kind,
                attributes,
                links,
            ),
        }
    }
}

/// The tracer provider and the HTTP server span queue, owned by the
/// process for the service's lifetime.
pub struct TraceExport {
    provider: SdkTracerProvider,
    /// `false` when another exporter of this process took the queue slot
    /// first: this one's queue is then shut down at once.
    owns_queue: bool,
}

impl TraceExport {
    /// Builds the OTLP/HTTP exporter and the provider. Runs on its own
    /// thread: the exporter's HTTP client has a runtime of its own, which
    /// must not be created (or later dropped) on a runtime thread.
    pub(crate) fn start(
        service: &str,
        version: &str,
        head: HeadSampling,
        otlp: OtlpConfig,
    ) -> Result<(Self, Tracer), Error> {
        let sampler = PatronSampler::new(head);
        let name = std::env::var("OTEL_SERVICE_NAME")
            .ok()
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| service.to_string());
        let version = version.to_string();
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        let batching = QueueConfig::from_env(&|k| std::env::var(k).ok());
        let built = std::thread::spawn(move || -> Result<_, Error> {
            let resource = Resource::builder()
                .with_service_name(name)
                .with_attributes([
                    KeyValue::new("service.version", version),
                    KeyValue::new("host.name", host),
                ])
                .build();
            let exporter = OtlpExporter::new(otlp, &resource)?;
            let queue = RecordQueue::start(exporter.clone(), batching).map_err(|e| {
                Error::msg(format!("cannot start the HTTP span export thread: {e}"))
            })?;
            let processor = QueueProcessor::start(exporter, batching)
                .map_err(|e| Error::msg(format!("cannot start the span export thread: {e}")))?;
            let provider = SdkTracerProvider::builder()
                .with_span_processor(processor)
                .with_sampler(sampler)
                .with_resource(resource)
                .build();
            Ok((provider, queue))
        })
        .join()
        .map_err(|_| Error::msg("building the OTLP trace exporter panicked"))??;
        let (provider, queue) = built;
        let owns_queue = match otlp::install_queue(queue) {
            Ok(()) => true,
            Err(spare) => {
                let _ = spare.shutdown(Duration::from_secs(1));
                false
            }
        };
        let tracer = provider.tracer("patron");
        let _ = HEAD.set(head);
        ENABLED.store(true, Ordering::Relaxed);
        Ok((
            TraceExport {
                provider,
                owns_queue,
            },
            tracer,
        ))
    }

    /// Flushes pending spans and stops the exporter, waiting at most
    /// `timeout`. Runs on its own thread for the same reason as `start`.
    pub(crate) fn shutdown(self, timeout: Duration) {
        // The HTTP server spans first: they share the exporter, which the
        // provider's shutdown closes.
        let started = std::time::Instant::now();
        if self.owns_queue
            && let Some(queue) = otlp::installed_queue()
        {
            let _ = queue.shutdown(timeout);
        }
        let timeout = timeout.saturating_sub(started.elapsed());
        let provider = self.provider;
        let done = std::thread::spawn(move || provider.shutdown_with_timeout(timeout));
        match done.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: flushing traces failed: {e}"),
            Err(_) => eprintln!("warning: flushing traces panicked"),
        }
    }
}

/// Writes the current request's trace context (W3C `traceparent` and
/// `baggage`) and correlation id into `headers`, for an outgoing call.
///
/// With trace export on and the request sampled, the context is this
/// service's server span, so the callee becomes its child. Otherwise the
/// incoming `traceparent` and `baggage` are passed on unchanged, so a trace
/// survives services that export nothing. Outside a request it writes
/// nothing.
///
/// ```
/// let mut headers = http::HeaderMap::new();
/// patron::observe::trace::inject(&mut headers);
/// assert!(headers.is_empty(), "no request, nothing to propagate");
/// ```
pub fn inject(headers: &mut http::HeaderMap) {
    struct Headers<'a>(&'a mut http::HeaderMap);
    impl Injector for Headers<'_> {
        fn set(&mut self, key: &str, value: String) {
            if let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(key.as_bytes()),
                http::HeaderValue::from_str(&value),
            ) {
                self.0.insert(name, value);
            }
        }
    }
    let Some((correlation_id, traceparent, baggage)) =
        with_current(|c| (c.correlation_id().clone(), c.traceparent(), c.baggage()))
    else {
        return;
    };
    headers.insert(crate::context::X_CORRELATION_ID, correlation_id);
    if enabled() {
        let cx = current_context();
        if cx.span().span_context().is_valid() {
            PROPAGATOR.inject_context(&cx, &mut Headers(headers));
            return;
        }
    }
    // An invalid traceparent is not passed on: the callee would take it as
    // its parent where patron did not.
    if let Some(tp) = traceparent.filter(|tp| traceparent::is_valid(tp.as_bytes())) {
        headers.insert(http::HeaderName::from_static("traceparent"), tp);
    }
    if let Some(bg) = baggage {
        headers.insert(http::HeaderName::from_static("baggage"), bg);
    }
}

/// The OpenTelemetry context of the innermost current span: a `tracing`
/// span exported through the OpenTelemetry layer (a message's, a gRPC
/// call's, a user's), else the context patron made current for an HTTP
/// request (whose span is built on the SDK directly).
pub(crate) fn current_context() -> Context {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let cx = tracing::Span::current().context();
    if cx.span().span_context().is_valid() {
        cx
    } else {
        Context::current()
    }
}

/// What [`inject`] writes, minus the names `is_set` says the outgoing
/// message already carries: the sender's own headers win. Shared by the
/// message clients (Kafka, AMQP, SQS).
#[cfg_attr(
    not(any(feature = "kafka", feature = "amqp", feature = "sqs")),
    allow(dead_code)
)]
pub(crate) fn propagated(is_set: impl Fn(&str) -> bool) -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    inject(&mut headers);
    let taken: Vec<http::HeaderName> = headers
        .keys()
        .filter(|name| is_set(name.as_str()))
        .cloned()
        .collect();
    for name in taken {
        headers.remove(name);
    }
    headers
}

static PROPAGATOR: LazyLock<TextMapCompositePropagator> = LazyLock::new(|| {
    TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ])
});

/// What the propagator may read: any header but a `traceparent` that
/// patron's parser rejects (OpenTelemetry's would take a short trace id,
/// padded with zeros, as a parent).
fn valid_or_other(key: &str, value: &str) -> bool {
    !key.eq_ignore_ascii_case("traceparent") || traceparent::is_valid(value.as_bytes())
}

/// Reads W3C `traceparent` and `baggage` from any carrier of headers (a
/// consumed message's: the consumer implements [`Extractor`] for them).
pub(crate) fn extract_from(carrier: &dyn Extractor) -> Context {
    struct Checked<'a>(&'a dyn Extractor);
    impl Extractor for Checked<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).filter(|v| valid_or_other(key, v))
        }
        fn keys(&self) -> Vec<&str> {
            self.0.keys()
        }
    }
    PROPAGATOR.extract(&Checked(carrier))
}

/// Reads W3C `traceparent` and `baggage` from request headers.
pub(crate) fn extract(headers: &http::HeaderMap) -> Context {
    struct Headers<'a>(&'a http::HeaderMap);
    impl Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0
                .get(key)
                .and_then(|v| v.to_str().ok())
                .filter(|v| valid_or_other(key, v))
        }
        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(|k| k.as_str()).collect()
        }
    }
    PROPAGATOR.extract(&Headers(headers))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An environment lookup answering from `pairs` (shared with the
    /// exporter's tests).
    pub(crate) fn with(
        pairs: &'static [(&'static str, &'static str)],
    ) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn default_sampling_is_parent_based_tenth() {
        assert_eq!(
            sampling_from(&with(&[])).unwrap(),
            HeadSampling {
                parent_based: true,
                ratio: 0.1
            }
        );
    }

    #[test]
    fn sampler_env_is_validated() {
        assert_eq!(
            sampling_from(&with(&[("OTEL_TRACES_SAMPLER", "always_off")])).unwrap(),
            HeadSampling {
                parent_based: false,
                ratio: 0.0
            }
        );
        let err = sampling_from(&with(&[("OTEL_TRACES_SAMPLER", "sometimes")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("OTEL_TRACES_SAMPLER") && err.contains("sometimes"),
            "{err}"
        );
        let err = sampling_from(&with(&[
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "2"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("OTEL_TRACES_SAMPLER_ARG") && err.contains("0.0 to 1.0"),
            "{err}"
        );
    }

    #[test]
    fn head_follows_a_valid_parent() {
        let head = HeadSampling {
            parent_based: true,
            ratio: 0.0,
        };
        let mut h = http::HeaderMap::new();
        assert!(!head.sample(&h));
        h.insert(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
                .parse()
                .unwrap(),
        );
        assert!(head.sample(&h));
        h.insert(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
                .parse()
                .unwrap(),
        );
        assert!(
            !HeadSampling {
                parent_based: true,
                ratio: 1.0
            }
            .sample(&h)
        );
        h.insert("traceparent", "garbage".parse().unwrap());
        assert!(
            HeadSampling {
                parent_based: true,
                ratio: 1.0
            }
            .sample(&h)
        );
        assert!(
            !HeadSampling {
                parent_based: false,
                ratio: 0.0
            }
            .sample(&h)
        );
    }

    #[test]
    fn exporter_only_with_an_endpoint() {
        assert!(!exporter_configured(&with(&[])));
        assert!(exporter_configured(&with(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://127.0.0.1:4318"
        )])));
        assert!(exporter_configured(&with(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://x/v1/traces"
        )])));
    }
}
