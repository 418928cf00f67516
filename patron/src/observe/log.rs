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

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

use crate::config::{Config, LogFormat, LogLevel};
use crate::error::Error;
use crate::http::CorrelationId;

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
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match config.log_format {
        LogFormat::Json => registry.with(JsonLayer::new(service, version)).try_init(),
        LogFormat::Pretty => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
                    .event_format(PrettyFormat(Default::default())),
            )
            .try_init(),
    };
    if installed.is_ok() {
        // Only the subscriber patron installed can be changed at run time.
        let _ = LEVEL.set(handle);
    }
    Ok(())
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
