#[patron::route(GET "/index")]
fn index() -> &'static str {
    "hello"
}

fn main() {}
