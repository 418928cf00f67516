// With the `openapi` feature, a declared producer's JSON payload needs a
// JSON schema, reported on the payload type.
use patron::prelude::*;

#[derive(Serialize)]
struct Placed {
    id: u64,
}

patron::producer!(kafka = "orders.placed", payload = Json<Placed>);

fn main() {}
