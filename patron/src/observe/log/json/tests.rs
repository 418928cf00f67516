use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use super::*;

/// The lines `JsonLayer` formats for the events `emit` logs, through one
/// scratch reused from line to line, as each thread's is.
fn lines(emit: impl FnOnce()) -> Vec<String> {
    use tracing_subscriber::layer::SubscriberExt;
    type State = std::sync::Arc<std::sync::Mutex<(Scratch, Vec<String>)>>;
    struct Capture(JsonLayer, State);
    impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
        fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
            let mut guard = self.1.lock().unwrap();
            let (scratch, lines) = &mut *guard;
            self.0.format(scratch, event);
            lines.push(scratch.line.clone());
        }
    }
    let state = State::default();
    let subscriber =
        tracing_subscriber::registry().with(Capture(JsonLayer::new("svc", "1.0"), state.clone()));
    tracing::subscriber::with_default(subscriber, emit);
    state.lock().unwrap().1.clone()
}

#[test]
fn event_fields_never_repeat_a_fixed_key() {
    let lines = lines(|| tracing::info!(service = "billing", host = 3, order = 7, "placed"));
    let line = &lines[0];
    let value: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(value["service"], "svc");
    assert_eq!(value["fields.service"], "billing");
    assert_eq!(value["fields.host"], 3);
    assert_eq!(value["order"], 7);
    assert_eq!(line.matches("\"service\":").count(), 1, "{line}");
}

#[test]
fn every_kind_of_field_and_message_is_valid_json() {
    #[derive(Debug)]
    struct Odd {
        #[allow(dead_code)]
        text: &'static str,
    }
    let error = std::io::Error::other("disk \"full\"\n");
    let lines = lines(|| {
        tracing::warn!(
            path = "C:\\temp\t\"x\"",
            count = -3i64,
            size = 5u64,
            ratio = 0.5,
            bad = f64::NAN,
            ok = true,
            odd = ?Odd { text: "q\"\u{1}" },
            error = &error as &(dyn std::error::Error + 'static),
            "moved {} to \"{}\"\n{}",
            7,
            "Zoë ✓",
            '\u{7}'
        );
        tracing::info!(message = "plain \"str\"");
    });
    let value: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(value["level"], "WARN");
    assert_eq!(value["message"], "moved 7 to \"Zoë ✓\"\n\u{7}");
    assert_eq!(value["path"], "C:\\temp\t\"x\"");
    assert_eq!(value["count"], -3);
    assert_eq!(value["size"], 5);
    assert_eq!(value["ratio"], 0.5);
    assert_eq!(value["bad"], "NaN");
    assert_eq!(value["ok"], true);
    assert_eq!(value["odd"], "Odd { text: \"q\\\"\\u{1}\" }");
    assert_eq!(value["error"], "disk \"full\"\n");
    assert_eq!(value["target"], module_path!());
    let value: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(value["message"], "plain \"str\"");
}

#[test]
fn reused_scratch_leaves_nothing_of_the_previous_line() {
    let lines = lines(|| {
        tracing::info!(first = 1, "a long first message");
        tracing::info!("b");
    });
    let second: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(second["message"], "b");
    assert!(second.get("first").is_none(), "{}", lines[1]);
}

#[test]
fn escapes_json() {
    let mut s = String::new();
    escape(&mut s, "a\"b\\c\nd\u{1}\r\t\u{1f}é");
    assert_eq!(s, r#""a\"b\\c\nd\u0001\r\t\u001fé""#);
    let v: serde_json::Value = serde_json::from_str(&s).unwrap();
    assert_eq!(v, "a\"b\\c\nd\u{1}\r\t\u{1f}é");
}

#[test]
fn timestamps_match_humantime_across_seconds() {
    let mut clock = Clock::default();
    let start = UNIX_EPOCH + Duration::from_secs(1_765_000_000);
    for step in [
        0u64,
        1,
        999_999,
        1_000_000,
        1_000_001,
        59_999_999,
        86_400_000_123,
    ] {
        let at = start + Duration::from_micros(step);
        let mut out = String::new();
        timestamp(&mut out, &mut clock, at);
        assert_eq!(out, humantime::format_rfc3339_micros(at).to_string());
    }
    // Back in time (a clock step): the cached second is replaced.
    let mut out = String::new();
    timestamp(&mut out, &mut clock, start);
    assert_eq!(out, humantime::format_rfc3339_micros(start).to_string());
    let mut out = String::new();
    timestamp(&mut out, &mut clock, SystemTime::now());
    assert_eq!(out.len(), "2026-12-07T09:00:00.000000Z".len(), "{out}");
}

/// The escape as the JSON grammar states it, one character at a time.
fn reference(value: &str) -> String {
    let mut out = String::new();
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

#[test]
fn the_word_at_a_time_scan_escapes_as_the_grammar_does() {
    // Every special byte at every position of words and tails, between
    // ASCII and multi-byte characters (whose bytes are all 0x80 or more).
    let specials = ['"', '\\', '\n', '\r', '\t', '\u{0}', '\u{1f}', '\u{7f}'];
    let fillers = ["a", "é", "✓", "~", " "];
    for len in 0..20 {
        for at in 0..len {
            for special in specials {
                for filler in fillers {
                    let value: String = (0..len)
                        .map(|i| {
                            if i == at {
                                special.to_string()
                            } else {
                                filler.to_string()
                            }
                        })
                        .collect();
                    let mut out = String::new();
                    escape_into(&mut out, &value);
                    assert_eq!(out, reference(&value), "{value:?}");
                }
            }
        }
    }
    for _ in 0..2000 {
        let value: String = (0..fastrand::usize(0..40))
            .map(|_| match fastrand::u8(0..4) {
                0 => char::from(fastrand::u8(0..0x80)),
                1 => specials[fastrand::usize(0..specials.len())],
                2 => 'ß',
                _ => '😀',
            })
            .collect();
        let mut out = String::new();
        escape_into(&mut out, &value);
        assert_eq!(out, reference(&value), "{value:?}");
        let parsed: String = serde_json::from_str(&format!("\"{out}\"")).unwrap();
        assert_eq!(parsed, value);
    }
}
