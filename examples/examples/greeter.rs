//! A gRPC service: `greeter.v1.Greeter` (examples/greeter-proto), one method
//! of each kind, on the gRPC server (`PATRON_GRPC_PORT`, 50001) beside the
//! HTTP server's health and metrics endpoints (50000).
//!
//! - `SayHello` (unary): a greeting; an empty name is `INVALID_ARGUMENT`;
//! - `Countdown` (server streaming): `from` down to 1, one tick every
//!   `interval_ms`;
//! - `Total` (client streaming): the sum of the numbers sent;
//! - `Chat` (bidirectional): a greeting for each name, as it arrives.
//!
//! Every call needs `authorization: Apikey <key>` metadata, keys from
//! `PATRON_API_KEYS` (`demo-key` when unset, with a warning). The standard
//! health service answers without a key; reflection is served with
//! `PATRON_GRPC_REFLECTION=true`.
//!
//! `GET /hello/{name}` on the HTTP port is a gateway: it calls `SayHello`
//! through patron's instrumented gRPC channel (`GREETER_TARGET`, this
//! service's own gRPC port when unset), which carries the request's trace
//! and correlation id along.
//!
//! Run it with `cargo run -p examples --example greeter`, then
//! `curl localhost:50000/hello/Ada`, or with a gRPC client such as `grpcurl`:
//! `grpcurl -plaintext -H 'authorization: Apikey demo-key' -d '{"name":"Ada"}' localhost:50001 greeter.v1.Greeter/SayHello`.

use std::pin::Pin;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use greeter_proto::greeter_client::GreeterClient;
use greeter_proto::greeter_server;
use greeter_proto::{CountdownRequest, HelloReply, HelloRequest, Number, Sum, Tick};
use patron::client::grpc::Channel;
use patron::prelude::*;
use patron::reliability::Retry;
use tonic::{Request, Response, Status, Streaming};

/// The most ticks a countdown may ask for, and the longest interval.
const MAX_TICKS: u32 = 1000;
const MAX_INTERVAL_MS: u32 = 10_000;

type Replies<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The service's implementation; the service provides it in `main`.
struct Greetings;

fn greeting(name: &str) -> Result<HelloReply, Status> {
    let name = name.trim();
    if name.is_empty() {
        return Err(Status::invalid_argument("name must not be empty"));
    }
    Ok(HelloReply {
        message: format!("Hello, {name}!"),
        correlation_id: CorrelationId::current()
            .map(|id| id.as_str().to_string())
            .unwrap_or_default(),
    })
}

#[patron::grpc(auth = ApiKey, descriptor = greeter_proto::FILE_DESCRIPTOR_SET)]
#[tonic::async_trait]
impl greeter_server::Greeter for Greetings {
    async fn say_hello(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloReply>, Status> {
        let reply = greeting(&request.into_inner().name)?;
        tracing::info!(reply = %reply.message, "greeted");
        Ok(Response::new(reply))
    }

    type CountdownStream = Replies<Tick>;

    async fn countdown(
        &self,
        request: Request<CountdownRequest>,
    ) -> Result<Response<Self::CountdownStream>, Status> {
        let CountdownRequest { from, interval_ms } = request.into_inner();
        if from > MAX_TICKS || interval_ms > MAX_INTERVAL_MS {
            return Err(Status::invalid_argument(format!(
                "from must be at most {MAX_TICKS} and interval_ms at most {MAX_INTERVAL_MS}"
            )));
        }
        let interval = Duration::from_millis(u64::from(interval_ms));
        let ticks = futures_util::stream::unfold(from, move |remaining| async move {
            if remaining == 0 {
                return None;
            }
            tokio::time::sleep(interval).await;
            Some((
                Ok(Tick {
                    remaining: remaining - 1,
                }),
                remaining - 1,
            ))
        });
        Ok(Response::new(Box::pin(ticks)))
    }

    async fn total(&self, request: Request<Streaming<Number>>) -> Result<Response<Sum>, Status> {
        let mut numbers = request.into_inner();
        let (mut total, mut count) = (0i64, 0u32);
        while let Some(number) = numbers.next().await {
            let number = number?;
            total = total
                .checked_add(number.value)
                .ok_or_else(|| Status::out_of_range("the total does not fit in 64 bits"))?;
            count += 1;
        }
        Ok(Response::new(Sum { total, count }))
    }

    type ChatStream = Replies<HelloReply>;

    async fn chat(
        &self,
        request: Request<Streaming<HelloRequest>>,
    ) -> Result<Response<Self::ChatStream>, Status> {
        let replies = request
            .into_inner()
            .map(|request| request.and_then(|r| greeting(&r.name)));
        Ok(Response::new(Box::pin(replies)))
    }
}

/// The gateway's answer.
#[derive(Debug, Serialize, schemars::JsonSchema)]
struct Greeting {
    message: String,
    /// The correlation id the gRPC call ran under: the HTTP request's.
    correlation_id: String,
}

/// The key the gateway presents to the greeter.
struct GatewayKey(String);

#[patron::route(GET "/hello/{name}")]
async fn hello(
    Path(name): Path<String>,
    client: Dep<GreeterClient<Channel>>,
    key: Dep<GatewayKey>,
) -> Result<Json<Greeting>, patron::Error> {
    let mut request = Request::new(HelloRequest { name });
    let key = format!("Apikey {}", key.0)
        .parse()
        .map_err(|_| patron::Error::internal("the gateway's API key is not valid metadata"))?;
    request.metadata_mut().insert("authorization", key);
    match (*client).clone().say_hello(request).await {
        Ok(reply) => {
            let HelloReply {
                message,
                correlation_id,
            } = reply.into_inner();
            Ok(Json(Greeting {
                message,
                correlation_id,
            }))
        }
        Err(status) if status.code() == tonic::Code::InvalidArgument => {
            Err(patron::Error::unprocessable(status.message().to_string()))
        }
        Err(status) => Err(patron::Error::unavailable(format!(
            "the greeter answered {:?}: {}",
            status.code(),
            status.message()
        ))),
    }
}

#[patron::main]
async fn main(service: Service) -> patron::Result<Service> {
    let keys = std::env::var("PATRON_API_KEYS").unwrap_or_default();
    let gateway_key = keys
        .split(',')
        .map(str::trim)
        .find(|k| !k.is_empty())
        .unwrap_or("demo-key")
        .to_string();
    let keys = match ApiKey::from_env("PATRON_API_KEYS") {
        Ok(keys) => keys,
        Err(e) => {
            tracing::warn!(error = %e, "accepting the demo key `demo-key`");
            ApiKey::new(["demo-key"])
        }
    };
    let target = std::env::var("GREETER_TARGET")
        .unwrap_or_else(|_| format!("http://127.0.0.1:{}", service.current_config().grpc.port));
    let channel = Channel::builder(target)?
        .timeout(std::time::Duration::from_secs(5))
        .retry(Retry::new(3), ["/greeter.v1.Greeter/SayHello"])?
        .build()?;
    Ok(service
        .provide(Greetings)
        .provide(keys)
        .provide(GatewayKey(gateway_key))
        .provide(GreeterClient::new(channel.clone()))
        .with_client(channel))
}
