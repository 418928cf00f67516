use patron::prelude::*;

// A bad attribute and a bad signature are reported together.
#[patron::route(GET "/index", timeout = "soon")]
fn index(self) -> &'static str {
    "hello"
}

fn main() {}
