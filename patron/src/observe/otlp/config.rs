//! Where and how spans are sent, from the standard `OTEL_EXPORTER_OTLP_*`
//! variables, read as the OpenTelemetry SDKs (and `opentelemetry-otlp`)
//! read them: the per-signal variable wins over the general one, the
//! general endpoint gets `/v1/traces` appended, headers are
//! `key=value` pairs separated by commas with percent-encoded values.

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Uri};

use crate::config::ConfigError;

/// The default timeout of one export, retries included.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The OTLP/HTTP receiver's address when only the exporter is asked for.
const DEFAULT_ENDPOINT: &str = "http://localhost:4318";

/// The OTLP/HTTP trace exporter's settings.
#[derive(Debug, Clone)]
pub(crate) struct OtlpConfig {
    /// The full URL spans are POSTed to.
    pub(crate) endpoint: Uri,
    /// Extra request headers (authentication for a hosted collector).
    pub(crate) headers: HeaderMap,
    /// How long one export may take, retries included.
    pub(crate) timeout: Duration,
}

impl OtlpConfig {
    /// Reads the configuration through `lookup` (the environment in a
    /// service). A variable set to an unusable value is an error naming it.
    pub(crate) fn from_env(lookup: &impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let endpoint = if let Some(url) = get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            parse_endpoint("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", url.trim(), url.trim())?
        } else {
            let base = get("OTEL_EXPORTER_OTLP_ENDPOINT");
            let var = "OTEL_EXPORTER_OTLP_ENDPOINT";
            let base = base.as_deref().map_or(DEFAULT_ENDPOINT, str::trim);
            parse_endpoint(var, base, base)?;
            let full = format!("{}/v1/traces", base.strip_suffix('/').unwrap_or(base));
            parse_endpoint(var, base, &full)?
        };
        for var in [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ] {
            if let Some(protocol) = get(var) {
                if protocol.trim() != "http/protobuf" {
                    return Err(invalid(
                        var,
                        &protocol,
                        "http/protobuf (the protocol patron exports with)",
                    ));
                }
                break;
            }
        }
        for var in [
            "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
            "OTEL_EXPORTER_OTLP_COMPRESSION",
        ] {
            if let Some(compression) = get(var) {
                if compression.trim() != "none" {
                    return Err(invalid(
                        var,
                        &compression,
                        "none (spans are sent uncompressed)",
                    ));
                }
                break;
            }
        }
        let headers = match get("OTEL_EXPORTER_OTLP_TRACES_HEADERS") {
            Some(list) => parse_headers("OTEL_EXPORTER_OTLP_TRACES_HEADERS", &list)?,
            None => match get("OTEL_EXPORTER_OTLP_HEADERS") {
                Some(list) => parse_headers("OTEL_EXPORTER_OTLP_HEADERS", &list)?,
                None => HeaderMap::new(),
            },
        };
        let timeout = match get("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT") {
            Some(ms) => parse_timeout("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", &ms)?,
            None => match get("OTEL_EXPORTER_OTLP_TIMEOUT") {
                Some(ms) => parse_timeout("OTEL_EXPORTER_OTLP_TIMEOUT", &ms)?,
                None => DEFAULT_TIMEOUT,
            },
        };
        Ok(OtlpConfig {
            endpoint,
            headers,
            timeout,
        })
    }
}

fn invalid(var: &str, value: &str, expected: &str) -> ConfigError {
    ConfigError::Invalid {
        var: var.into(),
        value: value.into(),
        expected: expected.into(),
    }
}

/// `full` parsed as an `http://` URL with a host; `given` is what the
/// variable held, for the error.
fn parse_endpoint(var: &str, given: &str, full: &str) -> Result<Uri, ConfigError> {
    let expected = "an http:// URL of an OTLP/HTTP receiver, such as http://otel-collector:4318";
    let uri: Uri = full.parse().map_err(|_| invalid(var, given, expected))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http"), Some(_)) => Ok(uri),
        (Some("https"), Some(_)) => Err(invalid(
            var,
            given,
            "an http:// URL: the exporter has no TLS; send to a local collector (a sidecar or node agent) that forwards over TLS",
        )),
        _ => Err(invalid(var, given, expected)),
    }
}

/// `key=value,key2=value2`, values percent-decoded.
fn parse_headers(var: &str, list: &str) -> Result<HeaderMap, ConfigError> {
    let mut headers = HeaderMap::new();
    for pair in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || {
            invalid(
                var,
                list,
                "comma-separated key=value pairs with valid header names and values",
            )
        };
        let (key, value) = pair.split_once('=').ok_or_else(bad)?;
        let value = percent_encoding::percent_decode_str(value.trim())
            .decode_utf8()
            .map_err(|_| bad())?;
        let name = HeaderName::from_bytes(key.trim().as_bytes()).map_err(|_| bad())?;
        let value = HeaderValue::from_str(&value).map_err(|_| bad())?;
        headers.append(name, value);
    }
    Ok(headers)
}

fn parse_timeout(var: &str, ms: &str) -> Result<Duration, ConfigError> {
    match ms.trim().parse::<u64>() {
        Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
        _ => Err(invalid(var, ms, "a timeout in milliseconds greater than 0")),
    }
}

/// The configuration these variables give, for tests.
#[cfg(test)]
pub(crate) fn from_pairs(pairs: &[(&str, &str)]) -> Result<OtlpConfig, ConfigError> {
    OtlpConfig::from_env(&|name: &str| {
        pairs
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(pairs: &[(&str, &str)]) -> Result<OtlpConfig, ConfigError> {
        from_pairs(pairs)
    }

    #[test]
    fn the_general_endpoint_gets_the_signal_path() {
        let c = from(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")]).unwrap();
        assert_eq!(c.endpoint, "http://collector:4318/v1/traces");
        let c = from(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/base/")]).unwrap();
        assert_eq!(c.endpoint, "http://collector:4318/base/v1/traces");
        assert_eq!(c.timeout, Duration::from_secs(10));
        assert!(c.headers.is_empty());
    }

    #[test]
    fn the_traces_endpoint_is_used_as_given_and_wins() {
        let c = from(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://general:4318"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://traces:9999/custom",
            ),
        ])
        .unwrap();
        assert_eq!(c.endpoint, "http://traces:9999/custom");
    }

    #[test]
    fn headers_are_decoded_and_the_signal_variable_wins() {
        let c = from(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "api-key=secret%20one, x-tenant = a=b ",
            ),
        ])
        .unwrap();
        assert_eq!(c.headers["api-key"], "secret one");
        assert_eq!(c.headers["x-tenant"], "a=b");
        let c = from(&[
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=general"),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "api-key=traces"),
        ])
        .unwrap();
        assert_eq!(c.headers["api-key"], "traces");
    }

    #[test]
    fn timeouts_are_milliseconds_and_the_signal_variable_wins() {
        let c = from(&[("OTEL_EXPORTER_OTLP_TIMEOUT", "2500")]).unwrap();
        assert_eq!(c.timeout, Duration::from_millis(2500));
        let c = from(&[
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "300"),
        ])
        .unwrap();
        assert_eq!(c.timeout, Duration::from_millis(300));
    }

    #[test]
    fn unusable_values_are_errors_that_name_the_variable() {
        for (pairs, var) in [
            (
                vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")],
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ),
            (
                vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "http://")],
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ),
            (
                vec![("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://c/v1/traces")],
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            ),
            (
                vec![("OTEL_EXPORTER_OTLP_HEADERS", "novalue")],
                "OTEL_EXPORTER_OTLP_HEADERS",
            ),
            (
                vec![("OTEL_EXPORTER_OTLP_HEADERS", "bad name=x")],
                "OTEL_EXPORTER_OTLP_HEADERS",
            ),
            (
                vec![("OTEL_EXPORTER_OTLP_TIMEOUT", "10s")],
                "OTEL_EXPORTER_OTLP_TIMEOUT",
            ),
            (
                vec![("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "0")],
                "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
            ),
            (
                vec![("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")],
                "OTEL_EXPORTER_OTLP_PROTOCOL",
            ),
            (
                vec![("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")],
                "OTEL_EXPORTER_OTLP_COMPRESSION",
            ),
        ] {
            let err = from(&pairs).unwrap_err().to_string();
            assert!(err.contains(var), "{pairs:?}: {err}");
        }
        assert!(from(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")]).is_ok());
        assert!(from(&[("OTEL_EXPORTER_OTLP_COMPRESSION", "none")]).is_ok());
    }
}
