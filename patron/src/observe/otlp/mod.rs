//! patron's OTLP/HTTP (protobuf) span exporter, plugged into the
//! OpenTelemetry SDK's batch processor.
//!
//! It writes each batch's protobuf straight from the SDK's span data
//! ([`encode`]) — the generic exporter first converted every span into
//! `opentelemetry-proto` structs, several times the cost of the encoding
//! itself (docs/benchmarks.md has the counts) — and posts it with a small
//! pooled HTTP/1.1 client ([`transport`]). It is configured by the standard
//! `OTEL_EXPORTER_OTLP_*` variables ([`config`]).

mod config;
mod encode;
mod transport;

use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

pub(crate) use config::OtlpConfig;
use encode::EncodedResource;
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
    /// Builds the exporter and its HTTP client. Call off any tokio
    /// runtime: the client has a runtime of its own.
    pub(crate) fn new(config: OtlpConfig) -> Result<Self, crate::error::Error> {
        let transport = Transport::new(config).map_err(|e| {
            crate::error::Error::msg(format!("cannot build the OTLP trace exporter: {e}"))
        })?;
        Ok(OtlpExporter {
            transport,
            resource: EncodedResource::default(),
            shut_down: AtomicBool::new(false),
        })
    }

    fn export_now(&self, batch: &[SpanData]) -> OTelSdkResult {
        if self.shut_down.load(Ordering::Acquire) {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        if batch.is_empty() {
            return Ok(());
        }
        let mut body = Vec::with_capacity(batch.len() * BYTES_PER_SPAN + 256);
        encode::export_request(&mut body, &self.resource, batch);
        match self.transport.send(Bytes::from(body)) {
            Ok(accepted) if accepted.rejected_spans > 0 || !accepted.message.is_empty() => {
                tracing::warn!(
                    target: "patron::trace",
                    rejected_spans = accepted.rejected_spans,
                    message = %accepted.message,
                    "the OTLP receiver rejected part of a batch of {} spans",
                    batch.len()
                );
                Ok(())
            }
            Ok(_) => Ok(()),
            Err(e) => Err(OTelSdkError::InternalFailure(format!(
                "{e} ({} spans lost)",
                batch.len()
            ))),
        }
    }
}

impl SpanExporter for OtlpExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.export_now(&batch)
    }

    fn shutdown_with_timeout(&self, _timeout: std::time::Duration) -> OTelSdkResult {
        if self.shut_down.swap(true, Ordering::AcqRel) {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        Ok(())
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = EncodedResource::new(resource);
    }
}

#[cfg(test)]
mod tests;
