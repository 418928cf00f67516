//! gRPC services (feature `grpc`), on tonic: write the service as tonic
//! generates it, register the `impl` with `#[patron::grpc]` (or give the
//! server to [`Service::with_grpc`](crate::Service::with_grpc)), and the
//! service runs a gRPC server component on `PATRON_GRPC_PORT` (50001).
//!
//! Every call gets what a route gets: the correlation id from
//! `x-correlation-id` metadata (or a new one) in every log line and echoed
//! in the response metadata; a server span with OpenTelemetry's RPC
//! attributes continuing the caller's `traceparent`; the
//! `rpc_server_duration_seconds{service,method,code}` histogram; a panic
//! answered with `INTERNAL`; the client's `grpc-timeout` honoured and
//! `PATRON_GRPC_HANDLER_TIMEOUT` as the default; and the service's
//! authenticator, when it names one. The standard health service follows
//! `/ready`; reflection is served with `PATRON_GRPC_REFLECTION=true`.
//!
//! ```text
//! use patron::prelude::*;
//! use greeter_proto::greeter_server::Greeter;
//! use greeter_proto::{HelloReply, HelloRequest};
//!
//! #[derive(Default)]
//! struct Hello;
//!
//! #[patron::grpc(auth = ApiKey, descriptor = greeter_proto::FILE_DESCRIPTOR_SET)]
//! #[tonic::async_trait]
//! impl Greeter for Hello {
//!     async fn say_hello(&self, request: tonic::Request<HelloRequest>)
//!         -> Result<tonic::Response<HelloReply>, tonic::Status> { … }
//! }
//! ```
//!
//! The whole of it, tested, is in `docs/grpc.md`. The implementing type
//! comes from the values the service provides
//! (`service.provide(Hello)`), as `Dep<T>` does for routes.

mod body;
mod call;
pub(crate) mod component;
mod health;
pub(crate) mod registry;
mod status;

#[doc(hidden)]
pub use registry::GrpcDef;
pub use registry::{GrpcService, services};
