#[patron::route(GET "/index", timeout = 2)]
async fn index() -> &'static str {
    "hello"
}

fn main() {}
