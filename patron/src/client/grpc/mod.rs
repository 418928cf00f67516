//! An instrumented gRPC channel over tonic's: hand it to any
//! tonic-generated client (`GreeterClient::new(channel)`).
//!
//! Every call carries `traceparent`, `baggage` and `x-correlation-id` from
//! the request or message being handled (metadata the caller set wins),
//! records a client span (`rpc.system=grpc`, `rpc.service`, `rpc.method`,
//! `rpc.grpc.status_code`) and the `rpc_client_duration_seconds{service,
//! method,code}` histogram, and can go through patron's rate limit, circuit
//! breaker and retry. Given to `Service::with_client`, the channel's target
//! joins `/ready`: a target that cannot be reached makes the service not
//! ready.
//!
//! With service discovery (feature `discovery`, `PATRON_DISCOVERY`), a
//! target `http://{service}.discover` sends each call to one of the
//! service's instances that registered a gRPC port, picked as the HTTP
//! client picks (power of two choices, ejection after refused
//! connections). A call the server never saw — a refused connection, a
//! draining server's GOAWAY — is sent again, to another instance, for any
//! method (gRPC's transparent retry).
//!
//! ```
//! use patron::client::grpc::Channel;
//! use patron::reliability::{CircuitBreaker, Retry};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), patron::client::grpc::GrpcClientError> {
//! let channel = Channel::builder("http://invoice:50001")?
//!     .timeout(std::time::Duration::from_secs(2))
//!     .retry(Retry::new(3), ["/invoice.v1.Invoices/Get"])?
//!     .circuit_breaker(CircuitBreaker::new("invoice"))
//!     .build()?;
//! // let client = InvoicesClient::new(channel.clone());
//! // service.with_client(channel)
//! # Ok(())
//! # }
//! ```

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::error::Error;
use crate::reliability::{CircuitBreaker, RateLimit, Retry};

mod call;
#[cfg(feature = "discovery")]
mod discovered;
mod replay;

/// A boxed error, as tonic clients take from their transport.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A gRPC channel could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum GrpcClientError {
    /// The target is not a usable URI.
    #[error("invalid gRPC target {target:?}: {reason}")]
    Target {
        /// The target as given.
        target: String,
        /// What is wrong.
        reason: String,
    },
    /// A method named for retries is not `/package.Service/Method`.
    #[error(
        "invalid idempotent method {method:?}: write the full path, such as \"/greeter.v1.Greeter/SayHello\""
    )]
    Method {
        /// The method as given.
        method: String,
    },
    /// The channel was built outside a tokio runtime (it starts a task).
    #[error(
        "a gRPC channel must be built inside the tokio runtime (in `#[patron::main]`, a handler or a component), not before it starts"
    )]
    NoRuntime,
    /// A TLS file could not be read or used.
    #[error("gRPC client TLS {what} {path}: {reason}")]
    Tls {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// Builds a [`Channel`].
#[derive(Debug)]
pub struct ChannelBuilder {
    endpoint: Endpoint,
    target: String,
    authority: String,
    tls: Option<ClientTlsConfig>,
    retry: Option<(Retry, HashSet<String>)>,
    breaker: Option<CircuitBreaker>,
    limit: Option<RateLimit>,
    /// The service a `….discover` target names.
    service: Option<String>,
    timeout: Option<Duration>,
    connect_timeout: Option<Duration>,
    #[cfg(feature = "discovery")]
    discovery: Option<crate::discovery::Discovery>,
}

impl ChannelBuilder {
    /// Bounds each call (tonic's timeout, also sent as `grpc-timeout`).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.endpoint = self.endpoint.timeout(timeout);
        self.timeout = Some(timeout);
        self
    }

    /// Bounds each connection attempt.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.endpoint = self.endpoint.connect_timeout(timeout);
        self.connect_timeout = Some(timeout);
        self
    }

    /// Resolves an `http://{service}.discover` target through `discovery`
    /// (by default, the registry `PATRON_DISCOVERY` names, shared by every
    /// client of the process).
    #[cfg(feature = "discovery")]
    pub fn discovery(mut self, discovery: crate::discovery::Discovery) -> Self {
        self.discovery = Some(discovery);
        self
    }

    /// Retries the calls of `idempotent` methods (full paths such as
    /// `/greeter.v1.Greeter/SayHello`) that fail with `UNAVAILABLE` or do not
    /// reach the server, as `retry` says. Only methods named here are
    /// retried: a retried call may run twice on the server. Their request
    /// is buffered to be sent again, so name unary and server-streaming
    /// methods (whose request is one message).
    pub fn retry<I, M>(mut self, retry: Retry, idempotent: I) -> Result<Self, GrpcClientError>
    where
        I: IntoIterator<Item = M>,
        M: Into<String>,
    {
        let mut methods = HashSet::new();
        for method in idempotent {
            let method = method.into();
            let well_formed = method
                .strip_prefix('/')
                .and_then(|m| m.split_once('/'))
                .is_some_and(|(s, m)| !s.is_empty() && !m.is_empty() && !m.contains('/'));
            if !well_formed {
                return Err(GrpcClientError::Method { method });
            }
            methods.insert(method);
        }
        self.retry = Some((retry, methods));
        Ok(self)
    }

    /// Fails calls fast while `breaker` is open. Transport errors and the
    /// codes `UNAVAILABLE`, `DEADLINE_EXCEEDED`, `INTERNAL`, `UNKNOWN` and
    /// `DATA_LOSS` count as failures.
    pub fn circuit_breaker(mut self, breaker: CircuitBreaker) -> Self {
        self.breaker = Some(breaker);
        self
    }

    /// Waits for a token of `limit` before each call.
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Trusts the CA certificates in the PEM file at `ca` (for an `https`
    /// target).
    pub fn tls_ca(mut self, ca: impl AsRef<Path>) -> Result<Self, GrpcClientError> {
        let pem = read(ca.as_ref(), "CA")?;
        let tls = self.tls.take().unwrap_or_default();
        self.tls = Some(tls.ca_certificate(Certificate::from_pem(pem)));
        Ok(self)
    }

    /// Presents this certificate and key (PEM files) to servers that ask
    /// for one (mutual TLS).
    pub fn tls_identity(
        mut self,
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self, GrpcClientError> {
        let identity = Identity::from_pem(
            read(cert.as_ref(), "certificate")?,
            read(key.as_ref(), "key")?,
        );
        let tls = self.tls.take().unwrap_or_default();
        self.tls = Some(tls.identity(identity));
        Ok(self)
    }

    /// The channel. It connects on first use (and reconnects), so building
    /// it never fails on an unreachable target. It must be built inside the
    /// tokio runtime, where it starts its connection task.
    pub fn build(self) -> Result<Channel, GrpcClientError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(GrpcClientError::NoRuntime);
        }
        if let Some(service) = self.service.clone() {
            return self.build_discovered(service);
        }
        let endpoint = match self.tls {
            Some(tls) => self
                .endpoint
                .tls_config(tls)
                .map_err(|e| GrpcClientError::Tls {
                    what: "configuration",
                    path: self.target.clone(),
                    reason: e.to_string(),
                })?,
            None => self.endpoint,
        };
        Ok(Channel {
            inner: Target::Fixed(endpoint.connect_lazy()),
            shared: Arc::new(Shared {
                authority: self.authority,
                retry: self.retry,
                breaker: self.breaker,
                limit: self.limit,
            }),
        })
    }

    /// A channel balanced over `service`'s instances with a gRPC port.
    #[cfg(feature = "discovery")]
    fn build_discovered(mut self, service: String) -> Result<Channel, GrpcClientError> {
        let bad = |reason: String| GrpcClientError::Target {
            target: self.target.clone(),
            reason,
        };
        let discovery = match self.discovery.take() {
            Some(d) => d,
            None => crate::discovery::Discovery::shared_from_env()
                .map_err(|e| bad(e.to_string()))?
                .ok_or_else(|| {
                    bad(format!("the host names the service {service:?}, but no registry is configured: set PATRON_DISCOVERY or give ChannelBuilder::discovery"))
                })?,
        };
        let template = discovered::Template {
            https: self.endpoint.uri().scheme_str() == Some("https"),
            timeout: self.timeout,
            connect_timeout: self.connect_timeout,
            tls: self.tls.take(),
        };
        Ok(Channel {
            inner: Target::Discovered(Arc::new(discovered::Instances::new(
                discovery, service, template,
            ))),
            shared: Arc::new(Shared {
                authority: self.authority,
                retry: self.retry,
                breaker: self.breaker,
                limit: self.limit,
            }),
        })
    }

    #[cfg(not(feature = "discovery"))]
    fn build_discovered(self, service: String) -> Result<Channel, GrpcClientError> {
        Err(GrpcClientError::Target {
            target: self.target,
            reason: format!(
                "the host names the service {service:?}, which needs patron's `discovery` feature"
            ),
        })
    }
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, GrpcClientError> {
    std::fs::read(path).map_err(|e| GrpcClientError::Tls {
        what,
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// An instrumented gRPC channel; see the module doc. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Channel {
    inner: Target,
    shared: Arc<Shared>,
}

/// Where calls go: one target, or the instances of a discovered service.
#[derive(Debug, Clone)]
enum Target {
    Fixed(tonic::transport::Channel),
    #[cfg(feature = "discovery")]
    Discovered(Arc<discovered::Instances>),
}

/// The instance a call went to, for the balancer's bookkeeping.
#[cfg(feature = "discovery")]
type Picked = Option<crate::discovery::Picked>;
#[cfg(not(feature = "discovery"))]
type Picked = Option<std::convert::Infallible>;

impl Target {
    /// The channel for one attempt, avoiding the instances in `tried`.
    async fn pick(
        &self,
        tried: &[String],
    ) -> Result<(tonic::transport::Channel, Picked), BoxError> {
        #[cfg(not(feature = "discovery"))]
        let _ = tried;
        match self {
            Target::Fixed(channel) => Ok((channel.clone(), None)),
            #[cfg(feature = "discovery")]
            Target::Discovered(instances) => {
                let (channel, picked) = instances
                    .pick(tried)
                    .await
                    .map_err(|e| Box::new(tonic::Status::unavailable(e.to_string())) as BoxError)?;
                Ok((channel, Some(picked)))
            }
        }
    }

    /// Tells the balancer how the call to the instance it picked went; an
    /// instance that turned the call away unseen joins `tried`.
    fn report(picked: Picked, error: Option<&tonic::transport::Error>, tried: &mut Vec<String>) {
        let Some(picked) = picked else { return };
        #[cfg(feature = "discovery")]
        match error {
            Some(e) if replay::refused(e) => {
                picked.unreachable();
                tried.push(picked.instance().id.clone());
            }
            Some(e) if replay::unseen(e) => tried.push(picked.instance().id.clone()),
            _ => picked.reached(),
        }
        #[cfg(not(feature = "discovery"))]
        {
            let _ = (error, tried);
            match picked {}
        }
    }

    /// How many instances one call may try when the first turns it away
    /// unseen.
    fn tries(&self) -> usize {
        match self {
            Target::Fixed(_) => 2,
            #[cfg(feature = "discovery")]
            Target::Discovered(_) => 3,
        }
    }
}

#[derive(Debug)]
struct Shared {
    /// `host:port` (or `{service}.discover`), for spans, labels and
    /// readiness.
    authority: String,
    retry: Option<(Retry, HashSet<String>)>,
    breaker: Option<CircuitBreaker>,
    limit: Option<RateLimit>,
}

impl Channel {
    /// A builder for a channel to `target`, such as `http://invoice:50001`
    /// (or `https://…` with [`ChannelBuilder::tls_ca`]).
    pub fn builder(target: impl Into<String>) -> Result<ChannelBuilder, GrpcClientError> {
        let target = target.into();
        let bad = |reason: String| GrpcClientError::Target {
            target: target.clone(),
            reason,
        };
        let endpoint = Endpoint::from_shared(target.clone()).map_err(|e| bad(e.to_string()))?;
        let uri = endpoint.uri();
        let Some(host) = uri.host() else {
            return Err(bad("no host; write it as http://host:port".to_string()));
        };
        let service = super::logical_service(host).map(str::to_string);
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("https") {
                443
            } else {
                80
            });
        let authority = match &service {
            Some(_) => host.to_string(),
            None => format!("{host}:{port}"),
        };
        Ok(ChannelBuilder {
            endpoint,
            target,
            authority,
            tls: None,
            retry: None,
            breaker: None,
            limit: None,
            service,
            timeout: None,
            connect_timeout: None,
            #[cfg(feature = "discovery")]
            discovery: None,
        })
    }

    /// The target's `host:port`.
    pub fn authority(&self) -> &str {
        &self.shared.authority
    }
}

impl crate::client::Client for Channel {
    fn name(&self) -> String {
        format!("grpc client {}", self.shared.authority)
    }

    fn has_readiness(&self) -> bool {
        true
    }

    /// Whether a TCP connection to the target opens within two seconds
    /// (for a discovered service: whether an instance with a gRPC port is
    /// known).
    fn ready(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            let authority = &self.shared.authority;
            #[cfg(feature = "discovery")]
            if let Target::Discovered(instances) = &self.inner {
                return instances.ready().map_err(Error::msg);
            }
            match tokio::time::timeout(
                Duration::from_secs(2),
                tokio::net::TcpStream::connect(authority.as_str()),
            )
            .await
            {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(Error::msg(format!(
                    "cannot reach the gRPC target {authority}: {e}"
                ))),
                Err(_) => Err(Error::msg(format!(
                    "cannot reach the gRPC target {authority}: no connection within 2s"
                ))),
            }
        })
    }
}
