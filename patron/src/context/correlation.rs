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

/// `value` (a request's `X-Correlation-Id`) when usable, else a fresh id.
pub(crate) fn or_generate(value: Option<HeaderValue>) -> HeaderValue {
    match value {
        Some(v) if usable(&v) => v,
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
    // 122 random bits in UUIDv4 layout, from the thread's fast generator
    // (seeded from the OS): an id must be unique, not unguessable, and the
    // CSPRNG's draw and the generic formatter cost more than the rest of the
    // request guard.
    let high = fastrand::u64(..) & !0xf000 | 0x4000; // version 4
    let low = fastrand::u64(..) & !(0xc0 << 56) | (0x80 << 56); // RFC 4122 variant
    let (h, l) = (hex16(high), hex16(low));
    let mut buf = [b'-'; 36];
    buf[..8].copy_from_slice(&h[..8]);
    buf[9..13].copy_from_slice(&h[8..12]);
    buf[14..18].copy_from_slice(&h[12..]);
    buf[19..23].copy_from_slice(&l[..4]);
    buf[24..].copy_from_slice(&l[4..]);
    // SAFETY: lowercase hex digits and hyphens are visible ASCII, which is
    // what a header value must be. Owned by a shared buffer: one
    // allocation, and the clones the request context and log lines take
    // only count references.
    unsafe { HeaderValue::from_maybe_shared_unchecked(bytes::Bytes::from_owner(buf)) }
}

/// The sixteen lowercase hex digits of `x`, most significant first,
/// computed in all lanes of a `u128` at once.
fn hex16(x: u64) -> [u8; 16] {
    // Spread the nibbles, in order, one to a byte.
    let mut y = u128::from(x);
    y = (y | y << 32) & 0x0000_0000_ffff_ffff_0000_0000_ffff_ffff;
    y = (y | y << 16) & 0x0000_ffff_0000_ffff_0000_ffff_0000_ffff;
    y = (y | y << 8) & 0x00ff_00ff_00ff_00ff_00ff_00ff_00ff_00ff;
    y = (y | y << 4) & 0x0f0f_0f0f_0f0f_0f0f_0f0f_0f0f_0f0f_0f0f;
    // 0–9 → '0'–'9', 10–15 → 'a'–'f': bytes above 9 get 0x27 more.
    const ONES: u128 = u128::MAX / 0xff;
    let above_nine = ((y + 6 * ONES) >> 4) & ONES;
    (y + 0x30 * ONES + above_nine * 0x27).to_be_bytes()
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

    #[test]
    fn hex_digits_in_order() {
        assert_eq!(&hex16(0x0123_4567_89ab_cdef), b"0123456789abcdef");
        assert_eq!(&hex16(u64::MAX), b"ffffffffffffffff");
        assert_eq!(&hex16(0), b"0000000000000000");
        for _ in 0..1000 {
            let x = fastrand::u64(..);
            assert_eq!(hex16(x).as_slice(), format!("{x:016x}").as_bytes());
        }
    }

    #[test]
    fn a_generated_id_is_a_version_4_uuid() {
        for _ in 0..100 {
            let id = generate();
            let parsed = uuid::Uuid::parse_str(text(&id)).expect("a UUID");
            assert_eq!(parsed.get_version(), Some(uuid::Version::Random));
            assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122);
            assert_eq!(text(&id), parsed.hyphenated().to_string());
        }
    }
}
