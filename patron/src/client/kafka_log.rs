//! librdkafka's own log lines and client errors in patron's logs.
//!
//! rdkafka hands them to the `log` crate, which a patron service does not
//! listen to, so connection failures, protocol warnings and the output of
//! librdkafka's `debug` setting were lost. Patron's Kafka clients (the
//! consumers, their DLQ producers and [`KafkaProducer`](super::kafka::KafkaProducer))
//! write them to `tracing` instead, target `librdkafka`, with the client's
//! name and librdkafka's facility: `RUST_LOG=librdkafka=debug` shows them.

use rdkafka::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::KafkaError;

/// The rdkafka client context of patron's Kafka producers: librdkafka's
/// log lines and client errors go to `tracing` (target `librdkafka`),
/// tagged with the producer's name.
#[derive(Debug, Clone)]
pub struct LogContext {
    client: String,
}

impl LogContext {
    /// A context whose log lines carry `client` (e.g. the bootstrap
    /// brokers, or the consumer a DLQ producer belongs to).
    pub(crate) fn new(client: impl Into<String>) -> LogContext {
        LogContext {
            client: client.into(),
        }
    }
}

impl ClientContext for LogContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        forward(&self.client, level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(target: "librdkafka", client = %self.client, error = %error, reason, "Kafka client error");
    }
}

/// Writes one librdkafka log line to `tracing` at the matching level.
pub(crate) fn forward(client: &str, level: RDKafkaLogLevel, facility: &str, message: &str) {
    use RDKafkaLogLevel::*;
    match level {
        Emerg | Alert | Critical | Error => {
            tracing::error!(target: "librdkafka", client, facility, "{message}")
        }
        Warning => tracing::warn!(target: "librdkafka", client, facility, "{message}"),
        Notice | Info => tracing::info!(target: "librdkafka", client, facility, "{message}"),
        Debug => tracing::debug!(target: "librdkafka", client, facility, "{message}"),
    }
}

/// The configuration every patron Kafka client starts from: the bootstrap
/// `brokers`, IPv4 addresses, reconnects at most 1 s apart, and librdkafka handing over every log line
/// it produces, so that `tracing`'s filter — which `POST
/// /debug/log/{level}` can change at run time — alone decides what is
/// written through [`LogContext`] or the consumer's context (rdkafka's own
/// choice reads the `log` crate's level, off in a patron service, and
/// would hold back all but errors). That costs nothing per record:
/// librdkafka's debug lines only exist for the contexts named in its
/// `debug` setting, and its other lines are rare (connections, group
/// changes, failures).
pub(crate) fn client_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("broker.address.family", "v4")
        // librdkafka waits up to 10 s between reconnects by default: a
        // broker back after a restart would be noticed that late.
        .set("reconnect.backoff.max.ms", "1000")
        .set_log_level(RDKafkaLogLevel::Debug);
    config
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use rdkafka::producer::FutureProducer;

    use super::*;

    /// A `tracing` writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn librdkafka_lines_reach_tracing_with_the_client_name() {
        // rdkafka delivers log lines on the thread that polls the client
        // (the producer's own), so the subscriber must be the global one;
        // nothing else in this test binary installs one.
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("no other global subscriber");
        // No broker is needed: with `debug` set, librdkafka logs a
        // start-up line as it creates the client.
        let producer: FutureProducer<LogContext> = client_config("127.0.0.1:1")
            .set("debug", "generic")
            .create_with_context(LogContext::new("unit-producer"))
            .unwrap();
        let started = |text: &str| {
            text.lines()
                .find(|l| l.contains("librdkafka v") && l.contains("initialized"))
                .map(str::to_string)
        };
        let mut line = None;
        for _ in 0..100 {
            let text = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
            line = started(&text);
            if line.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        drop(producer);
        let line = line.expect("librdkafka's start-up line within 5 s");
        assert!(line.contains("DEBUG librdkafka"), "{line}");
        assert!(line.contains("client=\"unit-producer\""), "{line}");
        assert!(line.contains("facility=\"INIT\""), "{line}");
    }
}
