//! Logging set-up. JSON lines on stdout by default — timestamp, level,
//! message, target, service, version, host, the request's `correlation_id`
//! and the event's fields — or human-readable lines with
//! `PATRON_LOG_FORMAT=pretty`. `PATRON_LOG_LEVEL` sets the level;
//! `RUST_LOG` directives win when set.
//!
//! The JSON line itself is written by [`JsonLayer`] (`log/json.rs`).

use std::sync::OnceLock;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

use crate::config::{Config, LogFormat, LogLevel};
use crate::context::CorrelationId;
use crate::error::Error;
use crate::observe::trace::{self, TraceExport};

mod json;

use json::DISPATCH;
pub use json::JsonLayer;

/// Logging could not be set up.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LogError {
    /// `RUST_LOG` holds a directive tracing-subscriber cannot parse.
    #[error(
        "invalid value for RUST_LOG: {value:?}; expected tracing directives such as `info` or `my_crate=debug` ({reason})"
    )]
    BadFilter {
        /// The value found.
        value: String,
        /// The parser's complaint.
        reason: String,
    },
}

/// Installs the global subscriber for a service: the log layer and, when an
/// OTLP endpoint is configured, the OpenTelemetry layer. Does nothing if a
/// subscriber is already installed (for example by a test). Returns the
/// trace exporter to flush at shutdown.
pub fn init(config: &Config, service: &str, version: &str) -> Result<Option<TraceExport>, Error> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(value) if !value.trim().is_empty() => {
            EnvFilter::try_new(&value).map_err(|e| LogError::BadFilter {
                value: value.clone(),
                reason: e.to_string(),
            })?
        }
        _ => EnvFilter::new(config.log_level.as_str()),
    };
    let lookup = |name: &str| std::env::var(name).ok();
    let sampling = trace::sampling_from(&lookup)?;
    let (filter, handle) = reload::Layer::new(filter);
    let mut layers: Vec<Box<dyn Layer<Registry> + Send + Sync>> = Vec::new();
    layers.push(match config.log_format {
        LogFormat::Json => JsonLayer::new(service, version).with_filter(filter).boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .event_format(PrettyFormat(Default::default()))
            .with_filter(filter)
            .boxed(),
    });
    let export = if trace::exporter_configured(&lookup) {
        let otlp = crate::observe::otlp::OtlpConfig::from_env(&lookup)?;
        let (export, tracer) = TraceExport::start(service, version, sampling, otlp)?;
        // Request and message spans are DEBUG spans: the trace layer takes
        // them (and anything at INFO or above) whatever the log level is.
        let wanted = filter_fn(|meta| {
            meta.level() <= &Level::INFO
                || (meta.is_span()
                    && matches!(
                        meta.target(),
                        "patron::http::guard" | "patron::grpc" | "patron::consumer::process"
                    ))
        });
        // Source location, thread, target and busy/idle timings would cost
        // allocations and clock reads on every request span; the semconv
        // fields carry what a trace needs. Contexts are not activated on
        // every poll: patron's own propagation reads the span's context.
        let otel = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            .with_context_activation(false);
        layers.push(otel.with_filter(wanted).boxed());
        Some(export)
    } else {
        None
    };
    if tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .is_ok()
    {
        // Only the subscriber patron installed can be changed at run time.
        let _ = LEVEL.set(handle);
        tracing::dispatcher::get_default(|dispatch| {
            let _ = DISPATCH.set(dispatch.downgrade());
        });
    }
    Ok(export)
}

/// The reload handle of the installed filter, for `POST /debug/log/{level}`.
static LEVEL: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Changes the log level of the subscriber [`init`] installed. The new level
/// replaces any `RUST_LOG` directives.
pub fn set_level(level: LogLevel) -> Result<(), Error> {
    let handle = LEVEL.get().ok_or_else(|| {
        Error::new(
            http::StatusCode::CONFLICT,
            "logging in this process was not set up by patron, so its level cannot be changed",
        )
    })?;
    handle
        .reload(EnvFilter::new(level.as_str()))
        .map_err(|e| Error::msg(format!("cannot change the log level: {e}")))
}

/// Human-readable lines: tracing-subscriber's full format, prefixed with the
/// request's correlation id when there is one.
struct PrettyFormat(tracing_subscriber::fmt::format::Format);

impl<S, N> FormatEvent<S, N> for PrettyFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        if let Some(id) = CorrelationId::current() {
            write!(writer, "[{}] ", id.as_str())?;
        }
        self.0.format_event(ctx, writer, event)
    }
}
