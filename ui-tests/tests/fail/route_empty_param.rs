#[patron::route(GET "/users/{}")]
async fn user() -> &'static str {
    "user"
}

fn main() {}
