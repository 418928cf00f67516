#[patron::route(GET "/index", timeout = "1s", timeout = "2s")]
async fn index() -> &'static str {
    "hello"
}

fn main() {}
