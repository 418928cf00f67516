//! The `--with` values: what a new service uses besides HTTP, each one a
//! patron feature and a piece of example code.

use super::NewError;

/// One `--with` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum With {
    /// A RabbitMQ consumer.
    Amqp,
    /// A Kafka consumer group.
    Kafka,
    /// An SQS consumer.
    Sqs,
    /// A PostgreSQL pool.
    Sql,
    /// An instrumented HTTP client.
    HttpClient,
    /// A gRPC service from a `.proto` file.
    Grpc,
}

impl With {
    const ALL: [With; 6] = [
        With::Amqp,
        With::Kafka,
        With::Sqs,
        With::Sql,
        With::HttpClient,
        With::Grpc,
    ];

    /// The spelling on the command line, which is also patron's feature.
    pub(crate) fn feature(self) -> &'static str {
        match self {
            With::Amqp => "amqp",
            With::Kafka => "kafka",
            With::Sqs => "sqs",
            With::Sql => "sql",
            With::HttpClient => "http-client",
            With::Grpc => "grpc",
        }
    }

    /// The values, sorted and without repeats; an unknown one is an error
    /// that lists the known ones.
    pub(crate) fn parse_list(values: &[String]) -> Result<Vec<With>, NewError> {
        let mut out = Vec::new();
        for value in values.iter().map(|v| v.trim()).filter(|v| !v.is_empty()) {
            let with = With::ALL
                .into_iter()
                .find(|w| w.feature() == value)
                .ok_or_else(|| NewError::With {
                    given: value.to_string(),
                    expected: With::ALL.map(With::feature).join(", "),
                })?;
            if !out.contains(&with) {
                out.push(with);
            }
        }
        out.sort();
        Ok(out)
    }
}
