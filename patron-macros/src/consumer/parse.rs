//! The attribute grammar:
//! `amqp = "queue" (, key = value)*`, with keys `exchange`, `routing_key`,
//! `declare`, `prefetch`, `concurrency`, `retries`, `backoff`,
//! `on_failure`, `dlq`, `batch` and `batch_timeout`; `sqs = "queue"` with
//! `wait`, `max_messages` and `visibility`; `kafka = "topic"` or
//! `kafka = ["a", "b"]` with `group` and `dedup_by_key`.

use proc_macro2::Span;
use syn::parse::{Parse, ParseStream};
use syn::spanned::Spanned;
use syn::{Ident, LitBool, LitInt, LitStr, Token};

use crate::{args, units};

const BROKERS: &[&str] = &["amqp", "kafka", "sqs"];
const KEYS: &[&str] = &[
    "exchange",
    "routing_key",
    "declare",
    "prefetch",
    "concurrency",
    "retries",
    "max_deliveries",
    "backoff",
    "on_failure",
    "dlq",
    "batch",
    "batch_timeout",
    "wait",
    "max_messages",
    "visibility",
    "group",
    "dedup_by_key",
];
/// Keys only AMQP consumers take.
const AMQP_ONLY: &[&str] = &["exchange", "routing_key", "declare", "prefetch"];
/// Keys only SQS consumers take.
const SQS_ONLY: &[&str] = &["wait", "max_messages", "visibility"];
/// Keys only Kafka consumers take.
const KAFKA_ONLY: &[&str] = &["group", "dedup_by_key"];
/// Keys of batch consumers, which SQS does not have.
const BATCH: &[&str] = &["batch", "batch_timeout"];
const STRATEGIES: &[&str] = &["dlq", "requeue", "drop", "exit"];

pub struct ConsumerAttr {
    /// The `amqp` / `sqs` key, for spans.
    pub broker: Ident,
    /// `wait` in whole seconds (SQS).
    pub wait_secs: Option<u64>,
    /// `max_messages` (SQS).
    pub max_messages: Option<u8>,
    /// `visibility` in whole seconds (SQS).
    pub visibility_secs: Option<u64>,
    pub queue: LitStr,
    /// Every topic, for `kafka = ["a", "b"]` (else just the queue).
    pub topics: Vec<LitStr>,
    /// `group` (Kafka).
    pub group: Option<LitStr>,
    pub exchange: Option<LitStr>,
    pub routing_key: Option<LitStr>,
    pub declare: bool,
    pub prefetch: Option<u16>,
    pub concurrency: Option<u32>,
    pub retries: Option<u32>,
    /// `max_deliveries` (0 = no limit).
    pub max_deliveries: Option<u32>,
    pub backoff_nanos: Option<u64>,
    pub on_failure: Option<String>,
    pub dlq: Option<LitStr>,
    /// `(size, span)`.
    pub batch: Option<(u32, Span)>,
    pub batch_timeout_nanos: Option<u64>,
    /// `dedup_by_key` (Kafka batches).
    pub dedup_by_key: bool,
}

impl Parse for ConsumerAttr {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        if input.is_empty() {
            return Err(syn::Error::new(
                Span::call_site(),
                "missing the broker and queue: write `#[patron::consumer(amqp = \"orders\")]`",
            ));
        }
        let broker: Ident = input.call(syn::ext::IdentExt::parse_any).map_err(|e| {
            syn::Error::new(
                e.span(),
                "a consumer starts with its broker and queue, e.g. `amqp = \"orders\"`",
            )
        })?;
        let name = broker.to_string();
        if !BROKERS.contains(&name.as_str()) {
            let hint = if KEYS.contains(&name.as_str()) {
                format!(
                    "`{name}` comes after the broker; start with the broker and queue, e.g. `amqp = \"orders\", {name} = …`"
                )
            } else {
                match units::did_you_mean(&name, BROKERS) {
                    Some(s) => format!("unknown broker `{name}`; did you mean `{s}`?"),
                    None => format!("unknown broker `{name}`; expected `amqp = \"queue\"`"),
                }
            };
            return Err(syn::Error::new(broker.span(), hint));
        }
        let sqs = name == "sqs";
        let kafka = name == "kafka";
        let broker_name = name.clone();
        input.parse::<Token![=]>().map_err(|e| {
            syn::Error::new(
                e.span(),
                format!("expected `=` and the queue name: `{name} = \"orders\"`"),
            )
        })?;
        let topics = if kafka && input.peek(syn::token::Bracket) {
            let content;
            let bracket = syn::bracketed!(content in input);
            let list = content.parse_terminated(|i: ParseStream| i.parse::<LitStr>(), Token![,])?;
            if list.is_empty() {
                return Err(syn::Error::new(
                    bracket.span.join(),
                    "list at least one topic, e.g. `kafka = [\"payments\", \"refunds\"]`",
                ));
            }
            list.into_iter().collect::<Vec<_>>()
        } else {
            vec![args::string(input, &name, "\"orders\"")?]
        };
        let queue = topics[0].clone();
        if kafka {
            for topic in &topics {
                check_kafka_topic(topic)?;
            }
        } else if queue.value().trim().is_empty() {
            return Err(syn::Error::new(queue.span(), "the queue name is empty"));
        }
        if sqs {
            check_sqs_name(&queue)?;
        } else if !kafka && queue.value().len() > 255 {
            return Err(syn::Error::new(
                queue.span(),
                "AMQP queue names are at most 255 bytes",
            ));
        }
        let mut attr = ConsumerAttr {
            topics,
            group: None,
            wait_secs: None,
            max_messages: None,
            visibility_secs: None,
            broker,
            queue,
            exchange: None,
            routing_key: None,
            declare: false,
            prefetch: None,
            concurrency: None,
            retries: None,
            max_deliveries: None,
            backoff_nanos: None,
            on_failure: None,
            dlq: None,
            batch: None,
            batch_timeout_nanos: None,
            dedup_by_key: false,
        };
        let mut seen: Vec<String> = Vec::new();
        let mut batch_timeout_span = None;
        let mut dedup_span = None;
        let mut prefetch_span = None;
        let reject = |name: &str| broker_mismatch(name, &broker_name);
        while let Some(key) = args::next_key(input, "consumer", KEYS, reject, &mut seen)? {
            let name = key.to_string();
            match name.as_str() {
                "exchange" => attr.exchange = Some(args::string(input, "exchange", "\"events\"")?),
                "routing_key" => {
                    attr.routing_key = Some(args::string(input, "routing_key", "\"orders.*\"")?)
                }
                "dlq" => {
                    let lit = args::string(input, "dlq", "\"orders.dlq\"")?;
                    if lit.value().trim().is_empty() {
                        return Err(syn::Error::new(lit.span(), "the DLQ name is empty"));
                    }
                    if lit.value() == attr.queue.value() {
                        return Err(syn::Error::new(
                            lit.span(),
                            "the DLQ must differ from the consumed queue, or failed messages would loop",
                        ));
                    }
                    attr.dlq = Some(lit);
                }
                "declare" => {
                    let value: LitBool = input.parse().map_err(|e| {
                        syn::Error::new(e.span(), "`declare` takes `true` or `false`")
                    })?;
                    attr.declare = value.value;
                }
                "prefetch" => {
                    let (n, span) = parse_int(input, "prefetch", 1, u64::from(u16::MAX))?;
                    attr.prefetch = Some(n as u16);
                    prefetch_span = Some(span);
                }
                "concurrency" => {
                    attr.concurrency = Some(parse_int(input, "concurrency", 1, 10_000)?.0 as u32)
                }
                "retries" => attr.retries = Some(parse_int(input, "retries", 0, 1_000)?.0 as u32),
                "max_deliveries" => {
                    attr.max_deliveries =
                        Some(parse_int(input, "max_deliveries", 0, 1_000_000)?.0 as u32)
                }
                "batch" => {
                    let (n, span) = parse_int(input, "batch", 1, 65_535)?;
                    attr.batch = Some((n as u32, span));
                }
                "backoff" => {
                    let lit = args::string(input, "backoff", "\"100ms\"")?;
                    attr.backoff_nanos = Some(
                        units::parse_duration(&lit.value())
                            .map_err(|msg| syn::Error::new(lit.span(), msg))?,
                    );
                }
                "batch_timeout" => {
                    let lit = args::string(input, "batch_timeout", "\"1s\"")?;
                    let nanos = units::parse_duration(&lit.value())
                        .map_err(|msg| syn::Error::new(lit.span(), msg))?;
                    if nanos == 0 {
                        return Err(syn::Error::new(
                            lit.span(),
                            "`batch_timeout` must be greater than zero",
                        ));
                    }
                    attr.batch_timeout_nanos = Some(nanos);
                    batch_timeout_span = Some(key.span());
                }
                "on_failure" => {
                    let (value, span) = if input.peek(LitStr) {
                        let lit: LitStr = input.parse()?;
                        (lit.value(), lit.span())
                    } else {
                        let ident: Ident =
                            input.call(syn::ext::IdentExt::parse_any).map_err(|e| {
                                syn::Error::new(
                                    e.span(),
                                    "`on_failure` takes one of dlq, requeue, drop, exit",
                                )
                            })?;
                        (ident.to_string(), ident.span())
                    };
                    let value = match value.as_str() {
                        "skip" if kafka => "drop".to_string(),
                        "requeue" if kafka => {
                            return Err(syn::Error::new(
                                span,
                                "Kafka has no requeue: use `dlq`, `skip` (commit and go on) or `exit` (stop without committing)",
                            ));
                        }
                        _ => value,
                    };
                    if !STRATEGIES.contains(&value.as_str()) {
                        let hint = match value.as_str() {
                            "skip" => "(`skip` is Kafka's name; use `drop`) ".to_string(),
                            _ => match units::did_you_mean(&value, STRATEGIES) {
                                Some(s) => format!("did you mean `{s}`? "),
                                None => String::new(),
                            },
                        };
                        return Err(syn::Error::new(
                            span,
                            format!(
                                "unknown failure strategy `{value}`; {hint}expected one of dlq, requeue, drop, exit"
                            ),
                        ));
                    }
                    attr.on_failure = Some(value);
                }
                "dedup_by_key" => {
                    let value: LitBool = input.parse().map_err(|e| {
                        syn::Error::new(e.span(), "`dedup_by_key` takes `true` or `false`")
                    })?;
                    attr.dedup_by_key = value.value;
                    dedup_span = Some(key.span());
                }
                "group" => {
                    let lit = args::string(input, "group", "\"accounting\"")?;
                    if lit.value().trim().is_empty() {
                        return Err(syn::Error::new(lit.span(), "the consumer group is empty"));
                    }
                    attr.group = Some(lit);
                }
                "max_messages" => {
                    attr.max_messages = Some(parse_int(input, "max_messages", 1, 10)?.0 as u8)
                }
                "wait" => attr.wait_secs = Some(parse_seconds(input, "wait", "\"20s\"", 20)?),
                "visibility" => {
                    attr.visibility_secs =
                        Some(parse_seconds(input, "visibility", "\"30s\"", 43_200)?)
                }
                _ => unreachable!("keys are checked against KEYS above"),
            }
        }
        if kafka && attr.group.is_none() {
            return Err(syn::Error::new(
                attr.broker.span(),
                "a kafka consumer needs its consumer group: add `group = \"…\"`",
            ));
        }
        if let (Some(rk), None) = (&attr.routing_key, &attr.exchange) {
            return Err(syn::Error::new(
                rk.span(),
                "`routing_key` binds the queue to an exchange: add `exchange = \"…\"`",
            ));
        }
        if let (Some(span), None, true) = (dedup_span, attr.batch, attr.dedup_by_key) {
            return Err(syn::Error::new(
                span,
                "`dedup_by_key` deduplicates a batch: add `batch = N` and take `Batch<T>`",
            ));
        }
        if let (Some(span), None) = (batch_timeout_span, attr.batch) {
            return Err(syn::Error::new(
                span,
                "`batch_timeout` needs `batch = N` (the largest batch)",
            ));
        }
        if let (Some(p), Some((b, _)), Some(span)) = (attr.prefetch, attr.batch, prefetch_span)
            && u32::from(p) < b
        {
            return Err(syn::Error::new(
                span,
                format!(
                    "prefetch {p} is smaller than the batch size {b}, so a batch could never fill; raise prefetch to at least {b}"
                ),
            ));
        }
        if let (Some(strategy), Some(dlq)) = (&attr.on_failure, &attr.dlq)
            && (strategy == "drop" || strategy == "exit")
        {
            return Err(syn::Error::new(
                dlq.span(),
                format!(
                    "`dlq` is never used with `on_failure = {strategy}`; remove it, or use `on_failure = dlq`"
                ),
            ));
        }
        Ok(attr)
    }
}

/// A duration literal in whole seconds, at most `max`.
fn parse_seconds(input: ParseStream, key: &str, example: &str, max: u64) -> syn::Result<u64> {
    let lit = args::string(input, key, example)?;
    let nanos =
        units::parse_duration(&lit.value()).map_err(|msg| syn::Error::new(lit.span(), msg))?;
    if nanos % 1_000_000_000 != 0 {
        return Err(syn::Error::new(
            lit.span(),
            format!("SQS takes `{key}` in whole seconds, e.g. `{key} = {example}`"),
        ));
    }
    let secs = nanos / 1_000_000_000;
    if secs > max {
        return Err(syn::Error::new(
            lit.span(),
            format!("SQS allows `{key}` from 0 to {max} seconds"),
        ));
    }
    Ok(secs)
}

/// Kafka topic names: 1–249 letters, digits, `.`, `_` and `-`.
fn check_kafka_topic(lit: &LitStr) -> syn::Result<()> {
    let name = lit.value();
    if name.is_empty()
        || name.len() > 249
        || name == "."
        || name == ".."
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-')
    {
        return Err(syn::Error::new(
            lit.span(),
            "Kafka topic names are 1 to 249 letters, digits, `.`, `_` and `-`",
        ));
    }
    Ok(())
}

/// SQS queue names: 1–80 letters, digits, `-` and `_`, with an optional
/// `.fifo` suffix.
fn check_sqs_name(lit: &LitStr) -> syn::Result<()> {
    let name = lit.value();
    let base = name.strip_suffix(".fifo").unwrap_or(&name);
    if name.len() > 80
        || base.is_empty()
        || !base
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(syn::Error::new(
            lit.span(),
            "SQS queue names are 1 to 80 letters, digits, `-` and `_` (plus `.fifo` for FIFO queues); use the name, not the URL",
        ));
    }
    Ok(())
}

/// Why `key` cannot go on a consumer of `broker`, if it cannot.
fn broker_mismatch(key: &str, broker: &str) -> Option<String> {
    if BROKERS.contains(&key) {
        return Some(format!("a consumer reads from one broker; remove `{key}`"));
    }
    if broker == "sqs" && BATCH.contains(&key) {
        return Some(format!(
            "`{key}` applies to amqp and kafka consumers, not sqs (SQS consumers take one message at a time in this version); remove it"
        ));
    }
    let only = if AMQP_ONLY.contains(&key) {
        "amqp"
    } else if SQS_ONLY.contains(&key) {
        "sqs"
    } else if KAFKA_ONLY.contains(&key) {
        "kafka"
    } else {
        return None;
    };
    if only == broker {
        return None;
    }
    let instead = match (broker, key) {
        ("sqs", "prefetch") => " (SQS receives up to `max_messages` at a time)",
        _ => "",
    };
    Some(match (only, broker) {
        ("kafka", _) => format!("`{key}` applies to kafka consumers only; remove it"),
        (_, "kafka") => format!("`{key}` does not apply to kafka consumers; remove it"),
        _ => format!("`{key}` applies to {only} consumers, not {broker}{instead}; remove it"),
    })
}

fn parse_int(input: ParseStream, key: &str, min: u64, max: u64) -> syn::Result<(u64, Span)> {
    let err = |span: Span| {
        syn::Error::new(
            span,
            format!("`{key}` takes a whole number from {min} to {max}"),
        )
    };
    if !input.peek(LitInt) {
        let value: syn::Expr = input.parse()?;
        return Err(err(value.span()));
    }
    let lit: LitInt = input.parse()?;
    let n: u64 = lit.base10_parse().map_err(|_| err(lit.span()))?;
    if n < min || n > max {
        return Err(err(lit.span()));
    }
    Ok((n, lit.span()))
}
