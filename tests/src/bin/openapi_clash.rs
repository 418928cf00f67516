//! A service with a route of its own at `/openapi.json` while patron serves
//! the OpenAPI document there: start-up must fail and say how to choose.

#[patron::route(GET "/openapi.json")]
async fn own_document() -> &'static str {
    "{}"
}

#[patron::main]
async fn main() {}
