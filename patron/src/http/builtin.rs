//! Built-in management routes: `GET /alive`, `GET /ready`, `GET /info` and
//! `GET /metrics`.
//! They get panic recovery only: no span, no correlation id, no access log.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use futures_util::future::{BoxFuture, join_all};
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::component::Readiness;
use crate::error::problem;
use crate::observe::metrics::Metrics;
use patron_units::defaults::{ALIVE_PATH, INFO_PATH, METRICS_PATH, READY_PATH};

/// Paths the default HTTP component reserves.
pub(crate) const RESERVED: &[&str] = &[ALIVE_PATH, READY_PATH, INFO_PATH, METRICS_PATH];

/// Where the AsyncAPI document is served (feature `openapi`, unless
/// `PATRON_HTTP_OPENAPI=false`); reserved only then.
pub(crate) const ASYNCAPI_PATH: &str = "/asyncapi.json";

/// Where the OpenAPI document is served (feature `openapi`, unless
/// `PATRON_HTTP_OPENAPI=false`); reserved only then.
pub(crate) const OPENAPI_PATH: &str = "/openapi.json";

/// How long one health check may take before it counts as failing.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// A user health check, as given to `Service::with_health_check`.
pub(crate) type CheckFn = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// State the management routes read.
pub(crate) struct Management {
    pub shutting_down: AtomicBool,
    pub checks: Vec<(String, CheckFn)>,
    pub readiness: std::sync::Mutex<Vec<Readiness>>,
    pub info: Bytes,
    /// The OpenAPI document, when served.
    pub openapi: Option<Bytes>,
    /// The AsyncAPI document, when served (the service has consumers).
    pub asyncapi: Option<Bytes>,
}

impl Management {
    pub fn readiness(&self) -> Vec<Readiness> {
        self.readiness
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[derive(Serialize)]
pub(crate) struct CheckResult {
    name: String,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

pub(crate) fn routes(shared: Arc<Management>, metrics: Metrics) -> Router {
    let ready_state = Arc::clone(&shared);
    let documents = [
        (OPENAPI_PATH, shared.openapi.clone()),
        (ASYNCAPI_PATH, shared.asyncapi.clone()),
    ];
    let info_state = shared;
    let mut router = Router::new();
    for (path, document) in documents {
        if let Some(body) = document {
            router = router.route(
                path,
                get(move || {
                    let body = body.clone();
                    async move { json_response(StatusCode::OK, body) }
                }),
            );
        }
    }
    router
        .route(
            ALIVE_PATH,
            get(|| async {
                json_response(StatusCode::OK, br#"{"status":"alive"}"#.as_slice().into())
            }),
        )
        .route(READY_PATH, get(move || ready(Arc::clone(&ready_state))))
        .route(
            INFO_PATH,
            get(move || {
                let body = info_state.info.clone();
                async move { json_response(StatusCode::OK, body) }
            }),
        )
        .route(
            METRICS_PATH,
            get(move || {
                let text = metrics.render();
                async move {
                    let mut r = (StatusCode::OK, text).into_response();
                    r.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                    );
                    r
                }
            }),
        )
}

async fn ready(shared: Arc<Management>) -> Response {
    if shared.shutting_down.load(Ordering::Acquire) {
        let mut extra = Map::new();
        extra.insert("checks".into(), json!([]));
        return problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "the service is shutting down",
            extra,
        );
    }
    let results = shared.evaluate().await;
    let failing: Vec<&CheckResult> = results.iter().filter(|r| r.status != "ok").collect();
    if failing.is_empty() {
        let body = serde_json::to_vec(&json!({ "status": "ready", "checks": results }))
            .unwrap_or_default();
        return json_response(StatusCode::OK, body.into());
    }
    let names: Vec<&str> = failing.iter().map(|r| r.name.as_str()).collect();
    let mut extra = Map::new();
    extra.insert(
        "checks".into(),
        serde_json::to_value(&results).unwrap_or(Value::Null),
    );
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        &format!("not ready: {} failing", names.join(", ")),
        extra,
    )
}

impl Management {
    /// Runs every readiness check and reads every component's readiness.
    pub(crate) async fn evaluate(&self) -> Vec<CheckResult> {
        let checks = self.checks.iter().map(|(name, check)| {
            let fut = check();
            async move {
                match tokio::time::timeout(CHECK_TIMEOUT, fut).await {
                    Ok(Ok(())) => CheckResult {
                        name: name.clone(),
                        status: "ok",
                        error: None,
                    },
                    Ok(Err(e)) => CheckResult {
                        name: name.clone(),
                        status: "failing",
                        error: Some(e),
                    },
                    Err(_) => CheckResult {
                        name: name.clone(),
                        status: "failing",
                        error: Some(format!(
                            "did not answer within {}s",
                            CHECK_TIMEOUT.as_secs()
                        )),
                    },
                }
            }
        });
        let mut results = join_all(checks).await;
        for r in self.readiness() {
            results.push(match r.problem() {
                None => CheckResult {
                    name: format!("component:{}", r.name()),
                    status: "ok",
                    error: None,
                },
                Some(e) => CheckResult {
                    name: format!("component:{}", r.name()),
                    status: "failing",
                    error: Some(e),
                },
            });
        }
        results
    }

    /// Whether `/ready` would answer 200 now.
    #[cfg_attr(not(feature = "grpc"), allow(dead_code))]
    pub(crate) async fn is_ready(&self) -> bool {
        !self.shutting_down.load(Ordering::Acquire)
            && self.evaluate().await.iter().all(|r| r.status == "ok")
    }
}

fn json_response(status: StatusCode, body: Bytes) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}
