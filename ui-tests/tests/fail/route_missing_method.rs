#[patron::route("/index")]
async fn index() -> &'static str {
    "hello"
}

fn main() {}
