//! Prometheus metrics, served on the metrics listener (`--metrics-addr`) at `/metrics`.
//!
//! One recorder per process (the `metrics` facade is global): every server
//! started in the process reports into it.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::domain::{EndReason, Kind};

/// Latency buckets, seconds: 50 µs to 5 s.
const BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the recorder on first use; `None` if another one was installed
/// by the embedding program.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets(BUCKETS)
                .ok()?
                .install_recorder()
                .ok()
        })
        .as_ref()
}

/// The Prometheus text exposition.
pub fn render() -> Option<String> {
    let h = handle()?;
    h.run_upkeep();
    Some(h.render())
}

/// Static labels: no allocation per call on the hot path.
fn code_label(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "Ok",
        Cancelled => "Cancelled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

/// One RPC's metrics. Handles are resolved on first use (after the recorder
/// is installed) and kept: recording is then an atomic add, not a registry
/// lookup with a freshly built label set per call.
pub struct RpcMetrics {
    rpc: &'static str,
    handles: OnceLock<RpcHandles>,
}

struct RpcHandles {
    duration: metrics::Histogram,
    /// Indexed by `tonic::Code as usize` (0..=16).
    calls: [OnceLock<metrics::Counter>; 17],
    /// Registered on the first shed: the series appears only once one happens.
    shed: OnceLock<metrics::Counter>,
}

impl RpcMetrics {
    pub const fn new(rpc: &'static str) -> Self {
        RpcMetrics {
            rpc,
            handles: OnceLock::new(),
        }
    }

    /// The method name, as in the request path and the `rpc` label.
    pub fn rpc(&self) -> &'static str {
        self.rpc
    }

    fn handles(&self) -> &RpcHandles {
        let rpc = self.rpc;
        self.handles.get_or_init(|| RpcHandles {
            duration: metrics::histogram!("sessiond_grpc_request_duration_seconds", "rpc" => rpc),
            calls: [const { OnceLock::new() }; 17],
            shed: OnceLock::new(),
        })
    }

    /// One finished call: its duration and its status code.
    pub fn record(&self, code: tonic::Code, elapsed: Duration) {
        let handles = self.handles();
        handles.duration.record(elapsed.as_secs_f64());
        if let Some(slot) = handles.calls.get(code as usize) {
            slot.get_or_init(|| {
                metrics::counter!(
                    "sessiond_grpc_requests_total",
                    "rpc" => self.rpc,
                    "code" => code_label(code)
                )
            })
            .increment(1);
        }
    }

    /// One call shed before it started (overload).
    pub fn record_shed(&self) {
        let rpc = self.rpc;
        self.handles()
            .shed
            .get_or_init(|| metrics::counter!("sessiond_overload_rejections_total", "rpc" => rpc))
            .increment(1);
    }
}

pub fn record_revocations(reason: EndReason, count: u64) {
    if count > 0 {
        metrics::counter!("sessiond_revocations_total", "reason" => reason.as_str())
            .increment(count);
    }
}

pub fn set_live_sessions(kind: Kind, count: u64) {
    metrics::gauge!("sessiond_live_sessions", "kind" => kind.as_str()).set(count as f64);
}

/// A connection closed at once because its peer address already held as
/// many as the listener allows.
pub fn connection_refused(listener: &'static str) {
    metrics::counter!("sessiond_connections_refused_total", "listener" => listener).increment(1);
}
