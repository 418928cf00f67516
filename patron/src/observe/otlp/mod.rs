//! patron's OTLP/HTTP (protobuf) span exporter, fed by its span queues
//! ([`queue`]): the HTTP server spans' and, as the SDK's span processor,
//! everyone else's.
//!
//! It writes each batch's protobuf straight from the SDK's span data
//! ([`encode`]) — the generic exporter first converted every span into
//! `opentelemetry-proto` structs, several times the cost of the encoding
//! itself (docs/benchmarks.md has the counts) — and posts it with a small
//! pooled HTTP/1.1 client ([`transport`]). It is configured by the standard
//! `OTEL_EXPORTER_OTLP_*` variables ([`config`]).

mod config;
mod encode;
mod queue;
mod record;
mod transport;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::SpanData;

pub(crate) use config::OtlpConfig;
use encode::EncodedResource;
pub(crate) use encode::route_attributes;
pub(crate) use queue::{QueueConfig, QueueProcessor, RecordQueue};
pub(crate) use record::{
    STATUS_CODE, ServerSpanStart, install as install_queue, installed as installed_queue,
    start as start_server_span,
};
use transport::Transport;

/// Encoded bytes a span takes, roughly, to size the request buffer.
const BYTES_PER_SPAN: usize = 256;

/// Exports batches of finished spans to an OTLP/HTTP receiver.
#[derive(Debug)]
pub(crate) struct OtlpExporter {
    transport: Transport,
    resource: EncodedResource,
    shut_down: AtomicBool,
}

impl OtlpExporter {
    /// Builds the exporter, its HTTP client and the resource its requests
    /// carry (the same `Resource` the provider is built with), shared by
    /// the SDK's span processor ([`QueueProcessor`]) and the HTTP server
    /// span queue. Call off any tokio runtime: the client has a runtime of
    /// its own.
    pub(crate) fn new(
        config: OtlpConfig,
        resource: &Resource,
    ) -> Result<Arc<Self>, crate::error::Error> {
        let transport = Transport::new(config).map_err(|e| {
            crate::error::Error::msg(format!("cannot build the OTLP trace exporter: {e}"))
        })?;
        Ok(Arc::new(OtlpExporter {
            transport,
            resource: EncodedResource::new(resource),
            shut_down: AtomicBool::new(false),
        }))
    }

    /// Refuses every later export; an error when already shut down.
    fn shut_down(&self) -> OTelSdkResult {
        if self.shut_down.swap(true, Ordering::AcqRel) {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        Ok(())
    }

    fn export_now(&self, batch: &[SpanData]) -> OTelSdkResult {
        self.post(batch.len(), |body| {
            encode::export_request(body, &self.resource, batch)
        })
    }

    /// Exports a batch of patron's HTTP server spans.
    pub(crate) fn export_records(&self, batch: &[record::ServerRecord]) -> OTelSdkResult {
        self.post(batch.len(), |body| {
            encode::export_records(body, &self.resource, batch)
        })
    }

    /// Posts the request `encode` writes for `spans` spans.
    fn post(&self, spans: usize, encode: impl FnOnce(&mut Vec<u8>)) -> OTelSdkResult {
        if self.shut_down.load(Ordering::Acquire) {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        if spans == 0 {
            return Ok(());
        }
        let mut body = Vec::with_capacity(spans * BYTES_PER_SPAN + 256);
        encode(&mut body);
        match self.transport.send(Bytes::from(body)) {
            Ok(accepted) if accepted.rejected_spans > 0 || !accepted.message.is_empty() => {
                tracing::warn!(
                    target: "patron::trace",
                    rejected_spans = accepted.rejected_spans,
                    message = %accepted.message,
                    "the OTLP receiver rejected part of a batch of {spans} spans"
                );
                Ok(())
            }
            Ok(_) => Ok(()),
            Err(e) => Err(OTelSdkError::InternalFailure(format!(
                "{e} ({spans} spans lost)"
            ))),
        }
    }
}

#[cfg(test)]
mod tests;
