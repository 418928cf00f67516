//! Running a service in-process for tests: [`TestServer`] binds
//! `127.0.0.1:0`, serves in the background and hands back its base URL.
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
//! let url = server.url("/ping");
//! assert!(url.starts_with("http://127.0.0.1:"));
//! server.shutdown().await?;
//! # Ok(())
//! # }
//! ```

use std::net::{IpAddr, SocketAddr};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::service::Service;

/// A service running in the current process, on a free loopback port.
#[derive(Debug)]
pub struct TestServer {
    addr: SocketAddr,
    base_url: String,
    stop: CancellationToken,
    task: JoinHandle<Result<(), Error>>,
}

impl TestServer {
    /// Validates and starts `service` on `127.0.0.1:0`. Start-up errors
    /// (duplicate routes, missing dependencies…) are returned here.
    pub async fn start(mut service: Service) -> Result<Self, Error> {
        let config = service.config_mut();
        config.http_host = IpAddr::from([127, 0, 0, 1]);
        config.http_port = 0;
        let bound = service.bind().await?;
        let addr = bound.local_addr();
        let stop = CancellationToken::new();
        let task = tokio::spawn(bound.run_until(stop.clone()));
        Ok(TestServer {
            addr,
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
