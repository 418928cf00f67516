//! The HTTP side of a service: the default HTTP component, its built-in
//! routes, authentication, the per-route middleware and error bodies.

mod access;
mod auth;
mod body;
pub(crate) mod builtin;
pub(crate) mod component;
mod correlation;
pub(crate) mod debug;
mod describe;
mod extract;
pub(crate) mod files;
pub(crate) mod guard;
mod handler;
pub(crate) mod head;
pub(crate) mod json;
pub(crate) mod registry;
pub(crate) mod router;
pub(crate) mod server;
mod span;
pub(crate) mod tls;
mod watchdog;

pub use crate::context::{CorrelationId, X_CORRELATION_ID};
pub use access::StatusRules;
pub(crate) use auth::authenticate;
pub use auth::{ApiKey, Authenticator};
#[doc(hidden)]
pub use extract::rejection;
pub use files::Files;
pub use guard::{X_APP_NAME, X_APP_VERSION};
pub use handler::{HandlerArg, HandlerResponse, LastHandlerArg};
#[doc(hidden)]
pub use handler::{Never, Unreachable, ViaParts, ViaRequest, ViaResponse};
#[doc(hidden)]
pub use router::RouteCtx;
/// tower-http's CORS layer, for [`Service::with_cors`](crate::Service::with_cors).
pub use tower_http::cors;
