//! The [`Component`] contract: anything that runs until the service shuts
//! down. The HTTP server is one; consumers are others; users add their own.
//! The service starts them together, reports their readiness on `/ready`,
//! signals [`ComponentContext::draining`] then [`ComponentContext::shutdown`]
//! to every one of them, and stops when any of them ends.

use std::future::Future;
use std::sync::Arc;
use std::sync::Mutex;

use futures_util::future::BoxFuture;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::deps::Deps;
use crate::error::Error;
use crate::observe::metrics::Metrics;

/// A long-running part of a service.
///
/// `run` must return when `ctx.shutdown()` fires, after finishing in-flight
/// work. Returning earlier — with `Ok` or `Err` — stops the whole service, as
/// in Go Patron; an `Err` makes the process exit with code 1.
///
/// ```
/// use patron::prelude::*;
/// use patron::component::{Component, ComponentContext, ComponentInfo};
///
/// struct Ticker;
///
/// impl Component for Ticker {
///     fn info(&self) -> ComponentInfo {
///         ComponentInfo::new("ticker", "heartbeat")
///     }
///
///     async fn run(self, ctx: ComponentContext) -> patron::Result<()> {
///         let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
///         loop {
///             tokio::select! {
///                 _ = ctx.shutdown().cancelled() => return Ok(()),
///                 _ = tick.tick() => tracing::info!("tick"),
///             }
///         }
///     }
/// }
/// ```
pub trait Component: Send + 'static {
    /// What the component is, for `/info` and logs.
    fn info(&self) -> ComponentInfo;

    /// Runs until `ctx.shutdown()` is cancelled.
    fn run(self, ctx: ComponentContext) -> impl Future<Output = Result<(), Error>> + Send
    where
        Self: Sized;
}

/// Object-safe form of [`Component`], used by the service.
pub(crate) trait DynComponent: Send {
    fn info(&self) -> ComponentInfo;
    fn run_boxed(self: Box<Self>, ctx: ComponentContext) -> BoxFuture<'static, Result<(), Error>>;
}

impl<C: Component> DynComponent for C {
    fn info(&self) -> ComponentInfo {
        Component::info(self)
    }
    fn run_boxed(self: Box<Self>, ctx: ComponentContext) -> BoxFuture<'static, Result<(), Error>> {
        Box::pin((*self).run(ctx))
    }
}

/// A component in a box, as the consumer registry builds it.
#[doc(hidden)]
pub struct BoxedComponent(pub(crate) Box<dyn DynComponent>);

impl BoxedComponent {
    /// Boxes a component.
    pub fn new<C: Component>(component: C) -> Self {
        BoxedComponent(Box::new(component))
    }
}

/// A description of a component, shown by `GET /info`.
#[derive(Debug, Clone, Serialize)]
pub struct ComponentInfo {
    /// The kind, e.g. `http`, `amqp-consumer`.
    pub kind: String,
    /// A name unique within the service.
    pub name: String,
    /// Free-form details (queue names, ports, …). Never put credentials here.
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl ComponentInfo {
    /// A description with a kind and a name.
    pub fn new(kind: impl Into<String>, name: impl Into<String>) -> Self {
        ComponentInfo {
            kind: kind.into(),
            name: name.into(),
            details: serde_json::Map::new(),
        }
    }

    /// Adds a detail.
    pub fn detail(mut self, key: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        self.details.insert(key.into(), value.into());
        self
    }
}

/// What a running component gets from the service: the shutdown signal, a
/// readiness switch that `/ready` reports, the metric registry, the provided
/// dependencies and the configuration.
#[derive(Clone)]
pub struct ComponentContext {
    draining: CancellationToken,
    shutdown: CancellationToken,
    readiness: Readiness,
    metrics: Metrics,
    deps: Arc<Deps>,
    config: Arc<Config>,
}

impl ComponentContext {
    pub(crate) fn new(
        draining: CancellationToken,
        shutdown: CancellationToken,
        readiness: Readiness,
        metrics: Metrics,
        deps: Arc<Deps>,
        config: Arc<Config>,
    ) -> Self {
        ComponentContext {
            draining,
            shutdown,
            readiness,
            metrics,
            deps,
            config,
        }
    }

    /// The values the service provides (what handlers take as `Dep<T>`).
    pub fn deps(&self) -> &Arc<Deps> {
        &self.deps
    }

    /// The service's configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The service's metric registry, for the component's own metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Cancelled the moment the service starts shutting down, when `/ready`
    /// turns 503 — `PATRON_SHUTDOWN_DELAY` before [`shutdown`](Self::shutdown)
    /// on a signal. Work goes on meanwhile; a server uses it to ask clients
    /// to move on (the HTTP server closes keep-alive connections), so load
    /// balancers stop sending before the component stops.
    pub fn draining(&self) -> &CancellationToken {
        &self.draining
    }

    /// Cancelled when the component must stop: finish in-flight work and
    /// return, within `PATRON_SHUTDOWN_TIMEOUT`.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// The component's readiness, reported by `/ready`.
    pub fn readiness(&self) -> &Readiness {
        &self.readiness
    }
}

/// A component's readiness. It starts ready; a component that loses its
/// broker calls [`Readiness::not_ready`] and `/ready` answers 503 until it
/// calls [`Readiness::ready`].
///
/// Beside that connection state a component can hold named problems
/// ([`Readiness::set_problem`]), such as a dead-letter destination that
/// refuses messages: each keeps `/ready` at 503 until it is cleared, whatever
/// the connection does meanwhile.
#[derive(Clone, Debug)]
pub struct Readiness {
    name: Arc<str>,
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    connection: Option<String>,
    problems: std::collections::BTreeMap<String, String>,
}

impl Readiness {
    pub(crate) fn new(name: &str) -> Self {
        Readiness {
            name: name.into(),
            state: Arc::new(Mutex::new(State::default())),
        }
    }

    /// Marks the component ready (its named problems stay until cleared).
    pub fn ready(&self) {
        self.lock().connection = None;
    }

    /// Marks the component not ready, with the reason `/ready` shows.
    pub fn not_ready(&self, reason: impl Into<String>) {
        self.lock().connection = Some(reason.into());
    }

    /// Records a problem under `key` (replacing an earlier one under the
    /// same key): `/ready` answers 503 with `reason` until
    /// [`clear_problem`](Self::clear_problem) is called with the same key.
    pub fn set_problem(&self, key: impl Into<String>, reason: impl Into<String>) {
        self.lock().problems.insert(key.into(), reason.into());
    }

    /// Clears the problem recorded under `key`, if any.
    pub fn clear_problem(&self, key: &str) {
        let mut state = self.lock();
        if !state.problems.is_empty() {
            state.problems.remove(key);
        }
    }

    /// `None` when ready, else the reasons, joined by `; `.
    pub fn problem(&self) -> Option<String> {
        let state = self.lock();
        let reasons: Vec<&str> = state
            .connection
            .iter()
            .map(String::as_str)
            .chain(state.problems.values().map(String::as_str))
            .collect();
        if reasons.is_empty() {
            None
        } else {
            Some(reasons.join("; "))
        }
    }

    /// The component name this readiness belongs to.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means a panic happened while holding it; the
        // state inside is still valid.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::Readiness;

    #[test]
    fn named_problems_outlive_the_connection_state() {
        let r = Readiness::new("c");
        assert_eq!(r.problem(), None);
        r.not_ready("broker down");
        r.set_problem("dlq", "DLQ \"x\" refuses messages");
        assert_eq!(
            r.problem().as_deref(),
            Some("broker down; DLQ \"x\" refuses messages")
        );
        r.ready();
        assert_eq!(r.problem().as_deref(), Some("DLQ \"x\" refuses messages"));
        r.clear_problem("dlq");
        assert_eq!(r.problem(), None);
    }
}
