//! etcd's v3 API through its JSON gateway (`/v3/…`, keys and values in
//! base64, 64-bit numbers as strings), over reqwest: leases, puts, range
//! reads, watches. The gateway needs no generated code and no `protoc`.
//!
//! Each instance is the key `patron/services/{name}/{id}` holding its
//! [`Instance`] as JSON, attached to a lease of the TTL.

use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{DiscoveryError, Instance, Lease, Registry, Snapshot};

type EtcdError = DiscoveryError;

fn fail(endpoint: &str, what: &'static str, reason: String) -> EtcdError {
    DiscoveryError::registry("etcd", endpoint, what, reason)
}

/// The key prefix of a service's instances.
fn prefix(service: &str) -> String {
    format!("patron/services/{service}/")
}

/// A client of one etcd cluster (its endpoints tried in turn).
#[derive(Debug, Clone)]
pub struct Etcd {
    http: reqwest::Client,
    endpoints: Vec<String>,
}

#[derive(Deserialize)]
struct KeyValue {
    #[serde(default)]
    value: String,
}

impl Etcd {
    /// A client of the cluster at `endpoints` (`http://host:2379`).
    pub fn new(endpoints: Vec<String>) -> Etcd {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .build()
            .unwrap_or_default();
        Etcd { http, endpoints }
    }

    /// POSTs `body` to `/v3/{path}` on the first endpoint that answers.
    async fn call(&self, what: &'static str, path: &str, body: Value) -> Result<Value, EtcdError> {
        let mut last = None;
        for endpoint in &self.endpoints {
            let fail = |reason: String| fail(endpoint, what, reason);
            let sent = self
                .http
                .post(format!("{endpoint}/v3/{path}"))
                .json(&body)
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => {
                    return r
                        .json()
                        .await
                        .map_err(|e| fail(format!("unreadable answer: {e}")));
                }
                Ok(r) => {
                    let status = r.status();
                    let text = r.text().await.unwrap_or_default();
                    return Err(fail(format!("{status}: {text}")));
                }
                Err(e) => last = Some(fail(e.without_url().to_string())),
            }
        }
        Err(last.unwrap_or_else(|| fail("", what, "no endpoint configured".to_string())))
    }

    /// A new lease of `ttl` (whole seconds, at least one); its id.
    pub(crate) async fn grant(&self, ttl: Duration) -> Result<i64, EtcdError> {
        let answer = self
            .call(
                "lease grant",
                "lease/grant",
                json!({ "TTL": ttl.as_secs().max(1) }),
            )
            .await?;
        number(&answer["ID"]).ok_or_else(|| self.odd("lease grant", &answer))
    }

    /// Renews `lease`; `false` when it has already expired.
    pub(crate) async fn keep_alive(&self, lease: i64) -> Result<bool, EtcdError> {
        let answer = self
            .call(
                "lease keep-alive",
                "lease/keepalive",
                json!({ "ID": lease.to_string() }),
            )
            .await?;
        Ok(number(&answer["result"]["TTL"]).is_some_and(|ttl| ttl > 0))
    }

    /// Ends `lease`, deleting every key attached to it.
    pub(crate) async fn revoke(&self, lease: i64) -> Result<(), EtcdError> {
        self.call(
            "lease revoke",
            "lease/revoke",
            json!({ "ID": lease.to_string() }),
        )
        .await
        .map(drop)
    }

    /// Sets `key` to `value`, attached to `lease`.
    pub(crate) async fn put(&self, key: &str, value: &[u8], lease: i64) -> Result<(), EtcdError> {
        let body = json!({
            "key": STANDARD.encode(key),
            "value": STANDARD.encode(value),
            "lease": lease.to_string(),
        });
        self.call("put", "kv/put", body).await.map(drop)
    }

    /// The values of every key starting with `prefix`, and the store's
    /// revision they were read at.
    pub(crate) async fn prefixed(&self, prefix: &str) -> Result<(Vec<Vec<u8>>, i64), EtcdError> {
        let body = json!({ "key": STANDARD.encode(prefix), "range_end": STANDARD.encode(range_end(prefix)) });
        let answer = self.call("range", "kv/range", body).await?;
        let revision = number(&answer["header"]["revision"]).unwrap_or(0);
        let kvs: Vec<KeyValue> = serde_json::from_value(answer["kvs"].clone()).unwrap_or_default();
        let values = kvs
            .into_iter()
            .filter_map(|kv| STANDARD.decode(kv.value).ok())
            .collect();
        Ok((values, revision))
    }

    /// Waits until a key under `prefix` changes after `revision`, or
    /// `wait` passes (a watch on the gateway's streaming `/v3/watch`,
    /// dropped once it has said something).
    async fn changed_since(
        &self,
        prefix: &str,
        revision: i64,
        wait: Duration,
    ) -> Result<(), EtcdError> {
        let Some(endpoint) = self.endpoints.first() else {
            return Err(fail("", "watch", "no endpoint configured".to_string()));
        };
        let body = json!({ "create_request": {
            "key": STANDARD.encode(prefix),
            "range_end": STANDARD.encode(range_end(prefix)),
            "start_revision": (revision + 1).to_string(),
        }});
        let watch = async {
            let mut response = self
                .http
                .post(format!("{endpoint}/v3/watch"))
                .timeout(wait + Duration::from_secs(5))
                .json(&body)
                .send()
                .await
                .map_err(|e| fail(endpoint, "watch", e.without_url().to_string()))?;
            let mut pending = Vec::new();
            loop {
                let chunk = response
                    .chunk()
                    .await
                    .map_err(|e| fail(endpoint, "watch", e.without_url().to_string()))?;
                let Some(chunk) = chunk else {
                    return Ok(());
                };
                pending.extend_from_slice(&chunk);
                while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=end).collect();
                    let Ok(message) = serde_json::from_slice::<Value>(&line) else {
                        return Ok(());
                    };
                    let result = &message["result"];
                    let news = result["events"].as_array().is_some_and(|e| !e.is_empty());
                    let compacted = number(&result["compact_revision"]).is_some_and(|r| r > 0);
                    if news
                        || compacted
                        || result["canceled"].as_bool() == Some(true)
                        || message.get("error").is_some()
                    {
                        return Ok(());
                    }
                }
            }
        };
        match tokio::time::timeout(wait, watch).await {
            Ok(result) => result,
            Err(_) => Ok(()),
        }
    }

    fn odd(&self, what: &'static str, answer: &Value) -> EtcdError {
        fail(
            &self.endpoints.join(","),
            what,
            format!("unexpected answer {answer}"),
        )
    }

    async fn snapshot(&self, service: &str) -> Result<Snapshot, EtcdError> {
        let (values, revision) = self.prefixed(&prefix(service)).await?;
        Ok(Snapshot {
            instances: values
                .iter()
                .filter_map(|v| serde_json::from_slice(v).ok())
                .collect(),
            index: u64::try_from(revision).unwrap_or(0),
        })
    }
}

/// The end of the key range of every key starting with `prefix`.
fn range_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

impl Registry for Etcd {
    fn register<'a>(
        &'a self,
        instance: &'a Instance,
        ttl: Duration,
        _health_url: &'a str,
    ) -> BoxFuture<'a, Result<Lease, DiscoveryError>> {
        async move {
            let value = serde_json::to_vec(instance)
                .map_err(|e| fail("", "put", format!("cannot encode the instance: {e}")))?;
            let lease = self.grant(ttl).await?;
            let key = format!("{}{}", prefix(&instance.service), instance.id);
            self.put(&key, &value, lease).await?;
            Ok(Lease {
                id: lease.to_string(),
            })
        }
        .boxed()
    }

    fn renew<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<bool, DiscoveryError>> {
        async move {
            match lease.id.parse() {
                Ok(id) => self.keep_alive(id).await,
                Err(_) => Ok(false),
            }
        }
        .boxed()
    }

    fn deregister<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<(), DiscoveryError>> {
        async move {
            match lease.id.parse() {
                Ok(id) => self.revoke(id).await,
                Err(_) => Ok(()),
            }
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
            if let Some(revision) = index.and_then(|i| i64::try_from(i).ok()) {
                self.changed_since(&prefix(service), revision, wait).await?;
            }
            self.snapshot(service).await
        }
        .boxed()
    }
}

/// An int64 as the gateway writes it (a string), or a plain number.
fn number(v: &Value) -> Option<i64> {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| v.as_i64())
}
