//! The request body as the request guard watches it: whether the handler
//! is waiting for bytes the client has not sent (so a handler timeout then
//! is the client's 408, not the service's 503), and — for JSON bodies —
//! that every byte is valid UTF-8 (serde_json checks only the strings it
//! keeps; RFC 8259 §8.1 requires the whole text to be UTF-8). The server
//! boxes hyper's body once, as this watched body, and the request guard
//! gets the watch with the request.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use axum::body::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use pin_project_lite::pin_project;

/// Shared between a watched body and the request's core future.
#[derive(Debug, Default)]
pub(crate) struct BodyWatch {
    waiting: AtomicBool,
    /// The body is JSON (by its `Content-Type`): check it is UTF-8. Set by
    /// the request guard before the handler first reads the body.
    json: AtomicBool,
}

impl BodyWatch {
    /// Whether the body's last read was still waiting for the client.
    pub(crate) fn waiting(&self) -> bool {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Has the body checked for UTF-8 as it is read (a JSON body).
    pub(crate) fn check_utf8(&self) {
        self.json.store(true, Ordering::Relaxed);
    }
}

/// hyper's body boxed once as axum's. One that has already ended (a
/// request without a body) becomes the empty body, which costs no
/// allocation; with `watched`, one with bytes to come is wrapped in a
/// watched body, and its watch is put in `watch` for the request guard.
pub(crate) fn from_hyper(
    body: hyper::body::Incoming,
    watched: bool,
    watch: &mut Option<Arc<BodyWatch>>,
) -> Body {
    if http_body::Body::is_end_stream(&body) {
        return Body::empty();
    }
    if !watched {
        return Body::new(body);
    }
    let shared = Arc::new(BodyWatch::default());
    *watch = Some(Arc::clone(&shared));
    Body::new(WatchedBody {
        inner: body,
        watch: shared,
        utf8: Utf8::default(),
    })
}

/// `application/json` or any `+json` type (a `Content-Type` value's
/// bytes; parameters such as `charset` are ignored).
pub(super) fn is_json(content_type: &[u8]) -> bool {
    // What nearly every client sends, compared as a whole first.
    if content_type == b"application/json" {
        return true;
    }
    let essence = match content_type.iter().position(|&b| b == b';') {
        Some(end) => &content_type[..end],
        None => content_type,
    }
    .trim_ascii();
    let Some(slash) = essence.iter().position(|&b| b == b'/') else {
        return false;
    };
    let (kind, sub) = (&essence[..slash], &essence[slash + 1..]);
    kind.eq_ignore_ascii_case(b"application")
        && (sub.eq_ignore_ascii_case(b"json")
            || sub
                .len()
                .checked_sub(5)
                .is_some_and(|i| sub[i..].eq_ignore_ascii_case(b"+json")))
}

/// Incremental UTF-8 validation over frames: at most three bytes of a
/// sequence split between frames are carried to the next one.
#[derive(Debug, Default)]
struct Utf8 {
    carry: Vec<u8>,
    offset: usize,
}

/// A JSON body that is not UTF-8.
#[derive(Debug)]
struct NotUtf8 {
    at: usize,
}

impl fmt::Display for NotUtf8 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the JSON body is not valid UTF-8 (at byte {}); JSON text must be UTF-8 (RFC 8259 section 8.1)",
            self.at
        )
    }
}

impl std::error::Error for NotUtf8 {}

impl Utf8 {
    fn feed(&mut self, data: &[u8]) -> Result<(), NotUtf8> {
        // Most JSON is ASCII: checked a word at a time, it needs no decoding.
        if self.carry.is_empty() && data.is_ascii() {
            self.offset += data.len();
            return Ok(());
        }
        let mut joined;
        let bytes: &[u8] = if self.carry.is_empty() {
            data
        } else {
            joined = std::mem::take(&mut self.carry);
            joined.extend_from_slice(data);
            &joined
        };
        match std::str::from_utf8(bytes) {
            Ok(_) => {
                self.offset += bytes.len();
                Ok(())
            }
            Err(e) => match e.error_len() {
                Some(_) => Err(NotUtf8 {
                    at: self.offset + e.valid_up_to(),
                }),
                None => {
                    let valid = e.valid_up_to();
                    self.offset += valid;
                    self.carry = bytes[valid..].to_vec();
                    Ok(())
                }
            },
        }
    }

    fn finish(&self) -> Result<(), NotUtf8> {
        if self.carry.is_empty() {
            Ok(())
        } else {
            Err(NotUtf8 { at: self.offset })
        }
    }
}

pin_project! {
    struct WatchedBody {
        #[pin]
        inner: hyper::body::Incoming,
        watch: Arc<BodyWatch>,
        utf8: Utf8,
    }
}

impl http_body::Body for WatchedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.project();
        let frame = this
            .inner
            .poll_frame(cx)
            .map(|frame| frame.map(|f| f.map_err(axum::Error::new)));
        this.watch
            .waiting
            .store(frame.is_pending(), Ordering::Relaxed);
        if this.watch.json.load(Ordering::Relaxed) {
            let utf8 = this.utf8;
            match &frame {
                Poll::Ready(Some(Ok(f))) => {
                    if let Some(data) = f.data_ref()
                        && let Err(e) = utf8.feed(data)
                    {
                        return Poll::Ready(Some(Err(axum::Error::new(e))));
                    }
                }
                Poll::Ready(None) => {
                    if let Err(e) = utf8.finish() {
                        return Poll::Ready(Some(Err(axum::Error::new(e))));
                    }
                }
                _ => {}
            }
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        assert!(is_json(b"application/json"));
        assert!(is_json(b"Application/JSON; charset=utf-8"));
        assert!(is_json(b"application/problem+json"));
        assert!(!is_json(b"text/plain"));
        assert!(!is_json(b"application/jsonl"));
        assert!(is_json(b" application/json "));
        assert!(!is_json(b"application"));
        assert!(!is_json(b"json"));
    }

    #[test]
    fn utf8_split_across_frames_is_fine_and_invalid_bytes_are_found() {
        let text = "{\"name\":\"Zoë ✓\"}".as_bytes();
        for cut in 0..text.len() {
            let mut u = Utf8::default();
            u.feed(&text[..cut]).unwrap();
            u.feed(&text[cut..]).unwrap();
            u.finish().unwrap();
        }
        let mut u = Utf8::default();
        u.feed(b"{\"a\":\"x\",\"ignored\":\"").unwrap();
        let err = u.feed(b"\xff\"}").unwrap_err();
        assert_eq!(err.at, 20);
        let mut u = Utf8::default();
        u.feed(b"\"\xe2\x9c").unwrap();
        assert_eq!(u.finish().unwrap_err().at, 1, "truncated at the end");
    }
}
