use patron::prelude::*;

#[patron::route(POST "/index")]
async fn index(body: String, raw: axum::body::Bytes, headers: HeaderMap) -> String {
    format!("{body} {} {}", raw.len(), headers.len())
}

fn main() {}
