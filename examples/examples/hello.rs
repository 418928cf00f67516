//! The default example service.
//!
//! - `GET /index` answers a greeting;
//! - `POST /calculate` takes `{"wealth": f64, "nisab": f64}` and returns the
//!   zakat due: (wealth − nisab) × 2.5 % when wealth reaches the nisab;
//! - `GET /secret` needs `Authorization: Apikey <key>`, with keys from
//!   `PATRON_API_KEYS` (comma-separated; `demo-key` when unset, with a warning).
//!
//! Run it with `cargo run -p examples --example hello`, then
//! `curl localhost:50000/index`.

use patron::prelude::*;

#[derive(Debug, Deserialize)]
struct Calc {
    wealth: f64,
    nisab: f64,
}

#[derive(Debug, Serialize)]
struct Zakat {
    wealth: f64,
    nisab: f64,
    zakat_due: f64,
    is_eligible: bool,
}

#[patron::route(GET "/index")]
async fn index() -> &'static str {
    "hello from patron"
}

#[patron::route(POST "/calculate")]
async fn calculate(Json(c): Json<Calc>) -> Result<Json<Zakat>, patron::Error> {
    if !(c.wealth.is_finite() && c.nisab.is_finite()) || c.wealth < 0.0 || c.nisab < 0.0 {
        return Err(patron::Error::unprocessable(
            "wealth and nisab must be finite, non-negative numbers",
        ));
    }
    let is_eligible = c.wealth >= c.nisab;
    let zakat_due = if is_eligible {
        (c.wealth - c.nisab) * 0.025
    } else {
        0.0
    };
    Ok(Json(Zakat {
        wealth: c.wealth,
        nisab: c.nisab,
        zakat_due,
        is_eligible,
    }))
}

#[patron::route(GET "/secret", auth = ApiKey)]
async fn secret(id: CorrelationId) -> String {
    tracing::info!("secret requested");
    format!("the secret is safe; your correlation id is {}", id.as_str())
}

#[patron::main]
async fn main(service: Service) -> patron::Result<Service> {
    let keys = match ApiKey::from_env("PATRON_API_KEYS") {
        Ok(keys) => keys,
        Err(e) => {
            tracing::warn!(error = %e, "accepting the demo key `demo-key`");
            ApiKey::new(["demo-key"])
        }
    };
    Ok(service.provide(keys))
}
