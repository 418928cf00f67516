#[patron::main]
fn main() {}
