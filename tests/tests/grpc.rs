//! The gRPC server in process, through tonic's own client: every kind of
//! call, the correlation id, a panic, the handler timeout and the client's
//! deadline, authentication, metrics, `/info`, health following readiness,
//! start-up errors, and the shutdown (streams end with `UNAVAILABLE`, unary
//! calls finish). `grpc_peers.rs` checks the same against Python's grpcio.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use greeter_proto::greeter_client::GreeterClient;
use greeter_proto::greeter_server::{self, GreeterServer};
use greeter_proto::{CountdownRequest, HelloReply, HelloRequest, Number, Sum, Tick};
use patron::grpc::GrpcService;
use patron::prelude::*;
use patron::test::TestServer;
use patron_tests::prom;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Calls per `flaky:KEY` name.
static FLAKY: std::sync::Mutex<std::collections::BTreeMap<String, u32>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

type Replies<T> = std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<T, Status>> + Send>>;

/// The tests' implementation; the name says what to do: `panic`,
/// `wait:MS`, anything else is greeted.
struct Probe;

#[patron::grpc(timeout = "400ms", descriptor = greeter_proto::FILE_DESCRIPTOR_SET)]
#[tonic::async_trait]
impl greeter_server::Greeter for Probe {
    async fn say_hello(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloReply>, Status> {
        let name = request.get_ref().name.clone();
        if name == "panic" {
            panic!("secret detail 42");
        }
        if let Some(key) = name.strip_prefix("flaky:") {
            // UNAVAILABLE for the first two calls with this key.
            let mut seen = FLAKY.lock().unwrap();
            let calls = seen.entry(key.to_string()).or_insert(0);
            *calls += 1;
            if *calls <= 2 {
                return Err(Status::unavailable(format!("call {calls} of {key} fails")));
            }
        }
        if name == "traceparent" {
            let tp = request
                .metadata()
                .get("traceparent")
                .map(|v| v.to_str().unwrap().to_string());
            return Ok(Response::new(HelloReply {
                message: tp.unwrap_or_default(),
                correlation_id: CorrelationId::current()
                    .map(|id| id.as_str().to_string())
                    .unwrap_or_default(),
            }));
        }
        if let Some(ms) = name.strip_prefix("wait:") {
            let ms: u64 = ms
                .parse()
                .map_err(|_| Status::invalid_argument("wait:MS"))?;
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        Ok(Response::new(HelloReply {
            message: format!("Hello, {name}!"),
            correlation_id: CorrelationId::current()
                .map(|id| id.as_str().to_string())
                .unwrap_or_default(),
        }))
    }

    type CountdownStream = Replies<Tick>;

    async fn countdown(
        &self,
        request: Request<CountdownRequest>,
    ) -> Result<Response<Self::CountdownStream>, Status> {
        let CountdownRequest { from, interval_ms } = request.into_inner();
        let interval = Duration::from_millis(u64::from(interval_ms));
        let ticks = futures_util::stream::unfold(from, move |left| async move {
            if left == 0 {
                return None;
            }
            tokio::time::sleep(interval).await;
            Some((
                Ok(Tick {
                    remaining: left - 1,
                }),
                left - 1,
            ))
        });
        Ok(Response::new(Box::pin(ticks)))
    }

    async fn total(&self, request: Request<Streaming<Number>>) -> Result<Response<Sum>, Status> {
        let mut numbers = request.into_inner();
        let (mut total, mut count) = (0, 0);
        while let Some(n) = numbers.next().await {
            total += n?.value;
            count += 1;
        }
        Ok(Response::new(Sum { total, count }))
    }

    type ChatStream = Replies<HelloReply>;

    async fn chat(
        &self,
        request: Request<Streaming<HelloRequest>>,
    ) -> Result<Response<Self::ChatStream>, Status> {
        let replies = request.into_inner().map(|r| {
            r.map(|r| HelloReply {
                message: format!("Hello, {}!", r.name),
                correlation_id: String::new(),
            })
        });
        Ok(Response::new(Box::pin(replies)))
    }
}

/// A service without the `/relay` route this binary registers (its
/// `Dep<Relay>` is provided only where the relay is tested).
fn service(name: &str) -> Service {
    Service::new(name).with_routes([])
}

async fn serve(service: Service) -> (TestServer, GreeterClient<Channel>) {
    let server = TestServer::start(service).await.unwrap();
    let client = GreeterClient::new(channel(&server).await);
    (server, client)
}

async fn channel(server: &TestServer) -> Channel {
    Channel::from_shared(server.grpc_url())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

async fn probe() -> (TestServer, GreeterClient<Channel>) {
    serve(service("grpc-test").provide(Probe)).await
}

fn hello(name: &str) -> Request<HelloRequest> {
    Request::new(HelloRequest { name: name.into() })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_call_goes_through_with_its_correlation_id() {
    let (_server, mut client) = probe().await;

    let mut request = hello("Ada");
    request
        .metadata_mut()
        .insert("x-correlation-id", "grpc-corr-7".parse().unwrap());
    let response = client.say_hello(request).await.unwrap();
    assert_eq!(
        response.metadata().get("x-correlation-id").unwrap(),
        "grpc-corr-7"
    );
    let reply = response.into_inner();
    assert_eq!(reply.message, "Hello, Ada!");
    assert_eq!(
        reply.correlation_id, "grpc-corr-7",
        "the handler runs in the call's context"
    );

    // Without one, a new id is made, echoed, and seen by the handler.
    let response = client.say_hello(hello("Bo")).await.unwrap();
    let echoed = response
        .metadata()
        .get("x-correlation-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(echoed.len(), 36, "a UUID: {echoed}");
    assert_eq!(response.into_inner().correlation_id, echoed);

    let ticks: Vec<u32> = client
        .countdown(CountdownRequest {
            from: 3,
            interval_ms: 5,
        })
        .await
        .unwrap()
        .into_inner()
        .map(|t| t.unwrap().remaining)
        .collect()
        .await;
    assert_eq!(ticks, [2, 1, 0]);

    let numbers = futures_util::stream::iter([5, 6, 31].map(|value| Number { value }));
    let sum = client.total(numbers).await.unwrap().into_inner();
    assert_eq!((sum.total, sum.count), (42, 3));

    let names = futures_util::stream::iter(["a", "b"].map(|n| HelloRequest { name: n.into() }));
    let replies: Vec<String> = client
        .chat(names)
        .await
        .unwrap()
        .into_inner()
        .map(|r| r.unwrap().message)
        .collect()
        .await;
    assert_eq!(replies, ["Hello, a!", "Hello, b!"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_is_internal_leaks_nothing_and_the_server_carries_on() {
    let (server, mut client) = probe().await;
    let status = client.say_hello(hello("panic")).await.unwrap_err();
    assert_eq!(status.code(), Code::Internal);
    assert!(!status.message().contains("secret"), "{}", status.message());
    assert!(
        status.message().contains("panicked"),
        "{}",
        status.message()
    );
    assert!(status.metadata().get("x-correlation-id").is_some());
    assert_eq!(
        client
            .say_hello(hello("after"))
            .await
            .unwrap()
            .into_inner()
            .message,
        "Hello, after!"
    );

    let text = server.get("/metrics").await.unwrap().text();
    let samples = prom::parse(&text);
    let count = |method: &str, code: &str| {
        prom::value(
            &samples,
            "rpc_server_duration_seconds_count",
            &[
                ("service", "greeter.v1.Greeter"),
                ("method", method),
                ("code", code),
            ],
        )
    };
    assert_eq!(count("SayHello", "INTERNAL"), Some(1.0), "{text}");
    assert_eq!(count("SayHello", "OK"), Some(1.0), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handler_timeout_and_the_clients_deadline_are_honoured() {
    let (server, mut client) = probe().await;
    // The attribute's timeout (400ms) ends a slow handler.
    let started = Instant::now();
    let status = client.say_hello(hello("wait:3000")).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(status.message().contains("400ms"), "{}", status.message());
    assert!(started.elapsed() < Duration::from_secs(2));

    // A shorter client deadline wins, for unary calls. (tonic's client
    // keeps the deadline too and may give up first, with CANCELLED: the
    // server's own answer shows in its metrics.)
    let mut request = hello("wait:3000");
    request
        .metadata_mut()
        .insert("grpc-timeout", "100m".parse().unwrap());
    let started = Instant::now();
    let status = client.say_hello(request).await.unwrap_err();
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status:?}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(390),
        "{:?}",
        started.elapsed()
    );
    let server_says = |code: &'static str| {
        let server = &server;
        async move {
            let samples = prom::parse(&server.get("/metrics").await.unwrap().text());
            prom::value(
                &samples,
                "rpc_server_duration_seconds_count",
                &[
                    ("service", "greeter.v1.Greeter"),
                    ("method", "SayHello"),
                    ("code", code),
                ],
            )
            .unwrap_or(0.0)
        }
    };
    // The first call timed out on the server; the second ended there too,
    // or was cancelled by the client as its timer fired.
    let settled = patron_tests::eventually(Duration::from_millis(500), || async {
        server_says("DEADLINE_EXCEEDED").await + server_says("CANCELLED").await == 2.0
    })
    .await;
    assert!(
        settled,
        "{} {}",
        server_says("DEADLINE_EXCEEDED").await,
        server_says("CANCELLED").await
    );
    assert!(server_says("DEADLINE_EXCEEDED").await >= 1.0);

    // …and for a stream, which the handler timeout does not bound.
    let mut request = Request::new(CountdownRequest {
        from: 100,
        interval_ms: 50,
    });
    request
        .metadata_mut()
        .insert("grpc-timeout", "600m".parse().unwrap());
    let mut stream = client.countdown(request).await.unwrap().into_inner();
    let mut got = 0;
    let end = loop {
        match stream.next().await {
            Some(Ok(_)) => got += 1,
            Some(Err(status)) => break status,
            None => panic!("the stream ended without an error after {got} ticks"),
        }
    };
    assert_eq!(end.code(), Code::DeadlineExceeded, "{end:?}");
    assert!(
        got >= 8,
        "ticks went on past the 400ms handler timeout: {got}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_given_with_an_authenticator_refuses_calls_without_a_key() {
    let service = service("grpc-auth")
        .with_grpc_registered([])
        .with_grpc_service(GrpcService::new(GreeterServer::new(Probe)).auth(ApiKey::new(["k1"])));
    let (_server, mut client) = serve(service).await;
    let status = client.say_hello(hello("x")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let mut wrong = hello("x");
    wrong
        .metadata_mut()
        .insert("authorization", "Apikey k2".parse().unwrap());
    assert_eq!(
        client.say_hello(wrong).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    let mut right = hello("x");
    right
        .metadata_mut()
        .insert("authorization", "Apikey k1".parse().unwrap());
    assert_eq!(
        client.say_hello(right).await.unwrap().into_inner().message,
        "Hello, x!"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_lists_the_grpc_server_with_its_port_and_services() {
    let (server, _client) = probe().await;
    let info: serde_json::Value = server.get("/info").await.unwrap().json().unwrap();
    let components = info["components"].as_array().unwrap();
    let grpc = components
        .iter()
        .find(|c| c["kind"] == "grpc")
        .expect("a grpc component");
    assert_eq!(grpc["details"]["port"], server.grpc_addr().unwrap().port());
    assert_eq!(
        grpc["details"]["services"],
        serde_json::json!(["greeter.v1.Greeter"])
    );
    assert_eq!(grpc["details"]["tls"], "off");
    assert!(components.iter().any(|c| c["kind"] == "http"));
    let ready = server.get("/ready").await.unwrap();
    assert_eq!(ready.status(), 200);
    assert!(ready.text().contains("component:grpc"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_readiness() {
    let up = Arc::new(AtomicBool::new(true));
    let check = Arc::clone(&up);
    let service = service("grpc-health")
        .provide(Probe)
        .with_health_check("db", move || {
            let up = check.load(Ordering::SeqCst);
            async move { if up { Ok(()) } else { Err("db down") } }
        });
    let server = TestServer::start(service).await.unwrap();
    let mut health = HealthClient::new(channel(&server).await);
    let status = |mut health: HealthClient<Channel>, name: &'static str| async move {
        health
            .check(HealthCheckRequest {
                service: name.into(),
            })
            .await
            .map(|r| r.into_inner().status())
    };
    let settled = |want: ServingStatus| {
        let health = health.clone();
        async move {
            patron_tests::eventually(Duration::from_secs(5), || {
                let health = health.clone();
                async move {
                    status(health.clone(), "greeter.v1.Greeter").await.ok() == Some(want)
                        && status(health, "").await.ok() == Some(want)
                }
            })
            .await
        }
    };
    assert!(settled(ServingStatus::Serving).await);
    up.store(false, Ordering::SeqCst);
    assert!(
        settled(ServingStatus::NotServing).await,
        "a failing check turns every service NOT_SERVING"
    );
    up.store(true, Ordering::SeqCst);
    assert!(settled(ServingStatus::Serving).await);
    let unknown = health
        .check(HealthCheckRequest {
            service: "no.Such".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_shutdown_streams_end_unavailable_and_unary_calls_finish() {
    let (server, mut client) = probe().await;
    let mut health = HealthClient::new(channel(&server).await);
    let mut stream = client
        .countdown(CountdownRequest {
            from: 1000,
            interval_ms: 20,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(stream.next().await.unwrap().is_ok());
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "greeter.v1.Greeter".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.next().await.unwrap().unwrap().status(),
        ServingStatus::Serving
    );
    let mut slow = client.clone();
    let unary = tokio::spawn(async move { slow.say_hello(hello("wait:300")).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    server.begin_shutdown();
    assert_eq!(
        watch.next().await.unwrap().unwrap().status(),
        ServingStatus::NotServing,
        "health says NOT_SERVING before anything stops"
    );
    let end = loop {
        match stream.next().await {
            Some(Ok(_)) => {}
            Some(Err(status)) => break status,
            None => panic!("the stream ended without a status"),
        }
    };
    assert_eq!(end.code(), Code::Unavailable, "{end:?}");
    let reply = unary
        .await
        .unwrap()
        .expect("the unary call in flight finishes");
    assert_eq!(reply.into_inner().message, "Hello, wait:300!");
    server.join().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_errors_name_what_is_wrong() {
    // The implementing type was not provided.
    let err = TestServer::start(service("no-impl"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("gRPC service greeter.v1.Greeter"), "{err}");
    assert!(err.contains("no `Probe` was provided"), "{err}");

    // The same service twice.
    let twice = service("twice")
        .provide(Probe)
        .with_grpc(GreeterServer::new(Probe));
    let err = TestServer::start(twice).await.unwrap_err().to_string();
    assert!(
        err.contains("greeter.v1.Greeter is registered twice"),
        "{err}"
    );

    // Reflection without the descriptor to serve.
    let mut bare = service("bare")
        .with_grpc_registered([])
        .with_grpc(GreeterServer::new(Probe));
    bare.config_mut().grpc.reflection = true;
    let err = TestServer::start(bare).await.unwrap_err().to_string();
    assert!(
        err.contains("PATRON_GRPC_REFLECTION is on") && err.contains("greeter.v1.Greeter"),
        "{err}"
    );

    // A certificate file that is not there.
    let mut tls = service("tls").provide(Probe);
    tls.config_mut().grpc.tls = Some(patron::config::TlsFiles {
        cert: "/nonexistent/grpc.pem".into(),
        key: "/nonexistent/grpc-key.pem".into(),
        client_ca: None,
    });
    let err = TestServer::start(tls).await.unwrap_err().to_string();
    assert!(err.contains("/nonexistent/grpc.pem"), "{err}");
}

// ---- patron::client::grpc::Channel ----

use patron::client::grpc::{Channel as PatronChannel, GrpcClientError};
use patron::reliability::{CircuitBreaker, Retry};

type Relay = GreeterClient<PatronChannel>;

/// Relays `name` to the gRPC server through patron's channel, from inside
/// an HTTP request (whose context the channel propagates).
#[patron::route(GET "/relay/{name}")]
async fn relay(
    Path(name): Path<String>,
    client: Dep<Relay>,
) -> Result<Json<serde_json::Value>, patron::Error> {
    let mut client = (*client).clone();
    let reply = client
        .say_hello(HelloRequest { name })
        .await
        .map_err(|s| patron::Error::unavailable(format!("{:?}: {}", s.code(), s.message())))?
        .into_inner();
    Ok(Json(
        serde_json::json!({ "message": reply.message, "correlation_id": reply.correlation_id }),
    ))
}

fn channel_to(server: &TestServer) -> patron::client::grpc::ChannelBuilder {
    PatronChannel::builder(server.grpc_url()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_channel_propagates_the_request_context_and_records_metrics() {
    let (grpc_side, _) = probe().await;
    let channel = channel_to(&grpc_side).build().unwrap();
    let http_side = TestServer::start(
        Service::new("relay")
            .with_grpc_registered([])
            .provide(GreeterClient::new(channel.clone()))
            .with_client(channel),
    )
    .await
    .unwrap();
    let before = prom::global(
        "rpc_client_duration_seconds_count",
        &[
            ("service", "greeter.v1.Greeter"),
            ("method", "SayHello"),
            ("code", "OK"),
        ],
    );
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let out: serde_json::Value = http_side
        .get("/relay/traceparent")
        .header("x-correlation-id", "relay-1")
        .header("traceparent", tp)
        .await
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(out["correlation_id"], "relay-1", "{out}");
    assert_eq!(
        out["message"], tp,
        "with no trace export, the caller's traceparent passes on"
    );
    let after = prom::global(
        "rpc_client_duration_seconds_count",
        &[
            ("service", "greeter.v1.Greeter"),
            ("method", "SayHello"),
            ("code", "OK"),
        ],
    );
    assert_eq!(after - before, 1.0);
    // The reachable target keeps the service ready.
    let ready = http_side.get("/ready").await.unwrap();
    assert_eq!(ready.status(), 200, "{}", ready.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_methods_are_retried_on_unavailable_and_others_are_not() {
    let (server, _) = probe().await;
    let retried = channel_to(&server)
        .retry(
            Retry::new(3).backoff(Duration::from_millis(1), Duration::from_millis(5)),
            ["/greeter.v1.Greeter/SayHello"],
        )
        .unwrap()
        .build()
        .unwrap();
    let reply = GreeterClient::new(retried)
        .say_hello(hello("flaky:a"))
        .await
        .unwrap();
    assert_eq!(
        reply.into_inner().message,
        "Hello, flaky:a!",
        "third attempt"
    );
    assert_eq!(FLAKY.lock().unwrap()["a"], 3);

    let not_listed = channel_to(&server)
        .retry(Retry::new(3), ["/greeter.v1.Greeter/Chat"])
        .unwrap()
        .build()
        .unwrap();
    let status = GreeterClient::new(not_listed)
        .say_hello(hello("flaky:b"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(
        FLAKY.lock().unwrap()["b"],
        1,
        "a method not marked idempotent runs once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_target_opens_the_breaker_and_fails_readiness() {
    let port = patron_tests::free_port();
    let channel = PatronChannel::builder(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect_timeout(Duration::from_millis(200))
        .circuit_breaker(CircuitBreaker::new("dead-greeter").failure_threshold(2))
        .build()
        .unwrap();
    let mut client = GreeterClient::new(channel.clone());
    for _ in 0..2 {
        let status = client.say_hello(hello("x")).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    }
    let status = client.say_hello(hello("x")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status.message().contains("dead-greeter"),
        "the open breaker answers: {status:?}"
    );

    let server = TestServer::start(
        Service::new("unready")
            .with_grpc_registered([])
            .provide(GreeterClient::new(channel.clone()))
            .with_client(channel),
    )
    .await
    .unwrap();
    let ready = server.get("/ready").await.unwrap();
    assert_eq!(ready.status(), 503);
    let body = ready.text();
    assert!(
        body.contains(&format!("grpc client 127.0.0.1:{port}")),
        "{body}"
    );
    assert!(body.contains("cannot reach the gRPC target"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_channel_speaks_tls_and_mutual_tls() {
    let pki = patron_tests::pki::Pki::new();
    let mut service = service("grpc-tls").provide(Probe);
    service.config_mut().grpc.tls = Some(pki.files("server", true));
    let server = TestServer::start(service).await.unwrap();
    let url = format!("https://localhost:{}", server.grpc_addr().unwrap().port());
    let (cert, key) = pki.issue("client", "client");
    let channel = PatronChannel::builder(url.clone())
        .unwrap()
        .tls_ca(pki.path("ca.pem"))
        .unwrap()
        .tls_identity(&cert, &key)
        .unwrap()
        .build()
        .unwrap();
    let reply = GreeterClient::new(channel)
        .say_hello(hello("tls"))
        .await
        .unwrap();
    assert_eq!(reply.into_inner().message, "Hello, tls!");
    // Without a client certificate the server refuses the handshake.
    let anonymous = PatronChannel::builder(url)
        .unwrap()
        .tls_ca(pki.path("ca.pem"))
        .unwrap()
        .build()
        .unwrap();
    let status = GreeterClient::new(anonymous)
        .say_hello(hello("tls"))
        .await
        .unwrap_err();
    // (Under TLS 1.3 the client learns it was refused only from the alert
    // or the closed connection: tonic reports UNKNOWN or CANCELLED.)
    assert!(
        matches!(
            status.code(),
            Code::Unavailable | Code::Cancelled | Code::Unknown
        ),
        "{status:?}"
    );
}

#[test]
fn builder_mistakes_are_clear_errors() {
    // Outside the runtime (this is a plain #[test]) the channel cannot start.
    let err = PatronChannel::builder("http://h:1")
        .unwrap()
        .build()
        .unwrap_err();
    assert!(matches!(err, GrpcClientError::NoRuntime), "{err}");
    assert!(
        err.to_string().contains("inside the tokio runtime"),
        "{err}"
    );
    let err = PatronChannel::builder("not a uri").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("invalid gRPC target \"not a uri\""),
        "{err}"
    );
    let err = PatronChannel::builder("http://h:1")
        .unwrap()
        .retry(Retry::new(2), ["SayHello"])
        .unwrap_err();
    assert!(matches!(err, GrpcClientError::Method { .. }));
    assert!(
        err.to_string().contains("/greeter.v1.Greeter/SayHello"),
        "{err}"
    );
    let err = PatronChannel::builder("https://h:1")
        .unwrap()
        .tls_ca("/nonexistent/ca.pem")
        .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
}

/// SayHello calls `server` has answered, from its own metrics.
async fn answered(server: &TestServer) -> f64 {
    let samples = prom::scrape(&reqwest::Client::new(), &server.url("/metrics")).await;
    prom::value(
        &samples,
        "rpc_server_duration_seconds_count",
        &[
            ("service", "greeter.v1.Greeter"),
            ("method", "SayHello"),
            ("code", "OK"),
        ],
    )
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discovered_channel_balances_over_the_instances_registered_in_etcd() {
    use patron::config::{DiscoveryBackend, DiscoveryConfig};
    use patron::discovery::Discovery;
    use patron::test::TestServer;

    let err = PatronChannel::builder("http://nowhere.discover")
        .unwrap()
        .build()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"nowhere\"") && err.contains("PATRON_DISCOVERY"),
        "{err}"
    );
    let Some(endpoint) = patron_tests::service("PATRON_TEST_ETCD_ENDPOINT", "etcd") else {
        return;
    };
    let config = DiscoveryConfig {
        backend: DiscoveryBackend::Etcd(vec![endpoint]),
        ttl: Duration::from_secs(3),
        address: Some("127.0.0.1".into()),
    };
    let name = patron_tests::unique("grpc-disc");
    let start = || {
        let mut s = service(&name).provide(Probe);
        s.config_mut().discovery = Some(config.clone());
        s.config_mut().shutdown_delay = Duration::from_millis(800);
        TestServer::start(s)
    };
    let a = start().await.unwrap();
    let b = start().await.unwrap();
    let discovery = Discovery::new(&config).unwrap();
    let listed = |n: usize| {
        let d = discovery.clone();
        let name = name.clone();
        async move { d.resolve(&name).await.map(|i| i.len()).unwrap_or(0) == n }
    };
    assert!(patron_tests::eventually(Duration::from_secs(5), || listed(2)).await);
    let registered = discovery.resolve(&name).await.unwrap();
    assert!(
        registered.iter().all(|i| i.grpc_port.is_some()),
        "the gRPC port is registered: {registered:?}"
    );

    let channel = PatronChannel::builder(format!("http://{name}.discover"))
        .unwrap()
        .discovery(discovery.clone())
        .build()
        .unwrap();
    let mut client = GreeterClient::new(channel);
    for i in 0..40 {
        client
            .say_hello(hello(&format!("n{i}")))
            .await
            .unwrap_or_else(|s| panic!("call {i}: {s:?}"));
    }
    let (on_a, on_b) = (answered(&a).await, answered(&b).await);
    eprintln!("40 calls: {on_a} on a, {on_b} on b");
    assert_eq!(on_a + on_b, 40.0);
    assert!(on_a >= 5.0 && on_b >= 5.0, "spread: {on_a} / {on_b}");

    // A third instance joins and gets calls; one leaves gracefully (it is
    // deregistered at the signal, before it stops serving): no call fails.
    let c = start().await.unwrap();
    assert!(patron_tests::eventually(Duration::from_secs(5), || listed(3)).await);
    let joined = patron_tests::eventually(Duration::from_secs(5), || {
        let known = discovery.known(&name).len();
        async move { known == 3 }
    })
    .await;
    assert!(joined, "the channel's registry view follows");
    a.begin_shutdown();
    for i in 0..60 {
        client
            .say_hello(hello(&format!("m{i}")))
            .await
            .unwrap_or_else(|s| panic!("call {i} while one instance leaves: {s:?}"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.join().await.unwrap();

    // A dead instance (closed ports) in the registry: its refused
    // connections send the call to a live instance — whatever the method,
    // nothing was sent — and it is ejected.
    let dead = patron::discovery::Instance {
        service: name.clone(),
        id: "dead".into(),
        address: "127.0.0.1".into(),
        http_port: patron_tests::free_port(),
        grpc_port: Some(patron_tests::free_port()),
        version: "x".into(),
    };
    let lease = discovery
        .registry()
        .register(&dead, Duration::from_secs(30), "")
        .await
        .unwrap();
    let seen = patron_tests::eventually(Duration::from_secs(5), || {
        let n = discovery.known(&name).len();
        async move { n == 3 }
    })
    .await;
    assert!(seen, "the dead instance is listed");
    for i in 0..40 {
        client
            .say_hello(hello(&format!("d{i}")))
            .await
            .unwrap_or_else(|s| panic!("call {i} with a dead instance listed: {s:?}"));
    }
    assert!(
        prom::global("discovery_ejections_total", &[("service", &name)]) >= 1.0,
        "the dead instance was ejected"
    );
    discovery.registry().deregister(&lease).await.unwrap();
    let on_c = answered(&c).await;
    eprintln!("then {on_c} on the new instance c");
    assert!(on_c >= 5.0, "the new instance takes calls: {on_c}");
    assert!(answered(&b).await > on_b);
}
