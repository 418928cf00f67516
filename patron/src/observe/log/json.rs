//! The JSON log line, written for the request path: nothing is done per
//! span; the correlation id is read from the request's context in place;
//! and a line, its message and its other fields are written into buffers
//! that each thread reuses, with strings escaped as they are written (the
//! message too, from its `format_args!`), never through an intermediate
//! `String`. The timestamp's date and time of day are formatted once a
//! second per thread; only the microseconds are written per line.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::TraceContextExt;
use tracing::dispatcher::WeakDispatch;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_opentelemetry::get_otel_context;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use crate::context::correlation::text;
use crate::context::with_current;
use crate::observe::trace;

/// Writes each event as one JSON object on stdout.
pub struct JsonLayer {
    fixed: String,
}

/// The dispatcher patron installed, for looking up OpenTelemetry span
/// contexts from inside the log layer.
pub(super) static DISPATCH: OnceLock<WeakDispatch> = OnceLock::new();

/// Buffers larger than this are given back after their line.
const KEEP: usize = 64 * 1024;

/// What a thread reuses from one line to the next.
#[derive(Default)]
pub(super) struct Scratch {
    /// The line being written.
    pub(super) line: String,
    /// The event's message, escaped.
    message: String,
    /// The event's other fields, as `,"key":value` pairs.
    rest: String,
    clock: Clock,
}

/// The timestamp's whole second, formatted once.
#[derive(Default)]
struct Clock {
    /// Seconds since the epoch that `text` shows; `None` before the first.
    second: Option<u64>,
    /// `YYYY-MM-DDTHH:MM:SS`.
    text: String,
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

    /// Formats one line (without the trailing newline) into
    /// `scratch.line`.
    pub(super) fn format(&self, scratch: &mut Scratch, event: &Event<'_>) {
        let Scratch {
            line: out,
            message,
            rest,
            clock,
        } = scratch;
        out.clear();
        message.clear();
        rest.clear();
        let meta = event.metadata();
        out.push_str("{\"timestamp\":\"");
        timestamp(out, clock, SystemTime::now());
        out.push_str("\",\"level\":\"");
        out.push_str(meta.level().as_str());
        out.push('"');
        let mut fields = FieldWriter {
            message,
            correlation_id: None,
            rest,
        };
        event.record(&mut fields);
        let correlation_id = fields.correlation_id;
        out.push_str(",\"message\":\"");
        out.push_str(message);
        out.push_str("\",\"target\":");
        escape(out, meta.target());
        out.push_str(&self.fixed);
        let in_context = with_current(|cx| {
            out.push_str(",\"correlation_id\":");
            escape(out, text(cx.correlation_id()));
        });
        if in_context.is_none()
            && let Some(id) = &correlation_id
        {
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
        out.push_str(rest);
        out.push('}');
    }
}

impl<S> Layer<S> for JsonLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        thread_local! {
            static SCRATCH: RefCell<Scratch> = RefCell::default();
        }
        SCRATCH.with(|scratch| {
            let Ok(mut scratch) = scratch.try_borrow_mut() else {
                return;
            };
            let scratch = &mut *scratch;
            self.format(scratch, event);
            scratch.line.push('\n');
            let _ = std::io::stdout().lock().write_all(scratch.line.as_bytes());
            for buf in [&mut scratch.line, &mut scratch.message, &mut scratch.rest] {
                if buf.capacity() > KEEP {
                    *buf = String::new();
                }
            }
        });
    }
}

/// Writes `now` as RFC 3339 UTC with microseconds, as
/// `humantime::format_rfc3339_micros` does, formatting the date and time
/// of day only when the second changed since `clock` last did.
fn timestamp(out: &mut String, clock: &mut Clock, now: SystemTime) {
    let Ok(since) = now.duration_since(UNIX_EPOCH) else {
        let _ = write!(out, "{}", humantime::format_rfc3339_micros(now));
        return;
    };
    let second = since.as_secs();
    if clock.second != Some(second) {
        clock.text.clear();
        let whole = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(second));
        let _ = write!(clock.text, "{whole}");
        clock.text.pop(); // its `Z`
        clock.second = Some(second);
    }
    out.push_str(&clock.text);
    let mut micros = since.subsec_micros();
    let mut digits = [b'0'; 6];
    for digit in digits.iter_mut().rev() {
        *digit = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    out.push('.');
    for digit in digits {
        out.push(char::from(digit));
    }
    out.push('Z');
}

struct FieldWriter<'a> {
    /// The message, escaped (without its quotes).
    message: &'a mut String,
    /// An explicit `correlation_id` field, for lines written outside the
    /// request's task (the access log, panics, timeouts).
    correlation_id: Option<String>,
    rest: &'a mut String,
}

impl FieldWriter<'_> {
    /// Writes the key of an event field. A field named like one of the keys
    /// every line has (`service`, `host`, …) is written as `fields.<name>`,
    /// so a line never holds the same key twice.
    fn key(&mut self, field: &Field) {
        self.rest.push(',');
        let name = field.name();
        if RESERVED_KEYS.contains(&name) {
            self.rest.push_str("\"fields.");
            escape_into(self.rest, name);
            self.rest.push('"');
        } else {
            escape(self.rest, name);
        }
        self.rest.push(':');
    }

    /// A string value written by `write`, escaped, as field `field`.
    fn string(&mut self, field: &Field, write: impl FnOnce(&mut Escaped<'_>)) {
        self.key(field);
        self.rest.push('"');
        write(&mut Escaped(self.rest));
        self.rest.push('"');
    }
}

impl Visit for FieldWriter<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.clear();
            escape_into(self.message, value);
            return;
        }
        if field.name() == "correlation_id"
            && self.correlation_id.is_none()
            && with_current(|_| ()).is_none()
        {
            self.correlation_id = Some(value.to_string());
            return;
        }
        self.string(field, |out| {
            let _ = out.write_str(value);
        });
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
        self.string(field, |out| {
            let _ = write!(out, "{value}");
        });
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.message.clear();
            let _ = write!(Escaped(self.message), "{value:?}");
            return;
        }
        self.string(field, |out| {
            let _ = write!(out, "{value:?}");
        });
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

/// What is formatted into it, written to the string as the inside of a
/// JSON string.
struct Escaped<'a>(&'a mut String);

impl fmt::Write for Escaped<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        escape_into(self.0, s);
        Ok(())
    }
}

/// Appends `value` as a JSON string.
pub(super) fn escape(out: &mut String, value: &str) {
    out.push('"');
    escape_into(out, value);
    out.push('"');
}

/// Appends `value` escaped for the inside of a JSON string: the runs of
/// bytes between those that need an escape are copied whole.
fn escape_into(out: &mut String, value: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = value.as_bytes();
    let mut start = 0;
    loop {
        let at = next_special(bytes, start);
        // `at` is the length or an ASCII byte's index: a character boundary.
        out.push_str(&value[start..at]);
        let Some(&b) = bytes.get(at) else {
            return;
        };
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            _ => {
                out.push_str("\\u00");
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0xf)]));
            }
        }
        start = at + 1;
    }
}

/// The index of the first byte from `from` on that a JSON string must
/// escape (a control character, `"` or `\`), or the length. Eight bytes
/// are tested at a time: a byte below 0x20, or equal to `"` or `\` after
/// an XOR, borrows when one is subtracted from it. A borrow can mark a
/// byte above a true match as well, never one below, so the lowest mark is
/// the first match.
fn next_special(bytes: &[u8], from: usize) -> usize {
    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_le_bytes([0x80; 8]);
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x;
    let mut i = from;
    while let Some(chunk) = bytes.get(i..).and_then(<[u8]>::first_chunk::<8>) {
        let word = u64::from_le_bytes(*chunk);
        let quote = word ^ (ONES * u64::from(b'"'));
        let backslash = word ^ (ONES * u64::from(b'\\'));
        let marks = (below(word, 0x20) | below(quote, 1) | below(backslash, 1)) & HIGH;
        if marks != 0 {
            return i + (marks.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&b) = bytes.get(i) {
        if b < 0x20 || b == b'"' || b == b'\\' {
            return i;
        }
        i += 1;
    }
    bytes.len()
}

#[cfg(test)]
mod tests;
