use patron::prelude::*;

#[derive(Deserialize)]
struct Body {
    name: String,
}

#[patron::route(POST "/index")]
async fn index(Json(body): Json<Body>, headers: HeaderMap) -> String {
    format!("{} {}", body.name, headers.len())
}

fn main() {}
