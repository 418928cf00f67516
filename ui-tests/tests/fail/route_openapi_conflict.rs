// Doc keys on a route left out of the document contradict each other.
#[patron::route(GET "/internal", openapi = false, summary = "Internal")]
async fn internal() -> &'static str {
    "internal"
}

fn main() {}
