// The OpenAPI keys and a doc comment, with or without the `openapi` feature.
use patron::prelude::*;

#[derive(Deserialize, schemars::JsonSchema)]
struct Rename {
    to: String,
}

/// Rename a user.
///
/// The new name must be unique.
#[patron::route(PATCH "/users/{id}", summary = "Rename a user", tags = ["users", "admin"], deprecated = true)]
async fn rename(Path(id): Path<u32>, Json(body): Json<Rename>) -> (StatusCode, String) {
    (StatusCode::ACCEPTED, format!("{id} -> {}", body.to))
}

/// Internal: not in the document.
#[patron::route(GET "/internal", openapi = false)]
async fn internal() -> impl axum::response::IntoResponse {
    "internal"
}

fn main() {}
