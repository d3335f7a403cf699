//! The process's log output: human-readable text, or one JSON object per
//! line for log pipelines (`--log-format json`), and, when an OTLP endpoint
//! is given, the OpenTelemetry layer ([`crate::otel`]) beside it.

use std::io::IsTerminal;

use serde::{Deserialize, Serialize};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::Layer as _;

use crate::otel::{OtelError, Tracing};

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event (colours on a terminal).
    #[default]
    Text,
    /// One JSON object per line: timestamp, level, target, message and
    /// fields (and `trace_id`, `span_id` when tracing is on).
    Json,
}

/// Installs the global subscriber: the `RUST_LOG` filter (default `info`)
/// and `format`, writing to stderr, and, with `otlp_endpoint`, the
/// OpenTelemetry layer exporting there. Call once, inside the Tokio runtime,
/// before anything logs; keep the returned exporter to flush it at the end.
pub fn init(format: LogFormat, otlp_endpoint: Option<&str>) -> Result<Option<Tracing>, OtelError> {
    let (otel_layer, tracing) = match otlp_endpoint.filter(|e| !e.is_empty()) {
        Some(endpoint) => {
            let (layer, tracing) = crate::otel::start(endpoint)?;
            (Some(layer), Some(tracing))
        }
        None => (None, None),
    };
    let filter = log_filter(
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        tracing.is_some(),
    );
    // Off, the filter is global, as it always was; on, it is the log
    // output's own, as the OpenTelemetry layer has its own.
    let registry = tracing_subscriber::registry();
    match (format, otel_layer) {
        (LogFormat::Text, None) => registry.with(filter).with(text_layer()).init(),
        (LogFormat::Json, None) => registry.with(filter).with(json_layer()).init(),
        (LogFormat::Text, Some(otel)) => registry
            .with(otel)
            .with(text_layer().with_filter(filter))
            .init(),
        (LogFormat::Json, Some(otel)) => registry
            .with(otel)
            .with(json_layer().with_filter(filter))
            .init(),
    }
    Ok(tracing)
}

/// Human-readable lines on stderr (colours on a terminal).
fn text_layer<S>() -> impl tracing_subscriber::Layer<S> + Send + Sync
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
}

/// JSON lines on stderr: the event's fields (its message among them) under
/// "fields", the span it happened in, the trace and span ids when tracing
/// is on, and no ANSI escapes inside JSON strings.
fn json_layer<S>() -> impl tracing_subscriber::Layer<S> + Send + Sync
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .json()
        .flatten_event(false)
        .with_current_span(true)
        .with_span_list(false)
        .with_ansi(false)
        .map_event_format(WithTraceIds)
}

/// The log output's filter: `base` (from `RUST_LOG`), and the spans meant
/// for OpenTelemetry off when tracing is (so that, with no other layer
/// interested, their call sites are disabled and cost nothing), otherwise
/// seen here too, so that a line logged inside a call names its span and
/// trace whatever `RUST_LOG` says.
fn log_filter(
    base: tracing_subscriber::EnvFilter,
    tracing_on: bool,
) -> tracing_subscriber::EnvFilter {
    let level = if tracing_on { "info" } else { "off" };
    match format!("{}={level}", crate::otel::TARGET).parse() {
        Ok(directive) => base.add_directive(directive),
        Err(_) => base,
    }
}

/// A JSON line formatter that adds the trace and span ids of the span the
/// event happened in, when tracing is on and the event is inside a traced
/// span: `"trace_id"` and `"span_id"`, lower-case hex as in `traceparent`.
struct WithTraceIds<F>(F);

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    F: FormatEvent<S, N>,
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let Some((trace_id, span_id)) = trace_ids(ctx) else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        match line.trim_end().strip_suffix('}') {
            Some(object) => writeln!(
                writer,
                "{object},\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\"}}"
            ),
            None => writer.write_str(&line),
        }
    }
}

/// The ids of the innermost started OpenTelemetry span around the event.
fn trace_ids<S, N>(ctx: &FmtContext<'_, S, N>) -> Option<(String, String)>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    if !crate::otel::enabled() {
        return None;
    }
    ctx.event_scope()?.find_map(|span| {
        let ext = span.extensions();
        let data = ext.get::<tracing_opentelemetry::OtelData>()?;
        let trace_id = data.trace_id()?;
        let span_id = data.span_id()?;
        (trace_id != opentelemetry::TraceId::INVALID)
            .then(|| (trace_id.to_string(), span_id.to_string()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The log output as `init` installs it, without the exporter: the
    /// filter global when tracing is off, the log output's own when on.
    fn log_output(rust_log: &str, tracing_on: bool) -> tracing::Dispatch {
        let filter = log_filter(tracing_subscriber::EnvFilter::new(rust_log), tracing_on);
        if tracing_on {
            tracing_subscriber::registry()
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_writer(std::io::sink)
                        .with_filter(filter),
                )
                .into()
        } else {
            tracing_subscriber::registry()
                .with(filter)
                .with(tracing_subscriber::fmt::layer().with_writer(std::io::sink))
                .into()
        }
    }

    #[test]
    fn with_tracing_off_the_trace_spans_are_disabled_whatever_rust_log_says() {
        for rust_log in ["info", "trace", "sessiond=trace"] {
            tracing::dispatcher::with_default(&log_output(rust_log, false), || {
                let span = tracing::info_span!(target: crate::otel::TARGET, "rpc");
                assert!(span.is_disabled(), "RUST_LOG={rust_log}");
                assert!(tracing::info_span!("other").id().is_some());
            });
        }
    }

    #[test]
    fn with_tracing_on_the_log_sees_the_trace_spans() {
        tracing::dispatcher::with_default(&log_output("warn", true), || {
            let span = tracing::info_span!(target: crate::otel::TARGET, "rpc");
            assert!(!span.is_disabled());
        });
    }
}
