//! `Ext<T>`: the wrapper generated handlers use around each extractor so
//! that axum's plain-text rejections (malformed JSON, wrong content type,
//! body too large, bad path or query) become problem bodies with the same
//! status and message.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::header;

use crate::deps::AppState;
use crate::error::{PROBLEM_JSON, problem};

/// An extractor whose rejection is rendered as a problem body.
#[doc(hidden)]
pub struct Ext<T>(pub T);

impl<T: FromRequestParts<AppState>> FromRequestParts<AppState> for Ext<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let rejection = match T::from_request_parts(parts, state).await {
            Ok(v) => return Ok(Ext(v)),
            Err(rejection) => rejection.into_response(),
        };
        Err(to_problem(rejection).await)
    }
}

impl<T: FromRequest<AppState>> FromRequest<AppState> for Ext<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Response> {
        let rejection = match T::from_request(req, state).await {
            Ok(v) => return Ok(Ext(v)),
            Err(rejection) => rejection.into_response(),
        };
        Err(to_problem(rejection).await)
    }
}

/// Turns a rejection response into a problem body, keeping its status and
/// using its text as the detail. Problem bodies pass through unchanged.
async fn to_problem(response: Response) -> Response {
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    if is_problem || response.status().is_success() {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, 16 * 1024).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_string(),
        Err(_) => String::new(),
    };
    let detail = if text.is_empty() {
        parts.status.canonical_reason().unwrap_or("request rejected").to_string()
    } else {
        text
    };
    let mut out = problem(parts.status, &detail, Default::default());
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}

impl<T> std::fmt::Debug for Ext<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ext(..)")
    }
}

