//! Logging set-up. JSON lines on stdout by default — timestamp, level,
//! message, target, service, version, host, the request's `correlation_id`
//! and the event's fields — or human-readable lines with
//! `PATRON_LOG_FORMAT=pretty`. `PATRON_LOG_LEVEL` sets the level;
//! `RUST_LOG` directives win when set.
//!
//! The JSON layer is written for the request path: it does no work per span,
//! takes the correlation id from the request's task-local context, and
//! formats a line into a reused thread-local buffer only when its level is
//! enabled.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::OnceLock;

use opentelemetry::trace::TraceContextExt;
use tracing::dispatcher::WeakDispatch;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_opentelemetry::get_otel_context;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

use crate::config::{Config, LogFormat, LogLevel};
use crate::context::CorrelationId;
use crate::error::Error;
use crate::observe::trace::{self, TraceExport};

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

/// Writes each event as one JSON object on stdout.
pub struct JsonLayer {
    fixed: String,
}

/// The dispatcher patron installed, for looking up OpenTelemetry span
/// contexts from inside the log layer.
static DISPATCH: OnceLock<WeakDispatch> = OnceLock::new();

impl JsonLayer {
    /// A layer stamping every line with the service, version and host.
    pub fn new(service: &str, version: &str) -> Self {
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        let mut fixed = String::new();
        fixed.push_str(",\"service\":");
        escape(&mut fixed, service);
        fixed.push_str(",\"version\":");
        escape(&mut fixed, version);
        fixed.push_str(",\"host\":");
        escape(&mut fixed, &host);
        JsonLayer { fixed }
    }

    /// Formats one line (without the trailing newline) into `out`.
    fn format(&self, out: &mut String, event: &Event<'_>) {
        let meta = event.metadata();
        out.push_str("{\"timestamp\":\"");
        let _ = write!(
            out,
            "{}",
            humantime::format_rfc3339_micros(std::time::SystemTime::now())
        );
        out.push_str("\",\"level\":\"");
        out.push_str(meta.level().as_str());
        out.push('"');
        let mut fields = FieldWriter {
            message: None,
            correlation_id: None,
            rest: String::new(),
        };
        event.record(&mut fields);
        out.push_str(",\"message\":");
        escape(out, fields.message.as_deref().unwrap_or(""));
        out.push_str(",\"target\":");
        escape(out, meta.target());
        out.push_str(&self.fixed);
        if let Some(id) = CorrelationId::current() {
            out.push_str(",\"correlation_id\":");
            escape(out, id.as_str());
        } else if let Some(id) = &fields.correlation_id {
            out.push_str(",\"correlation_id\":");
            escape(out, id);
        }
        // Message and gRPC spans are DEBUG spans this layer's filter may
        // hide, so ask the registry itself for the current span; an HTTP
        // request's span is the current OpenTelemetry context.
        if trace::enabled() {
            let cx = DISPATCH
                .get()
                .and_then(WeakDispatch::upgrade)
                .and_then(|dispatch| {
                    let id = dispatch.current_span().id()?.clone();
                    get_otel_context(&id, &dispatch)
                })
                .filter(|cx| cx.span().span_context().is_valid())
                .unwrap_or_else(opentelemetry::Context::current);
            let span_context = cx.span().span_context().clone();
            if span_context.is_valid() {
                let _ = write!(
                    out,
                    ",\"trace_id\":\"{}\",\"span_id\":\"{}\"",
                    span_context.trace_id(),
                    span_context.span_id()
                );
            }
        }
        out.push_str(&fields.rest);
        out.push('}');
    }
}

impl<S> Layer<S> for JsonLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        thread_local! {
            static BUF: RefCell<String> = const { RefCell::new(String::new()) };
        }
        BUF.with(|buf| {
            let Ok(mut buf) = buf.try_borrow_mut() else {
                return;
            };
            buf.clear();
            self.format(&mut buf, event);
            buf.push('\n');
            let _ = std::io::stdout().lock().write_all(buf.as_bytes());
            if buf.capacity() > 64 * 1024 {
                *buf = String::new();
            }
        });
    }
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

struct FieldWriter {
    message: Option<String>,
    /// An explicit `correlation_id` field, for lines written outside the
    /// request's task (the access log, panics, timeouts).
    correlation_id: Option<String>,
    rest: String,
}

impl FieldWriter {
    /// Writes the key of an event field. A field named like one of the keys
    /// every line has (`service`, `host`, …) is written as `fields.<name>`,
    /// so a line never holds the same key twice.
    fn key(&mut self, field: &Field) {
        self.rest.push(',');
        let name = field.name();
        if RESERVED_KEYS.contains(&name) {
            escape(&mut self.rest, &format!("fields.{name}"));
        } else {
            escape(&mut self.rest, name);
        }
        self.rest.push(':');
    }
}

impl Visit for FieldWriter {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = Some(value.to_string());
            return;
        }
        if field.name() == "correlation_id"
            && self.correlation_id.is_none()
            && CorrelationId::current().is_none()
        {
            self.correlation_id = Some(value.to_string());
            return;
        }
        self.key(field);
        escape(&mut self.rest, value);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        let _ = write!(self.rest, "{value}");
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        let _ = write!(self.rest, "{value}");
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.key(field);
        if value.is_finite() {
            let _ = write!(self.rest, "{value}");
        } else {
            let _ = write!(self.rest, "\"{value}\"");
        }
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        self.rest.push_str(if value { "true" } else { "false" });
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.key(field);
        escape(&mut self.rest, &value.to_string());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = Some(text);
            return;
        }
        self.key(field);
        escape(&mut self.rest, &text);
    }
}

/// Keys patron writes on every JSON line (or inside requests).
const RESERVED_KEYS: &[&str] = &[
    "timestamp",
    "level",
    "message",
    "target",
    "service",
    "version",
    "host",
    "correlation_id",
    "trace_id",
    "span_id",
];

/// Appends `value` as a JSON string.
fn escape(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_fields_never_repeat_a_fixed_key() {
        use tracing_subscriber::layer::SubscriberExt;
        let layer = JsonLayer::new("svc", "1.0");
        let captured = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        struct Capture(JsonLayer, std::sync::Arc<std::sync::Mutex<String>>);
        impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
            fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
                let mut out = String::new();
                self.0.format(&mut out, event);
                *self.1.lock().unwrap() = out;
            }
        }
        let subscriber = tracing_subscriber::registry().with(Capture(layer, captured.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(service = "billing", host = 3, order = 7, "placed");
        });
        let line = captured.lock().unwrap().clone();
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["service"], "svc");
        assert_eq!(value["fields.service"], "billing");
        assert_eq!(value["fields.host"], 3);
        assert_eq!(value["order"], 7);
        assert_eq!(line.matches("\"service\":").count(), 1, "{line}");
    }

    #[test]
    fn escapes_json() {
        let mut s = String::new();
        escape(&mut s, "a\"b\\c\nd\u{1}");
        assert_eq!(s, r#""a\"b\\c\nd\u0001""#);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v, "a\"b\\c\nd\u{1}");
    }
}
