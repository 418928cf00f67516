//! Logging set-up. JSON lines on stdout by default — timestamp, level,
//! message, target, service, version, host, the request's `correlation_id`
//! and the event's fields — or human-readable lines with
//! `PATRON_LOG_FORMAT=pretty`. `PATRON_LOG_LEVEL` sets the level;
//! `RUST_LOG` directives win when set.
//!
//! The JSON layer is written for the request path: a span records only the
//! correlation id it carries, and a line is formatted into a reused
//! thread-local buffer only when its level is enabled.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write as _;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{Config, LogFormat};

/// Logging could not be set up.
#[derive(Debug, thiserror::Error)]
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

/// Installs the global subscriber for a service. Does nothing if one is
/// already installed (for example by a test).
pub fn init(config: &Config, service: &str, version: &str) -> Result<(), LogError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(value) if !value.trim().is_empty() => {
            EnvFilter::try_new(&value).map_err(|e| LogError::BadFilter {
                value: value.clone(),
                reason: e.to_string(),
            })?
        }
        _ => EnvFilter::new(config.log_level.as_str()),
    };
    let registry = tracing_subscriber::registry().with(filter);
    let _already_set = match config.log_format {
        LogFormat::Json => registry.with(JsonLayer::new(service, version)).try_init(),
        LogFormat::Pretty => registry
            .with(tracing_subscriber::fmt::layer().with_target(true))
            .try_init(),
    };
    Ok(())
}

/// Writes each event as one JSON object on stdout.
pub struct JsonLayer {
    fixed: String,
}

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
    fn format<S>(&self, out: &mut String, event: &Event<'_>, ctx: &Context<'_, S>)
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
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
            rest: String::new(),
        };
        event.record(&mut fields);
        out.push_str(",\"message\":");
        escape(out, fields.message.as_deref().unwrap_or(""));
        out.push_str(",\"target\":");
        escape(out, meta.target());
        out.push_str(&self.fixed);
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope {
                if let Some(id) = span.extensions().get::<SpanCorrelation>() {
                    out.push_str(",\"correlation_id\":");
                    escape(out, &id.0);
                    break;
                }
            }
        }
        out.push_str(&fields.rest);
        out.push('}');
    }
}

/// The correlation id a span carries, kept for its log lines.
struct SpanCorrelation(String);

struct FindCorrelation(Option<String>);

impl Visit for FindCorrelation {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "correlation_id" {
            self.0 = Some(value.to_string());
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "correlation_id" {
            self.0 = Some(format!("{value:?}"));
        }
    }
}

impl<S> Layer<S> for JsonLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if !attrs
            .metadata()
            .fields()
            .iter()
            .any(|f| f.name() == "correlation_id")
        {
            return;
        }
        let mut find = FindCorrelation(None);
        attrs.record(&mut find);
        if let (Some(value), Some(span)) = (find.0, ctx.span(id)) {
            span.extensions_mut().insert(SpanCorrelation(value));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let mut find = FindCorrelation(None);
        values.record(&mut find);
        if let (Some(value), Some(span)) = (find.0, ctx.span(id)) {
            let mut ext = span.extensions_mut();
            ext.remove::<SpanCorrelation>();
            ext.insert(SpanCorrelation(value));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        thread_local! {
            static BUF: RefCell<String> = const { RefCell::new(String::new()) };
        }
        BUF.with(|buf| {
            let Ok(mut buf) = buf.try_borrow_mut() else {
                return;
            };
            buf.clear();
            self.format(&mut buf, event, &ctx);
            buf.push('\n');
            let _ = std::io::stdout().lock().write_all(buf.as_bytes());
            if buf.capacity() > 64 * 1024 {
                *buf = String::new();
            }
        });
    }
}

struct FieldWriter {
    message: Option<String>,
    rest: String,
}

impl FieldWriter {
    fn key(&mut self, field: &Field) {
        self.rest.push(',');
        escape(&mut self.rest, field.name());
        self.rest.push(':');
    }
}

impl Visit for FieldWriter {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = Some(value.to_string());
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
    fn escapes_json() {
        let mut s = String::new();
        escape(&mut s, "a\"b\\c\nd\u{1}");
        assert_eq!(s, r#""a\"b\\c\nd\u0001""#);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v, "a\"b\\c\nd\u{1}");
    }
}
