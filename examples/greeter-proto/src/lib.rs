//! The greeter example's gRPC service (`greeter.v1.Greeter`): the messages,
//! the server trait and the client, as tonic generates them, plus the
//! encoded file descriptor set that server reflection serves.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("greeter.v1");

/// The encoded `FileDescriptorSet` of `greeter.proto`, for reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("greeter_descriptor");

/// The benchmarks' service: `SayHello` answers `Hello, {name}!`; the
/// streaming methods are `UNIMPLEMENTED`. The same code runs behind patron
/// (`grpc_echo`) and behind bare tonic (`bare_tonic`).
#[derive(Debug, Default, Clone, Copy)]
pub struct Echo;

type NoStream<T> =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl greeter_server::Greeter for Echo {
    async fn say_hello(
        &self,
        request: tonic::Request<HelloRequest>,
    ) -> Result<tonic::Response<HelloReply>, tonic::Status> {
        Ok(tonic::Response::new(HelloReply {
            message: format!("Hello, {}!", request.get_ref().name),
            correlation_id: String::new(),
        }))
    }

    type CountdownStream = NoStream<Tick>;

    async fn countdown(
        &self,
        _: tonic::Request<CountdownRequest>,
    ) -> Result<tonic::Response<Self::CountdownStream>, tonic::Status> {
        Err(tonic::Status::unimplemented(
            "the echo answers SayHello only",
        ))
    }

    async fn total(
        &self,
        _: tonic::Request<tonic::Streaming<Number>>,
    ) -> Result<tonic::Response<Sum>, tonic::Status> {
        Err(tonic::Status::unimplemented(
            "the echo answers SayHello only",
        ))
    }

    type ChatStream = NoStream<HelloReply>;

    async fn chat(
        &self,
        _: tonic::Request<tonic::Streaming<HelloRequest>>,
    ) -> Result<tonic::Response<Self::ChatStream>, tonic::Status> {
        Err(tonic::Status::unimplemented(
            "the echo answers SayHello only",
        ))
    }
}
