#[patron::route(GET "/users/{id")]
async fn user() -> &'static str {
    "user"
}

fn main() {}
