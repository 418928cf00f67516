//! Redis (feature `redis`): a reconnecting connection over redis-rs's
//! `ConnectionManager`, instrumented like patron's other clients. Every
//! command is a client span (`db.system.name=redis`, the command's name —
//! never its keys or values) and a sample of
//! `redis_client_command_duration_seconds{command,outcome}`; given to
//! `Service::with_client`, a `PING` joins `/ready`.
//!
//! Use redis-rs's command API on a clone (`AsyncCommands`, `redis::cmd`,
//! pipelines): [`Redis`] is the connection they run on.
//!
//! ```no_run
//! use patron::client::redis::{AsyncCommands, Redis};
//! use patron::prelude::*;
//!
//! #[patron::route(GET "/visits")]
//! async fn visits(redis: Dep<Redis>) -> Result<String, patron::Error> {
//!     let mut conn = (*redis).clone();
//!     let n: i64 = conn.incr("visits", 1).await?;
//!     Ok(n.to_string())
//! }
//!
//! #[patron::main]
//! async fn main(service: Service) -> patron::Result<Service> {
//!     let redis = Redis::from_config(service.current_config())?;
//!     Ok(service.with_client(redis))
//! }
//! ```

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use prometheus::HistogramVec;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, Pipeline, RedisFuture, Value};
use tracing::Instrument;

pub use redis::{AsyncCommands, RedisError};

use crate::config::{BrokerUrl, Config};
use crate::error::Error;
use crate::observe::metrics;

/// How long a `/ready` PING may take.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// A Redis client could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RedisClientError {
    /// `PATRON_REDIS_URL` is not set.
    #[error("PATRON_REDIS_URL is not set; expected a redis:// URL such as redis://127.0.0.1:6379")]
    NotConfigured,
    /// The URL is not one redis-rs accepts.
    #[error("invalid Redis URL {url}: {source}")]
    Url {
        /// The URL, password hidden.
        url: String,
        /// What redis-rs said.
        source: RedisError,
    },
    /// Made outside the tokio runtime, where its connection task runs.
    #[error(
        "a Redis client must be made inside the tokio runtime (in `#[patron::main]`, a handler or a component), not before it starts"
    )]
    NoRuntime,
}

/// A reconnecting, instrumented Redis connection; cheap to clone (clones
/// share the connection, which pipelines their commands).
#[derive(Clone)]
pub struct Redis {
    conn: ConnectionManager,
    /// `host:port`, for spans and errors.
    address: String,
    url: BrokerUrl,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Redis {
    /// A client for `url` (`redis://[user:password@]host:port[/db]`). It
    /// connects on first use and reconnects (backing off) after the server
    /// or the network goes away; each command waits at most 5 s for its
    /// answer.
    pub fn new(url: &str) -> Result<Redis, RedisClientError> {
        let shown = BrokerUrl::new(url);
        let bad = |source| RedisClientError::Url {
            url: shown.redacted(),
            source,
        };
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(RedisClientError::NoRuntime);
        }
        let client = redis::Client::open(url).map_err(bad)?;
        let address = client.get_connection_info().addr().to_string();
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_max_delay(Duration::from_secs(2));
        let conn = ConnectionManager::new_lazy_with_config(client, config).map_err(bad)?;
        Ok(Redis {
            conn,
            address,
            url: shown,
        })
    }

    /// A client for `PATRON_REDIS_URL`.
    pub fn from_config(config: &Config) -> Result<Redis, RedisClientError> {
        let url = config
            .redis_url
            .as_ref()
            .ok_or(RedisClientError::NotConfigured)?;
        Redis::new(url.expose())
    }

    /// The server's `host:port`.
    pub fn address(&self) -> &str {
        &self.address
    }
}

fn histogram() -> Option<&'static HistogramVec> {
    static HISTOGRAM: OnceLock<Option<HistogramVec>> = OnceLock::new();
    metrics::global().duration_histogram(
        &HISTOGRAM,
        "redis_client_command_duration_seconds",
        "Duration of Redis commands, by command and outcome (ok or error).",
        &["command", "outcome"],
    )
}

/// A command's name for spans and labels: its first argument, upper-cased,
/// when it is a plain word (the names come from code, but stay bounded).
fn command_name(cmd: &Cmd) -> String {
    match cmd.args_iter().next() {
        Some(redis::Arg::Simple(name))
            if !name.is_empty() && name.len() <= 32 && name.iter().all(u8::is_ascii_alphabetic) =>
        {
            String::from_utf8_lossy(name).to_ascii_uppercase()
        }
        _ => "OTHER".to_string(),
    }
}

impl Redis {
    /// Runs `call` as one instrumented operation named `name`; `failed`
    /// finds a server error in a successful reply (redis-rs hands those
    /// back as values).
    async fn instrumented<T>(
        &self,
        name: String,
        call: impl std::future::Future<Output = Result<T, RedisError>>,
        failed: impl Fn(&T) -> Option<String>,
    ) -> Result<T, RedisError> {
        let span = tracing::debug_span!(
            "Redis command",
            otel.name = %name,
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            error.message = tracing::field::Empty,
            db.system.name = "redis",
            db.operation.name = %name,
            server.address = %self.address,
        );
        let started = Instant::now();
        let result = call.instrument(span.clone()).await;
        let error = match &result {
            Ok(value) => failed(value),
            Err(e) => Some(e.to_string()),
        };
        let outcome = if error.is_some() { "error" } else { "ok" };
        super::finish_call(
            &span,
            error.as_ref().map(|e| e as &dyn std::fmt::Display),
            histogram(),
            &[name.as_str(), outcome],
            started,
        );
        result
    }
}

/// The message of a server error reply.
fn server_error(value: &Value) -> Option<String> {
    match value {
        Value::ServerError(e) => Some(e.to_string()),
        _ => None,
    }
}

impl ConnectionLike for Redis {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        let name = command_name(cmd);
        let mut conn = self.conn.clone();
        Box::pin(async move {
            self.instrumented(
                name,
                async move { conn.req_packed_command(cmd).await },
                server_error,
            )
            .await
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        let mut conn = self.conn.clone();
        Box::pin(async move {
            self.instrumented(
                "PIPELINE".to_string(),
                async move { conn.req_packed_commands(pipeline, offset, count).await },
                |values: &Vec<Value>| values.iter().find_map(server_error),
            )
            .await
        })
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }
}

impl crate::client::Client for Redis {
    fn name(&self) -> String {
        "redis".to_string()
    }

    fn has_readiness(&self) -> bool {
        true
    }

    /// A `PING` answered within two seconds.
    fn ready(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            let mut conn = self.clone();
            let ping = redis::cmd("PING");
            let ping = ping.query_async::<String>(&mut conn);
            match tokio::time::timeout(READY_TIMEOUT, ping).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(Error::msg(format!(
                    "Redis at {} does not answer PING: {e}",
                    self.address
                ))),
                Err(_) => Err(Error::msg(format!(
                    "Redis at {} did not answer PING within {}s",
                    self.address,
                    READY_TIMEOUT.as_secs()
                ))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_names_are_words_or_other() {
        assert_eq!(command_name(redis::cmd("get").arg("k")), "GET");
        assert_eq!(command_name(redis::cmd("CLIENT").arg("LIST")), "CLIENT");
        assert_eq!(command_name(&redis::cmd("se t")), "OTHER");
        assert_eq!(command_name(&Cmd::new()), "OTHER");
    }

    #[test]
    fn a_client_needs_the_runtime_and_a_valid_url() {
        assert!(matches!(
            Redis::new("redis://127.0.0.1:1"),
            Err(RedisClientError::NoRuntime)
        ));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let err = Redis::new("http://user:secret@host")
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with("invalid Redis URL http://user:***@host"),
                "{err}"
            );
            assert!(!err.contains("secret"), "{err}");
            let config = Config::default();
            assert!(matches!(
                Redis::from_config(&config),
                Err(RedisClientError::NotConfigured)
            ));
        });
    }
}
