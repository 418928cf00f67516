//! The gRPC server's settings: `PATRON_GRPC_PORT`, `PATRON_GRPC_TLS_*`,
//! `PATRON_GRPC_REFLECTION` and `PATRON_GRPC_HANDLER_TIMEOUT`. They are read
//! whether or not the `grpc` feature is on, so a bad value is reported the
//! same way everywhere.

use std::time::Duration;

use super::{ConfigError, TlsFiles, duration, flag, invalid, tls};

/// The gRPC server component's settings (feature `grpc`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcConfig {
    /// `PATRON_GRPC_PORT`: the gRPC server's port (50001, as Go Patron's
    /// gRPC component). 0 picks a free one.
    pub port: u16,
    /// `PATRON_GRPC_TLS_CERT`, `PATRON_GRPC_TLS_KEY` and
    /// `PATRON_GRPC_TLS_CLIENT_CA`: TLS (and mutual TLS) for the gRPC server.
    pub tls: Option<TlsFiles>,
    /// `PATRON_GRPC_REFLECTION`: serve `grpc.reflection.v1` (false).
    pub reflection: bool,
    /// `PATRON_GRPC_HANDLER_TIMEOUT`: how long a call may take to produce
    /// its response when the client sets no shorter `grpc-timeout` (59s,
    /// as routes). Streamed responses are bounded by the client's deadline
    /// only.
    pub handler_timeout: Duration,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            port: patron_units::defaults::GRPC_PORT,
            tls: None,
            reflection: false,
            handler_timeout: Duration::from_secs(59),
        }
    }
}

/// Reads the `PATRON_GRPC_*` variables through `get`.
pub(crate) fn from_vars(get: &impl Fn(&str) -> Option<String>) -> Result<GrpcConfig, ConfigError> {
    let mut c = GrpcConfig::default();
    if let Some(v) = get("PATRON_GRPC_PORT") {
        c.port = v
            .trim()
            .parse()
            .map_err(|_| invalid("PATRON_GRPC_PORT", &v, "a port number from 0 to 65535"))?;
    }
    c.tls = tls::from_vars(get, "PATRON_GRPC")?;
    c.reflection = flag(get, "PATRON_GRPC_REFLECTION", c.reflection)?;
    duration(
        get,
        "PATRON_GRPC_HANDLER_TIMEOUT",
        &mut c.handler_timeout,
        false,
    )?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)]) -> Result<GrpcConfig, ConfigError> {
        from_vars(&crate::config::test_lookup(pairs))
    }

    #[test]
    fn defaults_and_values() {
        assert_eq!(read(&[]).unwrap(), GrpcConfig::default());
        let c = read(&[
            ("PATRON_GRPC_PORT", "6000"),
            ("PATRON_GRPC_REFLECTION", "true"),
            ("PATRON_GRPC_HANDLER_TIMEOUT", "2s"),
            ("PATRON_GRPC_TLS_CERT", "/c.pem"),
            ("PATRON_GRPC_TLS_KEY", "/k.pem"),
        ])
        .unwrap();
        assert_eq!(c.port, 6000);
        assert!(c.reflection);
        assert_eq!(c.handler_timeout, Duration::from_secs(2));
        assert_eq!(c.tls.unwrap().cert, std::path::PathBuf::from("/c.pem"));
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err = read(&[("PATRON_GRPC_PORT", "70000")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid value for PATRON_GRPC_PORT: \"70000\"; expected a port number from 0 to 65535"
        );
        let err = read(&[("PATRON_GRPC_REFLECTION", "maybe")]).unwrap_err();
        assert!(err.to_string().contains("PATRON_GRPC_REFLECTION"), "{err}");
        let err = read(&[("PATRON_GRPC_TLS_KEY", "/k.pem")]).unwrap_err();
        assert!(err.to_string().contains("PATRON_GRPC_TLS_CERT"), "{err}");
        let err = read(&[("PATRON_GRPC_HANDLER_TIMEOUT", "0s")]).unwrap_err();
        assert!(
            err.to_string().contains("PATRON_GRPC_HANDLER_TIMEOUT"),
            "{err}"
        );
    }
}
