struct Api;

impl Api {
    #[patron::route(GET "/index")]
    async fn index(&self) -> &'static str {
        "hello"
    }
}

fn main() {}
