//! The ground layer of request and message context: pure data about the
//! work under way, with no HTTP server or broker in it. Today it holds the
//! W3C `traceparent` parser every door and the tracer share.

pub(crate) mod traceparent;
