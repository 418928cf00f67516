//! What the macros' generated code names. Not a public API: anything here
//! may change in any release.

use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

pub use axum::extract::{FromRequest, FromRequestParts, Request};
pub use axum::middleware::from_fn;
pub use axum::response::{IntoResponse, Response};
pub use axum::routing::MethodFilter;
pub use inventory;

pub use crate::deps::AppState;
pub use crate::deps::DepSpec;
pub use crate::describe::{Operation, Payload, Probe, Undescribed};
pub use crate::error::{Error, Result};
#[cfg(feature = "grpc")]
pub use crate::grpc::{GrpcDef, GrpcService};
pub use crate::http::RouteCtx;
pub use crate::http::json::{LastArg, OtherLastArg};
pub use crate::http::registry::{AuthSpec, RateSpec, RouteDef, RouteDoc};
pub use crate::http::rejection;
pub use crate::service::Service;
#[cfg(feature = "grpc")]
pub use tonic::server::NamedService;

pub use crate::client::produces::ProducerDef;
pub use crate::consumer::Message;
pub use crate::consumer::registry::{BuiltConsumer, ConsumerDef};
pub use crate::consumer::{
    BatchCx, BatchHandler, ConsumerOutput, Delivery, FromBatch, FromDelivery, FromDeps,
    HandlerError, MessageHandler, OnFailure,
};
pub use crate::deps::Deps;
pub use futures_util::future::BoxFuture;
pub use std::sync::Arc;

/// A handler call that failed before the handler ran.
pub fn message_failed(
    e: HandlerError,
) -> BoxFuture<'static, std::result::Result<(), HandlerError>> {
    Box::pin(std::future::ready(Err(e)))
}

/// A batch handler call that failed before the handler ran.
pub fn batch_failed(e: HandlerError) -> BoxFuture<'static, Result<()>> {
    let e = match e {
        HandlerError::Failed(e) => e,
        HandlerError::Decode(e) => Error::msg(e.to_string()),
    };
    Box::pin(std::future::ready(Err(e)))
}

use crate::config::Config;

/// A route's method router.
pub type MethodRouter = axum::routing::MethodRouter<AppState>;

/// The method router of a generated handler. Taking a plain `fn` keeps the
/// one remaining requirement — a `Send` future — stated here, in patron's
/// words, instead of as an unsatisfied axum `Handler` bound.
pub fn method_router<Fut>(
    filter: MethodFilter,
    handler: fn(Request, AppState) -> Fut,
) -> MethodRouter
where
    Fut: Future<Output = Response> + Send + 'static,
{
    axum::routing::on(filter, Generated(handler))
}

/// A generated handler: it receives the request and the state as they are
/// and extracts its arguments itself, so axum's extractor plumbing runs once.
struct Generated<Fut>(fn(Request, AppState) -> Fut);

impl<Fut> Clone for Generated<Fut> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<Fut> Copy for Generated<Fut> {}

impl<Fut> axum::handler::Handler<(), AppState> for Generated<Fut>
where
    Fut: Future<Output = Response> + Send + 'static,
{
    type Future = Fut;

    fn call(self, req: Request, state: AppState) -> Fut {
        (self.0)(req, state)
    }
}

/// The crate a `#[patron::main]` is in.
pub struct MainInfo {
    /// The binary's name.
    pub name: &'static str,
    /// `CARGO_PKG_VERSION`.
    pub version: &'static str,
}

/// Entry point of `#[patron::main] async fn main()`; the generated code
/// converts the body's output with [`MainOutput`](crate::MainOutput).
pub fn run_main<F, Fut>(info: MainInfo, body: F) -> ExitCode
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<()>>,
{
    run_main_with_service(info, move |service| async move {
        body().await?;
        Ok(service)
    })
}

/// Pins the output type of `main(service)`, so a mismatch is reported on the
/// user's return type.
pub fn service_result(result: Result<Service>) -> Result<Service> {
    result
}

/// Entry point of `#[patron::main] async fn main(service: Service) -> patron::Result<Service>`.
///
/// Only the user's future is polled in this generic function; start-up,
/// running and shutdown are non-generic functions of this crate
/// (`Startup`). Polling `Service::run` here would compile the whole
/// server (its futures count as generic) into every user crate, which made
/// each rebuild of a service recompile it.
pub fn run_main_with_service<F, Fut>(info: MainInfo, body: F) -> ExitCode
where
    F: FnOnce(Service) -> Fut,
    Fut: Future<Output = Result<Service>>,
{
    let (startup, service) = match Startup::begin(info) {
        Ok(started) => started,
        Err(code) => return code,
    };
    let result = startup.runtime.block_on(body(service));
    startup.finish(result)
}

/// A service's process between its start and its exit code.
struct Startup {
    runtime: tokio::runtime::Runtime,
    name: String,
    export: Option<(crate::observe::trace::TraceExport, Duration)>,
}

impl Startup {
    /// Starts the runtime, reads the configuration and installs logging
    /// (and trace export); the service for the user's `main`, or the exit
    /// code when any of it fails.
    fn begin(info: MainInfo) -> std::result::Result<(Startup, Service), ExitCode> {
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("error: cannot start the tokio runtime: {e}");
                return Err(ExitCode::FAILURE);
            }
        };
        let mut config = match Config::from_env() {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {}: {e}", info.name);
                return Err(ExitCode::FAILURE);
            }
        };
        if config.print_contract.is_some() {
            // stdout carries the document: log lines only for errors.
            config.log_level = crate::config::LogLevel::Error;
        }
        let name = config
            .service_name
            .as_deref()
            .unwrap_or(info.name)
            .to_string();
        let initialised = {
            let _entered = runtime.enter();
            crate::observe::log::init(&config, &name, info.version)
        };
        let export = match initialised {
            Ok(export) => export.map(|e| (e, config.shutdown_timeout)),
            Err(e) => {
                eprintln!("error: {name}: {e}");
                return Err(ExitCode::FAILURE);
            }
        };
        let service = Service::new(name.clone())
            .version(info.version)
            .config(config);
        Ok((
            Startup {
                runtime,
                name,
                export,
            },
            service,
        ))
    }

    /// Runs the service the user's `main` returned (or prints its
    /// contract), then shuts the runtime and the trace export down.
    fn finish(self, result: Result<Service>) -> ExitCode {
        let Startup {
            runtime,
            name,
            export,
        } = self;
        let code = runtime.block_on(async {
            let service = match result {
                Ok(s) => s,
                Err(e) => return fail(&name, "start-up failed", &e),
            };
            if let Some(which) = service.current_config().print_contract {
                return print_contract(service, which, &name).await;
            }
            match service.run().await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&name, "the service failed", &e),
            }
        });
        runtime.shutdown_timeout(Duration::from_secs(1));
        // Spans still batched are exported before the process exits,
        // bounded by the shutdown timeout.
        if let Some((export, timeout)) = export {
            export.shutdown(timeout);
        }
        code
    }
}

/// `PATRON_PRINT_CONTRACT`: validates and binds the service as `run` would
/// (on ephemeral loopback ports), prints the document and exits.
async fn print_contract(
    mut service: Service,
    which: crate::config::Contract,
    name: &str,
) -> ExitCode {
    let config = service.config_mut();
    config.http_host = std::net::IpAddr::from([127, 0, 0, 1]);
    config.http_port = 0;
    config.grpc.port = 0;
    let bound = match service.bind().await {
        Ok(b) => b,
        Err(e) => return fail(name, "start-up failed", &e),
    };
    match bound.contract(which) {
        Some(document) => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            match out.write_all(&document).and_then(|()| out.write_all(b"\n")) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {name}: cannot write the document: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        None => {
            let why = match which {
                crate::config::Contract::OpenApi => {
                    "no OpenAPI document: patron needs the `openapi` feature, and PATRON_HTTP_OPENAPI must not be false"
                }
                crate::config::Contract::AsyncApi => {
                    "no AsyncAPI document: patron needs the `openapi` feature, the service must run consumers, and PATRON_HTTP_OPENAPI must not be false"
                }
            };
            eprintln!("error: {name}: {why}");
            ExitCode::FAILURE
        }
    }
}

fn fail(name: &str, what: &str, err: &Error) -> ExitCode {
    tracing::error!(error = %err, "{what}");
    eprintln!("error: {name}: {err}");
    ExitCode::FAILURE
}

pub use crate::consumer::common::CommonSpec;

/// What `#[patron::consumer(amqp = …)]` says besides [`CommonSpec`].
#[cfg(feature = "amqp")]
pub struct AmqpSpec {
    /// `amqp = "…"`.
    pub queue: &'static str,
    /// `exchange`.
    pub exchange: Option<&'static str>,
    /// `routing_key`.
    pub routing_key: Option<&'static str>,
    /// `declare`.
    pub declare: bool,
    /// `prefetch`.
    pub prefetch: Option<u16>,
    /// `batch` and `batch_timeout`.
    pub batch: Option<(usize, Duration)>,
}

#[cfg(feature = "amqp")]
fn configure(
    mut c: crate::consumer::amqp::AmqpConsumer,
    common: &CommonSpec,
    spec: &AmqpSpec,
) -> BuiltConsumer {
    c.common_mut().apply(common);
    c = c.declare(spec.declare);
    if let Some(exchange) = spec.exchange {
        c = c.exchange(exchange, spec.routing_key.unwrap_or_default());
    }
    if let Some(n) = spec.prefetch {
        c = c.prefetch(n);
    }
    let memory = c.in_memory();
    BuiltConsumer::new(c, memory)
}

/// The component of a one-message-at-a-time AMQP consumer.
#[cfg(feature = "amqp")]
pub fn amqp_consumer(
    common: CommonSpec,
    spec: AmqpSpec,
    handler: impl MessageHandler,
) -> BuiltConsumer {
    let c = crate::consumer::amqp::AmqpConsumer::new(spec.queue, handler);
    configure(c, &common, &spec)
}

/// The component of a batch AMQP consumer.
#[cfg(feature = "amqp")]
pub fn amqp_batch_consumer(
    common: CommonSpec,
    spec: AmqpSpec,
    handler: impl BatchHandler,
) -> BuiltConsumer {
    let (size, timeout) = spec.batch.unwrap_or((1, Duration::from_secs(1)));
    let c = crate::consumer::amqp::AmqpConsumer::batch(spec.queue, handler, size, timeout);
    configure(c, &common, &spec)
}

/// What `#[patron::consumer(sqs = …)]` says besides [`CommonSpec`].
#[cfg(feature = "sqs")]
pub struct SqsSpec {
    /// `sqs = "…"`.
    pub queue: &'static str,
    /// `wait`.
    pub wait: Option<Duration>,
    /// `max_messages`.
    pub max_messages: Option<i32>,
    /// `visibility`.
    pub visibility: Option<Duration>,
}

/// The component of an SQS consumer.
#[cfg(feature = "sqs")]
pub fn sqs_consumer(
    common: CommonSpec,
    spec: SqsSpec,
    handler: impl MessageHandler,
) -> BuiltConsumer {
    let mut c = crate::consumer::sqs::SqsConsumer::new(spec.queue, handler);
    c.common_mut().apply(&common);
    if let Some(d) = spec.wait {
        c = c.wait(d);
    }
    if let Some(n) = spec.max_messages {
        c = c.max_messages(n);
    }
    if let Some(d) = spec.visibility {
        c = c.visibility(d);
    }
    let memory = c.in_memory();
    BuiltConsumer::new(c, memory)
}

/// What `#[patron::consumer(kafka = …)]` says besides [`CommonSpec`].
#[cfg(feature = "kafka")]
pub struct KafkaSpec {
    /// `kafka = "…"` or `kafka = ["…", …]`.
    pub topics: &'static [&'static str],
    /// `group`.
    pub group: &'static str,
    /// `batch` and `batch_timeout`.
    pub batch: Option<(usize, Duration)>,
    /// `dedup_by_key`.
    pub dedup_by_key: bool,
}

/// The component of a Kafka consumer.
#[cfg(feature = "kafka")]
pub fn kafka_consumer(
    common: CommonSpec,
    spec: KafkaSpec,
    handler: impl MessageHandler,
) -> BuiltConsumer {
    let mut c = crate::consumer::kafka::KafkaConsumer::new(
        spec.topics.iter().copied(),
        spec.group,
        handler,
    );
    c.common_mut().apply(&common);
    let memory = c.in_memory();
    BuiltConsumer::new(c, memory)
}

/// The component of a Kafka batch consumer.
#[cfg(feature = "kafka")]
pub fn kafka_batch_consumer(
    common: CommonSpec,
    spec: KafkaSpec,
    handler: impl BatchHandler,
) -> BuiltConsumer {
    let (size, timeout) = spec.batch.unwrap_or((1, Duration::from_secs(1)));
    let mut c = crate::consumer::kafka::KafkaConsumer::batch(
        spec.topics.iter().copied(),
        spec.group,
        handler,
        size,
        timeout,
    )
    .dedup_by_key(spec.dedup_by_key);
    c.common_mut().apply(&common);
    let memory = c.in_memory();
    BuiltConsumer::new(c, memory)
}
