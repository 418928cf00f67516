use greeter_proto::greeter_server;
use greeter_proto::{CountdownRequest, HelloReply, HelloRequest, Number, Sum, Tick};
use patron::prelude::*;
use tonic::{Request, Response, Status, Streaming};

type Replies<T> = std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<T, Status>> + Send>>;

struct Greetings;

#[patron::grpc(auth = ApiKey, timeout = "2s", descriptor = greeter_proto::FILE_DESCRIPTOR_SET)]
#[tonic::async_trait]
impl greeter_server::Greeter for Greetings {
    async fn say_hello(&self, _: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
        Err(Status::unimplemented("example"))
    }
    type CountdownStream = Replies<Tick>;
    async fn countdown(&self, _: Request<CountdownRequest>) -> Result<Response<Self::CountdownStream>, Status> {
        Err(Status::unimplemented("example"))
    }
    async fn total(&self, _: Request<Streaming<Number>>) -> Result<Response<Sum>, Status> {
        Err(Status::unimplemented("example"))
    }
    type ChatStream = Replies<HelloReply>;
    async fn chat(&self, _: Request<Streaming<HelloRequest>>) -> Result<Response<Self::ChatStream>, Status> {
        Err(Status::unimplemented("example"))
    }
}

fn main() {
    let service = Service::new("pass").provide(Greetings).provide(ApiKey::new(["k"]));
    drop(service);
}
