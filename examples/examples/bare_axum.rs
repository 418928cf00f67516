//! The benchmark baseline: bare axum serving the same handler bodies as the
//! `hello` example on `GET /index` and `POST /calculate`, with no
//! middleware. Port from `PATRON_HTTP_DEFAULT_PORT` (50001).

use axum::Json;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Calc {
    wealth: f64,
    nisab: f64,
}

#[derive(Serialize)]
struct Zakat {
    wealth: f64,
    nisab: f64,
    zakat_due: f64,
    is_eligible: bool,
}

async fn index() -> &'static str {
    "hello from patron"
}

async fn calculate(Json(c): Json<Calc>) -> Json<Zakat> {
    let is_eligible = c.wealth >= c.nisab;
    let zakat_due = if is_eligible {
        (c.wealth - c.nisab) * 0.025
    } else {
        0.0
    };
    Json(Zakat {
        wealth: c.wealth,
        nisab: c.nisab,
        zakat_due,
        is_eligible,
    })
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::var("PATRON_HTTP_DEFAULT_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(50001);
    let app = axum::Router::new()
        .route("/index", get(index))
        .route("/calculate", post(calculate));
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port)).await?;
    axum::serve(listener, app).await
}
