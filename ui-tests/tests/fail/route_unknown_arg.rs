#[patron::route(GET "/index", tmeout = "1s")]
async fn index() -> &'static str {
    "hello"
}

fn main() {}
