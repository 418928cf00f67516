//! The correlation id as a handler argument; the id itself, its parsing and
//! generation live in [`crate::context`], below HTTP and the consumers.

use axum::extract::FromRequestParts;
use http::request::Parts;

use crate::context::CorrelationId;
use crate::context::correlation::from_headers;

impl<S: Send + Sync> FromRequestParts<S> for CorrelationId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::current()
            .unwrap_or_else(|| CorrelationId::from_value(from_headers(&parts.headers))))
    }
}
