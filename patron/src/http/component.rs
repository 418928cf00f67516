//! The HTTP server as a [`Component`], run by the service under the same
//! contract as consumers and user components: it starts with the others,
//! drains from `ctx.draining()` on, closes its listener at
//! `ctx.shutdown()`, and gives open connections up to the shutdown timeout.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use super::router::App;
use super::server::{self, Timeouts};
use super::tls::Tls;
use crate::component::{Component, ComponentContext, ComponentInfo};
use crate::config::Config;
use crate::error::Error;

/// The service's HTTP server: its bound listener and the application it
/// serves.
pub(crate) struct HttpServer {
    listener: TcpListener,
    addr: SocketAddr,
    app: Arc<App>,
    tls: Option<Arc<Tls>>,
    info: ComponentInfo,
}

impl HttpServer {
    /// Binds `PATRON_HTTP_HOST`:`PATRON_HTTP_DEFAULT_PORT` (port 0 picks a
    /// free one), so the address is known before serving starts.
    pub(crate) async fn bind(config: &Config, app: App, routes: usize) -> Result<Self, Error> {
        // The files first: a bad certificate is a start-up error before the
        // port opens.
        let tls = match &config.http_tls {
            Some(files) => Some(Arc::new(Tls::load(files)?)),
            None => None,
        };
        let addr = SocketAddr::new(config.http_host, config.http_port);
        let listener = TcpListener::bind(addr).await.map_err(|e| {
            Error::msg(format!(
                "cannot listen on {addr} (PATRON_HTTP_DEFAULT_PORT={}): {e}",
                config.http_port
            ))
        })?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::msg(format!("cannot read the bound address of {addr}: {e}")))?;
        Ok(HttpServer {
            listener,
            addr,
            app: Arc::new(app),
            tls,
            info: Self::describe(config, routes),
        })
    }

    /// What `/info` shows for a server on the configured port with `routes`
    /// routes.
    pub(crate) fn describe(config: &Config, routes: usize) -> ComponentInfo {
        ComponentInfo::new("http", "http")
            .detail("port", config.http_port)
            .detail("routes", routes)
            .detail("tls", super::tls::mode(config.http_tls.as_ref()))
    }

    /// The server's TLS, to reload its certificate on SIGHUP.
    pub(crate) fn tls(&self) -> Option<&Arc<Tls>> {
        self.tls.as_ref()
    }

    /// The address the listener is bound to.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Component for HttpServer {
    fn info(&self) -> ComponentInfo {
        self.info.clone()
    }

    async fn run(self, ctx: ComponentContext) -> Result<(), Error> {
        let config = ctx.config();
        let timeouts = Timeouts::from_config(config);
        tracing::info!(address = %self.addr, tls = self.tls.is_some(), "HTTP server listening");
        server::serve(
            self.listener,
            self.app,
            self.tls,
            timeouts,
            ctx.draining().clone(),
            ctx.shutdown().clone(),
            config.shutdown_timeout,
        )
        .await
        .map_err(Error::msg)
    }
}
