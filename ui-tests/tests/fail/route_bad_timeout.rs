#[patron::route(GET "/index", timeout = "2 fortnights")]
async fn index() -> &'static str {
    "hello"
}

fn main() {}
