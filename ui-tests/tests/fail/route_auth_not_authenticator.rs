struct NotAnAuthenticator;

#[patron::route(GET "/index", auth = NotAnAuthenticator)]
async fn index() -> &'static str {
    "hello"
}

fn main() {}
