#[patron::route(GET "/index", rate_limit = "lots per second")]
async fn index() -> &'static str {
    "hello"
}

fn main() {}
