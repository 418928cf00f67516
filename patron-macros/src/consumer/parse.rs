//! The attribute grammar: `amqp = "queue"`, `sqs = "queue"`,
//! `kafka = "topic"` or `kafka = ["a", "b"]`, then `key = value` pairs.
//! Each broker takes the common keys (`concurrency`, `retries`,
//! `max_deliveries`, `backoff`, `on_failure`, `dlq`, `openapi`) and its own: AMQP
//! `exchange`, `routing_key`, `declare`, `prefetch`; SQS `wait`,
//! `max_messages`, `visibility`; Kafka `group`, `dedup_by_key`. AMQP and
//! Kafka also take `batch` and `batch_timeout`.
//!
//! A mistake in one argument does not hide the others: the parser records
//! it, skips to the next comma and goes on, and every error is reported
//! together. Rules between keys are in `validate.rs`.

use proc_macro2::Span;
use syn::parse::{Parse, ParseStream};
use syn::spanned::Spanned;
use syn::{Ident, LitBool, LitInt, LitStr, Token};

use super::model::{
    AmqpArgs, Batching, Broker, CommonArgs, ConsumerAttr, KafkaArgs, OnFailure, SqsArgs,
};
use crate::sig::Errors;
use crate::{args, units};

/// The brokers a consumer or producer names first.
pub(crate) const BROKERS: &[&str] = &["amqp", "kafka", "sqs"];
/// Keys every broker takes.
const COMMON: &[&str] = &[
    "concurrency",
    "retries",
    "max_deliveries",
    "backoff",
    "on_failure",
    "dlq",
    "openapi",
];
/// Keys only AMQP consumers take.
const AMQP_ONLY: &[&str] = &["exchange", "routing_key", "declare", "prefetch"];
/// Keys only SQS consumers take.
const SQS_ONLY: &[&str] = &["wait", "max_messages", "visibility"];
/// Keys only Kafka consumers take.
const KAFKA_ONLY: &[&str] = &["group", "dedup_by_key"];
/// Keys of batch consumers, which SQS does not have.
const BATCH: &[&str] = &["batch", "batch_timeout"];

/// Every key some broker takes.
fn all_keys() -> impl Iterator<Item = &'static str> {
    COMMON
        .iter()
        .chain(AMQP_ONLY)
        .chain(SQS_ONLY)
        .chain(KAFKA_ONLY)
        .chain(BATCH)
        .copied()
}

/// The keys a consumer of `broker` takes, in the order messages list them.
fn keys_for(broker: &str) -> Vec<&'static str> {
    let own: &[&str] = match broker {
        "amqp" => AMQP_ONLY,
        "sqs" => SQS_ONLY,
        _ => KAFKA_ONLY,
    };
    let batch: &[&str] = if broker == "sqs" { &[] } else { BATCH };
    own.iter().chain(COMMON).chain(batch).copied().collect()
}

/// A parsed attribute with the errors of its arguments: parsing goes on
/// past a bad argument, so that validation and the handler checks can add
/// theirs and the user sees every mistake at once.
pub struct Parsed {
    pub attr: ConsumerAttr,
    pub errors: Errors,
}

impl Parse for Parsed {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let (broker_ident, broker) = parse_source(input)?;
        let broker_name = broker.name();
        let known = keys_for(broker_name);
        let mut attr = ConsumerAttr {
            broker_ident,
            broker,
            common: CommonArgs::default(),
            batch: None,
            batch_timeout: None,
        };
        let mut errors = Errors::default();
        let mut seen: Vec<String> = Vec::new();
        let reject = |name: &str| broker_mismatch(name, broker_name);
        loop {
            let key = match args::next_key(input, "consumer", &known, reject, &mut seen) {
                Ok(Some(key)) => key,
                Ok(None) => break,
                Err(e) => {
                    errors.push(e);
                    args::skip_argument(input);
                    continue;
                }
            };
            if let Err(e) = apply(&key, input, &mut attr) {
                errors.push(e);
                args::skip_argument(input);
            }
        }
        Ok(Parsed { attr, errors })
    }
}

/// `broker = "source"`: the broker, and the queue or topics, checked.
fn parse_source(input: ParseStream) -> syn::Result<(Ident, Broker)> {
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
        let hint = if all_keys().any(|k| k == name) {
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
    input.parse::<Token![=]>().map_err(|e| {
        syn::Error::new(
            e.span(),
            format!("expected `=` and the queue name: `{name} = \"orders\"`"),
        )
    })?;
    let parsed = match name.as_str() {
        "kafka" => Broker::Kafka(KafkaArgs {
            topics: parse_topics(input)?,
            group: None,
            dedup_by_key: None,
        }),
        "sqs" => {
            let queue = args::string(input, &name, "\"orders\"")?;
            check_sqs_name(&queue)?;
            Broker::Sqs(SqsArgs {
                queue,
                wait_secs: None,
                max_messages: None,
                visibility_secs: None,
            })
        }
        _ => {
            let queue = args::string(input, &name, "\"orders\"")?;
            check_amqp_queue(&queue)?;
            Broker::Amqp(AmqpArgs {
                queue,
                exchange: None,
                routing_key: None,
                declare: false,
                prefetch: None,
            })
        }
    };
    Ok((broker, parsed))
}

/// `"topic"` or `["a", "b"]`, each a valid Kafka topic name.
fn parse_topics(input: ParseStream) -> syn::Result<Vec<LitStr>> {
    let topics = if input.peek(syn::token::Bracket) {
        let content;
        let bracket = syn::bracketed!(content in input);
        let list = content.parse_terminated(|i: ParseStream| i.parse::<LitStr>(), Token![,])?;
        if list.is_empty() {
            return Err(syn::Error::new(
                bracket.span.join(),
                "list at least one topic, e.g. `kafka = [\"payments\", \"refunds\"]`",
            ));
        }
        list.into_iter().collect()
    } else {
        vec![args::string(input, "kafka", "\"orders\"")?]
    };
    let mut errors = Errors::default();
    for topic in &topics {
        if let Err(e) = check_kafka_topic(topic) {
            errors.push(e);
        }
    }
    errors.finish()?;
    Ok(topics)
}

/// Reads the value of `key` (already known to suit `broker`) into `attr`.
fn apply(key: &Ident, input: ParseStream, attr: &mut ConsumerAttr) -> syn::Result<()> {
    let ConsumerAttr {
        broker,
        common,
        batch,
        batch_timeout,
        ..
    } = attr;
    match (key.to_string().as_str(), broker) {
        ("concurrency", _) => {
            common.concurrency = Some(int(input, "concurrency", 1, 10_000)?.0 as u32)
        }
        ("retries", _) => common.retries = Some(int(input, "retries", 0, 1_000)?.0 as u32),
        ("max_deliveries", _) => {
            common.max_deliveries = Some(int(input, "max_deliveries", 0, 1_000_000)?.0 as u32)
        }
        ("backoff", _) => common.backoff_nanos = Some(duration(input, "backoff", "\"100ms\"")?.0),
        ("on_failure", broker) => common.on_failure = Some(on_failure(input, broker)?),
        ("dlq", _) => common.dlq = Some(name(input, "dlq", "\"orders.dlq\"", "the DLQ name")?),
        ("openapi", _) => common.undocumented = !boolean(input, "openapi")?,
        ("batch", _) => {
            let (size, _) = int(input, "batch", 1, 65_535)?;
            *batch = Some(Batching { size: size as u32 });
        }
        ("batch_timeout", _) => {
            let (nanos, span) = duration(input, "batch_timeout", "\"1s\"")?;
            if nanos == 0 {
                return Err(syn::Error::new(
                    span,
                    "`batch_timeout` must be greater than zero",
                ));
            }
            *batch_timeout = Some((nanos, key.span()));
        }
        ("exchange", Broker::Amqp(a)) => {
            a.exchange = Some(args::string(input, "exchange", "\"events\"")?)
        }
        ("routing_key", Broker::Amqp(a)) => {
            a.routing_key = Some(args::string(input, "routing_key", "\"orders.*\"")?)
        }
        ("declare", Broker::Amqp(a)) => a.declare = boolean(input, "declare")?,
        ("prefetch", Broker::Amqp(a)) => {
            let (n, span) = int(input, "prefetch", 1, u64::from(u16::MAX))?;
            a.prefetch = Some((n as u16, span));
        }
        ("wait", Broker::Sqs(s)) => s.wait_secs = Some(seconds(input, "wait", "\"20s\"", 20)?),
        ("max_messages", Broker::Sqs(s)) => {
            s.max_messages = Some(int(input, "max_messages", 1, 10)?.0 as u8)
        }
        ("visibility", Broker::Sqs(s)) => {
            s.visibility_secs = Some(seconds(input, "visibility", "\"30s\"", 43_200)?)
        }
        ("group", Broker::Kafka(k)) => {
            k.group = Some(name(
                input,
                "group",
                "\"accounting\"",
                "the consumer group",
            )?)
        }
        ("dedup_by_key", Broker::Kafka(k)) => {
            k.dedup_by_key = boolean(input, "dedup_by_key")?.then_some(key.span())
        }
        (other, broker) => {
            // `next_key` lets through only the keys of `keys_for(broker)`.
            return Err(syn::Error::new(
                key.span(),
                format!("`{other}` does not apply to {} consumers", broker.name()),
            ));
        }
    }
    Ok(())
}

/// A non-empty string naming something (`what`, for the message).
fn name(input: ParseStream, key: &str, example: &str, what: &str) -> syn::Result<LitStr> {
    let lit = args::string(input, key, example)?;
    if lit.value().trim().is_empty() {
        return Err(syn::Error::new(lit.span(), format!("{what} is empty")));
    }
    Ok(lit)
}

fn boolean(input: ParseStream, key: &str) -> syn::Result<bool> {
    let value: LitBool = input
        .parse()
        .map_err(|e| syn::Error::new(e.span(), format!("`{key}` takes `true` or `false`")))?;
    Ok(value.value)
}

/// `on_failure = dlq` (an identifier or a string), with Kafka's names.
fn on_failure(input: ParseStream, broker: &Broker) -> syn::Result<(OnFailure, Span)> {
    let kafka = matches!(broker, Broker::Kafka(_));
    let strategies: &[&str] = if kafka {
        &["dlq", "skip", "exit"]
    } else {
        &["dlq", "requeue", "drop", "exit"]
    };
    let list = strategies.join(", ");
    let (value, span) = if input.peek(LitStr) {
        let lit: LitStr = input.parse()?;
        (lit.value(), lit.span())
    } else {
        let ident: Ident = input
            .call(syn::ext::IdentExt::parse_any)
            .map_err(|e| syn::Error::new(e.span(), format!("`on_failure` takes one of {list}")))?;
        (ident.to_string(), ident.span())
    };
    let strategy = match (value.as_str(), kafka) {
        ("dlq", _) => OnFailure::Dlq,
        ("exit", _) => OnFailure::Exit,
        ("skip", true) | ("drop", false) => OnFailure::Drop,
        ("requeue", false) => OnFailure::Requeue,
        ("requeue", true) => {
            return Err(syn::Error::new(
                span,
                "Kafka has no requeue: use `dlq`, `skip` (commit and go on) or `exit` (stop without committing)",
            ));
        }
        ("drop", true) => {
            return Err(syn::Error::new(
                span,
                "Kafka's name for dropping is `skip` (commit and go on); use `on_failure = skip`",
            ));
        }
        ("skip", false) => {
            return Err(syn::Error::new(
                span,
                format!(
                    "unknown failure strategy `skip`; (`skip` is Kafka's name; use `drop`) expected one of {list}"
                ),
            ));
        }
        (other, _) => {
            let hint = match units::did_you_mean(other, strategies) {
                Some(s) => format!("did you mean `{s}`? "),
                None => String::new(),
            };
            return Err(syn::Error::new(
                span,
                format!("unknown failure strategy `{other}`; {hint}expected one of {list}"),
            ));
        }
    };
    Ok((strategy, span))
}

/// A duration literal: `(nanoseconds, value span)`.
fn duration(input: ParseStream, key: &str, example: &str) -> syn::Result<(u64, Span)> {
    let lit = args::string(input, key, example)?;
    let nanos =
        units::parse_duration(&lit.value()).map_err(|msg| syn::Error::new(lit.span(), msg))?;
    Ok((nanos, lit.span()))
}

/// A duration literal in whole seconds, at most `max`.
fn seconds(input: ParseStream, key: &str, example: &str, max: u64) -> syn::Result<u64> {
    let (nanos, span) = duration(input, key, example)?;
    if nanos % 1_000_000_000 != 0 {
        return Err(syn::Error::new(
            span,
            format!("SQS takes `{key}` in whole seconds, e.g. `{key} = {example}`"),
        ));
    }
    let secs = nanos / 1_000_000_000;
    if secs > max {
        return Err(syn::Error::new(
            span,
            format!("SQS allows `{key}` from 0 to {max} seconds"),
        ));
    }
    Ok(secs)
}

fn int(input: ParseStream, key: &str, min: u64, max: u64) -> syn::Result<(u64, Span)> {
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

/// AMQP queue names: not empty, at most 255 bytes.
pub(crate) fn check_amqp_queue(lit: &LitStr) -> syn::Result<()> {
    if lit.value().trim().is_empty() {
        return Err(syn::Error::new(lit.span(), "the queue name is empty"));
    }
    if lit.value().len() > 255 {
        return Err(syn::Error::new(
            lit.span(),
            "AMQP queue names are at most 255 bytes",
        ));
    }
    Ok(())
}

/// Kafka topic names: 1–249 letters, digits, `.`, `_` and `-`.
pub(crate) fn check_kafka_topic(lit: &LitStr) -> syn::Result<()> {
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
pub(crate) fn check_sqs_name(lit: &LitStr) -> syn::Result<()> {
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

/// Why `key` cannot go on a consumer of `broker`, if it is a key another
/// broker takes.
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
