//! Consul through its documented HTTP API: the local agent registers and
//! deregisters this instance (`/v1/agent/service/register` with an HTTP
//! check on `/ready`, `/v1/agent/service/deregister/{id}`), and a service's
//! passing instances come from `/v1/health/service/{name}?passing` with
//! blocking queries (`index`, `wait`, `X-Consul-Index`).

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use serde::Deserialize;
use serde_json::json;

use super::{DiscoveryError, Instance, Lease, Registry, Snapshot};

/// A Consul agent's HTTP API.
#[derive(Debug, Clone)]
pub struct Consul {
    http: reqwest::Client,
    endpoint: String,
    token: Option<String>,
}

/// One entry of `/v1/health/service/{name}`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Entry {
    node: Node,
    service: AgentService,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Node {
    #[serde(default)]
    address: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AgentService {
    #[serde(rename = "ID")]
    id: String,
    service: String,
    #[serde(default)]
    address: String,
    port: u16,
    #[serde(default)]
    meta: Option<BTreeMap<String, String>>,
}

fn fail(endpoint: &str, what: &'static str, reason: impl Into<String>) -> DiscoveryError {
    DiscoveryError::registry("consul", endpoint, what, reason)
}

/// A Go-style duration Consul reads (`"4s"`), at least one second.
fn seconds(d: Duration) -> String {
    format!("{}s", d.as_secs().max(1))
}

impl Consul {
    /// The agent at `endpoint` (`http://host:8500`), sending `token` as
    /// `X-Consul-Token` when given.
    pub fn new(endpoint: String, token: Option<String>) -> Consul {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .build()
            .unwrap_or_default();
        Consul {
            http,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            token,
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self
            .http
            .request(method, format!("{}{path}", self.endpoint))
            .timeout(Duration::from_secs(5));
        match &self.token {
            Some(t) => r.header("X-Consul-Token", t),
            None => r,
        }
    }

    /// Sends `request`; the response when its status is 2xx (or
    /// `allowed`).
    async fn send(
        &self,
        what: &'static str,
        request: reqwest::RequestBuilder,
        allowed: Option<u16>,
    ) -> Result<reqwest::Response, DiscoveryError> {
        let response = request
            .send()
            .await
            .map_err(|e| fail(&self.endpoint, what, e.without_url().to_string()))?;
        let status = response.status();
        if status.is_success() || Some(status.as_u16()) == allowed {
            return Ok(response);
        }
        let text = response.text().await.unwrap_or_default();
        Err(fail(&self.endpoint, what, format!("{status}: {text}")))
    }
}

impl Registry for Consul {
    fn register<'a>(
        &'a self,
        instance: &'a Instance,
        ttl: Duration,
        health_url: &'a str,
    ) -> BoxFuture<'a, Result<Lease, DiscoveryError>> {
        async move {
            let mut meta = BTreeMap::from([("version".to_string(), instance.version.clone())]);
            if let Some(port) = instance.grpc_port {
                meta.insert("grpc_port".to_string(), port.to_string());
            }
            let body = json!({
                "ID": instance.id,
                "Name": instance.service,
                "Address": instance.address,
                "Port": instance.http_port,
                "Tags": [format!("version={}", instance.version)],
                "Meta": meta,
                "Check": {
                    "Name": format!("{} readiness", instance.service),
                    "HTTP": health_url,
                    "Method": "GET",
                    "Interval": seconds(ttl / 3),
                    "Timeout": seconds(ttl / 3),
                    // A crashed instance is removed after this long
                    // critical (Consul's minimum is one minute).
                    "DeregisterCriticalServiceAfter": seconds((ttl * 6).max(Duration::from_secs(60))),
                },
            });
            let request = self
                .request(reqwest::Method::PUT, "/v1/agent/service/register")
                .json(&body);
            self.send("register", request, None).await?;
            Ok(Lease {
                id: instance.id.clone(),
            })
        }
        .boxed()
    }

    fn renew<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<bool, DiscoveryError>> {
        async move {
            // The agent checks health itself; renewing is making sure the
            // registration is still there (an agent restart loses it).
            let path = format!("/v1/agent/service/{}", lease.id);
            let response = self
                .send(
                    "read registration",
                    self.request(reqwest::Method::GET, &path),
                    Some(404),
                )
                .await?;
            Ok(response.status().is_success())
        }
        .boxed()
    }

    fn deregister<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<(), DiscoveryError>> {
        async move {
            let path = format!("/v1/agent/service/deregister/{}", lease.id);
            self.send(
                "deregister",
                self.request(reqwest::Method::PUT, &path),
                None,
            )
            .await
            .map(drop)
        }
        .boxed()
    }

    fn watch<'a>(
        &'a self,
        service: &'a str,
        index: Option<u64>,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Snapshot, DiscoveryError>> {
        async move {
            let mut path = format!("/v1/health/service/{service}?passing=true");
            if let Some(index) = index.filter(|i| *i > 0) {
                path.push_str(&format!("&index={index}&wait={}", seconds(wait)));
            }
            // Consul adds up to wait/16 of jitter to a blocking query.
            let request = self
                .request(reqwest::Method::GET, &path)
                .timeout(wait + wait / 16 + Duration::from_secs(5));
            let response = self.send("health query", request, None).await?;
            let new_index = response
                .headers()
                .get("X-Consul-Index")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            let entries: Vec<Entry> = response.json().await.map_err(|e| {
                fail(
                    &self.endpoint,
                    "health query",
                    format!("unreadable answer: {e}"),
                )
            })?;
            // Per Consul's documentation: an index that went backwards is
            // reset, so the next query does not block on a stale one.
            let index = match index {
                Some(old) if new_index < old => 0,
                _ => new_index,
            };
            Ok(Snapshot {
                instances: entries.into_iter().map(instance).collect(),
                index,
            })
        }
        .boxed()
    }
}

fn instance(entry: Entry) -> Instance {
    let meta = entry.service.meta.unwrap_or_default();
    Instance {
        address: if entry.service.address.is_empty() {
            entry.node.address
        } else {
            entry.service.address
        },
        service: entry.service.service,
        id: entry.service.id,
        http_port: entry.service.port,
        grpc_port: meta.get("grpc_port").and_then(|p| p.parse().ok()),
        version: meta.get("version").cloned().unwrap_or_default(),
    }
}
