#[patron::route(FETCH "/index")]
async fn index() -> &'static str {
    "hello"
}

fn main() {}
