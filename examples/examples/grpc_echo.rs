//! The gRPC benchmark's patron side: `greeter_proto::Echo` (unary
//! `SayHello`) on patron's gRPC server, with everything patron adds to a
//! call (correlation id, span, metrics, timeout, panic recovery, health).
//! `bare_tonic` serves the same code on bare tonic. See
//! `scripts/bench-grpc`.

use greeter_proto::Echo;
use greeter_proto::greeter_server::GreeterServer;
use patron::prelude::*;

#[patron::main]
async fn main(service: Service) -> patron::Result<Service> {
    Ok(service.with_grpc(GreeterServer::new(Echo)))
}
