//! Extractor rejections for generated handlers: axum's plain-text rejections (malformed JSON, wrong content type,
//! body too large, bad path or query) become problem bodies with the same
//! status and message.

use axum::response::{IntoResponse, Response};
use http::header;

use crate::error::{PROBLEM_JSON, problem};

/// Renders an extractor's rejection as a problem body.
#[doc(hidden)]
pub async fn rejection(rejection: impl IntoResponse) -> Response {
    to_problem(rejection.into_response()).await
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
        parts
            .status
            .canonical_reason()
            .unwrap_or("request rejected")
            .to_string()
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
