//! What a consumer calls: the [`MessageHandler`] and [`BatchHandler`]
//! traits that `#[patron::consumer]` implements for an `async fn`, the
//! argument traits ([`FromDelivery`], [`FromDeps`]), and [`handler_fn`] /
//! [`batch_handler_fn`] for building consumers in code from closures.

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::batch::{Batch, BatchCx};
use super::message::{Decode, DecodeError, Delivery, Message};
use crate::deps::{Dep, Deps};
use crate::error::Error;

/// Why one handler call did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The payload could not be decoded: never retried.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The handler returned an error (or a dependency was missing).
    #[error("{0}")]
    Failed(Error),
}

/// A handler for one message at a time.
pub trait MessageHandler: Send + Sync + 'static {
    /// Calls the handler for `delivery`; `attempt` starts at 1. Building
    /// the arguments (decoding the payload) fails synchronously; the
    /// future is the handler's own work.
    fn call(
        &self,
        delivery: &Delivery,
        attempt: u32,
        deps: &Arc<Deps>,
    ) -> Result<BoxFuture<'static, Result<(), Error>>, HandlerError>;
}

/// A handler for a batch of messages.
pub trait BatchHandler: Send + Sync + 'static {
    /// Calls the handler for `deliveries`; `attempt` starts at 1. Payloads
    /// that do not decode are reported in the returned [`BatchCx`] and left
    /// out of the batch the handler sees.
    fn call(
        &self,
        deliveries: &[Delivery],
        attempt: u32,
        deps: &Arc<Deps>,
    ) -> (BatchCx, BoxFuture<'static, Result<(), Error>>);
}

/// What a consumer handler may return: `()` (always acknowledged) or
/// `Result<(), E>` with `E` convertible into [`patron::Error`](crate::Error).
#[diagnostic::on_unimplemented(
    message = "a consumer handler must return `()` or `Result<(), E>` (E: Into<patron::Error>), not `{Self}`",
    label = "`Ok` acknowledges the message; `Err` retries it, then applies `on_failure`"
)]
pub trait ConsumerOutput {
    /// The outcome as a `Result`.
    fn into_result(self) -> Result<(), Error>;
}

impl ConsumerOutput for () {
    fn into_result(self) -> Result<(), Error> {
        Ok(())
    }
}

impl<E: Into<Error>> ConsumerOutput for Result<(), E> {
    fn into_result(self) -> Result<(), Error> {
        self.map_err(Into::into)
    }
}

/// A consumer handler argument built from the message: `Message<T>` or
/// `Dep<T>`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a consumer handler argument",
    label = "not a message or a dependency",
    note = "consumer handlers take one `Message<T>` (e.g. `Message<Json<Order>>`) and any number of `Dep<T>`, whose values the service `provide`s in `#[patron::main]` (`service.provide(value)`)"
)]
pub trait FromDelivery: Sized {
    /// Builds the argument.
    fn from_delivery(
        delivery: &Delivery,
        attempt: u32,
        deps: &Arc<Deps>,
    ) -> Result<Self, HandlerError>;
}

impl<T: Decode> FromDelivery for Message<T> {
    fn from_delivery(d: &Delivery, attempt: u32, _: &Arc<Deps>) -> Result<Self, HandlerError> {
        Ok(d.decode(attempt)?)
    }
}

impl<T: Send + Sync + 'static> FromDelivery for Dep<T> {
    fn from_delivery(_: &Delivery, _: u32, deps: &Arc<Deps>) -> Result<Self, HandlerError> {
        Self::from_deps(deps)
    }
}

/// A batch handler argument besides the [`Batch`]: `Dep<T>`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be an argument of a batch consumer handler",
    label = "not a dependency",
    note = "batch handlers take one `Batch<T>` (e.g. `Batch<Json<Order>>`) and any number of `Dep<T>`"
)]
pub trait FromDeps: Sized {
    /// Builds the argument.
    fn from_deps(deps: &Arc<Deps>) -> Result<Self, HandlerError>;
}

impl<T: Send + Sync + 'static> FromDeps for Dep<T> {
    fn from_deps(deps: &Arc<Deps>) -> Result<Self, HandlerError> {
        deps.get::<T>().map(Dep::from_arc).ok_or_else(|| {
            HandlerError::Failed(Error::msg(format!(
                "dependency `{}` was not provided to the service",
                std::any::type_name::<T>()
            )))
        })
    }
}

/// Turns a closure taking a [`Message<T>`] into a [`MessageHandler`], for
/// consumers built in code.
///
/// ```
/// use patron::consumer::{handler_fn, Message};
/// use patron::prelude::*;
///
/// #[derive(Deserialize)]
/// struct Order { id: u64 }
///
/// let handler = handler_fn(|msg: Message<Json<Order>>| async move {
///     tracing::info!(id = msg.id, "order received");
///     Ok::<(), patron::Error>(())
/// });
/// # let _ = handler;
/// ```
pub fn handler_fn<F, T, Fut>(f: F) -> FnHandler<F, T>
where
    F: Fn(Message<T>) -> Fut + Send + Sync + 'static,
    T: Decode + Send + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: ConsumerOutput,
{
    FnHandler(f, PhantomData)
}

/// A [`MessageHandler`] made from a closure by [`handler_fn`].
pub struct FnHandler<F, T>(F, PhantomData<fn() -> T>);

impl<F, T, Fut> MessageHandler for FnHandler<F, T>
where
    F: Fn(Message<T>) -> Fut + Send + Sync + 'static,
    T: Decode + Send + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: ConsumerOutput,
{
    fn call(
        &self,
        delivery: &Delivery,
        attempt: u32,
        _: &Arc<Deps>,
    ) -> Result<BoxFuture<'static, Result<(), Error>>, HandlerError> {
        let fut = (self.0)(delivery.decode::<T>(attempt)?);
        Ok(Box::pin(async move { fut.await.into_result() }))
    }
}

/// Turns a closure taking a [`Batch<T>`] into a [`BatchHandler`].
pub fn batch_handler_fn<F, T, Fut>(f: F) -> FnBatchHandler<F, T>
where
    F: Fn(Batch<T>) -> Fut + Send + Sync + 'static,
    T: Decode + Send + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: ConsumerOutput,
{
    FnBatchHandler(f, PhantomData)
}

/// A [`BatchHandler`] made from a closure by [`batch_handler_fn`].
pub struct FnBatchHandler<F, T>(F, PhantomData<fn() -> T>);

impl<F, T, Fut> BatchHandler for FnBatchHandler<F, T>
where
    F: Fn(Batch<T>) -> Fut + Send + Sync + 'static,
    T: Decode + Send + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: ConsumerOutput,
{
    fn call(
        &self,
        deliveries: &[Delivery],
        attempt: u32,
        _: &Arc<Deps>,
    ) -> (BatchCx, BoxFuture<'static, Result<(), Error>>) {
        let (batch, cx) = Batch::<T>::decode(deliveries, attempt);
        let fut = (self.0)(batch);
        (cx, Box::pin(async move { fut.await.into_result() }))
    }
}
