//! The rules between keys of a parsed attribute, one function each. Every
//! broken rule is reported, together, on the token that breaks it.

use super::model::{Broker, ConsumerAttr, OnFailure};
use crate::sig::Errors;

/// Checks every rule; all the errors at once.
pub fn validate(attr: &ConsumerAttr) -> syn::Result<()> {
    let rules: &[fn(&ConsumerAttr) -> Option<syn::Error>] = &[
        kafka_needs_a_group,
        routing_key_needs_an_exchange,
        dedup_needs_a_batch,
        batch_timeout_needs_a_batch,
        prefetch_fits_a_batch,
        dlq_differs_from_the_source,
        dlq_is_used,
    ];
    let mut errors = Errors::default();
    for rule in rules {
        if let Some(e) = rule(attr) {
            errors.push(e);
        }
    }
    errors.finish()
}

fn kafka_needs_a_group(attr: &ConsumerAttr) -> Option<syn::Error> {
    match &attr.broker {
        Broker::Kafka(k) if k.group.is_none() => Some(syn::Error::new(
            attr.broker_ident.span(),
            "a kafka consumer needs its consumer group: add `group = \"…\"`",
        )),
        _ => None,
    }
}

fn routing_key_needs_an_exchange(attr: &ConsumerAttr) -> Option<syn::Error> {
    match &attr.broker {
        Broker::Amqp(a) if a.exchange.is_none() => a.routing_key.as_ref().map(|rk| {
            syn::Error::new(
                rk.span(),
                "`routing_key` binds the queue to an exchange: add `exchange = \"…\"`",
            )
        }),
        _ => None,
    }
}

fn dedup_needs_a_batch(attr: &ConsumerAttr) -> Option<syn::Error> {
    match (&attr.broker, attr.batch) {
        (Broker::Kafka(k), None) => k.dedup_by_key.map(|span| {
            syn::Error::new(
                span,
                "`dedup_by_key` deduplicates a batch: add `batch = N` and take `Batch<T>`",
            )
        }),
        _ => None,
    }
}

fn batch_timeout_needs_a_batch(attr: &ConsumerAttr) -> Option<syn::Error> {
    match (attr.batch_timeout, attr.batch) {
        (Some((_, span)), None) => Some(syn::Error::new(
            span,
            "`batch_timeout` needs `batch = N` (the largest batch)",
        )),
        _ => None,
    }
}

fn prefetch_fits_a_batch(attr: &ConsumerAttr) -> Option<syn::Error> {
    let (Broker::Amqp(a), Some(batch)) = (&attr.broker, attr.batch) else {
        return None;
    };
    let (prefetch, span) = a.prefetch?;
    (u32::from(prefetch) < batch.size).then(|| {
        let b = batch.size;
        syn::Error::new(
            span,
            format!(
                "prefetch {prefetch} is smaller than the batch size {b}, so a batch could never fill; raise prefetch to at least {b}"
            ),
        )
    })
}

fn dlq_differs_from_the_source(attr: &ConsumerAttr) -> Option<syn::Error> {
    let dlq = attr.common.dlq.as_ref()?;
    (dlq.value() == attr.broker.source().value()).then(|| {
        syn::Error::new(
            dlq.span(),
            "the DLQ must differ from the consumed queue, or failed messages would loop",
        )
    })
}

fn dlq_is_used(attr: &ConsumerAttr) -> Option<syn::Error> {
    let dlq = attr.common.dlq.as_ref()?;
    let (strategy, _) = attr.common.on_failure?;
    matches!(strategy, OnFailure::Drop | OnFailure::Exit).then(|| {
        let written = strategy.spelling(&attr.broker);
        syn::Error::new(
            dlq.span(),
            format!(
                "`dlq` is never used with `on_failure = {written}`; remove it, or use `on_failure = dlq`"
            ),
        )
    })
}
