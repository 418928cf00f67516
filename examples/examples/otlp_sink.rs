//! A minimal OTLP/HTTP trace receiver for benchmarks: accepts
//! `POST /v1/traces`, counts requests and bytes, and answers 200. Port from
//! `PATRON_HTTP_DEFAULT_PORT` (4318).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Bytes;
use axum::routing::{get, post};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::var("PATRON_HTTP_DEFAULT_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(4318);
    let requests = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let (r, b) = (requests.clone(), bytes.clone());
    let app = axum::Router::new()
        .route(
            "/v1/traces",
            post(move |body: Bytes| {
                r.fetch_add(1, Ordering::Relaxed);
                b.fetch_add(body.len() as u64, Ordering::Relaxed);
                async { axum::http::StatusCode::OK }
            }),
        )
        .route(
            "/stats",
            get(move || {
                let text = format!(
                    "{} export requests, {} bytes\n",
                    requests.load(Ordering::Relaxed),
                    bytes.load(Ordering::Relaxed)
                );
                async move { text }
            }),
        );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    axum::serve(listener, app).await
}
