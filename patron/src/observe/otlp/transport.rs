//! Sending an encoded batch to the OTLP/HTTP receiver: one pooled HTTP/1.1
//! client on a runtime of its own (the batch processor's thread is not a
//! tokio thread), retried as the OTLP specification asks — transport
//! errors and 429, 502, 503, 504, with exponential back-off and jitter, or
//! the receiver's `Retry-After` — all within the export timeout.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::config::OtlpConfig;

/// Retries after the first attempt.
const MAX_RETRIES: u32 = 3;
/// The first back-off; doubled per retry up to [`MAX_DELAY`].
const INITIAL_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_millis(1600);
/// At most this much random delay is added to a back-off.
const MAX_JITTER_MS: u64 = 100;
/// A receiver's `Retry-After` is honoured up to this long.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);
/// The most of a response body read (a partial-success message is small).
const MAX_RESPONSE: usize = 64 * 1024;

/// Why a batch was not delivered.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    /// No response: connection refused, reset, or the request could not be
    /// written.
    #[error("sending spans to {endpoint} failed: {reason}")]
    Transport { endpoint: String, reason: String },
    /// The receiver answered with an error status.
    #[error("the OTLP receiver at {endpoint} answered {status}: {body}")]
    Status {
        endpoint: String,
        status: StatusCode,
        retry_after: Option<Duration>,
        body: String,
    },
    /// The export timeout passed, retries included.
    #[error("sending spans to {endpoint} took longer than the export timeout of {timeout:?}")]
    Timeout { endpoint: String, timeout: Duration },
    /// The runtime the client needs could not be started.
    #[error("cannot start the OTLP exporter's runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

impl SendError {
    /// Whether OTLP/HTTP allows sending the same batch again.
    fn retryable(&self) -> bool {
        match self {
            SendError::Transport { .. } => true,
            SendError::Status { status, .. } => matches!(status.as_u16(), 429 | 502 | 503 | 504),
            SendError::Timeout { .. } | SendError::Runtime(_) => false,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            SendError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// What the receiver said about a batch it took.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Accepted {
    /// Spans the receiver dropped (an OTLP partial success).
    pub(crate) rejected_spans: i64,
    /// Why, when it said.
    pub(crate) message: String,
}

/// The HTTP client and its runtime.
#[derive(Debug)]
pub(crate) struct Transport {
    runtime: tokio::runtime::Runtime,
    client: Client<HttpConnector, Full<Bytes>>,
    config: OtlpConfig,
    content_type: HeaderValue,
}

impl Transport {
    pub(crate) fn new(config: OtlpConfig) -> Result<Self, SendError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("patron-otlp")
            .build()
            .map_err(SendError::Runtime)?;
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build_http();
        Ok(Transport {
            runtime,
            client,
            config,
            content_type: HeaderValue::from_static("application/x-protobuf"),
        })
    }

    /// Posts `body`, retrying what may be retried, within the timeout.
    /// Blocks the calling thread (the batch processor's).
    pub(crate) fn send(&self, body: Bytes) -> Result<Accepted, SendError> {
        let timeout = self.config.timeout;
        self.runtime.block_on(async {
            tokio::time::timeout(timeout, self.send_with_retries(body))
                .await
                .map_err(|_| SendError::Timeout {
                    endpoint: self.config.endpoint.to_string(),
                    timeout,
                })?
        })
    }

    async fn send_with_retries(&self, body: Bytes) -> Result<Accepted, SendError> {
        let mut delay = INITIAL_DELAY;
        let mut attempt = 0;
        loop {
            match self.send_once(body.clone()).await {
                Err(e) if attempt < MAX_RETRIES && e.retryable() => {
                    let jitter = Duration::from_millis(fastrand::u64(0..=MAX_JITTER_MS));
                    let wait = e
                        .retry_after()
                        .map_or(delay + jitter, |after| after.min(MAX_RETRY_AFTER));
                    tokio::time::sleep(wait).await;
                    delay = (delay * 2).min(MAX_DELAY);
                    attempt += 1;
                }
                done => return done,
            }
        }
    }

    async fn send_once(&self, body: Bytes) -> Result<Accepted, SendError> {
        let endpoint = &self.config.endpoint;
        let transport = |reason: String| SendError::Transport {
            endpoint: endpoint.to_string(),
            reason,
        };
        let mut request = Request::post(endpoint.clone())
            .body(Full::new(body))
            .map_err(|e| transport(e.to_string()))?;
        let headers = request.headers_mut();
        headers.insert(header::CONTENT_TYPE, self.content_type.clone());
        for (name, value) in &self.config.headers {
            headers.append(name, value.clone());
        }
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| transport(error_chain(&e)))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = Limited::new(response.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        if status.is_success() {
            return Ok(partial_success(&body));
        }
        Err(SendError::Status {
            endpoint: endpoint.to_string(),
            status,
            retry_after,
            body: String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned(),
        })
    }
}

/// An error and its sources, for a message that says why a connection
/// failed (hyper's own message is only "client error (Connect)").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Reads `ExportTraceServiceResponse.partial_success` (field 1:
/// `rejected_spans` int64 = 1, `error_message` string = 2). Anything it
/// cannot read counts as full success: the receiver said 2xx.
pub(crate) fn partial_success(body: &[u8]) -> Accepted {
    let mut accepted = Accepted::default();
    if let Some(inner) = fields(body).find_map(|(field, value)| match (field, value) {
        (1, Field::Len(inner)) => Some(inner),
        _ => None,
    }) {
        for (field, value) in fields(inner) {
            match (field, value) {
                (1, Field::Varint(n)) => accepted.rejected_spans = n as i64,
                (2, Field::Len(text)) => {
                    accepted.message = String::from_utf8_lossy(text).into_owned();
                }
                _ => {}
            }
        }
    }
    accepted
}

enum Field<'a> {
    Varint(u64),
    Len(&'a [u8]),
    Other,
}

/// The top-level fields of a protobuf message; stops at the first thing it
/// cannot read.
fn fields(mut buf: &[u8]) -> impl Iterator<Item = (u64, Field<'_>)> {
    std::iter::from_fn(move || {
        let key = read_varint(&mut buf)?;
        let value = match key & 7 {
            0 => Field::Varint(read_varint(&mut buf)?),
            1 => {
                buf = buf.get(8..)?;
                Field::Other
            }
            2 => {
                let len = usize::try_from(read_varint(&mut buf)?).ok()?;
                let (value, rest) = (buf.get(..len)?, buf.get(len..)?);
                buf = rest;
                Field::Len(value)
            }
            5 => {
                buf = buf.get(4..)?;
                Field::Other
            }
            _ => return None,
        };
        Some((key >> 3, value))
    })
}

fn read_varint(buf: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = buf.split_first()?;
        *buf = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_success_is_read() {
        // partial_success { rejected_spans: 300, error_message: "too big" }
        let mut inner = vec![0x08, 0xac, 0x02, 0x12, 7];
        inner.extend_from_slice(b"too big");
        let mut body = vec![0x0a, inner.len() as u8];
        body.extend_from_slice(&inner);
        assert_eq!(
            partial_success(&body),
            Accepted {
                rejected_spans: 300,
                message: "too big".into()
            }
        );
    }

    #[test]
    fn an_empty_or_unreadable_body_is_full_success() {
        assert_eq!(partial_success(b""), Accepted::default());
        assert_eq!(partial_success(&[0x0a, 0x50, 0x01]), Accepted::default());
        assert_eq!(partial_success(b"{\"json\":true}"), Accepted::default());
    }

    #[test]
    fn only_what_otlp_allows_is_retried() {
        let status = |code: u16| SendError::Status {
            endpoint: "http://c/v1/traces".into(),
            status: StatusCode::from_u16(code).unwrap(),
            retry_after: None,
            body: String::new(),
        };
        for code in [429, 502, 503, 504] {
            assert!(status(code).retryable(), "{code}");
        }
        for code in [400, 401, 404, 413, 500] {
            assert!(!status(code).retryable(), "{code}");
        }
        let refused = SendError::Transport {
            endpoint: "http://c".into(),
            reason: "connection refused".into(),
        };
        assert!(refused.retryable());
    }
}
