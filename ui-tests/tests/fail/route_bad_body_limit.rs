#[patron::route(POST "/upload", body_limit = "1 MegaByte")]
async fn upload(body: String) -> String {
    body
}

fn main() {}
