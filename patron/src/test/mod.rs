//! Running a service in-process for tests: [`TestServer`] binds
//! `127.0.0.1:0`, serves in the background, and sends requests to itself
//! over real TCP ([`TestServer::get`], [`TestServer::post_json`], …),
//! answering with the status, headers and body to assert on.
//!
//! ```standalone_crate
//! use patron::prelude::*;
//! use patron::test::TestServer;
//!
//! #[patron::route(GET "/ping")]
//! async fn ping() -> &'static str { "pong" }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> patron::Result<()> {
//! let server = TestServer::start(Service::new("demo")).await?;
//! let pong = server.get("/ping").await?;
//! assert_eq!(pong.status(), StatusCode::OK);
//! assert_eq!(pong.text(), "pong");
//! assert!(pong.header("x-correlation-id").is_some());
//! server.shutdown().await?;
//! # Ok(())
//! # }
//! ```
//!
//! Consumers declared with `#[patron::consumer]` do not start in a
//! `TestServer` unless the service names them with
//! [`Service::with_consumers`] — a test of routes needs no broker.

use std::net::{IpAddr, SocketAddr};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use http::Method;
use serde::Serialize;

use crate::error::Error;
use crate::service::Service;

mod broker;
mod request;

pub use broker::{Broker, InMemory, Outcome, Publish, Report, StoredMessage};
pub use request::{TestRequest, TestResponse};

/// A service running in the current process, on a free loopback port.
#[derive(Debug)]
pub struct TestServer {
    addr: SocketAddr,
    grpc_addr: Option<SocketAddr>,
    base_url: String,
    stop: CancellationToken,
    task: JoinHandle<Result<(), Error>>,
}

impl TestServer {
    /// Validates and starts `service` on `127.0.0.1:0`. Start-up errors
    /// (duplicate routes, missing dependencies…) are returned here. Every
    /// route linked into the test binary is served; `#[patron::consumer]`s
    /// run only when the service names them with
    /// [`Service::with_consumers`].
    pub async fn start(mut service: Service) -> Result<Self, Error> {
        if service.consumers.is_none() {
            service.consumers = Some(Vec::new());
        }
        let config = service.config_mut();
        config.http_host = IpAddr::from([127, 0, 0, 1]);
        config.http_port = 0;
        config.grpc.port = 0;
        let bound = service.bind().await?;
        let addr = bound.local_addr();
        let grpc_addr = bound.grpc_addr();
        let stop = CancellationToken::new();
        let task = tokio::spawn(bound.run_until(stop.clone()));
        Ok(TestServer {
            addr,
            grpc_addr,
            base_url: format!("http://{addr}"),
            stop,
            task,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The base URL joined with `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The gRPC server's address, when the service has gRPC services
    /// (served on a free port, as the HTTP server is).
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc_addr
    }

    /// `http://127.0.0.1:PORT` of the gRPC server, for a tonic channel.
    ///
    /// # Panics
    ///
    /// When the service has no gRPC service.
    pub fn grpc_url(&self) -> String {
        match self.grpc_addr {
            Some(addr) => format!("http://{addr}"),
            None => panic!("this service has no gRPC services, so no gRPC server"),
        }
    }

    /// A request with `method` to `path` (with its query, if any), sent when
    /// awaited.
    pub fn request(&self, method: Method, path: &str) -> TestRequest {
        TestRequest::new(self.addr, method, path)
    }

    /// A `GET` of `path`.
    pub fn get(&self, path: &str) -> TestRequest {
        self.request(Method::GET, path)
    }

    /// A `POST` to `path`, without a body until one is given.
    pub fn post(&self, path: &str) -> TestRequest {
        self.request(Method::POST, path)
    }

    /// A `POST` of `body` as JSON to `path`.
    pub fn post_json(&self, path: &str, body: &impl Serialize) -> TestRequest {
        self.post(path).json(body)
    }

    /// A `PUT` to `path`.
    pub fn put(&self, path: &str) -> TestRequest {
        self.request(Method::PUT, path)
    }

    /// A `DELETE` of `path`.
    pub fn delete(&self, path: &str) -> TestRequest {
        self.request(Method::DELETE, path)
    }

    /// Starts the graceful shutdown, as SIGTERM would, without waiting.
    pub fn begin_shutdown(&self) {
        self.stop.cancel();
    }

    /// Shuts down gracefully and returns the service's result.
    pub async fn shutdown(self) -> Result<(), Error> {
        self.stop.cancel();
        self.join().await
    }

    /// Waits for the service to stop by itself or after `begin_shutdown`.
    pub async fn join(self) -> Result<(), Error> {
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(Error::msg(format!("the service task failed: {e}"))),
        }
    }
}
