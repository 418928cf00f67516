//! What a `#[patron::consumer]` attribute says, typed: the broker with the
//! arguments only it takes, the arguments every broker takes, and batching.
//! Parsing fills it in; validation checks the rules between keys; code
//! generation reads it.

use proc_macro2::Span;
use syn::{Ident, LitStr};

/// A parsed attribute.
pub struct ConsumerAttr {
    /// The broker key as written (`amqp`, `sqs`, `kafka`), for spans.
    pub broker_ident: Ident,
    pub broker: Broker,
    pub common: CommonArgs,
    pub batch: Option<Batching>,
    /// `batch_timeout`, kept apart from `batch` so that validation can
    /// point at it when `batch` is missing: `(nanoseconds, key span)`.
    pub batch_timeout: Option<(u64, Span)>,
}

/// The broker and the arguments only it takes.
pub enum Broker {
    Amqp(AmqpArgs),
    Sqs(SqsArgs),
    Kafka(KafkaArgs),
}

impl Broker {
    /// The broker's name, as in the attribute and the registry.
    pub fn name(&self) -> &'static str {
        match self {
            Broker::Amqp(_) => "amqp",
            Broker::Sqs(_) => "sqs",
            Broker::Kafka(_) => "kafka",
        }
    }

    /// The queue, or the first topic.
    pub fn source(&self) -> &LitStr {
        match self {
            Broker::Amqp(a) => &a.queue,
            Broker::Sqs(s) => &s.queue,
            Broker::Kafka(k) => &k.topics[0],
        }
    }

    /// Every queue or topic, as the registry lists them.
    pub fn destination(&self) -> String {
        match self {
            Broker::Kafka(k) => k
                .topics
                .iter()
                .map(LitStr::value)
                .collect::<Vec<_>>()
                .join(","),
            _ => self.source().value(),
        }
    }
}

/// `amqp = "queue"` and its own keys.
pub struct AmqpArgs {
    pub queue: LitStr,
    pub exchange: Option<LitStr>,
    pub routing_key: Option<LitStr>,
    pub declare: bool,
    /// `(prefetch, value span)`.
    pub prefetch: Option<(u16, Span)>,
}

/// `sqs = "queue"` and its own keys.
pub struct SqsArgs {
    pub queue: LitStr,
    /// `wait`, in whole seconds.
    pub wait_secs: Option<u64>,
    pub max_messages: Option<u8>,
    /// `visibility`, in whole seconds.
    pub visibility_secs: Option<u64>,
}

/// `kafka = "topic"` or `kafka = ["a", "b"]` and its own keys.
pub struct KafkaArgs {
    /// At least one.
    pub topics: Vec<LitStr>,
    /// Required; validation says so when it is missing.
    pub group: Option<LitStr>,
    /// `dedup_by_key = true`, with the key's span.
    pub dedup_by_key: Option<Span>,
}

/// The keys every broker takes.
#[derive(Default)]
pub struct CommonArgs {
    pub concurrency: Option<u32>,
    pub retries: Option<u32>,
    /// 0 = no limit.
    pub max_deliveries: Option<u32>,
    pub backoff_nanos: Option<u64>,
    pub on_failure: Option<(OnFailure, Span)>,
    pub dlq: Option<LitStr>,
    /// `openapi = false`: the payload is left out of the AsyncAPI document.
    pub undocumented: bool,
}

/// `on_failure`, with Kafka's `skip` read as `Drop`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    Dlq,
    Requeue,
    Drop,
    Exit,
}

impl OnFailure {
    /// The spelling the user wrote for this broker.
    pub fn spelling(self, broker: &Broker) -> &'static str {
        match (self, broker) {
            (OnFailure::Dlq, _) => "dlq",
            (OnFailure::Requeue, _) => "requeue",
            (OnFailure::Drop, Broker::Kafka(_)) => "skip",
            (OnFailure::Drop, _) => "drop",
            (OnFailure::Exit, _) => "exit",
        }
    }
}

/// `batch = N`: the handler takes `Batch<T>`.
#[derive(Clone, Copy)]
pub struct Batching {
    pub size: u32,
}
