use patron::prelude::*;

struct Store {
    name: String,
}

#[patron::route(GET "/index")]
async fn index(store: &Store, headers: &mut HeaderMap) -> String {
    format!("{} {}", store.name, headers.len())
}

fn main() {}
