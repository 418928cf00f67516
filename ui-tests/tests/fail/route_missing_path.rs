#[patron::route(GET)]
async fn index() -> &'static str {
    "hello"
}

fn main() {}
