//! `patron::Error`: the one error type of handlers, components and `main`.
//!
//! It wraps any `std::error::Error` so `?` works everywhere, carries an HTTP
//! status, and renders as an RFC 9457 `application/problem+json` body. Server
//! errors (5xx) never leak their internal cause to the client: the cause is
//! logged with the request's correlation id and the body says only what
//! failed.

use std::borrow::Cow;
use std::error::Error as StdError;
use std::fmt;

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::{Map, Value};

/// `Result` with [`Error`] as the error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The media type of problem bodies (RFC 9457).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An error with an HTTP status and a client-facing detail.
///
/// Build one with a constructor such as [`Error::bad_request`], or convert any
/// error with `?` (that gives a 500 whose cause is logged, not sent).
pub struct Error {
    status: StatusCode,
    detail: Option<Cow<'static, str>>,
    problem_type: Option<Cow<'static, str>>,
    extensions: Option<Box<Map<String, Value>>>,
    source: Option<Box<dyn StdError + Send + Sync + 'static>>,
}

impl Error {
    /// An error with the given status and client-facing detail.
    pub fn new(status: StatusCode, detail: impl Into<Cow<'static, str>>) -> Self {
        Error {
            status,
            detail: Some(detail.into()),
            problem_type: None,
            extensions: None,
            source: None,
        }
    }

    /// A 500 error from a message, for failures that have no error value.
    pub fn msg(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// 400 Bad Request.
    pub fn bad_request(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }

    /// 401 Unauthorized.
    pub fn unauthorized(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, detail)
    }

    /// 403 Forbidden.
    pub fn forbidden(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::FORBIDDEN, detail)
    }

    /// 404 Not Found.
    pub fn not_found(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }

    /// 409 Conflict.
    pub fn conflict(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::CONFLICT, detail)
    }

    /// 422 Unprocessable Content, for input that parses but is not valid.
    pub fn unprocessable(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, detail)
    }

    /// 500 Internal Server Error. The detail is sent to the client.
    pub fn internal(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, detail)
    }

    /// 503 Service Unavailable.
    pub fn unavailable(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, detail)
    }

    /// Attaches the underlying cause. It is logged and shown by `Display`, and
    /// for 4xx errors without a detail it becomes the detail.
    pub fn with_source(
        mut self,
        source: impl Into<Box<dyn StdError + Send + Sync + 'static>>,
    ) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Sets the problem `type` URI (defaults to `about:blank`).
    pub fn with_type(mut self, uri: impl Into<Cow<'static, str>>) -> Self {
        self.problem_type = Some(uri.into());
        self
    }

    /// Adds a member to the problem body, e.g. the field that failed validation.
    pub fn with_extension(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.extensions
            .get_or_insert_with(Default::default)
            .insert(key.into(), value.into());
        self
    }

    /// Changes the status, keeping detail and cause.
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// The HTTP status this error renders with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The client-facing detail, if one was given.
    pub fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }

    /// The underlying cause, if any.
    pub fn source_error(&self) -> Option<&(dyn StdError + Send + Sync + 'static)> {
        self.source.as_deref()
    }

    fn public_detail(&self) -> String {
        if let Some(d) = &self.detail {
            return d.to_string();
        }
        match (&self.source, self.status.is_server_error()) {
            (Some(source), false) => chain(source.as_ref()),
            _ => "the server failed to process the request; the cause is logged under this request's correlation id".to_string(),
        }
    }
}

fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut out = err.to_string();
    let mut next = err.source();
    while let Some(e) = next {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = e.source();
    }
    out
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.detail, &self.source) {
            (Some(d), Some(s)) => write!(f, "{d}: {}", chain(s.as_ref())),
            (Some(d), None) => f.write_str(d),
            (None, Some(s)) => f.write_str(&chain(s.as_ref())),
            (None, None) => f.write_str(self.status.canonical_reason().unwrap_or("error")),
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("status", &self.status.as_u16())
            .field("message", &self.to_string())
            .finish()
    }
}

impl<E> From<E> for Error
where
    E: StdError + Send + Sync + 'static,
{
    fn from(err: E) -> Self {
        Error {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            detail: None,
            problem_type: None,
            extensions: None,
            source: Some(Box::new(err)),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = self.status.as_u16(), error = %self, "request failed");
        }
        let mut body = Map::new();
        if let Some(t) = &self.problem_type {
            body.insert("type".into(), Value::String(t.to_string()));
        }
        let detail = self.public_detail();
        let mut response = problem_parts(self.status, &detail, body);
        if let (Some(ext), Some(obj)) = (self.extensions, response.1.as_object_mut()) {
            for (k, v) in *ext {
                obj.entry(k).or_insert(v);
            }
        }
        render(response.0, &response.1)
    }
}

fn problem_parts(
    status: StatusCode,
    detail: &str,
    mut body: Map<String, Value>,
) -> (StatusCode, Value) {
    body.insert(
        "title".into(),
        Value::String(status.canonical_reason().unwrap_or("Error").to_string()),
    );
    body.insert("status".into(), Value::from(status.as_u16()));
    body.insert("detail".into(), Value::String(detail.to_string()));
    (status, Value::Object(body))
}

fn render(status: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = (status, bytes).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    response
}

/// A problem response with a status and detail, plus extra members.
pub(crate) fn problem(status: StatusCode, detail: &str, extra: Map<String, Value>) -> Response {
    let (status, body) = problem_parts(status, detail, extra);
    render(status, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_hide_their_cause() {
        let io = std::io::Error::other("disk on fire at /secret/path");
        let err: Error = io.into();
        assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(err.to_string().contains("disk on fire"));
        assert!(!err.public_detail().contains("disk on fire"));
    }

    #[test]
    fn client_errors_show_detail_and_cause() {
        let err = Error::bad_request("bad id").with_source(std::io::Error::other("not a number"));
        assert_eq!(err.to_string(), "bad id: not a number");
        assert_eq!(err.public_detail(), "bad id");
    }
}
