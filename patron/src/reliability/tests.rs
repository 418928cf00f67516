use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tower::{ServiceBuilder, ServiceExt, service_fn};

use super::*;

async fn failing() -> Result<(), &'static str> {
    Err("down")
}

/// Runs `n` failing calls through `breaker`.
async fn fail(breaker: &CircuitBreaker, n: u32) {
    for _ in 0..n {
        let _ = breaker.call(failing()).await;
    }
}

#[tokio::test(start_paused = true)]
async fn opens_after_consecutive_failures_and_fails_fast_without_calling() {
    let breaker = CircuitBreaker::new("unit-consecutive")
        .failure_threshold(3)
        .open_timeout(Duration::from_secs(10));
    fail(&breaker, 2).await;
    let _ = breaker.call(async { Ok::<_, &str>(()) }).await;
    fail(&breaker, 2).await;
    assert_eq!(
        breaker.state(),
        CircuitState::Closed,
        "a success resets the count"
    );
    fail(&breaker, 1).await;
    assert_eq!(breaker.state(), CircuitState::Open);

    let ran = AtomicU32::new(0);
    let refused = breaker
        .call(async {
            ran.fetch_add(1, Ordering::SeqCst);
            Ok::<_, &str>(())
        })
        .await;
    assert_eq!(
        ran.load(Ordering::SeqCst),
        0,
        "an open circuit does not call"
    );
    let Err(CircuitError::Open(open)) = refused else {
        panic!("expected Open, got {refused:?}")
    };
    assert_eq!(open.state, CircuitState::Open);
    assert_eq!(open.retry_in, Duration::from_secs(10));
    assert!(open.to_string().contains("unit-consecutive"), "{open}");
}

#[tokio::test(start_paused = true)]
async fn opens_on_a_failure_ratio_with_a_minimum_of_requests() {
    let breaker = CircuitBreaker::new("unit-ratio").failure_ratio(0.6, 3, Duration::from_secs(10));
    fail(&breaker, 2).await;
    assert_eq!(
        breaker.state(),
        CircuitState::Closed,
        "2 requests are below the minimum"
    );
    let _ = breaker.call(async { Ok::<_, &str>(()) }).await;
    // 2 of 3 failed: 67 % ≥ 60 %, but the check runs on the failure.
    assert_eq!(breaker.state(), CircuitState::Closed);
    fail(&breaker, 1).await;
    assert_eq!(breaker.state(), CircuitState::Open, "3 of 4 failed");

    let healthy =
        CircuitBreaker::new("unit-ratio-ok").failure_ratio(0.6, 3, Duration::from_secs(10));
    for _ in 0..3 {
        let _ = healthy.call(async { Ok::<_, &str>(()) }).await;
    }
    fail(&healthy, 2).await;
    assert_eq!(healthy.state(), CircuitState::Closed, "2 of 5 failed");

    // Old outcomes leave the window.
    let windowed =
        CircuitBreaker::new("unit-ratio-window").failure_ratio(0.6, 3, Duration::from_secs(1));
    fail(&windowed, 2).await;
    tokio::time::advance(Duration::from_secs(2)).await;
    fail(&windowed, 1).await;
    assert_eq!(
        windowed.state(),
        CircuitState::Closed,
        "only 1 request in the window"
    );
}

#[tokio::test(start_paused = true)]
async fn half_open_probes_then_closes_or_reopens() {
    let breaker = CircuitBreaker::new("unit-half-open")
        .failure_threshold(1)
        .open_timeout(Duration::from_secs(5))
        .half_open_probes(2)
        .success_threshold(2);
    fail(&breaker, 1).await;
    assert_eq!(breaker.state(), CircuitState::Open);
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(breaker.state(), CircuitState::HalfOpen);

    let first = breaker.try_acquire().expect("probe 1");
    let second = breaker.try_acquire().expect("probe 2");
    let third = breaker.try_acquire();
    assert!(
        matches!(
            third,
            Err(CircuitOpen {
                state: CircuitState::HalfOpen,
                ..
            })
        ),
        "{third:?}"
    );
    // A probe dropped unreported frees its slot and counts as nothing.
    drop(first);
    let first = breaker.try_acquire().expect("the freed slot");
    first.success();
    assert_eq!(breaker.state(), CircuitState::HalfOpen, "1 of 2 successes");
    second.success();
    assert_eq!(breaker.state(), CircuitState::Closed);

    fail(&breaker, 1).await;
    tokio::time::advance(Duration::from_secs(5)).await;
    breaker.try_acquire().expect("probe").failure();
    assert_eq!(
        breaker.state(),
        CircuitState::Open,
        "a failed probe reopens"
    );
}

#[tokio::test(start_paused = true)]
async fn outcomes_of_permits_from_an_earlier_state_are_ignored() {
    let breaker = CircuitBreaker::new("unit-generation")
        .failure_threshold(1)
        .open_timeout(Duration::from_secs(1));
    let slow = breaker.try_acquire().expect("closed");
    fail(&breaker, 1).await;
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(breaker.state(), CircuitState::HalfOpen);
    // Admitted while closed: its success is no probe and closes nothing.
    slow.success();
    assert_eq!(breaker.state(), CircuitState::HalfOpen);
}

/// Go Patron's #1575: in half-open, concurrent callers could all pass.
/// Many tasks on a multi-thread runtime call at once; exactly
/// `half_open_probes` run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn half_open_admits_exactly_the_probe_limit_under_concurrency() {
    let breaker = CircuitBreaker::new("unit-race")
        .failure_threshold(1)
        .open_timeout(Duration::from_millis(50))
        .half_open_probes(3)
        // Stays half-open while the probes succeed, so only admission counts.
        .success_threshold(1000);
    fail(&breaker, 1).await;
    tokio::time::sleep(Duration::from_millis(60)).await;

    let (ran, running, peak) = (
        Arc::new(AtomicU32::new(0)),
        Arc::new(AtomicU32::new(0)),
        Arc::new(AtomicU32::new(0)),
    );
    let start = Arc::new(tokio::sync::Barrier::new(64));
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (breaker, ran, running, peak, start) = (
                breaker.clone(),
                ran.clone(),
                running.clone(),
                peak.clone(),
                start.clone(),
            );
            tokio::spawn(async move {
                start.wait().await;
                breaker
                    .call(async {
                        ran.fetch_add(1, Ordering::SeqCst);
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(now, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        running.fetch_sub(1, Ordering::SeqCst);
                        Ok::<_, &str>(())
                    })
                    .await
                    .is_ok()
            })
        })
        .collect();
    let mut admitted = 0;
    for t in tasks {
        admitted += u32::from(t.await.unwrap());
    }
    assert_eq!(admitted, 3);
    assert_eq!(ran.load(Ordering::SeqCst), 3);
    assert!(peak.load(Ordering::SeqCst) <= 3);
    assert_eq!(breaker.state(), CircuitState::HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn retry_gives_up_at_max_elapsed() {
    let retry = Retry::new(1000)
        .backoff(Duration::from_millis(50), Duration::from_millis(50))
        .max_elapsed(Duration::from_millis(300));
    let started = tokio::time::Instant::now();
    let mut attempts = 0;
    let result: Result<(), &str> = retry
        .run(|_| {
            attempts += 1;
            async { Err("down") }
        })
        .await;
    assert_eq!(result, Err("down"));
    assert!(
        started.elapsed() <= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    assert!(attempts > 1 && attempts < 1000, "{attempts} attempts");
}

#[tokio::test]
async fn retry_stops_waiting_at_once_on_cancel() {
    let token = CancellationToken::new();
    let retry = Retry::new(10)
        .backoff(Duration::from_secs(60), Duration::from_secs(60))
        .cancel_on(token.clone());
    let canceller = {
        let token = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            token.cancel();
        })
    };
    let started = std::time::Instant::now();
    let mut attempts = 0;
    // A wait is drawn from [0, 60 s]: try until one is long enough to be
    // interrupted (all but certain on the first).
    let result: Result<(), &str> = retry
        .run(|_| {
            attempts += 1;
            async { Err("down") }
        })
        .await;
    canceller.await.unwrap();
    assert_eq!(result, Err("down"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let after_cancel = attempts;
    // Cancelled already: one attempt, no wait.
    let result: Result<(), &str> = retry.run(|_| async { Err("down") }).await;
    assert_eq!(result, Err("down"));
    assert!(after_cancel >= 1);
}

#[tokio::test(start_paused = true)]
async fn retry_returns_non_retryable_errors_at_once_and_bounds_its_delays() {
    let retry = Retry::new(5).backoff(Duration::from_millis(100), Duration::from_secs(1));
    let mut attempts = 0;
    let result: Result<(), u16> = retry
        .run_if(
            |_| {
                attempts += 1;
                async { Err(400) }
            },
            |status| *status >= 500,
        )
        .await;
    assert_eq!((result, attempts), (Err(400), 1));
    for attempt in 1..40 {
        assert!(retry.delay(attempt) <= Duration::from_secs(1));
    }
    assert!(retry.delay(1) <= Duration::from_millis(100));
}

#[tokio::test]
async fn rate_limit_checks_and_waits() {
    let limit = RateLimit::per_second("unit-rate", 20).burst(2);
    assert!(limit.check().is_ok());
    assert!(limit.check().is_ok());
    let limited = limit.check().expect_err("the burst is spent");
    assert!(
        limited.retry_after > Duration::ZERO && limited.retry_after <= Duration::from_millis(50)
    );
    assert!(limited.to_string().contains("unit-rate"), "{limited}");
    let started = std::time::Instant::now();
    limit.until_ready().await;
    assert!(
        started.elapsed() >= Duration::from_millis(20),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn bulkhead_bounds_concurrency_and_fails_fast_or_after_max_wait() {
    let fast = Bulkhead::new("unit-bulkhead", 1).max_wait(Duration::ZERO);
    let slot = fast.acquire().await.unwrap();
    let full = fast.call(async {}).await.expect_err("full");
    assert_eq!(full.limit, 1);
    drop(slot);
    assert_eq!(fast.call(async { 1 }).await.unwrap(), 1);

    let patient = Bulkhead::new("unit-bulkhead-wait", 1).max_wait(Duration::from_millis(50));
    let slot = patient.acquire().await.unwrap();
    let started = std::time::Instant::now();
    assert!(patient.acquire().await.is_err());
    assert!(started.elapsed() >= Duration::from_millis(50));
    drop(slot);
    assert_eq!(patient.available(), 1);
}

#[tokio::test]
async fn layers_compose_and_an_open_circuit_does_not_call_the_service() {
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let breaker = CircuitBreaker::new("unit-layer").failure_threshold(2);
    let svc = ServiceBuilder::new()
        .layer(Retry::new(2).backoff(Duration::from_millis(1), Duration::from_millis(1)))
        .layer(breaker.clone())
        .layer(Bulkhead::new("unit-layer", 4))
        .layer(RateLimit::per_second("unit-layer", 1000))
        .service(service_fn(move |fail: bool| {
            c.fetch_add(1, Ordering::SeqCst);
            async move {
                if fail {
                    Err(std::io::Error::other("boom"))
                } else {
                    Ok("fine")
                }
            }
        }));
    assert_eq!(svc.clone().oneshot(false).await.unwrap(), "fine");
    // Fails twice (one call and its retry): the circuit opens.
    let err = svc.clone().oneshot(true).await.unwrap_err();
    assert_eq!(err.to_string(), "boom");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(breaker.state(), CircuitState::Open);
    let err = svc.clone().oneshot(false).await.unwrap_err();
    assert!(err.downcast_ref::<CircuitOpen>().is_some(), "{err}");
    assert_eq!(calls.load(Ordering::SeqCst), 3, "no call while open");
}

#[test]
fn breaker_state_shows_in_the_global_metrics() {
    let breaker = CircuitBreaker::new("unit-metrics").failure_threshold(1);
    let permit = breaker.try_acquire().unwrap();
    permit.failure();
    // A service's /metrics renders its own registry, then the global one.
    let text = crate::observe::metrics::Metrics::new().render();
    assert!(
        text.contains(r#"circuit_breaker_state{name="unit-metrics"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"circuit_breaker_transitions_total{name="unit-metrics",to="open"} 1"#),
        "{text}"
    );
}
