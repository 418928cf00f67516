//! `PATRON_*` configuration read from the environment once, at start-up.
//!
//! Every value is validated before anything opens a port; a bad value is a
//! [`ConfigError`] that names the variable, the value and what is allowed.
//! Empty variables count as unset.

use std::time::Duration;

use patron_units as units;

#[cfg(feature = "amqp")]
pub(crate) mod amqp_uri;
mod broker_url;
mod cache;
mod discovery;
mod grpc;
mod status_rules;
mod tls;
pub use broker_url::BrokerUrl;
pub(crate) use broker_url::redact;
pub use cache::{CacheBackend, CacheConfig};
pub use discovery::{DiscoveryBackend, DiscoveryConfig, discovery_from_env};
pub use grpc::GrpcConfig;
pub use status_rules::StatusRules;
pub use tls::TlsFiles;

/// A configuration value that is missing or not allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The variable is set to something not allowed.
    #[error("invalid value for {var}: {value:?}; expected {expected}")]
    Invalid {
        /// The environment variable.
        var: String,
        /// The value found.
        value: String,
        /// What is allowed.
        expected: String,
    },
    /// The variable is required but unset or empty.
    #[error("{var} is not set or empty; expected {expected}")]
    Missing {
        /// The environment variable.
        var: String,
        /// What it should hold.
        expected: String,
    },
}

/// Log output format (`PATRON_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object a line, for log collectors (the default).
    Json,
    /// Human-readable lines for a terminal.
    Pretty,
}

/// A contract document (`PATRON_PRINT_CONTRACT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contract {
    /// The OpenAPI document of the routes.
    OpenApi,
    /// The AsyncAPI document of the consumers.
    AsyncApi,
}

/// Log level (`PATRON_LOG_LEVEL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// Everything.
    Trace,
    /// Debug and above.
    Debug,
    /// Info and above (the default).
    Info,
    /// Warnings and errors.
    Warn,
    /// Errors only.
    Error,
}

impl LogLevel {
    /// The `tracing` filter directive for this level.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }

    /// Parses `trace`, `debug`, `info`, `warn` (or `warning`) and `error`,
    /// case-insensitively.
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "trace" => Some(LogLevel::Trace),
            "debug" => Some(LogLevel::Debug),
            "info" => Some(LogLevel::Info),
            "warn" | "warning" => Some(LogLevel::Warn),
            "error" => Some(LogLevel::Error),
            _ => None,
        }
    }
}

/// The service's configuration. [`Config::from_env`] reads it; tests and
/// embedders may build one with [`Config::default`] and adjust fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// `PATRON_SERVICE_NAME`: the service's name in logs, traces, `/info`
    /// and the discovery registry, instead of the binary's name given by
    /// `#[patron::main]` (unset: that name).
    pub service_name: Option<String>,
    /// `PATRON_PRINT_CONTRACT` (`openapi` or `asyncapi`): print that
    /// document on stdout and exit instead of serving (feature `openapi`;
    /// `patron openapi --bin` runs a service this way).
    pub print_contract: Option<Contract>,
    /// `PATRON_HTTP_DEFAULT_PORT`: port of the default HTTP component (50000).
    pub http_port: u16,
    /// `PATRON_HTTP_HOST`: address to bind (`0.0.0.0`).
    pub http_host: std::net::IpAddr,
    /// `PATRON_HTTP_READ_TIMEOUT`: time allowed to receive a request's headers (30s).
    pub http_read_timeout: Duration,
    /// `PATRON_HTTP_WRITE_TIMEOUT`: time a response write may stall on a slow client (60s).
    pub http_write_timeout: Duration,
    /// `PATRON_HTTP_IDLE_TIMEOUT`: time an idle keep-alive connection is kept (240s).
    pub http_idle_timeout: Duration,
    /// `PATRON_HTTP_HANDLER_TIMEOUT`: default per-route timeout, 503 past it (59s).
    pub http_handler_timeout: Duration,
    /// `PATRON_HTTP_BODY_LIMIT`: default request body limit, 413 past it (2MiB).
    pub http_body_limit: usize,
    /// `PATRON_SHUTDOWN_TIMEOUT`: how long in-flight work may take to finish (30s).
    pub shutdown_timeout: Duration,
    /// `PATRON_SHUTDOWN_DELAY`: time between `/ready` turning 503 and the
    /// listener closing, so load balancers stop routing first (0s).
    pub shutdown_delay: Duration,
    /// `PATRON_LOG_LEVEL` (info).
    pub log_level: LogLevel,
    /// `PATRON_LOG_FORMAT` (json).
    pub log_format: LogFormat,
    /// `PATRON_DEBUG_ENDPOINTS`: serve `/debug/pprof/profile` and
    /// `POST /debug/log/{level}` (false). On without an authenticator
    /// (`Service::with_debug_auth`) the service refuses to start, unless
    /// [`debug_unauthenticated`](Self::debug_unauthenticated) says so.
    pub debug_endpoints: bool,
    /// `PATRON_DEBUG_ENDPOINTS=unauthenticated`: the debug endpoints are on
    /// and open to anyone who reaches the port, on purpose (false).
    pub debug_unauthenticated: bool,
    /// `PATRON_HTTP_STATUS_ERROR_LOGGING`: statuses logged at ERROR with
    /// their body, in Go Patron's syntax such as `404;[500,600)` (none).
    pub http_status_error_logging: StatusRules,
    /// `PATRON_HTTP_APP_HEADERS`: add `X-App-Name` and `X-App-Version` to
    /// user responses (false).
    pub http_app_headers: bool,
    /// `PATRON_HTTP_COMPRESSION`: compress user responses (gzip, deflate,
    /// br, zstd) by `Accept-Encoding` (true).
    pub http_compression: bool,
    /// `PATRON_HTTP_OPENAPI`: serve the OpenAPI document at
    /// `/openapi.json` (true; feature `openapi`).
    pub http_openapi: bool,
    /// `PATRON_HTTP_TLS_CERT` and `PATRON_HTTP_TLS_KEY` (PEM files), and
    /// `PATRON_HTTP_TLS_CLIENT_CA` for client certificates: the HTTP server
    /// serves TLS (none: plain HTTP).
    pub http_tls: Option<TlsFiles>,
    /// `PATRON_AMQP_URL`: the RabbitMQ broker AMQP consumers connect to
    /// (`amqp://guest:guest@127.0.0.1:5672/%2f`). Its password never
    /// appears in logs or errors.
    pub amqp_url: BrokerUrl,
    /// `PATRON_SQS_ENDPOINT`: the SQS endpoint URL, e.g. a local
    /// SQS-compatible server (unset: the AWS SDK's own resolution from
    /// `AWS_REGION` and friends).
    pub sqs_endpoint: Option<String>,
    /// `PATRON_KAFKA_BROKERS`: comma-separated bootstrap brokers of Kafka
    /// consumers (`127.0.0.1:9092` when unset).
    pub kafka_brokers: Option<String>,
    /// `PATRON_DATABASE_URL`: the PostgreSQL database of
    /// `client::sql::Db::from_config` (`postgres://user:password@host/db`).
    /// Its password never appears in logs or errors.
    pub database_url: Option<BrokerUrl>,
    /// `PATRON_DISCOVERY*`: where the service registers itself (feature
    /// `discovery`); `None` when unset.
    pub discovery: Option<DiscoveryConfig>,
    /// `PATRON_HTTP_CACHE` and `PATRON_HTTP_CACHE_SIZE`: the route cache.
    pub http_cache: CacheConfig,
    /// `PATRON_REDIS_URL`: the Redis server of
    /// `client::redis::Redis::from_config` (`redis://…` or `rediss://…`).
    /// Its password never appears in logs or errors.
    pub redis_url: Option<BrokerUrl>,
    /// `PATRON_GRPC_*`: the gRPC server (feature `grpc`).
    pub grpc: GrpcConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            http_port: patron_units::defaults::HTTP_PORT,
            http_host: std::net::IpAddr::from([0, 0, 0, 0]),
            http_read_timeout: Duration::from_secs(30),
            http_write_timeout: Duration::from_secs(60),
            http_idle_timeout: Duration::from_secs(240),
            http_handler_timeout: Duration::from_secs(59),
            http_body_limit: 2 << 20,
            shutdown_timeout: Duration::from_secs(patron_units::defaults::SHUTDOWN_TIMEOUT_SECS),
            shutdown_delay: Duration::ZERO,
            log_level: LogLevel::Info,
            log_format: LogFormat::Json,
            debug_endpoints: false,
            debug_unauthenticated: false,
            http_status_error_logging: StatusRules::default(),
            http_app_headers: false,
            http_compression: true,
            http_openapi: true,
            amqp_url: BrokerUrl::new("amqp://guest:guest@127.0.0.1:5672/%2f"),
            sqs_endpoint: None,
            http_tls: None,
            grpc: GrpcConfig::default(),
            redis_url: None,
            http_cache: CacheConfig::default(),
            discovery: None,
            service_name: None,
            print_contract: None,
            kafka_brokers: None,
            database_url: None,
        }
    }
}

impl Config {
    /// Reads every `PATRON_*` variable from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup`, which returns a variable's
    /// value. Used by tests to avoid touching the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let mut c = Config::default();
        if let Some(v) = get("PATRON_HTTP_DEFAULT_PORT") {
            c.http_port = v.trim().parse().map_err(|_| {
                invalid(
                    "PATRON_HTTP_DEFAULT_PORT",
                    &v,
                    "a port number from 0 to 65535",
                )
            })?;
        }
        if let Some(v) = get("PATRON_HTTP_HOST") {
            c.http_host = v.trim().parse().map_err(|_| {
                invalid(
                    "PATRON_HTTP_HOST",
                    &v,
                    "an IP address such as 0.0.0.0 or 127.0.0.1",
                )
            })?;
        }
        duration(
            &get,
            "PATRON_HTTP_READ_TIMEOUT",
            &mut c.http_read_timeout,
            false,
        )?;
        duration(
            &get,
            "PATRON_HTTP_WRITE_TIMEOUT",
            &mut c.http_write_timeout,
            false,
        )?;
        duration(
            &get,
            "PATRON_HTTP_IDLE_TIMEOUT",
            &mut c.http_idle_timeout,
            false,
        )?;
        duration(
            &get,
            "PATRON_HTTP_HANDLER_TIMEOUT",
            &mut c.http_handler_timeout,
            false,
        )?;
        duration(
            &get,
            "PATRON_SHUTDOWN_TIMEOUT",
            &mut c.shutdown_timeout,
            false,
        )?;
        duration(&get, "PATRON_SHUTDOWN_DELAY", &mut c.shutdown_delay, true)?;
        if let Some(v) = get("PATRON_SERVICE_NAME") {
            let name = v.trim();
            if name.contains(|c: char| c.is_whitespace() || c == '/') || name.len() > 128 {
                return Err(invalid(
                    "PATRON_SERVICE_NAME",
                    &v,
                    "a name without spaces or slashes, at most 128 characters, such as invoice",
                ));
            }
            c.service_name = Some(name.to_string());
        }
        if let Some(v) = get("PATRON_PRINT_CONTRACT") {
            c.print_contract = Some(match v.trim() {
                "openapi" => Contract::OpenApi,
                "asyncapi" => Contract::AsyncApi,
                _ => return Err(invalid("PATRON_PRINT_CONTRACT", &v, "openapi or asyncapi")),
            });
        }
        if let Some(v) = get("PATRON_HTTP_BODY_LIMIT") {
            let expected = "a size such as 2MiB, 512KiB or 1048576 (bytes), greater than zero";
            let bytes = units::parse_size(&v)
                .map_err(|_| invalid("PATRON_HTTP_BODY_LIMIT", &v, expected))?;
            if bytes == 0 {
                return Err(invalid("PATRON_HTTP_BODY_LIMIT", &v, expected));
            }
            c.http_body_limit = usize::try_from(bytes)
                .map_err(|_| invalid("PATRON_HTTP_BODY_LIMIT", &v, expected))?;
        }
        if let Some(v) = get("PATRON_LOG_LEVEL") {
            c.log_level = LogLevel::parse(&v).ok_or_else(|| {
                invalid(
                    "PATRON_LOG_LEVEL",
                    &v,
                    "one of trace, debug, info, warn, error",
                )
            })?;
        }
        match get("PATRON_DEBUG_ENDPOINTS") {
            Some(v) if v.trim().eq_ignore_ascii_case("unauthenticated") => {
                c.debug_endpoints = true;
                c.debug_unauthenticated = true;
            }
            Some(v) => {
                c.debug_endpoints = bool_value(&v).ok_or_else(|| {
                    invalid(
                        "PATRON_DEBUG_ENDPOINTS",
                        &v,
                        "true, false or unauthenticated",
                    )
                })?;
            }
            None => {}
        }
        c.http_app_headers = flag(&get, "PATRON_HTTP_APP_HEADERS", c.http_app_headers)?;
        c.http_compression = flag(&get, "PATRON_HTTP_COMPRESSION", c.http_compression)?;
        c.http_openapi = flag(&get, "PATRON_HTTP_OPENAPI", c.http_openapi)?;
        if let Some(v) = get("PATRON_HTTP_STATUS_ERROR_LOGGING") {
            c.http_status_error_logging = StatusRules::parse(&v).map_err(|why| {
                invalid(
                    "PATRON_HTTP_STATUS_ERROR_LOGGING",
                    &v,
                    &format!(
                        "`;`-separated status codes and intervals such as 404;[500,600) ({why})"
                    ),
                )
            })?;
        }
        if let Some(v) = get("PATRON_AMQP_URL") {
            const EXPECTED: &str =
                "an amqp:// or amqps:// URL such as amqp://guest:guest@127.0.0.1:5672/%2f";
            let value = url("PATRON_AMQP_URL", &v, &["amqp://", "amqps://"], EXPECTED)?;
            #[cfg(feature = "amqp")]
            amqp_uri::parse(value).map_err(|e| {
                invalid(
                    "PATRON_AMQP_URL",
                    &redact(value),
                    &format!("{EXPECTED}; {}", e.reason),
                )
            })?;
            c.amqp_url = BrokerUrl::new(value);
        }
        if let Some(v) = get("PATRON_SQS_ENDPOINT") {
            c.sqs_endpoint = Some(
                url(
                    "PATRON_SQS_ENDPOINT",
                    &v,
                    &["http://", "https://"],
                    "an http:// or https:// URL such as http://127.0.0.1:4566",
                )?
                .to_string(),
            );
        }
        if let Some(v) = get("PATRON_DATABASE_URL") {
            c.database_url = Some(BrokerUrl::new(url(
                "PATRON_DATABASE_URL",
                &v,
                &["postgres://", "postgresql://"],
                "a postgres:// URL such as postgres://app:secret@db:5432/app",
            )?));
        }
        if let Some(v) = get("PATRON_REDIS_URL") {
            c.redis_url = Some(BrokerUrl::new(url(
                "PATRON_REDIS_URL",
                &v,
                &["redis://", "rediss://"],
                "a redis:// or rediss:// URL such as redis://127.0.0.1:6379",
            )?));
        }
        c.http_tls = tls::from_vars(get, "PATRON_HTTP")?;
        c.grpc = grpc::from_vars(&get)?;
        c.http_cache = cache::from_vars(&get)?;
        c.discovery = discovery::from_vars(&get)?;
        if let Some(v) = get("PATRON_KAFKA_BROKERS") {
            c.kafka_brokers = Some(v.trim().to_string());
        }
        if let Some(v) = get("PATRON_LOG_FORMAT") {
            c.log_format = match v.trim().to_ascii_lowercase().as_str() {
                "json" => LogFormat::Json,
                "pretty" | "text" => LogFormat::Pretty,
                _ => return Err(invalid("PATRON_LOG_FORMAT", &v, "json or pretty")),
            };
        }
        Ok(c)
    }
}

/// A variable lookup over `pairs`, for the settings modules' tests.
#[cfg(test)]
pub(crate) fn test_lookup<'a>(
    pairs: &'a [(&'a str, &'a str)],
) -> impl Fn(&str) -> Option<String> + 'a {
    move |name| {
        pairs
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }
}

/// `value`, trimmed, when it starts with one of `schemes`; otherwise an
/// error naming `var` that shows the value with its password hidden.
fn url<'a>(
    var: &str,
    value: &'a str,
    schemes: &[&str],
    expected: &str,
) -> Result<&'a str, ConfigError> {
    let value = value.trim();
    if schemes.iter().any(|s| value.starts_with(s)) {
        Ok(value)
    } else {
        Err(invalid(var, &redact(value), expected))
    }
}

fn invalid(var: &str, value: &str, expected: &str) -> ConfigError {
    ConfigError::Invalid {
        var: var.to_string(),
        value: value.to_string(),
        expected: expected.to_string(),
    }
}

fn flag(
    get: &impl Fn(&str) -> Option<String>,
    var: &str,
    default: bool,
) -> Result<bool, ConfigError> {
    let Some(v) = get(var) else {
        return Ok(default);
    };
    bool_value(&v).ok_or_else(|| invalid(var, &v, "true or false"))
}

/// `true`/`1`/`yes`/`on` or `false`/`0`/`no`/`off`, in any case.
fn bool_value(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

fn duration(
    get: &impl Fn(&str) -> Option<String>,
    var: &str,
    slot: &mut Duration,
    zero_ok: bool,
) -> Result<(), ConfigError> {
    let Some(v) = get(var) else { return Ok(()) };
    let expected = if zero_ok {
        "a duration such as 500ms, 5s or 1m30s"
    } else {
        "a duration greater than zero such as 500ms, 5s or 1m30s"
    };
    let parsed = humantime::parse_duration(v.trim()).map_err(|_| invalid(var, &v, expected))?;
    if parsed.is_zero() && !zero_ok {
        return Err(invalid(var, &v, expected));
    }
    *slot = parsed;
    Ok(())
}

#[cfg(test)]
mod tests;
