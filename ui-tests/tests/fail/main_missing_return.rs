use patron::prelude::*;

#[patron::main]
async fn main(service: Service) {
    let _ = service;
}
