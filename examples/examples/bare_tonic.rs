//! The gRPC benchmark's baseline: `greeter_proto::Echo` on bare tonic, no
//! layer added. Port from `PATRON_GRPC_PORT` (50001). See
//! `scripts/bench-grpc`.

use std::net::SocketAddr;

use greeter_proto::Echo;
use greeter_proto::greeter_server::GreeterServer;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = std::env::var("PATRON_GRPC_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(50001);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let stop = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        term.recv().await;
    };
    tonic::transport::Server::builder()
        .add_service(GreeterServer::new(Echo))
        .serve_with_shutdown(addr, stop)
        .await?;
    Ok(())
}
