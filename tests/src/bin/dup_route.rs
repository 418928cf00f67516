//! A service with the same route defined twice: start-up must fail and name
//! both definitions.

#[patron::route(GET "/orders")]
async fn list_orders() -> &'static str {
    "orders"
}

mod legacy {
    #[patron::route(GET "/orders")]
    pub async fn old_orders() -> &'static str {
        "old orders"
    }
}

#[patron::main]
async fn main() {}
