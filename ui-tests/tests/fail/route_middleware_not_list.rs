async fn audit(req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    next.run(req).await
}

#[patron::route(GET "/index", middleware = audit)]
async fn index() -> &'static str {
    "hello"
}

fn main() {}
