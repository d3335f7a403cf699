//! What every `session.v1.SessionService` call goes through, as one tower
//! layer: admission (calls in flight at once) and queue-delay shedding,
//! then metrics by RPC and status code. The queue delay is read when the
//! request's message has arrived, which is when the handler can start: under
//! a flood the wait is both for a runtime worker and for the connection task
//! that reads the body. Applied to the gRPC server and to
//! the in-process service the REST shim calls; requests for other services
//! (health, reflection) pass through untouched.
//!
//! Each call also gets its server span ([`crate::otel`]), child of the
//! caller's `traceparent` when one is sent; disabled, and free, when tracing
//! is off.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::Semaphore;
use tonic::server::NamedService;
use tonic::Code;
use tower::{Layer, Service};
use tracing::field::Empty;
use tracing::Instrument as _;

use super::status::to_status;
use crate::domain::Error;
use crate::pb::session_service_server::SessionServiceServer;
use crate::telemetry::RpcMetrics;

/// Longest wait before a call is shed, by default.
pub const DEFAULT_MAX_QUEUE_DELAY: Duration = Duration::from_millis(50);

/// Calls in progress at once before new ones are shed.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;

/// Every method of the service, by the name its request path ends in.
static RPCS: [RpcMetrics; 11] = [
    RpcMetrics::new("Login"),
    RpcMetrics::new("ValidateSession"),
    RpcMetrics::new("Logoff"),
    RpcMetrics::new("LogoffOther"),
    RpcMetrics::new("LogoutUser"),
    RpcMetrics::new("LogoutAll"),
    RpcMetrics::new("ListSessions"),
    RpcMetrics::new("WatchRevocations"),
    RpcMetrics::new("ListAuditRecords"),
    RpcMetrics::new("EndUserSessions"),
    RpcMetrics::new("ChangePassword"),
];

/// Methods that check a password: their Argon2 work has its own bounded
/// queue (`Sessions::hashing_slot`), so they take no share of the in-flight
/// budget, where a login flood waiting for Argon2 would hold every permit
/// and shed validations.
const OWN_QUEUE: [&str; 3] = ["Login", "LogoutAll", "ChangePassword"];

/// The full name of the service, as request paths and spans show it.
const SERVICE: &str = <SessionServiceServer<super::SessionGrpc> as NamedService>::NAME;

/// The method a request path (`/session.v1.SessionService/<Rpc>`) names.
fn rpc_of(path: &str) -> Option<&'static RpcMetrics> {
    let method = path
        .strip_prefix('/')?
        .strip_prefix(SERVICE)?
        .strip_prefix('/')?;
    RPCS.iter().find(|r| r.rpc() == method)
}

/// The layer; clones share one admission count.
#[derive(Debug, Clone)]
pub struct CallLayer {
    admission: Arc<Semaphore>,
    max_queue_delay: Option<Duration>,
}

impl CallLayer {
    /// At most `max_in_flight` calls in progress at once; past that, calls
    /// are shed at once with RESOURCE_EXHAUSTED instead of queueing (which
    /// would only grow every caller's latency). A call that waited longer
    /// than `max_queue_delay` between arriving and starting is shed too:
    /// under a flood the queue is in front of the handlers (runtime tasks,
    /// HTTP/2 streams), where an in-flight count cannot see it.
    pub fn new(max_in_flight: usize, max_queue_delay: Duration) -> Self {
        CallLayer {
            admission: Arc::new(Semaphore::new(max_in_flight.max(1))),
            max_queue_delay: Some(max_queue_delay),
        }
    }

    /// The same admission count, without queue-delay shedding: an
    /// in-process call starts inside the REST handler that makes it, with
    /// no queue in between.
    pub fn in_process(&self) -> Self {
        CallLayer {
            admission: self.admission.clone(),
            max_queue_delay: None,
        }
    }
}

impl<S> Layer<S> for CallLayer {
    type Service = Calls<S>;

    fn layer(&self, inner: S) -> Calls<S> {
        Calls {
            inner,
            layer: self.clone(),
        }
    }
}

/// A service wrapped in [`CallLayer`].
#[derive(Debug, Clone)]
pub struct Calls<S> {
    inner: S,
    layer: CallLayer,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for Calls<S>
where
    S: Service<http::Request<Timed<ReqBody>>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Default + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let Some(rpc) = rpc_of(req.uri().path()) else {
            return Box::pin(self.inner.call(req.map(Timed::untimed)));
        };
        // Arrival is when the server dispatches the request's head.
        let arrived = Instant::now();
        // With tracing off, no span at all: not even a disabled one to
        // enter and leave at every poll.
        let span = crate::otel::enabled().then(|| server_span(rpc, req.headers()));
        let deadline = self.layer.max_queue_delay.map(|max| (arrived + max, rpc));
        // Not polled until admitted; dropped unpolled when shed.
        let call = self.inner.call(req.map(|body| Timed { body, deadline }));
        let admission = self.layer.admission.clone();
        let answer = async move {
            // A call that waited too long is shed by its body (`Timed`),
            // which the handler reads first: the wait is measured there.
            let permit = if OWN_QUEUE.contains(&rpc.rpc()) {
                Some(None)
            } else {
                admission.try_acquire().ok().map(Some)
            };
            let Some(_permit) = permit else {
                rpc.record_shed();
                rpc.record(Code::ResourceExhausted, arrived.elapsed());
                record_status(Code::ResourceExhausted);
                return Ok(to_status(Error::Overloaded).into_http());
            };
            // The permit covers the call up to its response head: a
            // WatchRevocations stream holds none while it is open.
            let response = call.await?;
            let code = code_of(&response);
            rpc.record(code, arrived.elapsed());
            record_status(code);
            Ok(response)
        };
        match span {
            Some(span) => Box::pin(answer.instrument(span)),
            None => Box::pin(answer),
        }
    }
}

/// The call's server span, with the gRPC semantic-convention attributes;
/// the caller's `traceparent` (gRPC metadata), when sent, is its parent.
/// The session's kind and org are recorded by the handler once known
/// ([`crate::otel::record_session`]). Disabled when tracing is off: then
/// no field is evaluated and no header read.
fn server_span(rpc: &'static RpcMetrics, headers: &http::HeaderMap) -> tracing::Span {
    let span = tracing::info_span!(
        target: crate::otel::TARGET,
        "rpc",
        otel.name = format_args!("{SERVICE}/{}", rpc.rpc()),
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = SERVICE,
        rpc.method = rpc.rpc(),
        rpc.grpc.status_code = Empty,
        otel.status_code = Empty,
        session.kind = Empty,
        session.org = Empty,
    );
    crate::otel::set_remote_parent(&span, headers);
    span
}

/// Records the call's status code on its span (the current one); codes
/// that mean the server failed mark the span as an error, as the gRPC
/// semantic conventions say for server spans.
fn record_status(code: Code) {
    if !crate::otel::enabled() {
        return;
    }
    let span = tracing::Span::current();
    span.record("rpc.grpc.status_code", code as i64);
    if matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    ) {
        span.record("otel.status_code", "ERROR");
    }
}

/// A request body that sheds its call when its first frame (the message)
/// arrives after the deadline: the decoder turns the error into the
/// OVERLOADED status, which is the call's answer, before the handler runs.
pub struct Timed<B> {
    body: B,
    /// When the call must have started by, and whose shed count to raise;
    /// `None` once checked, or for calls without queue-delay shedding.
    deadline: Option<(Instant, &'static RpcMetrics)>,
}

impl<B> Timed<B> {
    fn untimed(body: B) -> Self {
        Timed {
            body,
            deadline: None,
        }
    }
}

impl<B> Body for Timed<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<tonic::codegen::StdError>,
{
    type Data = Bytes;
    type Error = tonic::codegen::StdError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::codegen::StdError>>> {
        let frame = std::task::ready!(Pin::new(&mut self.body).poll_frame(cx));
        if let Some((at, rpc)) = self.deadline.take() {
            if Instant::now() > at {
                rpc.record_shed();
                return Poll::Ready(Some(Err(Box::new(to_status(Error::Overloaded)))));
            }
        }
        Poll::Ready(frame.map(|f| f.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The call's status code as its response head shows it. A failed call is
/// answered trailers-only, `grpc-status` in the headers; a unary success
/// carries its status in the trailers, after the message, so a head without
/// `grpc-status` is OK (for WatchRevocations: the stream opened).
fn code_of<B>(response: &http::Response<B>) -> Code {
    response
        .headers()
        .get("grpc-status")
        .map_or(Code::Ok, |v| Code::from_bytes(v.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn every_method_of_the_service_is_measured() {
        let set = prost_types::FileDescriptorSet::decode(crate::pb::FILE_DESCRIPTOR_SET)
            .expect("descriptor set");
        let service = set
            .file
            .iter()
            .filter(|f| f.package() == "session.v1")
            .flat_map(|f| &f.service)
            .find(|s| s.name() == "SessionService")
            .expect("SessionService");
        let mut declared: Vec<&str> = service.method.iter().map(|m| m.name()).collect();
        let mut measured: Vec<&str> = RPCS.iter().map(RpcMetrics::rpc).collect();
        declared.sort_unstable();
        measured.sort_unstable();
        assert_eq!(declared, measured);
    }

    #[test]
    fn the_rpc_is_read_from_the_path() {
        let rpc = rpc_of("/session.v1.SessionService/ValidateSession").map(RpcMetrics::rpc);
        assert_eq!(rpc, Some("ValidateSession"));
        assert!(rpc_of("/session.v1.SessionService/Nope").is_none());
        assert!(rpc_of("/grpc.health.v1.Health/Check").is_none());
        assert!(rpc_of("/session.v1.SessionServiceX/Login").is_none());
    }

    #[test]
    fn a_trailers_only_answer_shows_its_code() {
        let shed: http::Response<tonic::body::Body> = to_status(Error::Overloaded).into_http();
        assert_eq!(code_of(&shed), Code::ResourceExhausted);
        let ok = http::Response::new(tonic::body::Body::default());
        assert_eq!(code_of(&ok), Code::Ok);
    }
}
