//! The reliability primitives as tower [`Layer`]s, so they compose with any
//! tower service (`ServiceBuilder::new().layer(breaker).layer(limit)…`).
//! Errors come out boxed ([`BoxError`]), as with tower's own middleware:
//! [`CircuitOpen`](super::CircuitOpen), [`RateLimited`](super::RateLimited),
//! [`BulkheadFull`](super::BulkheadFull) or the inner service's error.
//!
//! - [`CircuitBreaker`]: an `Err` from the inner service is a failure (use
//!   [`CircuitBreaker::call_classified`] for other rules).
//! - [`RateLimit`]: `poll_ready` waits for a token.
//! - [`Bulkhead`]: the call waits for a slot (up to its `max_wait`).
//! - [`Retry`]: retries every `Err`, calling the inner service with a clone
//!   of the request.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures_util::future::BoxFuture;
use tower::{Layer, Service, ServiceExt};

use super::{Bulkhead, CircuitBreaker, RateLimit, Retry};

/// A boxed error, as tower middleware returns.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// [`CircuitBreaker`] around a tower service.
#[derive(Debug, Clone)]
pub struct CircuitBreakerService<S> {
    inner: S,
    breaker: CircuitBreaker,
}

impl<S> Layer<S> for CircuitBreaker {
    type Service = CircuitBreakerService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreakerService {
            inner,
            breaker: self.clone(),
        }
    }
}

impl<S, Req> Service<Req> for CircuitBreakerService<S>
where
    S: Service<Req>,
    S::Response: Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<S::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let permit = match self.breaker.try_acquire() {
            Ok(p) => p,
            Err(open) => return Box::pin(std::future::ready(Err(open.into()))),
        };
        let call = self.inner.call(req);
        Box::pin(async move {
            let result = call.await;
            match &result {
                Ok(_) => permit.success(),
                Err(_) => permit.failure(),
            }
            result.map_err(Into::into)
        })
    }
}

/// [`RateLimit`] around a tower service: not ready until a token is taken.
pub struct RateLimitService<S> {
    inner: S,
    limit: RateLimit,
    wait: Option<Pin<Box<tokio::time::Sleep>>>,
    token: bool,
}

impl<S: Clone> Clone for RateLimitService<S> {
    fn clone(&self) -> Self {
        RateLimitService {
            inner: self.inner.clone(),
            limit: self.limit.clone(),
            wait: None,
            token: false,
        }
    }
}

impl<S> Layer<S> for RateLimit {
    type Service = RateLimitService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RateLimitService {
            inner,
            limit: self.clone(),
            wait: None,
            token: false,
        }
    }
}

impl<S, Req> Service<Req> for RateLimitService<S>
where
    S: Service<Req>,
    S::Response: Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<S::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        while !self.token {
            if let Some(wait) = &mut self.wait {
                ready!(wait.as_mut().poll(cx));
                self.wait = None;
            }
            match self.limit.check() {
                Ok(()) => self.token = true,
                Err(limited) => {
                    self.wait = Some(Box::pin(tokio::time::sleep(limited.retry_after)));
                }
            }
        }
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.token = false;
        let call = self.inner.call(req);
        Box::pin(async move { call.await.map_err(Into::into) })
    }
}

/// [`Bulkhead`] around a tower service (which must be `Clone`).
#[derive(Debug, Clone)]
pub struct BulkheadService<S> {
    inner: S,
    bulkhead: Bulkhead,
}

impl<S> Layer<S> for Bulkhead {
    type Service = BulkheadService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        BulkheadService {
            inner,
            bulkhead: self.clone(),
        }
    }
}

impl<S, Req> Service<Req> for BulkheadService<S>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Response: Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    Req: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<S::Response, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // The inner service is made ready inside the call, after the slot.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let (inner, bulkhead) = (self.inner.clone(), self.bulkhead.clone());
        Box::pin(async move {
            let _slot = bulkhead.acquire().await?;
            inner.oneshot(req).await.map_err(Into::into)
        })
    }
}

/// [`Retry`] around a tower service (which must be `Clone`, with `Clone`
/// requests).
#[derive(Debug, Clone)]
pub struct RetryService<S> {
    inner: S,
    retry: Retry,
}

impl<S> Layer<S> for Retry {
    type Service = RetryService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RetryService {
            inner,
            retry: self.clone(),
        }
    }
}

impl<S, Req> Service<Req> for RetryService<S>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Response: Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    Req: Clone + Send + Sync + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<S::Response, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Each attempt makes its own clone of the inner service ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let (inner, retry) = (self.inner.clone(), self.retry.clone());
        Box::pin(async move {
            retry
                .run(move |_| {
                    let (inner, req) = (inner.clone(), req.clone());
                    async move { inner.oneshot(req).await.map_err(Into::into) }
                })
                .await
        })
    }
}
