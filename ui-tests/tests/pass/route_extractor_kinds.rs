//! Every kind of argument in every position: head-only extractors first and
//! last, body extractors last, `Dep<T>`, and `impl IntoResponse` returns.
use patron::prelude::*;

struct Store;

#[patron::route(GET "/a/{id}")]
async fn head_only_last(Path(id): Path<u32>, method: Method) -> String {
    format!("{id} {method}")
}

#[patron::route(POST "/b")]
async fn body_last(_store: Dep<Store>, id: CorrelationId, body: String) -> impl axum::response::IntoResponse {
    patron::tracing::info!(%body, "received");
    (StatusCode::CREATED, id.as_str().to_string())
}

#[patron::route(POST "/c")]
async fn request_last(headers: HeaderMap, request: axum::extract::Request) -> Result<String, patron::Error> {
    Ok(format!("{} {}", headers.len(), request.uri()))
}

fn main() {}
