//! [`HttpClient`]: an instrumented HTTP client over reqwest.
//!
//! - Propagates `traceparent`, `baggage` and `X-Correlation-Id` from the
//!   current request or message, so the callee's logs and traces join the
//!   caller's.
//! - A client span (`otel.kind = client`, method, URL, status) and
//!   `http_client_request_duration_seconds{http_request_method,
//!   server_address, http_response_status_code}` (status `error` when no
//!   response came back).
//! - A 60 s timeout by default; gzip, deflate, brotli and zstd responses are
//!   decompressed transparently.
//! - Optional [`Retry`]: by default only idempotent methods (GET, HEAD,
//!   OPTIONS, PUT, DELETE, TRACE), only connect errors and 502, 503, 504 and
//!   429, honouring `Retry-After` (seconds or an HTTP date). Optional
//!   [`CircuitBreaker`], counting transport errors and 5xx as failures (Go
//!   Patron counted transport errors only); an open circuit fails fast with
//!   no network I/O. Optional outbound [`RateLimit`] (waits for a token).
//! - Errors name the method, the URL without credentials and the cause.
//! - With service discovery (feature `discovery`, `PATRON_DISCOVERY`), a URL
//!   whose host is `{service}.discover` goes to one of that service's
//!   healthy instances, balanced by the power of two choices; a request
//!   that could not connect — or an idempotent one that lost its
//!   connection — is tried on another instance (up to three), and an
//!   instance that refuses connections three times in a row is left out
//!   for 15 s. See [`crate::discovery`].
//!
//! The client is a plain value: build it in `main`, `provide` it, take it
//! as `Dep<HttpClient>`.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue, Method, StatusCode};
use prometheus::HistogramVec;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use crate::error::Error;
use crate::observe::metrics;
use crate::reliability::retry::Next;
use crate::reliability::{CircuitBreaker, CircuitOpen, RateLimit, Retry};

/// Default request timeout, as Go's `http.Client` in Patron.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The circuit breaker refused the call; nothing was sent.
    #[error("{method} {url}: {source}")]
    Open {
        /// The method.
        method: Method,
        /// The URL, without credentials.
        url: String,
        /// The breaker's refusal.
        source: CircuitOpen,
    },
    /// No response: connecting, sending or reading failed, or it timed out.
    #[error("{method} {url}: {source}")]
    Transport {
        /// The method.
        method: Method,
        /// The URL, without credentials.
        url: String,
        /// reqwest's error.
        source: reqwest::Error,
    },
    /// The response had an error status (from the JSON helpers).
    #[error("{method} {url}: the server answered {status}: {body}")]
    Status {
        /// The method.
        method: Method,
        /// The URL, without credentials.
        url: String,
        /// The status.
        status: StatusCode,
        /// The start of the response body.
        body: String,
    },
    /// No instance of the service a `….discover` URL names could be
    /// picked (feature `discovery`).
    #[cfg(feature = "discovery")]
    #[error("{method} {url}: {source}")]
    Discovery {
        /// The method.
        method: Method,
        /// The URL, without credentials.
        url: String,
        /// Why no instance.
        source: Box<crate::discovery::DiscoveryError>,
    },
    /// The request could not be built (a bad URL or header).
    #[error("{method} {url}: cannot build the request: {reason}")]
    Request {
        /// The method.
        method: Method,
        /// The URL as given, without credentials when it parsed.
        url: String,
        /// What was wrong.
        reason: String,
    },
    /// The response body was not the expected JSON.
    #[error("{method} {url}: the response is not the expected JSON: {source}")]
    Decode {
        /// The method.
        method: Method,
        /// The URL, without credentials.
        url: String,
        /// The decoding error.
        source: reqwest::Error,
    },
}

/// Which failed attempts a client with a [`Retry`] tries again.
#[derive(Debug, Clone, Copy)]
pub struct RetryOn {
    /// Retry non-idempotent methods (POST, PATCH) too. Off by default: the
    /// first attempt may have had its effect.
    pub any_method: bool,
}

/// An instrumented HTTP client; cheap to clone.
///
/// ```no_run
/// use std::time::Duration;
/// use patron::client::http::HttpClient;
/// use patron::reliability::{CircuitBreaker, Retry};
///
/// # async fn run() -> Result<(), patron::Error> {
/// #[derive(serde::Deserialize)]
/// struct Invoice { total: u64 }
///
/// let invoices = HttpClient::builder()
///     .timeout(Duration::from_secs(5))
///     .retry(Retry::new(3).max_elapsed(Duration::from_secs(4)))
///     .circuit_breaker(CircuitBreaker::new("invoices").failure_ratio(0.6, 3, Duration::from_secs(10)))
///     .build()?;
/// let invoice: Invoice = invoices.get_json("http://invoices:50000/invoices/7").await?;
/// # let _ = invoice.total;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct HttpClient {
    inner: reqwest::Client,
    retry: Option<(Retry, RetryOn)>,
    breaker: Option<CircuitBreaker>,
    limit: Option<RateLimit>,
    #[cfg(feature = "discovery")]
    discovery: Option<crate::discovery::Discovery>,
}

/// Managed by the service with `with_client`: no readiness check (a peer
/// being down is the caller's concern, not this service's), nothing to
/// flush at shutdown — idle connections close with the client.
impl crate::client::Client for HttpClient {
    fn name(&self) -> String {
        "http client".to_string()
    }
}

/// Builds an [`HttpClient`].
#[derive(Debug)]
pub struct HttpClientBuilder {
    inner: reqwest::ClientBuilder,
    retry: Option<(Retry, RetryOn)>,
    breaker: Option<CircuitBreaker>,
    limit: Option<RateLimit>,
    #[cfg(feature = "discovery")]
    discovery: Option<crate::discovery::Discovery>,
}

impl HttpClientBuilder {
    /// The whole-request timeout (60 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.inner = self.inner.timeout(timeout);
        self
    }

    /// The connect timeout (none beyond the request timeout by default).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.inner = self.inner.connect_timeout(timeout);
        self
    }

    /// Retries idempotent requests on connect errors, 502, 503, 504 and
    /// 429 (honouring `Retry-After`).
    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = Some((retry, RetryOn { any_method: false }));
        self
    }

    /// Like [`retry`](Self::retry), with the methods widened by `on`.
    pub fn retry_on(mut self, retry: Retry, on: RetryOn) -> Self {
        self.retry = Some((retry, on));
        self
    }

    /// Guards every call with `breaker`: transport errors and 5xx count as
    /// failures, an open circuit fails fast.
    pub fn circuit_breaker(mut self, breaker: CircuitBreaker) -> Self {
        self.breaker = Some(breaker);
        self
    }

    /// Waits for a token of `limit` before each attempt.
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Resolves `http://{service}.discover/…` URLs through `discovery`
    /// (by default, the registry `PATRON_DISCOVERY` names, shared by every
    /// client of the process).
    #[cfg(feature = "discovery")]
    pub fn discovery(mut self, discovery: crate::discovery::Discovery) -> Self {
        self.discovery = Some(discovery);
        self
    }

    /// Any other reqwest setting (proxy, TLS roots, default headers…).
    pub fn configure(
        mut self,
        f: impl FnOnce(reqwest::ClientBuilder) -> reqwest::ClientBuilder,
    ) -> Self {
        self.inner = f(self.inner);
        self
    }

    /// The client.
    pub fn build(self) -> Result<HttpClient, Error> {
        let inner = self
            .inner
            .build()
            .map_err(|e| Error::msg(format!("cannot build the HTTP client: {e}")))?;
        #[cfg(feature = "discovery")]
        let discovery = match self.discovery {
            Some(d) => Some(d),
            None => crate::discovery::Discovery::shared_from_env()
                .map_err(|e| Error::msg(format!("cannot build the HTTP client: {e}")))?,
        };
        Ok(HttpClient {
            inner,
            retry: self.retry,
            breaker: self.breaker,
            limit: self.limit,
            #[cfg(feature = "discovery")]
            discovery,
        })
    }
}

impl HttpClient {
    /// A client with the defaults: 60 s timeout, no retry, no breaker.
    pub fn new() -> Result<Self, Error> {
        Self::builder().build()
    }

    /// A builder, for timeouts, retry, circuit breaker and rate limit.
    pub fn builder() -> HttpClientBuilder {
        HttpClientBuilder {
            inner: reqwest::Client::builder()
                .timeout(DEFAULT_TIMEOUT)
                .user_agent(concat!("patron/", env!("CARGO_PKG_VERSION"))),
            retry: None,
            breaker: None,
            limit: None,
            #[cfg(feature = "discovery")]
            discovery: None,
        }
    }

    /// The reqwest client underneath, for requests that need none of the
    /// instrumentation.
    pub fn reqwest(&self) -> &reqwest::Client {
        &self.inner
    }

    /// Starts a request; finish it with [`send`](Self::send).
    pub fn request(&self, method: Method, url: &str) -> reqwest::RequestBuilder {
        self.inner.request(method, url)
    }

    /// Sends a request built with [`request`](Self::request) (or any reqwest
    /// builder of this client), with propagation, span, metric, retry,
    /// breaker and rate limit. Any status is `Ok`: check
    /// `response.status()`.
    pub async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, HttpError> {
        let request = request.build().map_err(|e| HttpError::Request {
            method: Method::GET,
            url: e.url().map(redact).unwrap_or_default(),
            reason: e.to_string(),
        })?;
        let method = request.method().clone();
        let url = redact(request.url());
        // A body that cannot be cloned (a stream) gets one attempt.
        let retry = self
            .retry
            .as_ref()
            .filter(|(_, on)| on.any_method || is_idempotent(&method))
            .map(|(r, _)| r)
            .filter(|_| request.try_clone().is_some());
        let Some(retry) = retry else {
            return self.attempt(request, &method, &url).await;
        };
        let (method, url) = (&method, url.as_str());
        retry
            .run_with(
                |_| {
                    // Cloneable: checked above.
                    let this = request.try_clone();
                    async move {
                        match this {
                            Some(this) => self.attempt(this, method, url).await,
                            None => Err(HttpError::Request {
                                method: method.clone(),
                                url: url.to_string(),
                                reason: "the body cannot be sent twice".into(),
                            }),
                        }
                    }
                },
                |result| match result {
                    Err(HttpError::Transport { source, .. }) if source.is_connect() => {
                        Next::Retry(None)
                    }
                    Ok(response) if retryable_status(response.status()) => {
                        Next::Retry(retry_after(response.headers()))
                    }
                    _ => Next::Done,
                },
            )
            .await
    }

    /// One attempt as the retry sees it: waits for the rate limit, asks
    /// the breaker, then sends to the URL's host or, for a `….discover`
    /// host, to the service's instances in turn.
    async fn attempt(
        &self,
        request: reqwest::Request,
        method: &Method,
        url: &str,
    ) -> Result<reqwest::Response, HttpError> {
        if let Some(limit) = &self.limit {
            limit.until_ready().await;
        }
        let permit = match &self.breaker {
            Some(b) => Some(b.try_acquire().map_err(|source| HttpError::Open {
                method: method.clone(),
                url: url.to_string(),
                source,
            })?),
            None => None,
        };
        let result = match request.url().host_str().and_then(super::logical_service) {
            Some(service) => {
                let service = service.to_string();
                self.balanced(&service, request, method, url).await
            }
            None => self.execute(request, method, url).await,
        };
        if let Some(permit) = permit {
            match &result {
                Ok(r) if !r.status().is_server_error() => permit.success(),
                _ => permit.failure(),
            }
        }
        result
    }

    /// Sends `request` to the service's instances: another one (up to
    /// [`MAX_INSTANCES`] in all) when it could not connect, or when an
    /// idempotent request lost its connection.
    #[cfg(feature = "discovery")]
    async fn balanced(
        &self,
        service: &str,
        mut request: reqwest::Request,
        method: &Method,
        url: &str,
    ) -> Result<reqwest::Response, HttpError> {
        let Some(discovery) = &self.discovery else {
            return Err(HttpError::Request {
                method: method.clone(),
                url: url.to_string(),
                reason: format!(
                    "the host names the service {service:?}, but no registry is configured: set PATRON_DISCOVERY or give HttpClientBuilder::discovery"
                ),
            });
        };
        let mut tried: Vec<String> = Vec::new();
        let mut last = None;
        loop {
            let picked = match discovery.pick(service, &tried).await {
                Ok(p) => p,
                Err(source) => {
                    return last.unwrap_or_else(|| {
                        Err(HttpError::Discovery {
                            method: method.clone(),
                            url: url.to_string(),
                            source: Box::new(source),
                        })
                    });
                }
            };
            let spare = if tried.len() + 1 < MAX_INSTANCES {
                request.try_clone()
            } else {
                None
            };
            let mut this = request;
            point_at(&mut this, picked.instance());
            let result = self.execute(this, method, url).await;
            let elsewhere = match &result {
                Err(HttpError::Transport { source, .. }) if source.is_connect() => {
                    picked.unreachable();
                    true
                }
                Err(HttpError::Transport { source, .. }) => {
                    is_idempotent(method) && !source.is_timeout()
                }
                _ => {
                    picked.reached();
                    false
                }
            };
            match spare {
                Some(next) if elsewhere => {
                    let i = picked.instance();
                    tracing::debug!(service, instance = %i.id, address = %i.address, port = i.http_port, "trying another instance");
                    tried.push(i.id.clone());
                    request = next;
                    last = Some(result);
                }
                _ => return result,
            }
        }
    }

    #[cfg(not(feature = "discovery"))]
    async fn balanced(
        &self,
        service: &str,
        _request: reqwest::Request,
        method: &Method,
        url: &str,
    ) -> Result<reqwest::Response, HttpError> {
        Err(HttpError::Request {
            method: method.clone(),
            url: url.to_string(),
            reason: format!(
                "the host names the service {service:?}, which needs patron's `discovery` feature"
            ),
        })
    }

    /// Sends one request as it is: propagation, span, metric.
    async fn execute(
        &self,
        mut request: reqwest::Request,
        method: &Method,
        url: &str,
    ) -> Result<reqwest::Response, HttpError> {
        let server = request.url().host_str().unwrap_or_default().to_string();
        let span = tracing::debug_span!(
            "HTTP client request",
            otel.name = %method,
            otel.kind = "client",
            http.request.method = %method,
            url.full = %url,
            server.address = %server,
            http.response.status_code = tracing::field::Empty,
        );
        // Inside the span, so the propagated parent is the client span.
        span.in_scope(|| inject_into(request.headers_mut()));
        let started = std::time::Instant::now();
        let result = self.inner.execute(request).instrument(span.clone()).await;
        let status = match &result {
            Ok(r) => {
                span.record("http.response.status_code", r.status().as_u16());
                r.status().as_str().to_string()
            }
            Err(_) => "error".to_string(),
        };
        if let Some(h) = duration_histogram() {
            h.with_label_values(&[method.as_str(), server.as_str(), status.as_str()])
                .observe(started.elapsed().as_secs_f64());
        }
        result.map_err(|source| HttpError::Transport {
            method: method.clone(),
            url: url.to_string(),
            source: source.without_url(),
        })
    }

    /// GETs `url` and decodes the JSON body; a non-2xx status is an
    /// [`HttpError::Status`].
    pub async fn get_json<T: DeserializeOwned>(&self, url: &str) -> Result<T, HttpError> {
        let response = check_status(
            self.send(self.request(Method::GET, url)).await?,
            &Method::GET,
        )
        .await?;
        decode(response, Method::GET).await
    }

    /// POSTs `body` as JSON to `url` and decodes the JSON answer; a non-2xx
    /// status is an [`HttpError::Status`].
    pub async fn post_json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        url: &str,
        body: &B,
    ) -> Result<T, HttpError> {
        let request = self.request(Method::POST, url).json(body);
        let response = check_status(self.send(request).await?, &Method::POST).await?;
        decode(response, Method::POST).await
    }

    /// PUTs `body` as JSON to `url` and decodes the JSON answer; a non-2xx
    /// status is an [`HttpError::Status`]. PUT is idempotent, so a
    /// configured retry applies to it.
    pub async fn put_json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        url: &str,
        body: &B,
    ) -> Result<T, HttpError> {
        let request = self.request(Method::PUT, url).json(body);
        let response = check_status(self.send(request).await?, &Method::PUT).await?;
        decode(response, Method::PUT).await
    }
}

/// A non-2xx response as [`HttpError::Status`], with the start of its body.
async fn check_status(
    response: reqwest::Response,
    method: &Method,
) -> Result<reqwest::Response, HttpError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let url = redact(response.url());
    let mut body = response.text().await.unwrap_or_default();
    if body.len() > 512 {
        let mut end = 512;
        while !body.is_char_boundary(end) {
            end -= 1;
        }
        body.truncate(end);
        body.push('…');
    }
    Err(HttpError::Status {
        method: method.clone(),
        url,
        status,
        body,
    })
}

async fn decode<T: DeserializeOwned>(
    response: reqwest::Response,
    method: Method,
) -> Result<T, HttpError> {
    let url = redact(response.url());
    response.json().await.map_err(|source| HttpError::Decode {
        method,
        url,
        source,
    })
}

fn inject_into(headers: &mut HeaderMap) {
    let mut propagated = HeaderMap::new();
    crate::observe::trace::inject(&mut propagated);
    for (name, value) in &propagated {
        if !headers.contains_key(name) {
            headers.insert(name.clone(), value.clone());
        }
    }
}

/// The URL without user name and password.
fn redact(url: &reqwest::Url) -> String {
    let mut url = url.clone();
    if !url.username().is_empty() || url.password().is_some() {
        let _ = url.set_username("");
        let _ = url.set_password(None);
    }
    url.to_string()
}

/// How many instances one attempt of a discovered request tries.
#[cfg(feature = "discovery")]
const MAX_INSTANCES: usize = 3;

/// Points `request` at `instance`'s HTTP port.
#[cfg(feature = "discovery")]
fn point_at(request: &mut reqwest::Request, instance: &crate::discovery::Instance) {
    let url = request.url_mut();
    match instance.address.parse::<std::net::IpAddr>() {
        Ok(ip) => {
            let _ = url.set_ip_host(ip);
        }
        Err(_) => {
            let _ = url.set_host(Some(&instance.address));
        }
    }
    let _ = url.set_port(Some(instance.http_port));
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

fn retryable_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 502 | 503 | 504)
}

/// `Retry-After` as a wait: seconds, or an HTTP date from now.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value: &HeaderValue = headers.get(http::header::RETRY_AFTER)?;
    let text = value.to_str().ok()?.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(text).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

fn duration_histogram() -> Option<&'static HistogramVec> {
    static HISTOGRAM: OnceLock<Option<HistogramVec>> = OnceLock::new();
    metrics::global().duration_histogram(
        &HISTOGRAM,
        "http_client_request_duration_seconds",
        "Duration of HTTP client requests, retries counted one by one.",
        &[
            "http_request_method",
            "server_address",
            "http_response_status_code",
        ],
    )
}
