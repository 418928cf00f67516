//! The context of the work running now — an HTTP request's or a consumed
//! message's — kept in a task-local for everything that work runs, so log
//! lines, spans and outgoing calls carry its correlation id and trace
//! context without being handed them.

use std::cell::Cell;
use std::ptr::NonNull;
use std::sync::Arc;

use http::HeaderValue;

/// What a consumed message offers as context. The consumer's envelope
/// implements it, so this layer names no broker type; its header values
/// are read only when something asks.
pub(crate) trait MessageScope: Send + Sync + std::fmt::Debug {
    /// The message's correlation id (read from its headers or generated).
    fn correlation_id(&self) -> &HeaderValue;
    /// Header `name` as an HTTP header value, when present and valid.
    fn header_value(&self, name: &str) -> Option<HeaderValue>;
}

/// Per-request (or per-message) context, available to everything the
/// request or the message's handler runs. Both variants are a pointer,
/// kept small because the task-local holding it swaps it in and out around every poll of the
/// work it scopes (and around every consumed message's first poll).
#[derive(Debug, Clone)]
pub(crate) enum RequestContext {
    /// Known when the work starts: an HTTP request's, a message batch's.
    Known(Box<KnownContext>),
    /// A consumed message's, read from its headers (and its correlation id
    /// generated) only when asked for: a handler that logs nothing and
    /// calls nothing costs no lookup.
    Message(Arc<dyn MessageScope>),
}

/// A [`RequestContext`] known when the work starts.
#[derive(Debug, Clone)]
pub(crate) struct KnownContext {
    pub(crate) correlation_id: HeaderValue,
    /// The incoming W3C trace context, passed on when this service exports
    /// no span of its own.
    pub(crate) traceparent: Option<HeaderValue>,
    pub(crate) baggage: Option<HeaderValue>,
}

impl RequestContext {
    fn borrow(&self) -> Current<'_> {
        match self {
            RequestContext::Known(known) => Current::Known(known),
            RequestContext::Message(envelope) => Current::Message(&**envelope),
        }
    }
}

/// The context of the work running now, as its readers see it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Current<'a> {
    Known(&'a KnownContext),
    Message(&'a dyn MessageScope),
}

impl Current<'_> {
    /// The correlation id.
    pub(crate) fn correlation_id(&self) -> &HeaderValue {
        match self {
            Current::Known(known) => &known.correlation_id,
            Current::Message(envelope) => envelope.correlation_id(),
        }
    }

    /// The incoming `traceparent`.
    pub(crate) fn traceparent(&self) -> Option<HeaderValue> {
        match self {
            Current::Known(known) => known.traceparent.clone(),
            Current::Message(envelope) => envelope.header_value("traceparent"),
        }
    }

    /// The incoming `baggage`.
    pub(crate) fn baggage(&self) -> Option<HeaderValue> {
        match self {
            Current::Known(known) => known.baggage.clone(),
            Current::Message(envelope) => envelope.header_value("baggage"),
        }
    }
}

tokio::task_local! {
    pub(crate) static REQUEST: RequestContext;
}

/// The context borrowed through [`BORROWED`].
#[derive(Clone, Copy)]
enum Borrowed {
    Known(NonNull<KnownContext>),
    Message(NonNull<dyn MessageScope>),
}

thread_local! {
    /// The context of the work being polled on this thread when no
    /// [`REQUEST`] scope is active: an HTTP request's (for each poll of its
    /// handler) or a consumed message's (for its handler's call and first
    /// poll). See [`in_known_context`] and [`in_message_context`].
    static BORROWED: Cell<Option<Borrowed>> = const { Cell::new(None) };
}

/// Puts back the previous borrowed context, on unwinding too.
struct Restore(Option<Borrowed>);

impl Drop for Restore {
    fn drop(&mut self) {
        BORROWED.set(self.0);
    }
}

/// Runs `f` with `context` as the current context. It does what
/// `REQUEST.sync_scope` does without moving the context in and out of the
/// task-local: the context is borrowed through a thread-local pointer for
/// the duration of `f`. The HTTP request guard calls it around each poll
/// of a handler, with the context kept inline in the guard's (pinned)
/// future, so a request pays neither an allocation for its context nor
/// the task-local's swaps. Inside an active `REQUEST` scope it falls back
/// to a nested scope, so the innermost context always wins.
pub(crate) fn in_known_context<R>(context: &KnownContext, f: impl FnOnce() -> R) -> R {
    if REQUEST.try_with(|_| ()).is_ok() {
        return REQUEST.sync_scope(RequestContext::Known(Box::new(context.clone())), f);
    }
    let _restore = Restore(BORROWED.replace(Some(Borrowed::Known(NonNull::from(context)))));
    f()
}

/// Runs `f` — a message handler's call and first poll, which cannot yield
/// — with `envelope` as the current context, borrowed as
/// [`in_known_context`] borrows a request's (the task-local scope's
/// reference count and swaps are a large share of what patron adds to a
/// hand-written Kafka loop). Inside an active `REQUEST` scope it falls
/// back to a nested scope, so the innermost context always wins.
pub(crate) fn in_message_context<M: MessageScope + 'static, R>(
    envelope: &Arc<M>,
    f: impl FnOnce() -> R,
) -> R {
    if REQUEST.try_with(|_| ()).is_ok() {
        return REQUEST.sync_scope(RequestContext::Message(Arc::clone(envelope) as _), f);
    }
    let scope: &(dyn MessageScope + 'static) = &**envelope;
    let _restore = Restore(BORROWED.replace(Some(Borrowed::Message(NonNull::from(scope)))));
    f()
}

/// Calls `f` with the context of the work running now: the innermost
/// [`REQUEST`] scope, else the request or message borrowed on this thread;
/// `None` outside both.
pub(crate) fn with_current<R>(f: impl FnOnce(Current<'_>) -> R) -> Option<R> {
    let mut f = Some(f);
    if let Ok(r) = REQUEST.try_with(|c| f.take().map(|f| f(c.borrow()))) {
        return r;
    }
    let current = match BORROWED.get()? {
        // SAFETY: a pointer is set only while `in_known_context` or
        // `in_message_context` runs on this thread, with the context
        // borrowed for that whole time, and reset when it returns or
        // unwinds; `f` cannot keep the reference.
        Borrowed::Known(known) => Current::Known(unsafe { known.as_ref() }),
        // SAFETY: as above.
        Borrowed::Message(envelope) => Current::Message(unsafe { envelope.as_ref() }),
    };
    f.take().map(|f| f(current))
}

#[cfg(test)]
mod tests {
    use std::panic::AssertUnwindSafe;

    use super::*;
    use crate::consumer::{Delivery, Headers, Metadata};
    use crate::context::CorrelationId;

    fn delivery(id: &str) -> Delivery {
        let mut headers = Headers::new();
        headers.insert("X-Correlation-Id", id.as_bytes().to_vec());
        headers.insert(
            "traceparent",
            b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_vec(),
        );
        Delivery::new(b"{}".to_vec(), None, headers, Metadata::None)
    }

    fn current() -> Option<String> {
        CorrelationId::current().map(|c| c.as_str().to_string())
    }

    fn known(id: &str) -> RequestContext {
        RequestContext::Known(Box::new(KnownContext {
            correlation_id: HeaderValue::from_str(id).expect("header value"),
            traceparent: None,
            baggage: None,
        }))
    }

    #[test]
    fn a_message_in_its_first_poll_is_the_current_context_until_it_returns() {
        let d = delivery("msg-1");
        assert_eq!(current(), None);
        let inside = in_message_context(d.envelope(), || {
            let traceparent = with_current(|c| c.traceparent()).flatten();
            (current(), traceparent.map(|t| t.len()))
        });
        assert_eq!(inside, (Some("msg-1".to_string()), Some(55)));
        assert_eq!(current(), None, "nothing is left behind");
    }

    #[test]
    fn a_panic_in_the_first_poll_leaves_no_context_behind() {
        let d = delivery("msg-2");
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
            in_message_context(d.envelope(), || panic!("handler panicked"))
        }));
        assert!(result.is_err());
        assert_eq!(current(), None);
    }

    #[test]
    fn the_innermost_context_wins() {
        let (outer, inner) = (delivery("outer"), delivery("inner"));
        // A message inside a message: the inner one, then the outer again.
        let seen = in_message_context(outer.envelope(), || {
            let nested = in_message_context(inner.envelope(), current);
            // A REQUEST scope opened inside the first poll.
            let scoped = REQUEST.sync_scope(known("scoped"), current);
            (nested, scoped, current())
        });
        assert_eq!(
            seen,
            (
                Some("inner".to_string()),
                Some("scoped".to_string()),
                Some("outer".to_string())
            )
        );
        // A message's first poll inside an active REQUEST scope.
        let seen = REQUEST.sync_scope(known("request"), || {
            (in_message_context(inner.envelope(), current), current())
        });
        assert_eq!(
            seen,
            (Some("inner".to_string()), Some("request".to_string()))
        );
    }
}
