//! What a route handler may take and return, as traits of patron's own.
//! `#[patron::route]` asks for these instead of axum's traits so that a type
//! that does not fit is one compile error, on that argument or return type,
//! that says what to write instead. Every axum extractor and every
//! `IntoResponse` type implements them; you never implement them yourself.
//!
//! Each trait has a second impl, bounded by [`Unreachable`], that no type
//! satisfies: with two candidate impls rustc reports the unmet trait itself
//! (and its message) rather than looking through the one impl to axum's
//! trait.

use std::convert::Infallible;
use std::future::Future;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::response::{IntoResponse, Response};
use http::request::Parts;

use crate::deps::AppState;

/// Selects the impl for extractors that read only the request head.
#[doc(hidden)]
pub enum ViaParts {}

/// Selects the impl for extractors that read the request body.
#[doc(hidden)]
pub enum ViaRequest {}

/// Selects the impl for `IntoResponse` types.
#[doc(hidden)]
pub enum ViaResponse {}

/// Selects the impl that never applies.
#[doc(hidden)]
pub enum Never {}

mod sealed {
    /// Implemented by no type, and by none outside patron.
    pub trait Sealed {}
}

/// Implemented by no type (it is sealed and patron implements it for none):
/// the bound of each trait's second impl.
#[doc(hidden)]
pub trait Unreachable: sealed::Sealed {
    /// Proves the impl unreachable.
    fn unreachable() -> Infallible;
}

/// An argument of a route handler other than the last: an axum extractor
/// that reads only the request head (`Path`, `Query`, `HeaderMap`,
/// `CorrelationId`, `Dep<T>`, …).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be taken by a route handler",
    label = "not an extractor",
    note = "to share a value with handlers, take `Dep<T>` (the value itself, not a reference) and `provide` it in `#[patron::main]`: `service.provide(value)`",
    note = "otherwise take an axum extractor (`Path`, `Query`, `HeaderMap`, `CorrelationId`, …); one that reads the body (`Json`, `String`, `Bytes`, `Form`, `Request`) must be the last argument"
)]
pub trait HandlerArg<M>: Sized {
    /// Why extraction failed; the generated handler renders it as a problem
    /// body.
    type Rejection: IntoResponse;

    /// Extracts the argument: the extractor's own future, not wrapped.
    fn extract(
        parts: &mut Parts,
        state: &AppState,
    ) -> impl Future<Output = Result<Self, Self::Rejection>>;
}

impl<T: FromRequestParts<AppState>> HandlerArg<ViaParts> for T {
    type Rejection = T::Rejection;

    fn extract(
        parts: &mut Parts,
        state: &AppState,
    ) -> impl Future<Output = Result<Self, Self::Rejection>> {
        T::from_request_parts(parts, state)
    }
}

impl<T: Unreachable> HandlerArg<Never> for T {
    type Rejection = Infallible;

    #[allow(unreachable_code)]
    fn extract(_: &mut Parts, _: &AppState) -> impl Future<Output = Result<Self, Infallible>> {
        std::future::ready(match T::unreachable() {})
    }
}

/// The last argument of a route handler: any axum extractor, including one
/// that reads the body (`Json<T>`, `String`, `Bytes`, `Form<T>`, `Request`).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be taken by a route handler",
    label = "not an extractor",
    note = "to share a value with handlers, take `Dep<T>` (the value itself, not a reference) and `provide` it in `#[patron::main]`: `service.provide(value)`",
    note = "otherwise take an axum extractor (`Path`, `Query`, `HeaderMap`, `Json`, `String`, `Bytes`, `Form`, `Request`, …)"
)]
pub trait LastHandlerArg<M>: Sized {
    /// Why extraction failed; the generated handler renders it as a problem
    /// body.
    type Rejection: IntoResponse;

    /// Extracts the argument from what is left of the request.
    fn extract(
        req: Request,
        state: &AppState,
    ) -> impl Future<Output = Result<Self, Self::Rejection>>;
}

impl<T: FromRequestParts<AppState>> LastHandlerArg<ViaParts> for T {
    type Rejection = T::Rejection;

    async fn extract(req: Request, state: &AppState) -> Result<Self, T::Rejection> {
        let (mut parts, _) = req.into_parts();
        T::from_request_parts(&mut parts, state).await
    }
}

impl<T: FromRequest<AppState>> LastHandlerArg<ViaRequest> for T {
    type Rejection = T::Rejection;

    fn extract(
        req: Request,
        state: &AppState,
    ) -> impl Future<Output = Result<Self, Self::Rejection>> {
        T::from_request(req, state)
    }
}

/// What a route handler may return: anything axum can turn into a response.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be returned by a route handler",
    label = "not a response",
    note = "return a type that implements `IntoResponse`: `String`, `&'static str`, `StatusCode`, `Json<T>` (T: Serialize), `(StatusCode, R)`, or `Result<R, E>` where both are responses (`patron::Error` is one)",
    note = "or implement `axum::response::IntoResponse` for `{Self}`"
)]
pub trait HandlerResponse<M> {
    /// The response.
    fn into_handler_response(self) -> Response;
}

impl<T: IntoResponse> HandlerResponse<ViaResponse> for T {
    fn into_handler_response(self) -> Response {
        self.into_response()
    }
}

impl<T: Unreachable> HandlerResponse<Never> for T {
    #[allow(unreachable_code)]
    fn into_handler_response(self) -> Response {
        match T::unreachable() {}
    }
}
