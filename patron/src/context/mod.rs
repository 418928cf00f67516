//! The ground layer of request and message context: what the work under
//! way is (its correlation id, its incoming trace context), kept in a
//! task-local for everything it runs. It names no HTTP server and no
//! broker; `http`, `consumer`, `observe` and `client` all read it from
//! here.

pub(crate) mod correlation;
mod scope;
pub(crate) mod traceparent;

pub use correlation::{CorrelationId, X_CORRELATION_ID};
pub(crate) use scope::{
    KnownContext, MessageScope, REQUEST, RequestContext, in_known_context, in_message_context,
    with_current,
};
