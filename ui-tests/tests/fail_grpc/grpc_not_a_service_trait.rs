struct Greetings;

#[patron::grpc]
impl Greetings {
    fn hello(&self) {}
}

#[patron::grpc]
impl std::fmt::Display for Greetings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("hi")
    }
}

fn main() {}
