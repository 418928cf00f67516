//! etcd's v3 API through its JSON gateway (`/v3/…`, keys and values in
//! base64, 64-bit numbers as strings), over reqwest: leases, puts, range
//! reads. The gateway needs no generated code and no `protoc`.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::{Value, json};

/// A discovery registry call failed.
#[derive(Debug, thiserror::Error)]
#[error("etcd at {endpoint}: {what}: {reason}")]
pub struct EtcdError {
    endpoint: String,
    what: &'static str,
    reason: String,
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
            let fail = |reason: String| EtcdError {
                endpoint: endpoint.clone(),
                what,
                reason,
            };
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
        Err(last.unwrap_or_else(|| EtcdError {
            endpoint: String::new(),
            what,
            reason: "no endpoint configured".to_string(),
        }))
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

    /// The values of every key starting with `prefix`.
    pub(crate) async fn prefixed(&self, prefix: &str) -> Result<Vec<Vec<u8>>, EtcdError> {
        let mut end = prefix.as_bytes().to_vec();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let body = json!({ "key": STANDARD.encode(prefix), "range_end": STANDARD.encode(&end) });
        let answer = self.call("range", "kv/range", body).await?;
        let kvs: Vec<KeyValue> = serde_json::from_value(answer["kvs"].clone()).unwrap_or_default();
        Ok(kvs
            .into_iter()
            .filter_map(|kv| STANDARD.decode(kv.value).ok())
            .collect())
    }

    fn odd(&self, what: &'static str, answer: &Value) -> EtcdError {
        EtcdError {
            endpoint: self.endpoints.join(","),
            what,
            reason: format!("unexpected answer {answer}"),
        }
    }
}

/// An int64 as the gateway writes it (a string), or a plain number.
fn number(v: &Value) -> Option<i64> {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| v.as_i64())
}
