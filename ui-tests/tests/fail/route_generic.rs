#[patron::route(GET "/index")]
async fn index<T: Default>() -> &'static str {
    "hello"
}

fn main() {}
