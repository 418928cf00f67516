#[patron::route(POST "/orders", cache = "1m")]
async fn orders() -> &'static str {
    "stored"
}

#[patron::route(GET "/fast", cache = "100ms")]
async fn fast() -> &'static str {
    "fast"
}

#[patron::route(GET "/typo", cache = "soon")]
async fn typo() -> &'static str {
    "typo"
}

fn main() {}
