use patron::prelude::*;

#[patron::main]
async fn main(service: Service, port: u16) -> patron::Result<Service> {
    let _ = port;
    Ok(service)
}
