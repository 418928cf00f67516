// Producers of each broker and payload kind, with or without the `openapi` feature.
use patron::prelude::*;

#[derive(Serialize, schemars::JsonSchema)]
struct Placed {
    id: u64,
}

patron::producer!(kafka = "orders.placed", payload = Json<Placed>);
patron::producer!(amqp = "orders", payload = Json<Placed>,);
patron::producer!(sqs = "audit-log", payload = String);
patron::producer!(amqp = "blobs", payload = axum::body::Bytes);

fn main() {}
