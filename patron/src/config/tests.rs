//! Reading the configuration: defaults, values, and the errors bad values get.

use super::*;

fn with(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let pairs: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::from_lookup(move |name| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    })
}

#[test]
fn defaults_match_go_patron() {
    let c = with(&[]).unwrap();
    assert_eq!(c.http_port, 50000);
    assert_eq!(c.http_read_timeout, Duration::from_secs(30));
    assert_eq!(c.http_write_timeout, Duration::from_secs(60));
    assert_eq!(c.http_idle_timeout, Duration::from_secs(240));
    assert_eq!(c.shutdown_timeout, Duration::from_secs(30));
    assert_eq!(c.http_body_limit, 2 * 1024 * 1024);
    assert_eq!(c.log_level, LogLevel::Info);
    assert_eq!(c.log_format, LogFormat::Json);
}

#[test]
fn values_are_parsed() {
    let c = with(&[
        ("PATRON_HTTP_DEFAULT_PORT", "8080"),
        ("PATRON_HTTP_READ_TIMEOUT", "5s"),
        ("PATRON_HTTP_BODY_LIMIT", "1MiB"),
        ("PATRON_LOG_LEVEL", "DEBUG"),
        ("PATRON_LOG_FORMAT", "pretty"),
        ("PATRON_SHUTDOWN_DELAY", "0s"),
    ])
    .unwrap();
    assert_eq!(c.http_port, 8080);
    assert_eq!(c.http_read_timeout, Duration::from_secs(5));
    assert_eq!(c.http_body_limit, 1 << 20);
    assert_eq!(c.log_level, LogLevel::Debug);
    assert_eq!(c.log_format, LogFormat::Pretty);
}

#[test]
fn bad_values_name_variable_value_and_allowed() {
    let err = with(&[("PATRON_HTTP_DEFAULT_PORT", "abc")])
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "invalid value for PATRON_HTTP_DEFAULT_PORT: \"abc\"; expected a port number from 0 to 65535"
    );
    let err = with(&[("PATRON_LOG_LEVEL", "loud")])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("PATRON_LOG_LEVEL") && err.contains("loud") && err.contains("trace, debug"),
        "{err}"
    );
    let err = with(&[("PATRON_HTTP_IDLE_TIMEOUT", "0s")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("greater than zero"), "{err}");
    let err = with(&[("PATRON_HTTP_READ_TIMEOUT", "soon")])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("PATRON_HTTP_READ_TIMEOUT") && err.contains("soon"),
        "{err}"
    );
}

#[test]
fn debug_endpoints_flag() {
    assert!(!with(&[]).unwrap().debug_endpoints);
    assert!(
        with(&[("PATRON_DEBUG_ENDPOINTS", "true")])
            .unwrap()
            .debug_endpoints
    );
    assert!(
        !with(&[("PATRON_DEBUG_ENDPOINTS", "off")])
            .unwrap()
            .debug_endpoints
    );
    let open = with(&[("PATRON_DEBUG_ENDPOINTS", "Unauthenticated")]).unwrap();
    assert!(open.debug_endpoints && open.debug_unauthenticated);
    assert!(
        !with(&[("PATRON_DEBUG_ENDPOINTS", "true")])
            .unwrap()
            .debug_unauthenticated
    );
    let err = with(&[("PATRON_DEBUG_ENDPOINTS", "maybe")])
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "invalid value for PATRON_DEBUG_ENDPOINTS: \"maybe\"; expected true, false or unauthenticated"
    );
}

#[test]
fn status_error_logging_uses_go_syntax() {
    let c = with(&[("PATRON_HTTP_STATUS_ERROR_LOGGING", "404;[500,600)")]).unwrap();
    assert!(
        c.http_status_error_logging
            .matches(http::StatusCode::NOT_FOUND)
    );
    let err = with(&[("PATRON_HTTP_STATUS_ERROR_LOGGING", "[500,600")])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("PATRON_HTTP_STATUS_ERROR_LOGGING") && err.contains("[500,600"),
        "{err}"
    );
}

#[test]
fn empty_counts_as_unset() {
    assert_eq!(
        with(&[("PATRON_HTTP_DEFAULT_PORT", " ")])
            .unwrap()
            .http_port,
        50000
    );
}

#[test]
fn amqp_url_is_validated_and_never_shown_with_its_password() {
    let c = with(&[("PATRON_AMQP_URL", "amqp://app:hunter2@mq:5672/prod")]).unwrap();
    assert_eq!(c.amqp_url.expose(), "amqp://app:hunter2@mq:5672/prod");
    assert!(!format!("{c:?}").contains("hunter2"));
    let err = with(&[("PATRON_AMQP_URL", "http://app:hunter2@mq")])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("PATRON_AMQP_URL") && err.contains("amqp://"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
    #[cfg(feature = "amqp")]
    {
        // What lapin would refuse at connect time is refused at start-up.
        let err = with(&[(
            "PATRON_AMQP_URL",
            "amqp://app:hunter2@mq:5672/prod?frame_max=64k",
        )])
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with(
                "invalid value for PATRON_AMQP_URL: \"amqp://app:***@mq:5672/prod?frame_max=64k\"; expected an amqp://"
            ) && err.ends_with("; invalid digit found in string"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");
    }
    assert_eq!(redact("amqp://mq:5672"), "amqp://mq:5672");
    assert_eq!(redact("amqp://u@mq/v?x=a@b"), "amqp://u@mq/v?x=a@b");
    assert_eq!(redact("amqps://u:p@ss@mq/v"), "amqps://u:***@mq/v");
    let c = with(&[("PATRON_DATABASE_URL", "postgres://app:hunter2@db/app")]).unwrap();
    assert_eq!(
        c.database_url.as_ref().map(BrokerUrl::expose),
        Some("postgres://app:hunter2@db/app")
    );
    assert!(!format!("{c:?}").contains("hunter2"));
    let err = with(&[("PATRON_DATABASE_URL", "mysql://app:hunter2@db/app")])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("PATRON_DATABASE_URL") && err.contains("postgres://"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
    let c = with(&[("PATRON_SQS_ENDPOINT", "http://127.0.0.1:4566")]).unwrap();
    assert_eq!(c.sqs_endpoint.as_deref(), Some("http://127.0.0.1:4566"));
    let err = with(&[("PATRON_SQS_ENDPOINT", "127.0.0.1:4566")])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("PATRON_SQS_ENDPOINT") && err.contains("http://"),
        "{err}"
    );
}

#[test]
fn redis_url_is_checked_and_its_password_hidden() {
    let err = with(&[("PATRON_REDIS_URL", "http://u:pw@h")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("PATRON_REDIS_URL"), "{err}");
    assert!(!err.contains("pw"), "{err}");
    let c = with(&[("PATRON_REDIS_URL", "redis://u:pw@h:6379/0")]).unwrap();
    assert_eq!(c.redis_url.unwrap().to_string(), "redis://u:***@h:6379/0");
}

#[test]
fn print_contract_names_the_document() {
    assert_eq!(with(&[]).unwrap().print_contract, None);
    assert_eq!(
        with(&[("PATRON_PRINT_CONTRACT", "openapi")])
            .unwrap()
            .print_contract,
        Some(Contract::OpenApi)
    );
    assert_eq!(
        with(&[("PATRON_PRINT_CONTRACT", "asyncapi")])
            .unwrap()
            .print_contract,
        Some(Contract::AsyncApi)
    );
    let err = with(&[("PATRON_PRINT_CONTRACT", "swagger")])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("PATRON_PRINT_CONTRACT") && err.contains("openapi or asyncapi"),
        "{err}"
    );
}
