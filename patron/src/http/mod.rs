//! The HTTP side of a service: the default HTTP component, its built-in
//! routes, authentication, the per-route middleware and error bodies.

mod auth;
pub(crate) mod builtin;
pub(crate) mod core;
mod correlation;
pub(crate) mod debug;
mod extract;
pub(crate) mod router;
pub(crate) mod server;

pub(crate) use auth::authenticate;
pub use auth::{ApiKey, Authenticator};
pub use correlation::{CorrelationId, X_CORRELATION_ID};
#[doc(hidden)]
pub use extract::rejection;
#[doc(hidden)]
pub use router::RouteCtx;
