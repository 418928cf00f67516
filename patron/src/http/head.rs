//! What patron reads from a request's headers before routing it — the
//! correlation id, the W3C trace context, the body's declared length and
//! type, whether it accepts an encoding, how many `Host` headers it has —
//! found in one pass over the headers rather than one hash lookup each
//! (a lookup by a custom name such as `x-correlation-id` hashes the name
//! every time; a pass compares a handful of names with the few a request
//! carries).

use http::{HeaderMap, HeaderName, HeaderValue, header};

use crate::context::X_CORRELATION_ID;

/// The `traceparent` header (W3C Trace Context).
pub(crate) const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// The `baggage` header (W3C Baggage).
pub(crate) const BAGGAGE: HeaderName = HeaderName::from_static("baggage");

/// The headers the request guard needs, each the first of its name.
#[derive(Debug, Default)]
pub(crate) struct Head {
    /// How many `Host` headers (HTTP/1.1 requires exactly one).
    pub(crate) hosts: u32,
    pub(crate) correlation_id: Option<HeaderValue>,
    pub(crate) traceparent: Option<HeaderValue>,
    pub(crate) baggage: Option<HeaderValue>,
    /// `Content-Length`, when present and a number.
    pub(crate) content_length: Option<u64>,
    /// The body is JSON by its `Content-Type` (checked for UTF-8).
    pub(crate) json: bool,
    /// An `Accept-Encoding` header is present.
    pub(crate) accept_encoding: bool,
}

impl Head {
    /// Reads `headers` in one pass.
    pub(crate) fn read(headers: &HeaderMap) -> Head {
        let mut head = Head::default();
        let mut content_length = false;
        let mut content_type = false;
        for (name, value) in headers {
            if *name == header::HOST {
                head.hosts += 1;
            } else if *name == header::ACCEPT_ENCODING {
                head.accept_encoding = true;
            } else if *name == header::CONTENT_LENGTH {
                if !content_length {
                    content_length = true;
                    head.content_length = decimal(value.as_bytes());
                }
            } else if *name == header::CONTENT_TYPE {
                if !content_type {
                    content_type = true;
                    head.json = super::body::is_json(value.as_bytes());
                }
            } else if *name == X_CORRELATION_ID {
                first(&mut head.correlation_id, value);
            } else if *name == TRACEPARENT {
                first(&mut head.traceparent, value);
            } else if *name == BAGGAGE {
                first(&mut head.baggage, value);
            }
        }
        head
    }
}

/// A `Content-Length` value: ASCII digits only (as RFC 9110 has it), no
/// overflow.
fn decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        d.is_ascii_digit()
            .then(|| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
            .flatten()
    })
}

fn first(slot: &mut Option<HeaderValue>, value: &HeaderValue) {
    if slot.is_none() {
        *slot = Some(value.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_header_the_guard_needs_taking_the_first_of_a_name() {
        let mut h = HeaderMap::new();
        h.append(header::HOST, HeaderValue::from_static("a"));
        h.append(header::HOST, HeaderValue::from_static("b"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("42"));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json; charset=utf-8"),
        );
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
        h.append(X_CORRELATION_ID, HeaderValue::from_static("first"));
        h.append(X_CORRELATION_ID, HeaderValue::from_static("second"));
        h.insert(TRACEPARENT, HeaderValue::from_static("00-ab-cd-01"));
        h.insert(BAGGAGE, HeaderValue::from_static("k=v"));
        let head = Head::read(&h);
        assert_eq!(head.hosts, 2);
        assert_eq!(head.content_length, Some(42));
        assert!(head.json);
        assert!(head.accept_encoding);
        assert_eq!(
            head.correlation_id.as_ref().map(|v| v.as_bytes()),
            Some(&b"first"[..])
        );
        assert_eq!(
            head.traceparent.as_ref().map(|v| v.as_bytes()),
            Some(&b"00-ab-cd-01"[..])
        );
        assert_eq!(
            head.baggage.as_ref().map(|v| v.as_bytes()),
            Some(&b"k=v"[..])
        );
    }

    #[test]
    fn content_length_is_digits_only() {
        assert_eq!(decimal(b"0"), Some(0));
        assert_eq!(decimal(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(decimal(b"18446744073709551616"), None);
        assert_eq!(decimal(b""), None);
        assert_eq!(decimal(b"+5"), None);
        assert_eq!(decimal(b"5 "), None);
    }

    #[test]
    fn absent_or_unreadable_headers_read_as_absent() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("lots"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        let head = Head::read(&h);
        assert_eq!(head.hosts, 0);
        assert_eq!(head.content_length, None);
        assert!(!head.json && !head.accept_encoding);
        assert!(head.correlation_id.is_none() && head.traceparent.is_none());
    }
}
