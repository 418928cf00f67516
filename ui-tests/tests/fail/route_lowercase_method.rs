#[patron::route(get "/index")]
async fn index() -> &'static str {
    "hello"
}

fn main() {}
