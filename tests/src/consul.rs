//! A **test double of Consul's agent and health HTTP API** — no Consul
//! server can be installed on the test machines. It follows Consul's
//! documentation for the calls patron makes, not Consul's code:
//!
//! - `PUT /v1/agent/service/register` (<https://developer.hashicorp.com/consul/api-docs/agent/service#register-service>):
//!   `Name` required, `ID` defaulting to it, one `Check` with `HTTP`,
//!   `Interval`, `Timeout`, `DeregisterCriticalServiceAfter`; a new check
//!   starts `critical` and the agent runs it every interval — 2xx passing,
//!   429 warning, anything else or no answer critical; a service critical
//!   for longer than `DeregisterCriticalServiceAfter` is removed.
//!   Registering an existing ID replaces it.
//! - `PUT /v1/agent/service/deregister/:service_id` (404 for an unknown id).
//! - `GET /v1/agent/service/:service_id` (404 for an unknown id).
//! - `GET /v1/health/service/:service?passing` with blocking queries
//!   (<https://developer.hashicorp.com/consul/api-docs/features/blocking>):
//!   `X-Consul-Index` on every answer; with `index=N` the request waits
//!   until the index moves past N or `wait` (default 5m, at most 10m)
//!   passes, plus up to wait/16 of jitter.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::sync::watch;

/// One registered service and its check's state.
#[derive(Debug, Clone)]
pub struct Registered {
    /// The registration body as received.
    pub body: Value,
    /// `passing`, `warning` or `critical`.
    pub status: String,
    critical_since: Option<Instant>,
}

#[derive(Default)]
struct Agent {
    services: BTreeMap<String, Registered>,
    /// Every call, as `METHOD path?query`.
    calls: Vec<String>,
}

/// The running double; stops when dropped.
pub struct ConsulDouble {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    agent: Arc<Mutex<Agent>>,
    index: watch::Sender<u64>,
    server: tokio::task::JoinHandle<()>,
    checker: tokio::task::JoinHandle<()>,
}

impl Drop for ConsulDouble {
    fn drop(&mut self) {
        self.server.abort();
        self.checker.abort();
    }
}

#[derive(Clone)]
struct Shared {
    agent: Arc<Mutex<Agent>>,
    index: watch::Sender<u64>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Agent> {
        self.agent.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.index.send_modify(|i| *i += 1);
    }
}

/// A Go duration as Consul reads it (`10s`, `1m`, `500ms`).
fn go_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = number.parse().ok()?;
    Some(match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return None,
    })
}

impl ConsulDouble {
    /// Starts the double on a free loopback port.
    pub async fn start() -> ConsulDouble {
        let agent = Arc::new(Mutex::new(Agent::default()));
        let (index, _) = watch::channel(1u64);
        let shared = Shared {
            agent: Arc::clone(&agent),
            index: index.clone(),
        };
        let app = Router::new()
            .route("/v1/agent/service/register", put(register))
            .route("/v1/agent/service/deregister/{id}", put(deregister))
            .route("/v1/agent/service/{id}", get(read))
            .route("/v1/health/service/{name}", get(health))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let checker = tokio::spawn(run_checks(shared));
        ConsulDouble {
            url,
            agent,
            index,
            server,
            checker,
        }
    }

    /// The registered services by id.
    pub fn services(&self) -> BTreeMap<String, Registered> {
        self.agent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .services
            .clone()
    }

    /// Every call received so far.
    pub fn calls(&self) -> Vec<String> {
        self.agent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .calls
            .clone()
    }

    /// The current `X-Consul-Index`.
    pub fn index(&self) -> u64 {
        *self.index.borrow()
    }
}

async fn register(State(s): State<Shared>, Json(body): Json<Value>) -> Response {
    s.lock().calls.push("PUT /v1/agent/service/register".into());
    let Some(name) = body["Name"].as_str().filter(|n| !n.is_empty()) else {
        return (StatusCode::BAD_REQUEST, "Missing service name").into_response();
    };
    let id = body["ID"].as_str().unwrap_or(name).to_string();
    let check = &body["Check"];
    if !check.is_null() {
        let interval = check["Interval"].as_str().and_then(go_duration);
        if check["HTTP"].as_str().is_none() || interval.is_none() {
            return (
                StatusCode::BAD_REQUEST,
                "Invalid check: HTTP checks need HTTP and Interval",
            )
                .into_response();
        }
    }
    s.lock().services.insert(
        id,
        Registered {
            body,
            status: "critical".into(),
            critical_since: Some(Instant::now()),
        },
    );
    s.bump();
    StatusCode::OK.into_response()
}

async fn deregister(State(s): State<Shared>, Path(id): Path<String>) -> Response {
    let removed = {
        let mut agent = s.lock();
        agent
            .calls
            .push(format!("PUT /v1/agent/service/deregister/{id}"));
        agent.services.remove(&id).is_some()
    };
    if !removed {
        return (StatusCode::NOT_FOUND, format!("Unknown service ID {id:?}")).into_response();
    }
    s.bump();
    StatusCode::OK.into_response()
}

async fn read(State(s): State<Shared>, Path(id): Path<String>) -> Response {
    let mut agent = s.lock();
    agent.calls.push(format!("GET /v1/agent/service/{id}"));
    match agent.services.get(&id) {
        Some(r) => Json(agent_service(&id, &r.body)).into_response(),
        None => (StatusCode::NOT_FOUND, format!("unknown service ID: {id}")).into_response(),
    }
}

fn agent_service(id: &str, body: &Value) -> Value {
    json!({
        "ID": id,
        "Service": body["Name"],
        "Address": body["Address"].as_str().unwrap_or(""),
        "Port": body["Port"].as_u64().unwrap_or(0),
        "Tags": body["Tags"],
        "Meta": body["Meta"],
    })
}

async fn health(
    State(s): State<Shared>,
    Path(name): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    s.lock().calls.push(format!(
        "GET /v1/health/service/{name}?{}",
        query
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&")
    ));
    let mut index = s.index.subscribe();
    if let Some(after) = query.get("index").and_then(|i| i.parse::<u64>().ok()) {
        let wait = query
            .get("wait")
            .and_then(|w| go_duration(w))
            .unwrap_or(Duration::from_secs(300))
            .min(Duration::from_secs(600));
        let jitter = wait / 16;
        let _ = tokio::time::timeout(wait + jitter, index.wait_for(|i| *i > after)).await;
    }
    let passing_only = query.contains_key("passing");
    let current = *index.borrow();
    let entries: Vec<Value> = s
        .lock()
        .services
        .iter()
        .filter(|(_, r)| r.body["Name"] == name.as_str())
        .filter(|(_, r)| !passing_only || r.status == "passing")
        .map(|(id, r)| {
            json!({
                "Node": { "Node": "consul-double", "Address": "127.0.0.1" },
                "Service": agent_service(id, &r.body),
                "Checks": [{ "CheckID": format!("service:{id}"), "Status": r.status }],
            })
        })
        .collect();
    let mut headers = HeaderMap::new();
    headers.insert("X-Consul-Index", current.to_string().parse().unwrap());
    (headers, Json(entries)).into_response()
}

/// Runs every service's HTTP check on its interval, as the agent does.
async fn run_checks(s: Shared) {
    let client = reqwest::Client::new();
    let mut last_run: BTreeMap<String, Instant> = BTreeMap::new();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let due: Vec<(String, Value)> = s
            .lock()
            .services
            .iter()
            .filter(|(_, r)| !r.body["Check"].is_null())
            .filter(|(id, r)| {
                let interval = r.body["Check"]["Interval"]
                    .as_str()
                    .and_then(go_duration)
                    .unwrap_or(Duration::from_secs(10));
                last_run.get(*id).is_none_or(|t| t.elapsed() >= interval)
            })
            .map(|(id, r)| (id.clone(), r.body["Check"].clone()))
            .collect();
        for (id, check) in due {
            last_run.insert(id.clone(), Instant::now());
            let timeout = check["Timeout"]
                .as_str()
                .and_then(go_duration)
                .unwrap_or(Duration::from_secs(10));
            let url = check["HTTP"].as_str().unwrap_or_default().to_string();
            let status = match client.get(&url).timeout(timeout).send().await {
                Ok(r) if r.status().is_success() => "passing",
                Ok(r) if r.status() == 429 => "warning",
                _ => "critical",
            };
            let changed = {
                let mut agent = s.lock();
                let Some(r) = agent.services.get_mut(&id) else {
                    continue;
                };
                let changed = r.status != status;
                r.status = status.to_string();
                if status == "critical" {
                    r.critical_since.get_or_insert_with(Instant::now);
                } else {
                    r.critical_since = None;
                }
                let reap = check["DeregisterCriticalServiceAfter"]
                    .as_str()
                    .and_then(go_duration)
                    .zip(r.critical_since)
                    .is_some_and(|(after, since)| since.elapsed() > after);
                if reap {
                    agent.services.remove(&id);
                }
                changed || reap
            };
            if changed {
                s.bump();
            }
        }
    }
}
