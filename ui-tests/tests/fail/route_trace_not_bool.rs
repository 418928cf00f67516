#[patron::route(GET "/index", trace = "no")]
async fn index() -> &'static str {
    "hello"
}

fn main() {}
