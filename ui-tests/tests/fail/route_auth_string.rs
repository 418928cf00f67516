#[patron::route(GET "/index", auth = "ApiKey")]
async fn index() -> &'static str {
    "hello"
}

fn main() {}
