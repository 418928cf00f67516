//! Correlation ids: read from `X-Correlation-Id` (a request header or a
//! message header), generated (UUIDv4) when absent or unusable, and kept in
//! the work's task-local context so every log line carries it.

use http::{HeaderMap, HeaderName, HeaderValue};

/// The correlation header.
pub const X_CORRELATION_ID: HeaderName = HeaderName::from_static("x-correlation-id");

/// Longest client-supplied correlation id that is kept.
const MAX_LEN: usize = 128;

/// The correlation id of the request or message being handled: a handler
/// argument, or [`CorrelationId::current`] anywhere the work runs.
///
/// ```
/// use patron::http::CorrelationId;
///
/// #[patron::route(GET "/whoami")]
/// async fn whoami(id: CorrelationId) -> String {
///     id.as_str().to_string()
/// }
/// # fn main() {}
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorrelationId(HeaderValue);

impl CorrelationId {
    /// The id `id` — for calling a handler directly in a unit test, or
    /// passing one on. It must be what patron would keep from a header: 1 to
    /// 128 visible ASCII characters.
    ///
    /// ```
    /// use patron::http::CorrelationId;
    ///
    /// assert_eq!(CorrelationId::new("order-42")?.as_str(), "order-42");
    /// assert!(CorrelationId::new("has space").is_err());
    /// # Ok::<(), patron::Error>(())
    /// ```
    pub fn new(id: &str) -> Result<Self, crate::Error> {
        if !usable_bytes(id.as_bytes()) {
            return Err(crate::Error::msg(format!(
                "{id:?} is not a usable correlation id: it must be 1 to {MAX_LEN} visible ASCII characters"
            )));
        }
        HeaderValue::from_str(id)
            .map(CorrelationId)
            .map_err(|e| crate::Error::msg(format!("{id:?} is not a usable correlation id: {e}")))
    }

    /// A fresh id (a UUIDv4), as patron generates for a request without one.
    pub fn generate() -> Self {
        CorrelationId(generate())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        text(&self.0)
    }

    /// The id as a header value, for passing it on.
    pub fn header_value(&self) -> &HeaderValue {
        &self.0
    }

    /// The correlation id of the request or message being handled on this
    /// task, if any. Available in handlers, middleware and anything they
    /// await.
    pub fn current() -> Option<CorrelationId> {
        super::scope::with_current(|ctx| CorrelationId(ctx.correlation_id().clone()))
    }

    /// An id already read or generated.
    pub(crate) fn from_value(id: HeaderValue) -> Self {
        CorrelationId(id)
    }
}

/// The usable correlation id of `headers`, or a fresh one.
pub(crate) fn from_headers(headers: &HeaderMap) -> HeaderValue {
    match headers.get(X_CORRELATION_ID) {
        Some(v) if usable(v) => v.clone(),
        _ => generate(),
    }
}

/// The usable correlation id in `value` (a message header's bytes), or a
/// fresh one.
pub(crate) fn from_bytes(value: Option<&[u8]>) -> HeaderValue {
    match value {
        Some(b) if usable_bytes(b) => HeaderValue::from_bytes(b).unwrap_or_else(|_| generate()),
        _ => generate(),
    }
}

/// The id as text: only visible ASCII is ever kept (see `usable_bytes`).
pub(crate) fn text(id: &HeaderValue) -> &str {
    id.to_str().unwrap_or_default()
}

fn usable(v: &HeaderValue) -> bool {
    usable_bytes(v.as_bytes())
}

fn usable_bytes(b: &[u8]) -> bool {
    !b.is_empty() && b.len() <= MAX_LEN && b.iter().all(|c| (0x21..=0x7e).contains(c))
}

fn generate() -> HeaderValue {
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
    // Owned by a shared buffer: one allocation, and the clones the request
    // context and log lines take only count references.
    // A hyphenated UUID is always a valid header value.
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(buf))
        .unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_a_good_id_and_replaces_a_bad_one() {
        let mut h = HeaderMap::new();
        h.insert(X_CORRELATION_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(from_headers(&h), "abc-123");

        let mut h = HeaderMap::new();
        h.insert(
            X_CORRELATION_ID,
            HeaderValue::from_str(&"x".repeat(200)).unwrap(),
        );
        assert_eq!(from_headers(&h).len(), 36);

        let id = from_headers(&HeaderMap::new());
        assert_eq!(id.to_str().unwrap().matches('-').count(), 4);
        assert_ne!(id, from_headers(&HeaderMap::new()));
    }
}
