//! OpenTelemetry traces, exported over OTLP/HTTP (protobuf) when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is
//! set; without one, no exporter runs.
//!
//! - Sampling: `OTEL_TRACES_SAMPLER` (`always_on`, `always_off`,
//!   `traceidratio`, `parentbased_always_on`, `parentbased_always_off`,
//!   `parentbased_traceidratio`) and `OTEL_TRACES_SAMPLER_ARG`; by default
//!   parent-based trace-id ratio 0.1, as Go Patron.
//! - Resource: `service.name` (`OTEL_SERVICE_NAME` wins over the service's
//!   name), `service.version`, `host.name`.
//! - Incoming W3C `traceparent` and `baggage` become the server span's parent.
//! - Spans are batched on a background thread and flushed on shutdown,
//!   bounded by the shutdown timeout.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::propagation::{Extractor, TextMapCompositePropagator, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, Tracer};

use crate::config::ConfigError;
use crate::error::Error;

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

/// The sampler the environment asks for; parent-based ratio 0.1 by default.
pub fn sampler_from(lookup: &impl Fn(&str) -> Option<String>) -> Result<Sampler, ConfigError> {
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
    Ok(match name.as_deref() {
        None | Some("parentbased_traceidratio") => {
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio()?)))
        }
        Some("always_on") => Sampler::AlwaysOn,
        Some("always_off") => Sampler::AlwaysOff,
        Some("traceidratio") => Sampler::TraceIdRatioBased(ratio()?),
        Some("parentbased_always_on") => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        Some("parentbased_always_off") => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        Some(other) => {
            return Err(ConfigError::Invalid {
                var: "OTEL_TRACES_SAMPLER".into(),
                value: other.into(),
                expected: "always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio".into(),
            });
        }
    })
}

/// The tracer provider, owned by the process for the service's lifetime.
pub struct TraceExport {
    provider: SdkTracerProvider,
}

impl TraceExport {
    /// Builds the OTLP/HTTP exporter and the provider. Runs on its own
    /// thread: the HTTP client it creates must not be built on a runtime
    /// thread.
    pub(crate) fn start(
        service: &str,
        version: &str,
        sampler: Sampler,
    ) -> Result<(Self, Tracer), Error> {
        let name = std::env::var("OTEL_SERVICE_NAME")
            .ok()
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| service.to_string());
        let version = version.to_string();
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        let provider = std::thread::spawn(move || -> Result<SdkTracerProvider, Error> {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .build()
                .map_err(|e| Error::msg(format!("cannot build the OTLP trace exporter: {e}")))?;
            let resource = Resource::builder()
                .with_service_name(name)
                .with_attributes([
                    KeyValue::new("service.version", version),
                    KeyValue::new("host.name", host),
                ])
                .build();
            Ok(SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_sampler(sampler)
                .with_resource(resource)
                .build())
        })
        .join()
        .map_err(|_| Error::msg("building the OTLP trace exporter panicked"))??;
        let tracer = provider.tracer("patron");
        ENABLED.store(true, Ordering::Relaxed);
        Ok((TraceExport { provider }, tracer))
    }

    /// Flushes pending spans and stops the exporter, waiting at most
    /// `timeout`. Runs on its own thread for the same reason as `start`.
    pub(crate) fn shutdown(self, timeout: Duration) {
        let provider = self.provider;
        let done = std::thread::spawn(move || provider.shutdown_with_timeout(timeout));
        match done.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: flushing traces failed: {e}"),
            Err(_) => eprintln!("warning: flushing traces panicked"),
        }
    }
}

/// Reads W3C `traceparent` and `baggage` from request headers.
pub(crate) fn extract(headers: &http::HeaderMap) -> Context {
    struct Headers<'a>(&'a http::HeaderMap);
    impl Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(|v| v.to_str().ok())
        }
        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(|k| k.as_str()).collect()
        }
    }
    let propagator = TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ]);
    propagator.extract(&Headers(headers))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn default_sampler_is_parent_based_tenth() {
        let s = sampler_from(&with(&[])).unwrap();
        assert_eq!(
            format!("{s:?}"),
            format!(
                "{:?}",
                Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(0.1)))
            )
        );
    }

    #[test]
    fn sampler_env_is_validated() {
        assert!(matches!(
            sampler_from(&with(&[("OTEL_TRACES_SAMPLER", "always_off")])).unwrap(),
            Sampler::AlwaysOff
        ));
        let err = sampler_from(&with(&[("OTEL_TRACES_SAMPLER", "sometimes")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("OTEL_TRACES_SAMPLER") && err.contains("sometimes"),
            "{err}"
        );
        let err = sampler_from(&with(&[
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
