//! A handler takes a dependency nobody provided, and a route needs an
//! authenticator nobody provided: start-up must fail and name both.

use patron::prelude::*;

struct Inventory;

#[patron::route(GET "/stock")]
async fn stock(_inventory: Dep<Inventory>) -> &'static str {
    "plenty"
}

#[patron::route(GET "/admin", auth = ApiKey)]
async fn admin() -> &'static str {
    "admin"
}

#[patron::main]
async fn main(service: Service) -> patron::Result<Service> {
    Ok(service)
}
