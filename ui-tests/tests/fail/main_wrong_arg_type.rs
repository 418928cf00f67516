#[patron::main]
async fn main(port: u16) -> patron::Result<patron::Service> {
    let _ = port;
    Err(patron::Error::msg("unreachable"))
}
