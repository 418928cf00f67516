/// The messages, server trait and client generated from
/// `proto/{{name}}.proto` (see `build.rs`).
mod proto {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("{{pkg}}.v1");

    /// The encoded descriptor set, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("descriptor");
}

/// `{{pkg}}.v1.Greeter` on the gRPC port ({{grpc_port}}), with the standard health
/// service; each call gets a correlation id, metrics and a span.
struct Greetings;

#[patron::grpc(descriptor = proto::FILE_DESCRIPTOR_SET)]
#[tonic::async_trait]
impl proto::greeter_server::Greeter for Greetings {
    async fn say_hello(
        &self,
        request: tonic::Request<proto::HelloRequest>,
    ) -> Result<tonic::Response<proto::HelloReply>, tonic::Status> {
        let name = request.into_inner().name;
        if name.trim().is_empty() {
            return Err(tonic::Status::invalid_argument("name must not be empty"));
        }
        Ok(tonic::Response::new(proto::HelloReply {
            message: format!("hello, {name}"),
        }))
    }
}
