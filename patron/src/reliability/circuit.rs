//! [`CircuitBreaker`]: stops calling a failing dependency for a while, then
//! lets a bounded number of probes through to see whether it recovered.
//!
//! - **Closed**: calls pass; outcomes are counted. The circuit opens after
//!   `failure_threshold` consecutive failures, or — with
//!   [`failure_ratio`](CircuitBreaker::failure_ratio) — when at least
//!   `min_requests` calls in the rolling window failed at `ratio` or more.
//! - **Open**: calls fail at once with [`CircuitOpen`], without running, until
//!   `open_timeout` passed.
//! - **Half-open**: at most `half_open_probes` calls run at once; the rest
//!   fail with [`CircuitOpen`]. `success_threshold` successes close the circuit, a
//!   failure opens it again.
//!
//! The caller decides what a failure is: [`CircuitBreaker::call`] counts
//! `Err`, [`CircuitBreaker::call_classified`] takes a predicate, and a
//! [`CircuitPermit`] from [`CircuitBreaker::try_acquire`] is reported by hand. An
//! outcome is counted only in the state (generation) its permit was issued
//! in, so a slow call admitted while closed cannot close a circuit that
//! opened meanwhile, and half-open admits exactly `half_open_probes` probes
//! whatever the concurrency (Go Patron's half-open race, their #1575).
//!
//! Each transition is logged (WARN when opening, INFO otherwise) and shown
//! in `circuit_breaker_state{name}` (0 closed, 1 half-open, 2 open) and
//! `circuit_breaker_transitions_total{name, to}`.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{IntCounterVec, IntGaugeVec, Opts};
use tokio::time::Instant;

use crate::error::Error;
use crate::observe::metrics;

/// The state of a circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Calls pass.
    Closed,
    /// Calls fail fast.
    Open,
    /// A bounded number of probe calls pass.
    HalfOpen,
}

impl CircuitState {
    fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }

    fn gauge(self) -> i64 {
        match self {
            CircuitState::Closed => 0,
            CircuitState::HalfOpen => 1,
            CircuitState::Open => 2,
        }
    }
}

impl fmt::Display for CircuitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The call was refused: the circuit is open, or half-open with every
/// probe slot taken.
#[derive(Debug, Clone, thiserror::Error)]
#[error("circuit breaker {name:?} is {state}; not calling (retry in {retry_in:?})")]
pub struct CircuitOpen {
    /// The breaker's name.
    pub name: Arc<str>,
    /// Open or half-open.
    pub state: CircuitState,
    /// Until the open timeout ends (zero when half-open).
    pub retry_in: Duration,
}

/// A call through a breaker failed: refused, or the call's own error.
#[derive(Debug, thiserror::Error)]
pub enum CircuitError<E> {
    /// The breaker refused the call; it did not run.
    #[error(transparent)]
    Open(#[from] CircuitOpen),
    /// The call ran and returned this error.
    #[error(transparent)]
    Inner(E),
}

impl<E> CircuitError<E> {
    /// The call's own error, if it ran.
    pub fn into_inner(self) -> Option<E> {
        match self {
            CircuitError::Inner(e) => Some(e),
            CircuitError::Open(_) => None,
        }
    }
}

/// When a closed circuit opens.
#[derive(Debug, Clone, Copy)]
enum Trip {
    Consecutive(u32),
    Ratio {
        ratio: f64,
        min_requests: u32,
        window: Duration,
    },
}

#[derive(Debug, Clone, Copy)]
struct Settings {
    trip: Trip,
    open_timeout: Duration,
    half_open_probes: u32,
    success_threshold: u32,
}

const WINDOW_BUCKETS: u32 = 10;

/// The breaker's mutable part, behind one mutex: every decision is made
/// under it, which is what keeps half-open admission exact.
#[derive(Debug)]
struct Machine {
    state: CircuitState,
    /// Bumped on every transition; outcomes of older permits are ignored.
    generation: u64,
    consecutive_failures: u32,
    /// Rolling window: (bucket start, successes, failures).
    window: VecDeque<(Instant, u32, u32)>,
    opened_at: Instant,
    probes_in_flight: u32,
    probe_successes: u32,
}

struct Inner {
    name: Arc<str>,
    settings: Settings,
    machine: Mutex<Machine>,
    state_gauge: Option<prometheus::IntGauge>,
    transitions: Option<IntCounterVec>,
}

/// A circuit breaker; cheap to clone (clones share the circuit).
///
/// ```
/// use std::time::Duration;
/// use patron::reliability::{CircuitBreaker, CircuitError};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// // "At least 3 requests and 60 % of them failed in the last 10 s."
/// let breaker = CircuitBreaker::new("invoices")
///     .failure_ratio(0.6, 3, Duration::from_secs(10))
///     .open_timeout(Duration::from_secs(5));
/// let result: Result<u32, CircuitError<std::io::Error>> =
///     breaker.call(async { Ok(42) }).await;
/// assert_eq!(result.unwrap(), 42);
/// # }
/// ```
#[derive(Clone)]
pub struct CircuitBreaker {
    inner: Arc<Inner>,
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.inner.name)
            .field("state", &self.state())
            .finish()
    }
}

impl CircuitBreaker {
    /// A closed breaker named `name` (for logs and metrics) that opens
    /// after 5 consecutive failures, stays open 30 s, then admits 1 probe
    /// and closes after 1 success.
    pub fn new(name: impl Into<String>) -> Self {
        Self::build(
            name.into().into(),
            Settings {
                trip: Trip::Consecutive(5),
                open_timeout: Duration::from_secs(30),
                half_open_probes: 1,
                success_threshold: 1,
            },
        )
    }

    fn build(name: Arc<str>, settings: Settings) -> Self {
        let (state_gauge, transitions) = match breaker_metrics() {
            Ok((gauge, transitions)) => {
                (Some(gauge.with_label_values(&[&*name])), Some(transitions))
            }
            Err(e) => {
                tracing::warn!(breaker = %name, error = %e, "circuit breaker metrics unavailable");
                (None, None)
            }
        };
        if let Some(g) = &state_gauge {
            g.set(CircuitState::Closed.gauge());
        }
        CircuitBreaker {
            inner: Arc::new(Inner {
                name,
                settings,
                machine: Mutex::new(Machine {
                    state: CircuitState::Closed,
                    generation: 0,
                    consecutive_failures: 0,
                    window: VecDeque::new(),
                    opened_at: Instant::now(),
                    probes_in_flight: 0,
                    probe_successes: 0,
                }),
                state_gauge,
                transitions,
            }),
        }
    }

    fn with_settings(self, change: impl FnOnce(&mut Settings)) -> Self {
        let mut settings = self.inner.settings;
        change(&mut settings);
        Self::build(Arc::clone(&self.inner.name), settings)
    }

    /// Opens after `n` consecutive failures (at least 1). Replaces a
    /// [`failure_ratio`](Self::failure_ratio).
    pub fn failure_threshold(self, n: u32) -> Self {
        self.with_settings(|s| s.trip = Trip::Consecutive(n.max(1)))
    }

    /// Opens when, over the last `window`, at least `min_requests` calls
    /// were made and the share that failed is `ratio` (0–1) or more.
    /// Replaces a [`failure_threshold`](Self::failure_threshold).
    pub fn failure_ratio(self, ratio: f64, min_requests: u32, window: Duration) -> Self {
        self.with_settings(|s| {
            s.trip = Trip::Ratio {
                ratio: ratio.clamp(0.0, 1.0),
                min_requests: min_requests.max(1),
                window: window.max(Duration::from_millis(WINDOW_BUCKETS.into())),
            }
        })
    }

    /// How long the circuit stays open before admitting probes (30 s).
    pub fn open_timeout(self, timeout: Duration) -> Self {
        self.with_settings(|s| s.open_timeout = timeout)
    }

    /// How many probe calls half-open admits at once (1, at least 1).
    pub fn half_open_probes(self, n: u32) -> Self {
        self.with_settings(|s| s.half_open_probes = n.max(1))
    }

    /// How many probe successes close the circuit (1, at least 1).
    pub fn success_threshold(self, n: u32) -> Self {
        self.with_settings(|s| s.success_threshold = n.max(1))
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The current state (an open circuit whose timeout passed shows as
    /// half-open).
    pub fn state(&self) -> CircuitState {
        let mut m = self.lock();
        self.advance(&mut m, Instant::now());
        m.state
    }

    /// Admits one call, or refuses it with [`CircuitOpen`]. Report the outcome on
    /// the [`CircuitPermit`]; a permit dropped unreported counts as neither (a
    /// cancelled call) and frees its probe slot.
    pub fn try_acquire(&self) -> Result<CircuitPermit, CircuitOpen> {
        let now = Instant::now();
        let mut m = self.lock();
        self.advance(&mut m, now);
        match m.state {
            CircuitState::Closed => Ok(self.permit(m.generation, false)),
            CircuitState::HalfOpen if m.probes_in_flight < self.inner.settings.half_open_probes => {
                m.probes_in_flight += 1;
                Ok(self.permit(m.generation, true))
            }
            state => Err(CircuitOpen {
                name: Arc::clone(&self.inner.name),
                state,
                retry_in: match state {
                    CircuitState::Open => (m.opened_at + self.inner.settings.open_timeout)
                        .saturating_duration_since(now),
                    _ => Duration::ZERO,
                },
            }),
        }
    }

    /// Runs `call` if the circuit admits it, counting `Err` as a failure.
    pub async fn call<T, E>(
        &self,
        call: impl Future<Output = Result<T, E>>,
    ) -> Result<T, CircuitError<E>> {
        self.call_classified(call, Result::is_err).await
    }

    /// Runs `call` if the circuit admits it; `is_failure` decides what
    /// counts as a failure (say, a 503 in an `Ok` response, but not a 404
    /// in an `Err`).
    pub async fn call_classified<T, E>(
        &self,
        call: impl Future<Output = Result<T, E>>,
        is_failure: impl FnOnce(&Result<T, E>) -> bool,
    ) -> Result<T, CircuitError<E>> {
        let permit = self.try_acquire()?;
        let result = call.await;
        permit.record(!is_failure(&result));
        result.map_err(CircuitError::Inner)
    }

    fn permit(&self, generation: u64, probe: bool) -> CircuitPermit {
        CircuitPermit {
            breaker: self.clone(),
            generation,
            probe,
            reported: false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Machine> {
        self.inner.machine.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Open → half-open once the timeout passed.
    fn advance(&self, m: &mut Machine, now: Instant) {
        if m.state == CircuitState::Open && now >= m.opened_at + self.inner.settings.open_timeout {
            self.transition(m, CircuitState::HalfOpen, now);
        }
    }

    fn transition(&self, m: &mut Machine, to: CircuitState, now: Instant) {
        let from = m.state;
        m.state = to;
        m.generation += 1;
        m.consecutive_failures = 0;
        m.window.clear();
        m.probes_in_flight = 0;
        m.probe_successes = 0;
        if to == CircuitState::Open {
            m.opened_at = now;
        }
        let name = &*self.inner.name;
        match to {
            CircuitState::Open => {
                tracing::warn!(breaker = name, %from, to = %to, open_for = ?self.inner.settings.open_timeout, "circuit breaker opened")
            }
            _ => tracing::info!(breaker = name, %from, to = %to, "circuit breaker state changed"),
        }
        if let Some(g) = &self.inner.state_gauge {
            g.set(to.gauge());
        }
        if let Some(t) = &self.inner.transitions {
            t.with_label_values(&[name, to.as_str()]).inc();
        }
    }

    fn report(&self, generation: u64, probe: bool, outcome: Option<bool>) {
        let now = Instant::now();
        let mut m = self.lock();
        if m.generation != generation {
            // Admitted in an earlier state: it says nothing about this one.
            return;
        }
        if probe {
            m.probes_in_flight = m.probes_in_flight.saturating_sub(1);
        }
        let Some(success) = outcome else { return };
        match m.state {
            CircuitState::Closed => {
                if success {
                    m.consecutive_failures = 0;
                } else {
                    m.consecutive_failures += 1;
                }
                let trip = match self.inner.settings.trip {
                    Trip::Consecutive(n) => m.consecutive_failures >= n,
                    Trip::Ratio {
                        ratio,
                        min_requests,
                        window,
                    } => {
                        let (ok, failed) = record_in_window(&mut m.window, window, now, success);
                        let total = ok + failed;
                        // Checked on failures only, as gobreaker does: a
                        // success never opens the circuit.
                        !success
                            && total >= min_requests
                            && f64::from(failed) >= ratio * f64::from(total)
                    }
                };
                if trip {
                    self.transition(&mut m, CircuitState::Open, now);
                }
            }
            CircuitState::HalfOpen if success => {
                m.probe_successes += 1;
                if m.probe_successes >= self.inner.settings.success_threshold {
                    self.transition(&mut m, CircuitState::Closed, now);
                }
            }
            CircuitState::HalfOpen => self.transition(&mut m, CircuitState::Open, now),
            CircuitState::Open => {}
        }
    }
}

/// Adds one outcome to the rolling window (buckets of a tenth of it) and
/// returns the window's (successes, failures).
fn record_in_window(
    window: &mut VecDeque<(Instant, u32, u32)>,
    span: Duration,
    now: Instant,
    success: bool,
) -> (u32, u32) {
    let bucket = span / WINDOW_BUCKETS;
    while window
        .front()
        .is_some_and(|(start, _, _)| now.saturating_duration_since(*start) >= span)
    {
        window.pop_front();
    }
    match window.back_mut() {
        Some((start, ok, failed)) if now.saturating_duration_since(*start) < bucket => {
            if success {
                *ok += 1;
            } else {
                *failed += 1;
            }
        }
        _ => window.push_back((now, u32::from(success), u32::from(!success))),
    }
    window
        .iter()
        .fold((0, 0), |(o, f), (_, ok, failed)| (o + ok, f + failed))
}

/// One admitted call. Report it with [`success`](CircuitPermit::success) or
/// [`failure`](CircuitPermit::failure); dropping it unreported counts as neither.
#[must_use = "report the call's outcome with success() or failure()"]
pub struct CircuitPermit {
    breaker: CircuitBreaker,
    generation: u64,
    probe: bool,
    reported: bool,
}

impl CircuitPermit {
    /// The call succeeded.
    pub fn success(self) {
        self.record(true);
    }

    /// The call failed.
    pub fn failure(self) {
        self.record(false);
    }

    fn record(mut self, success: bool) {
        self.reported = true;
        self.breaker
            .report(self.generation, self.probe, Some(success));
    }
}

impl Drop for CircuitPermit {
    fn drop(&mut self) {
        if !self.reported {
            self.breaker.report(self.generation, self.probe, None);
        }
    }
}

impl fmt::Debug for CircuitPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitPermit")
            .field("breaker", &self.breaker.inner.name)
            .field("probe", &self.probe)
            .finish()
    }
}

fn breaker_metrics() -> Result<(IntGaugeVec, IntCounterVec), Error> {
    let global = metrics::global();
    let gauge = global.shared("circuit_breaker_state", || {
        IntGaugeVec::new(
            Opts::new(
                "circuit_breaker_state",
                "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
            ),
            &["name"],
        )
        .map_err(|e| {
            Error::msg(format!(
                "cannot create the circuit breaker state gauge: {e}"
            ))
        })
    })?;
    let transitions = global.shared("circuit_breaker_transitions_total", || {
        IntCounterVec::new(
            Opts::new(
                "circuit_breaker_transitions_total",
                "Circuit breaker transitions, by the state entered.",
            ),
            &["name", "to"],
        )
        .map_err(|e| {
            Error::msg(format!(
                "cannot create the circuit breaker transitions counter: {e}"
            ))
        })
    })?;
    Ok((gauge, transitions))
}
