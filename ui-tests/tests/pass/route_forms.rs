//! Every route argument, extractor kind and return form compiles.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use patron::prelude::*;

#[derive(Deserialize, Serialize, schemars::JsonSchema)]
struct Item {
    name: String,
}

struct Store;

async fn first(req: Request, next: Next) -> Response {
    next.run(req).await
}

async fn second(req: Request, next: Next) -> Response {
    next.run(req).await
}

#[patron::route(GET "/")]
async fn root() -> &'static str {
    "root"
}

#[patron::route(POST "/items/{id}/tags/{tag}", auth = ApiKey, middleware = [first, second], trace = false, timeout = "1m30s", body_limit = "512KiB",)]
async fn tag(Path((id, tag)): Path<(u32, String)>, _store: Dep<Store>, headers: HeaderMap, Json(item): Json<Item>) -> Result<Json<Item>, patron::Error> {
    let _ = (id, tag, headers);
    Ok(Json(item))
}

#[patron::route(PUT "/files/{*path}")]
async fn file(Path(path): Path<String>) -> impl IntoResponse {
    (StatusCode::CREATED, path)
}

#[patron::route(PATCH "/a")]
async fn patch() -> StatusCode {
    StatusCode::NO_CONTENT
}

#[patron::route(DELETE "/a")]
async fn delete() {}

#[patron::route(HEAD "/a")]
async fn head() {}

#[patron::route(OPTIONS "/a")]
async fn options(id: CorrelationId) -> String {
    id.as_str().to_string()
}

pub mod nested {
    #[patron::route(GET "/nested")]
    pub async fn nested() -> &'static str {
        "nested"
    }
}

fn main() {
    // Handlers stay plain functions.
    let _ = root();
    let _ = nested::nested();
}
