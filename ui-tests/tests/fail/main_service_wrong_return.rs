use patron::prelude::*;

#[patron::main]
async fn main(service: Service) -> patron::Result<()> {
    let _ = service;
    Ok(())
}
