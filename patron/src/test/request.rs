//! Requests a [`TestServer`](super::TestServer) sends to itself: one HTTP/1.1
//! connection per request, so a test sees exactly what a client would —
//! status, headers (the correlation id, `Connection: close` while
//! draining) and body.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::pin::Pin;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;

use crate::context::X_CORRELATION_ID;
use crate::error::Error;

/// A request being built; awaiting it sends it (or call [`send`](Self::send)).
#[derive(Debug)]
#[must_use = "a request is sent only when awaited"]
pub struct TestRequest {
    addr: SocketAddr,
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Bytes,
    /// The first thing that made the request unsendable (a bad header, a
    /// body that would not serialize), reported by `send`.
    invalid: Option<String>,
}

impl TestRequest {
    pub(super) fn new(addr: SocketAddr, method: Method, path: &str) -> Self {
        TestRequest {
            addr,
            method,
            path: path.to_string(),
            headers: HeaderMap::new(),
            body: Bytes::new(),
            invalid: None,
        }
    }

    /// Adds the header `name: value`.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        match (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            (Ok(name), Ok(value)) => {
                self.headers.append(name, value);
            }
            _ => self.invalid(format!(
                "the header {name:?}: {value:?} is not a valid HTTP header"
            )),
        }
        self
    }

    /// Adds `Authorization: Apikey <key>`, what [`ApiKey`](crate::http::ApiKey)
    /// checks.
    pub fn api_key(self, key: &str) -> Self {
        self.header(AUTHORIZATION.as_str(), &format!("Apikey {key}"))
    }

    /// Sets the `X-Correlation-Id` header.
    pub fn correlation_id(self, id: &str) -> Self {
        self.header(X_CORRELATION_ID.as_str(), id)
    }

    /// Sends `body` serialized as JSON, with `Content-Type: application/json`.
    pub fn json(mut self, body: &impl Serialize) -> Self {
        match serde_json::to_vec(body) {
            Ok(bytes) => {
                self.body = bytes.into();
                self.headers
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            }
            Err(e) => self.invalid(format!("the JSON body does not serialize: {e}")),
        }
        self
    }

    /// Sends `body` as it is (set a `Content-Type` with [`header`](Self::header)).
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// Sends the request and reads the whole response.
    pub async fn send(self) -> Result<TestResponse, Error> {
        let what = format!("{} {}", self.method, self.path);
        let fail = |e: String| Error::msg(format!("test request {what}: {e}"));
        if let Some(invalid) = self.invalid {
            return Err(fail(invalid));
        }
        let stream = TcpStream::connect(self.addr)
            .await
            .map_err(|e| fail(format!("cannot connect to {}: {e}", self.addr)))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| fail(format!("HTTP handshake failed: {e}")))?;
        let driver = tokio::spawn(connection);
        let mut request = http::Request::builder()
            .method(self.method)
            .uri(&self.path)
            .body(Full::new(self.body))
            .map_err(|e| fail(format!("not a valid request: {e}")))?;
        *request.headers_mut() = self.headers;
        // The server's address, unless the test set a Host of its own.
        if !request.headers().contains_key(HOST) {
            let host = HeaderValue::try_from(self.addr.to_string())
                .map_err(|e| fail(format!("not a valid Host header: {e}")))?;
            request.headers_mut().insert(HOST, host);
        }
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| fail(format!("no response: {e}")))?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| fail(format!("reading the response body failed: {e}")))?
            .to_bytes();
        drop(sender);
        driver.abort();
        Ok(TestResponse {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    fn invalid(&mut self, why: String) {
        self.invalid.get_or_insert(why);
    }
}

impl IntoFuture for TestRequest {
    type Output = Result<TestResponse, Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.send())
    }
}

/// A response a [`TestServer`](super::TestServer) gave, read whole.
#[derive(Debug, Clone)]
pub struct TestResponse {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl TestResponse {
    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// Every header.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The first value of the header `name`, when it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body's bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.body
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON into `T`; the error quotes the body.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body).map_err(|e| {
            Error::msg(format!(
                "the {} response body is not the JSON expected ({e}): {}",
                self.status,
                self.text()
            ))
        })
    }
}
