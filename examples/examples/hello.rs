//! The default example service.
//!
//! - `GET /index` answers a greeting;
//! - `POST /calculate` takes `{"wealth": f64, "nisab": f64}` and returns the
//!   zakat due: (wealth − nisab) × 2.5 % when wealth reaches the nisab;
//! - `GET /secret` needs `Authorization: Apikey <key>`, with keys from
//!   `PATRON_API_KEYS` (comma-separated; `demo-key` when unset, with a warning).
//!
//! Run it with `cargo run -p examples --example hello`, then
//! `curl localhost:50000/index`. With `--features dynamic-linking` its debug
//! build links patron from a shared library (`patron-dylib`), which makes
//! the rebuild after an edit about as quick as a bare axum service's.

use patron::prelude::*;
// Links patron from the shared library; a crate is linked only when named.
#[cfg(feature = "dynamic-linking")]
use patron_dylib as _;

/// What the zakat is calculated on.
// The schema states the bounds the handler enforces (schemathesis found
// the document promising negative amounts would be accepted).
#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct Calc {
    /// Wealth held for a lunar year.
    #[schemars(range(min = 0))]
    wealth: f64,
    /// The threshold below which no zakat is due.
    #[schemars(range(min = 0))]
    nisab: f64,
}

/// The calculation's result.
#[derive(Debug, Serialize, schemars::JsonSchema)]
struct Zakat {
    wealth: f64,
    nisab: f64,
    /// (wealth − nisab) × 2.5 % when eligible, else 0.
    zakat_due: f64,
    /// Whether wealth reaches the nisab.
    is_eligible: bool,
}

/// A greeting.
#[patron::route(GET "/index")]
async fn index() -> &'static str {
    "hello from patron"
}

/// The zakat due on a wealth, given the nisab.
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

/// A greeting for callers with an API key.
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
