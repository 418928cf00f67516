#[patron::route(GET "index")]
async fn index() -> &'static str {
    "hello"
}

fn main() {}
