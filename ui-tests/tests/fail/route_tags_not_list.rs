// `tags` takes a list of strings.
#[patron::route(GET "/users", tags = "users")]
async fn users() -> &'static str {
    "users"
}

fn main() {}
