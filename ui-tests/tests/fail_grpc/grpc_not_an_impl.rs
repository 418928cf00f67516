#[patron::grpc]
fn greet() {}

#[patron::grpc]
struct Greetings;

fn main() {}
