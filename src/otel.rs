//! OpenTelemetry traces, through the tracing ecosystem: spans of target
//! [`TARGET`] become OTLP spans (`tracing-opentelemetry`), exported over
//! OTLP/gRPC when an endpoint is configured (`--otlp-endpoint`, or the
//! standard `OTEL_EXPORTER_OTLP_ENDPOINT`). Off by default, and free when
//! off: no exporter, no layer, and the spans of [`TARGET`] are disabled at
//! their call sites, so creating one costs a cached interest check.
//!
//! W3C trace context (`traceparent`, `tracestate`) is read from REST headers
//! and gRPC metadata, and written into the shim's gRPC calls, so a REST
//! request is one trace: REST span, gRPC server span, store and hashing spans.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The target of every span meant for OpenTelemetry. The log output does
/// not see them unless tracing is on (see [`crate::logging::init`]).
pub const TARGET: &str = "sessiond::otel";

/// The service name when `OTEL_SERVICE_NAME` does not give one.
pub const DEFAULT_SERVICE_NAME: &str = "sessiond";

/// How long a clean stop waits for the last spans to be exported.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

static ON: AtomicBool = AtomicBool::new(false);

/// Whether traces are exported (set once, before serving).
#[inline]
pub fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

/// Why tracing could not start.
#[derive(Debug, thiserror::Error)]
#[error("OTLP exporter for {endpoint}: {reason}")]
pub struct OtelError {
    endpoint: String,
    reason: String,
}

/// The running exporter; [`Tracing::shutdown`] exports what is still
/// buffered (call it once the server has drained).
#[derive(Debug)]
pub struct Tracing {
    provider: SdkTracerProvider,
}

impl Tracing {
    /// Exports the buffered spans and stops the exporter. Blocks (up to a
    /// few seconds), so it runs on the blocking pool.
    pub async fn shutdown(self) {
        let provider = self.provider;
        let done =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT))
                .await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "flushing traces at shutdown"),
            Err(e) => tracing::warn!(error = %e, "flushing traces at shutdown"),
        }
    }
}

/// Starts the OTLP/gRPC exporter for `endpoint` (e.g. `http://collector:4317`)
/// and returns the tracing layer that feeds it, filtered to the spans of
/// [`TARGET`]. Needs a Tokio runtime (the exporter's channel lives on
/// it). The batch processor follows the standard `OTEL_BSP_*` variables,
/// the resource `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`.
pub fn start(
    endpoint: &str,
) -> Result<
    (
        impl tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync,
        Tracing,
    ),
    OtelError,
> {
    use tracing_subscriber::Layer as _;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| OtelError {
            endpoint: endpoint.to_owned(),
            reason: e.to_string(),
        })?;
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none_or(|v| v.is_empty()) {
        resource = resource.with_service_name(DEFAULT_SERVICE_NAME);
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    let tracer = provider.tracer("sessiond");
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    // Only the spans made for it: log events stay in the log (where they
    // carry the trace id), not on the spans as span events. INFO, the level
    // of every such span: the process-wide level hint stays at INFO, so
    // debug and trace call sites stay as cheap as without tracing.
    let filter =
        tracing_subscriber::filter::Targets::new().with_target(TARGET, tracing::Level::INFO);
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_tracked_inactivity(false)
        .with_filter(filter);
    ON.store(true, Ordering::Relaxed);
    Ok((layer, Tracing { provider }))
}

/// Reads W3C trace context from HTTP headers (gRPC metadata included).
struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Writes W3C trace context into HTTP headers.
struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// Makes the caller's span (a valid `traceparent` in `headers`) the parent
/// of `span`. Nothing happens for a disabled span or without a valid
/// `traceparent`: the span keeps its place in the current trace, if any.
pub fn set_remote_parent(span: &tracing::Span, headers: &http::HeaderMap) {
    if span.is_disabled() || !headers.contains_key("traceparent") {
        return;
    }
    let cx = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// Writes the current span's trace context into `headers` (the REST shim's
/// gRPC calls), when tracing is on and a span is current.
pub fn inject_current(headers: &mut http::HeaderMap) {
    if !enabled() {
        return;
    }
    let span = tracing::Span::current();
    if span.is_disabled() {
        return;
    }
    let cx = span.context();
    TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(headers));
}

/// Records a session's kind and org on the current RPC span (never its
/// token, digest or user), when tracing is on.
pub fn record_session(session: &crate::domain::Session) {
    if !enabled() {
        return;
    }
    let span = tracing::Span::current();
    span.record("session.kind", session.kind.as_str());
    span.record("session.org", session.org.as_str());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_context_round_trips_through_headers() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "traceparent",
            http::HeaderValue::from_static(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
        );
        let cx = TraceContextPropagator::new().extract(&HeaderExtractor(&headers));
        let sc = cx.span().span_context().clone();
        assert!(sc.is_valid() && sc.is_remote());
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let mut out = http::HeaderMap::new();
        TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(&mut out));
        assert_eq!(out.get("traceparent"), headers.get("traceparent"));
    }

    #[test]
    fn nothing_is_written_while_tracing_is_off() {
        let mut headers = http::HeaderMap::new();
        inject_current(&mut headers);
        assert!(headers.is_empty());
    }
}
