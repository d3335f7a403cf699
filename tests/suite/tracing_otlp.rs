//! OpenTelemetry traces end to end: a real OTLP/gRPC receiver in this
//! process (the official protobuf definitions, `opentelemetry-proto`), the
//! real `sessiond serve --demo` exporting to it, and REST calls carrying a
//! W3C `traceparent`: each must come back as one trace (REST span, gRPC
//! server span, store span), parented correctly, with no secret anywhere.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::Value;

use crate::support::*;

/// What the receiver got: every span, with its resource's service name.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<(String, Span)>>>);

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| string_of(kv.value.as_ref()?.value.as_ref()?))
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                spans.extend(scope.spans.into_iter().map(|s| (service.clone(), s)));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn string_of(v: &AnyValue) -> Option<String> {
    match v {
        AnyValue::StringValue(s) => Some(s.clone()),
        AnyValue::IntValue(i) => Some(i.to_string()),
        AnyValue::BoolValue(b) => Some(b.to_string()),
        _ => None,
    }
}

impl Received {
    /// A receiver on an ephemeral port, served until the test ends.
    async fn start() -> (Self, SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Received::default();
        let service = TraceServiceServer::new(received.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        (received, addr)
    }

    fn of_trace(&self, trace_id: &[u8]) -> Vec<Span> {
        let spans = self.0.lock().unwrap();
        spans
            .iter()
            .filter(|(_, s)| s.trace_id == trace_id)
            .map(|(_, s)| s.clone())
            .collect()
    }

    fn everything(&self) -> String {
        format!("{:?}", self.0.lock().unwrap())
    }

    /// Waits (up to 10 s) until the trace has a span named `name`.
    async fn wait_for(&self, trace_id: &[u8], name: &str) -> Vec<Span> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let spans = self.of_trace(trace_id);
            if spans.iter().any(|s| s.name == name) {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "no {name:?} span in the trace; received: {}",
                self.everything()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A `traceparent` the test's caller sends: (header, trace id, span id).
fn caller_context(n: u8) -> (String, Vec<u8>, Vec<u8>) {
    let trace: Vec<u8> = (0..16).map(|i| n.wrapping_add(i * 7) | 1).collect();
    let span: Vec<u8> = (0..8)
        .map(|i| n.wrapping_mul(3).wrapping_add(i) | 1)
        .collect();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    (format!("00-{}-{}-01", hex(&trace), hex(&span)), trace, span)
}

/// `sessiond serve --demo` with the REST shim, exporting to `collector`.
fn traced_server(
    dir: &std::path::Path,
    collector: SocketAddr,
    env: &[(&str, &str)],
) -> ServerProcess {
    let mut args = serve_args(&dir.join("s.db"));
    let rest = args.iter().position(|a| a == "off").unwrap();
    args[rest] = "127.0.0.1:0".into();
    args.extend(["--otlp-endpoint".into(), format!("http://{collector}")]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut env = env.to_vec();
    env.push(("OTEL_SERVICE_NAME", "sessiond-under-test"));
    ServerProcess::spawn_env(&refs, &env)
}

/// RAS logon with a `traceparent` header.
async fn traced_logon(base: &str, who: (&str, &str), traceparent: &str) -> (u16, Value) {
    let (status, _, body) = json_of(
        http()
            .post(format!("{base}/api/Session/logon"))
            .header("content-type", "application/json")
            .header("traceparent", traceparent)
            .json(&serde_json::json!({"username": who.0, "password": who.1}))
            .send()
            .await
            .expect("HTTP request"),
    )
    .await;
    (status, body)
}

fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| string_of(kv.value.as_ref()?.value.as_ref()?))
}

/// The trace's shape, one line a span, for failure messages.
fn outline(spans: &[Span]) -> String {
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    spans
        .iter()
        .map(|s| {
            format!(
                "{} {} <- {} {:?}\n",
                hex(&s.span_id),
                s.name,
                hex(&s.parent_span_id),
                s.attributes
                    .iter()
                    .map(|kv| (
                        kv.key.as_str(),
                        kv.value
                            .as_ref()
                            .and_then(|v| v.value.as_ref())
                            .and_then(string_of)
                    ))
                    .collect::<Vec<_>>()
            )
        })
        .collect()
}

fn one<'a>(spans: &'a [Span], what: &str, pred: impl Fn(&Span) -> bool) -> &'a Span {
    let found: Vec<&Span> = spans.iter().filter(|s| pred(s)).collect();
    assert_eq!(found.len(), 1, "{what}:\n{}", outline(spans));
    found[0]
}

/// The REST span under the caller's span, the Login server span under it,
/// store and hashing spans under that; no secret in any span.
fn assert_one_logon_trace(spans: &[Span], trace: &[u8], caller_span: &[u8]) {
    assert!(spans.iter().all(|s| s.trace_id == trace));
    let rest = one(spans, "the REST span", |s| {
        s.name == "POST /api/session/logon"
    });
    assert_eq!(rest.parent_span_id, caller_span, "REST span's parent");
    assert_eq!(rest.kind, SpanKind::Server as i32);
    assert_eq!(attr(rest, "http.request.method").as_deref(), Some("POST"));
    assert_eq!(
        attr(rest, "http.route").as_deref(),
        Some("/api/session/logon")
    );
    assert_eq!(
        attr(rest, "http.response.status_code").as_deref(),
        Some("200")
    );

    let rpc = one(spans, "the gRPC server span", |s| {
        s.name == "session.v1.SessionService/Login"
    });
    assert_eq!(rpc.parent_span_id, rest.span_id, "gRPC span's parent");
    assert_eq!(rpc.kind, SpanKind::Server as i32);
    assert_eq!(attr(rpc, "rpc.system").as_deref(), Some("grpc"));
    assert_eq!(
        attr(rpc, "rpc.service").as_deref(),
        Some("session.v1.SessionService")
    );
    assert_eq!(attr(rpc, "rpc.method").as_deref(), Some("Login"));
    assert_eq!(attr(rpc, "rpc.grpc.status_code").as_deref(), Some("0"));
    assert!(attr(rpc, "session.kind").is_some(), "{rpc:#?}");
    assert!(attr(rpc, "session.org").is_some(), "{rpc:#?}");

    let store: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name.starts_with("store ") && s.parent_span_id == rpc.span_id)
        .collect();
    assert!(
        !store.is_empty(),
        "no store span under the gRPC span: {spans:#?}"
    );
    for s in &store {
        assert_eq!(s.kind, SpanKind::Client as i32);
        assert_eq!(attr(s, "db.system.name").as_deref(), Some("sqlite"));
    }
    assert!(
        store
            .iter()
            .any(|s| s.name == "store create_session_capped"),
        "{store:#?}"
    );
    let hashing = one(spans, "the hashing span", |s| s.name == "argon2");
    assert_eq!(hashing.parent_span_id, rpc.span_id);
}

// Multi-threaded: the receiver must answer while the test thread waits
// for the server to exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rest_call_is_one_trace_from_the_shim_to_the_store() {
    let (received, collector) = Received::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server = traced_server(dir.path(), collector, &[("OTEL_BSP_SCHEDULE_DELAY", "100")]);
    let base = format!("http://{}", server.rest_addr.unwrap());

    let (traceparent, trace, caller_span) = caller_context(17);
    let (status, body) = traced_logon(&base, DOMAIN_ADMIN, &traceparent).await;
    assert_eq!(status, 200, "{body}");
    let token = body["authToken"].as_str().unwrap().to_owned();
    // A failed logon is a trace of its own, just as free of secrets.
    let (wrong_parent, wrong_trace, _) = caller_context(91);
    let (status, _) =
        traced_logon(&base, (DOMAIN_ADMIN.0, "wrong-password-9"), &wrong_parent).await;
    assert_eq!(status, 401);

    let spans = received
        .wait_for(&trace, "store create_session_capped")
        .await;
    assert_one_logon_trace(&spans, &trace, &caller_span);
    let failed = received
        .wait_for(&wrong_trace, "session.v1.SessionService/Login")
        .await;
    let rpc = one(&failed, "the failed Login", |s| {
        s.name == "session.v1.SessionService/Login"
    });
    assert_eq!(attr(rpc, "rpc.grpc.status_code").as_deref(), Some("16"));

    assert!(server.terminate().success());
    let all = received.0.lock().unwrap().clone();
    assert!(all
        .iter()
        .all(|(service, _)| service == "sessiond-under-test"));
    // The demo users' hashing at start-up is no trace of its own: each call
    // here carries its caller's traceparent, so no span may be a root.
    let roots: Vec<&str> = all
        .iter()
        .filter(|(_, s)| s.parent_span_id.is_empty())
        .map(|(_, s)| s.name.as_str())
        .collect();
    assert!(roots.is_empty(), "spans without a parent: {roots:?}");
    let text = received.everything();
    // Nor the username: people type passwords into username fields.
    for secret in [
        DOMAIN_ADMIN.1,
        "wrong-password-9",
        token.as_str(),
        DOMAIN_ADMIN.0,
    ] {
        assert!(
            !text.contains(secret),
            "secret {secret:?} in a span: {text}"
        );
    }
}

// Multi-threaded: the receiver must answer while the test thread waits
// for the server to exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_spans_are_exported_on_sigterm() {
    let (received, collector) = Received::start().await;
    let dir = tempfile::tempdir().unwrap();
    // Nothing is exported on schedule within the test: only the flush at
    // shutdown can deliver the spans.
    let server = traced_server(
        dir.path(),
        collector,
        &[("OTEL_BSP_SCHEDULE_DELAY", "600000")],
    );
    let base = format!("http://{}", server.rest_addr.unwrap());
    let (traceparent, trace, caller_span) = caller_context(42);
    let (status, body) = traced_logon(&base, COMPANY_ADMIN, &traceparent).await;
    assert_eq!(status, 200, "{body}");
    assert!(received.of_trace(&trace).is_empty());
    assert!(server.terminate().success());
    let spans = received
        .wait_for(&trace, "store create_session_capped")
        .await;
    assert_one_logon_trace(&spans, &trace, &caller_span);
}

// Multi-threaded: the receiver must answer while the test thread waits
// for the server to exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_lines_carry_the_trace_id_when_tracing_is_on() {
    let (_received, collector) = Received::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut args = serve_args(&dir.path().join("s.db"));
    let rest = args.iter().position(|a| a == "off").unwrap();
    args[rest] = "127.0.0.1:0".into();
    args.extend(["--log-format".into(), "json".into()]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let collector = format!("http://{collector}");
    // The standard variable alone turns tracing on.
    let server = ServerProcess::spawn_env(&refs, &[("OTEL_EXPORTER_OTLP_ENDPOINT", &collector)]);
    let base = format!("http://{}", server.rest_addr.unwrap());
    let (traceparent, trace, _) = caller_context(5);
    let (status, body) = traced_logon(&base, DOMAIN_ADMIN, &traceparent).await;
    assert_eq!(status, 200, "{body}");
    let token = body["authToken"].as_str().unwrap().to_owned();
    let (other, other_trace, _) = caller_context(6);
    let (status, _) = traced_logon(&base, (DOMAIN_ADMIN.0, "wrong-password-9"), &other).await;
    assert_eq!(status, 401);
    let log = server.log.clone();
    assert!(server.terminate().success());

    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let text = log.lock().unwrap().join("\n");
    let mut traced = Vec::new();
    for line in text.lines() {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        for key in ["timestamp", "level", "target"] {
            assert!(v[key].is_string(), "{key} missing: {line}");
        }
        assert!(v["fields"]["message"].is_string(), "no message: {line}");
        if let Some(id) = v["trace_id"].as_str() {
            assert_eq!(v["span_id"].as_str().map(str::len), Some(16), "{line}");
            traced.push(id.to_owned());
        }
    }
    assert!(
        traced.contains(&hex(&trace)),
        "no line of the logon's trace:\n{text}"
    );
    assert!(
        traced.contains(&hex(&other_trace)),
        "no line of the failed logon's trace:\n{text}"
    );
    for secret in [DOMAIN_ADMIN.1, "wrong-password-9", token.as_str()] {
        assert!(!text.contains(secret), "secret in the log:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_call_continues_the_traceparent_in_its_metadata() {
    let (received, collector) = Received::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server = traced_server(dir.path(), collector, &[("OTEL_BSP_SCHEDULE_DELAY", "100")]);
    let mut client = connect(&server.url()).await;
    let (token, _) = login(&mut client, JOE, sessiond::pb::Kind::Imap).await;

    let (traceparent, trace, caller_span) = caller_context(77);
    let mut request = tonic::Request::new(sessiond::pb::ValidateSessionRequest {
        token: token.clone(),
    });
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().unwrap());
    client.validate_session(request).await.unwrap();

    let spans = received.wait_for(&trace, "store find_live_session").await;
    let rpc = one(&spans, "the ValidateSession span", |s| {
        s.name == "session.v1.SessionService/ValidateSession"
    });
    assert_eq!(rpc.parent_span_id, caller_span, "{}", outline(&spans));
    assert_eq!(rpc.kind, SpanKind::Server as i32);
    assert_eq!(attr(rpc, "rpc.method").as_deref(), Some("ValidateSession"));
    assert_eq!(attr(rpc, "rpc.grpc.status_code").as_deref(), Some("0"));
    assert_eq!(attr(rpc, "session.kind").as_deref(), Some("IMAP"));
    assert_eq!(attr(rpc, "session.org").as_deref(), Some("example.com"));
    let store = one(&spans, "the store span", |s| {
        s.name == "store find_live_session"
    });
    assert_eq!(store.parent_span_id, rpc.span_id);

    assert!(server.terminate().success());
    let text = received.everything();
    for secret in [JOE.1, token.as_str()] {
        assert!(
            !text.contains(secret),
            "secret {secret:?} in a span: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standalone_shim_carries_the_trace_to_its_upstream() {
    let (received, collector) = Received::start().await;
    let dir = tempfile::tempdir().unwrap();
    let collector = format!("http://{collector}");
    let env = [
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.as_str()),
    ];
    let args = serve_args(&dir.path().join("s.db"));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let backend = ServerProcess::spawn_env(&refs, &env);
    let upstream = backend.url();
    let shim = ServerProcess::spawn_env(
        &[
            "rest",
            "--upstream",
            &upstream,
            "--rest-addr",
            "127.0.0.1:0",
        ],
        &env,
    );
    let base = format!("http://{}", shim.rest_addr.unwrap());
    let (traceparent, trace, caller_span) = caller_context(123);
    let (status, body) = traced_logon(&base, DOMAIN_ADMIN, &traceparent).await;
    assert_eq!(status, 200, "{body}");
    let spans = received
        .wait_for(&trace, "store create_session_capped")
        .await;
    let spans = {
        // The shim's REST span comes from the other process's exporter.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut spans = spans;
        while !spans.iter().any(|s| s.name == "POST /api/session/logon") {
            assert!(Instant::now() < deadline, "{}", outline(&spans));
            tokio::time::sleep(Duration::from_millis(50)).await;
            spans = received.of_trace(&trace);
        }
        spans
    };
    assert_one_logon_trace(&spans, &trace, &caller_span);
    assert!(shim.terminate().success());
    assert!(backend.terminate().success());
}
