//! The REST compatibility shim: three vendors' documented JSON endpoints, each
//! translated into a call to `session.v1.SessionService` through a tonic
//! client, and each answer back into that vendor's shape. Nothing here touches
//! the store: in `serve` the client wraps the gRPC service in-process (real
//! protobuf encoding, no socket hop); in `sessiond rest` it is a `Channel`.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::Response;
use axum::Router;
use bytes::Bytes;
use tonic::metadata::MetadataValue;
use tower::util::BoxCloneSyncService;
use tower::ServiceExt as _;

use crate::pb::session_service_client::SessionServiceClient;
use crate::wire;

pub mod informatica;
pub mod oma;
pub mod openapi;
pub mod ras;

/// Largest request body accepted; larger ones get 413 in the vendor's shape.
pub const MAX_BODY: usize = 64 * 1024;

/// A transport failure reaching the upstream (a concrete type: a boxed
/// trait object here trips the compiler's Send checks on handler futures).
#[derive(Debug)]
pub struct UpstreamError(tonic::transport::Error);

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for UpstreamError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// The gRPC service the shim calls: in-process or over a channel, one type.
pub type Upstream = SessionServiceClient<
    BoxCloneSyncService<
        http::Request<tonic::body::Body>,
        http::Response<tonic::body::Body>,
        UpstreamError,
    >,
>;

/// A client that calls `service` in-process (protobuf-encoded, no socket).
pub fn in_process<S>(service: S) -> Upstream
where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
        > + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    SessionServiceClient::new(BoxCloneSyncService::new(
        service
            .map_request(with_trace_context)
            .map_err(|never| -> UpstreamError { match never {} }),
    ))
}

/// A gRPC request to the upstream, carrying the current span's trace
/// context (`traceparent`) when tracing is on, so the upstream's server
/// span continues the REST request's trace.
fn with_trace_context(
    mut req: http::Request<tonic::body::Body>,
) -> http::Request<tonic::body::Body> {
    crate::otel::inject_current(req.headers_mut());
    req
}

/// A client for a remote sessiond. Connects lazily, so the shim starts (and
/// answers 503) while the upstream is down, and reconnects by itself. An
/// `https://` upstream is verified against `ca_pem`.
pub fn remote(url: &str, ca_pem: Option<&[u8]>) -> Result<Upstream, String> {
    let mut endpoint = tonic::transport::Endpoint::from_shared(url.to_owned())
        .map_err(|e| format!("upstream {url:?}: {e}"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true);
    if url.starts_with("https://") {
        let ca =
            ca_pem.ok_or("an https:// upstream needs --upstream-ca (its CA certificate, PEM)")?;
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(ca));
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| format!("upstream TLS: {e}"))?;
    }
    let channel = endpoint.connect_lazy();
    let upstream = url.to_owned();
    Ok(SessionServiceClient::new(BoxCloneSyncService::new(
        channel.map_request(with_trace_context).map_err(move |e| {
            // The caller only sees a 503 in its vendor's shape; the operator
            // needs the reason (refused, timed out, certificate rejected).
            tracing::warn!(
                upstream = %upstream,
                error = %error_chain(&e),
                "cannot reach the gRPC upstream"
            );
            UpstreamError(e)
        }),
    )))
}

/// An error and all its sources on one line (a transport error's own text
/// is just "transport error"; the cause is further down).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Where clients reach this shim: what Informatica's `serverUrl` is built from.
#[derive(Debug, Clone)]
pub struct Reachable {
    /// `--public-url`: the base clients use (behind a proxy), verbatim.
    pub public_url: Option<Arc<str>>,
    /// Whether the listener serves TLS (the scheme when there is no public URL).
    pub tls: bool,
    /// The listener's address, when the client named no authority at all.
    pub local: SocketAddr,
}

/// Longest `--public-url` accepted.
const MAX_PUBLIC_URL: usize = 2048;

/// Checks a `--public-url`: an absolute http(s) URL with a host and no
/// query, fragment or user info. Returned without a trailing slash.
pub fn parse_public_url(s: &str) -> Result<String, String> {
    let bad = |why: &str| format!("public URL {s:?}: {why}");
    if s.len() > MAX_PUBLIC_URL {
        return Err(bad(&format!("longer than {MAX_PUBLIC_URL} bytes")));
    }
    let uri: Uri = s.parse().map_err(|e| bad(&format!("{e}")))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(bad("must start with http:// or https://")),
    }
    let authority = uri.authority().ok_or_else(|| bad("must name a host"))?;
    if authority.as_str().contains('@') {
        return Err(bad("must not hold user info"));
    }
    if authority.host().is_empty() {
        return Err(bad("must name a host"));
    }
    if uri.query().is_some() || s.contains('#') {
        return Err(bad("must not have a query or fragment"));
    }
    Ok(s.trim_end_matches('/').to_owned())
}

/// Shared state of every handler.
#[derive(Clone)]
pub struct RestState {
    pub upstream: Upstream,
    pub reachable: Reachable,
}

/// The shim's router, before path normalisation (see [`app`]).
pub fn router(upstream: Upstream, reachable: Reachable) -> Router {
    let routes = Router::new()
        .merge(ras::routes())
        .merge(informatica::routes())
        .merge(oma::routes())
        .route("/openapi.json", axum::routing::get(openapi::openapi_json));
    // The request spans exist only when tracing is on: no layer otherwise.
    let traced = crate::otel::enabled();
    let routes = if traced {
        routes.route_layer(axum::middleware::from_fn(record_route))
    } else {
        routes
    };
    let app = routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn(refuse_large_bodies));
    let app = if traced {
        app.layer(axum::middleware::from_fn(request_span))
    } else {
        app
    };
    app.with_state(RestState {
        upstream,
        reachable,
    })
}

/// The request's server span (HTTP semantic conventions), child of the
/// client's `traceparent` header when sent; the shim's gRPC call continues
/// it. Only installed when tracing is on.
async fn request_span(req: Request, next: axum::middleware::Next) -> Response {
    use tracing::Instrument as _;
    let span = tracing::info_span!(
        target: crate::otel::TARGET,
        "rest",
        otel.name = %req.method(),
        otel.kind = "server",
        http.request.method = %req.method(),
        http.route = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    crate::otel::set_remote_parent(&span, req.headers());
    let response = next.run(req).instrument(span.clone()).await;
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    response
}

/// Names the request span after the route template that matched (never the
/// path itself, which may carry an id).
async fn record_route(
    route: axum::extract::MatchedPath,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let span = tracing::Span::current();
    span.record("http.route", route.as_str());
    // The span has started: its name is changed on the OpenTelemetry span.
    span.context()
        .span()
        .update_name(format!("{} {}", req.method(), route.as_str()));
    next.run(req).await
}

/// The metrics listener's application: `GET /metrics` and nothing else
/// (plain 404 elsewhere). Served on its own address (`--metrics-addr`), never
/// on the REST listener, whose clients are the public.
pub fn metrics_app() -> Router {
    Router::new().route("/metrics", axum::routing::get(metrics))
}

/// Prometheus text exposition of this process's metrics.
async fn metrics() -> Response {
    use axum::response::IntoResponse;
    match crate::telemetry::render() {
        Some(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        None => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

/// A declared body over the limit is refused on every route, in the vendor's
/// shape, before any handler runs (routes that read a body also enforce the
/// limit while reading, for bodies without a Content-Length).
async fn refuse_large_bodies(
    Instance(path): Instance,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        let e = BodyError::TooLarge;
        return match vendor_of(&path) {
            Vendor::Ras => ras::from_body_error(&e, &path),
            Vendor::Informatica => informatica::from_body_error(&e),
            Vendor::Oma => oma::from_body_error(&e),
        };
    }
    next.run(req).await
}

/// RAS paths are case-insensitive (`/api/Session` = `/api/session`): they are
/// lower-cased before routing, leaving every other path exactly as sent.
fn normalize_ras_path<B>(mut req: http::Request<B>) -> http::Request<B> {
    let path = req.uri().path();
    let is_ras = path
        .get(..12)
        .is_some_and(|p| p.eq_ignore_ascii_case("/api/session"))
        && matches!(path.as_bytes().get(12), None | Some(b'/'));
    if is_ras && path.bytes().any(|b| b.is_ascii_uppercase()) {
        let sent = SentPath(path.to_owned());
        let lowered = path.to_ascii_lowercase();
        let new = match req.uri().query() {
            Some(q) => format!("{lowered}?{q}"),
            None => lowered,
        };
        if let Ok(uri) = new.parse::<Uri>() {
            *req.uri_mut() = uri;
            req.extensions_mut().insert(sent);
        }
    }
    req
}

/// The path as the client sent it, before case folding.
#[derive(Debug, Clone)]
struct SentPath(String);

/// The request path as sent (ProblemDetails `instance`).
#[derive(Debug, Clone)]
pub struct Instance(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Instance {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Instance(match parts.extensions.get::<SentPath>() {
            Some(sent) => sent.0.clone(),
            None => parts.uri.path().to_owned(),
        }))
    }
}

/// Serves the shim on `listener` (over TLS when given) under `limits`
/// until `shutdown` completes; in-flight requests are drained. `public_url`
/// (already checked by [`parse_public_url`]) is the base clients are told to
/// use, when set.
pub async fn serve(
    listener: tokio::net::TcpListener,
    upstream: Upstream,
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    public_url: Option<String>,
    limits: crate::net::ConnLimits,
    extra: Option<Router>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let reachable = Reachable {
        public_url: public_url.map(Arc::from),
        tls: tls.is_some(),
        local: listener.local_addr()?,
    };
    // Routes of other jobs served beside the shim (the Shared Signals
    // transmitter), each with its own limits and error shapes.
    let app = match extra {
        Some(extra) => router(upstream, reachable).merge(extra),
        None => router(upstream, reachable),
    };
    let app = tower::ServiceBuilder::new()
        .map_request(normalize_ras_path::<axum::body::Body>)
        .service(app);
    let gate = crate::net::Gate::new("rest", limits);
    crate::net::serve_http(listener, app, tls, gate, shutdown).await
}

/// Who is calling, as far as the shim can tell: passed on to gRPC so that
/// per-address throttling and the session's client info see the real client.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    pub address: Option<IpAddr>,
    pub user_agent: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let address = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(clean_user_agent)
            .filter(|s| !s.is_empty());
        Ok(Caller {
            address,
            user_agent,
        })
    }
}

/// HTTP allows tabs (and obs-text) in a header that our limits refuse in
/// stored text: control characters become spaces, and the result is cut to
/// the stored limit on a character boundary.
fn clean_user_agent(raw: &str) -> String {
    let mut out = String::new();
    for c in raw.chars().map(|c| if c.is_control() { ' ' } else { c }) {
        if out.len() + c.len_utf8() > crate::domain::limits::MAX_USER_AGENT {
            break;
        }
        out.push(c);
    }
    out.trim().to_owned()
}

impl Caller {
    /// A gRPC request carrying the client's address and, when given, the
    /// caller's session token.
    pub fn request<T>(&self, message: T, token: Option<&str>) -> tonic::Request<T> {
        let mut req = tonic::Request::new(message);
        if let Some(addr) = self.address {
            if let Ok(v) = MetadataValue::try_from(addr.to_string()) {
                req.metadata_mut().insert(wire::FORWARDED_FOR, v);
            }
        }
        if let Some(token) = token {
            if let Ok(v) = MetadataValue::try_from(format!("{} {token}", wire::BEARER)) {
                req.metadata_mut().insert(wire::AUTHORIZATION, v);
            }
        }
        req
    }

    pub fn client_info(&self) -> Option<crate::pb::ClientInfo> {
        if self.address.is_none() && self.user_agent.is_none() {
            return None;
        }
        Some(crate::pb::ClientInfo {
            address: self.address.map(|a| a.to_string()).unwrap_or_default(),
            user_agent: self.user_agent.clone().unwrap_or_default(),
        })
    }
}

/// Stands in for a secret in the `Debug` of a request type.
pub(crate) struct Redacted;

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Why a request body could not become JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    TooLarge,
    /// A content type that is not JSON.
    UnsupportedType(String),
    /// Not readable as JSON (empty, truncated, not UTF-8, too deep, ...).
    Malformed(String),
}

impl BodyError {
    pub fn message(&self) -> String {
        match self {
            BodyError::TooLarge => format!("request body is larger than {MAX_BODY} bytes"),
            BodyError::UnsupportedType(t) => {
                format!("unsupported content type {t:?}: send application/json")
            }
            BodyError::Malformed(e) => format!("request body is not valid JSON: {e}"),
        }
    }
}

/// A missing content type is taken as JSON; anything else must be JSON
/// (`application/json`, or a `+json` type), parameters allowed.
pub fn check_json_content_type(headers: &HeaderMap) -> Result<(), BodyError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let text = value.to_str().unwrap_or("");
    let essence = text
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json" || essence.ends_with("+json") {
        Ok(())
    } else {
        Err(BodyError::UnsupportedType(text.chars().take(100).collect()))
    }
}

/// The body as a JSON value. serde_json bounds nesting depth (128), so deep
/// nesting is an error, not a stack overflow.
pub fn parse_json(body: Result<Bytes, BytesRejection>) -> Result<serde_json::Value, BodyError> {
    let bytes = body.map_err(|rejection| match rejection {
        BytesRejection::FailedToBufferBody(
            axum::extract::rejection::FailedToBufferBody::LengthLimitError(_),
        ) => BodyError::TooLarge,
        other => BodyError::Malformed(other.body_text()),
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(BodyError::Malformed("empty body".into()));
    }
    serde_json::from_slice(&bytes).map_err(|e| BodyError::Malformed(e.to_string()))
}

/// The words every vendor's shape uses for a shed call.
pub const OVERLOADED_TEXT: &str = "Server overloaded; retry shortly.";

/// Seconds to put in `Retry-After`, from a status's RetryInfo.
pub fn retry_after(status: &tonic::Status) -> Option<u64> {
    use tonic_types::StatusExt;
    let delay = status.get_details_retry_info()?.retry_delay?;
    Some(delay.as_secs() + u64::from(delay.subsec_nanos() > 0))
}

/// A string field of a JSON object: `Ok(None)` when absent or null, `Err`
/// when present with another type.
pub fn string_field<'a>(obj: &'a serde_json::Value, name: &str) -> Result<Option<&'a str>, String> {
    match obj.get(name) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("{name} must be a string")),
    }
}

/// Unknown paths and methods answer in the shape of the vendor whose path
/// space they are in.
fn vendor_of(path: &str) -> Vendor {
    let lower = path.to_ascii_lowercase();
    if lower == "/api/session" || lower.starts_with("/api/session/") {
        Vendor::Ras
    } else if lower.starts_with("/ma/")
        || lower.starts_with("/saas/")
        || lower.starts_with("/api/v2/")
    {
        Vendor::Informatica
    } else {
        Vendor::Oma
    }
}

enum Vendor {
    Ras,
    Oma,
    Informatica,
}

async fn not_found(Instance(path): Instance) -> Response {
    match vendor_of(&path) {
        Vendor::Ras => ras::problem(StatusCode::NOT_FOUND, "no such resource", &path),
        Vendor::Informatica => {
            informatica::error(StatusCode::NOT_FOUND, "NOT_FOUND", "No such resource.")
        }
        Vendor::Oma => oma::unknown_method(),
    }
}

async fn method_not_allowed(Instance(path): Instance) -> Response {
    let status = StatusCode::METHOD_NOT_ALLOWED;
    match vendor_of(&path) {
        Vendor::Ras => ras::problem(status, "method not allowed on this resource", &path),
        Vendor::Informatica => {
            informatica::error(status, "METHOD_NOT_ALLOWED", "Method not allowed.")
        }
        Vendor::Oma => oma::http_error(status, 5, "Request badly formatted"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_types_never_debug_print_a_secret() {
        let secret = || Some("hunter2-secret".to_owned());
        let printed = [
            format!(
                "{:?}",
                ras::LogonRequest {
                    username: Some("u".into()),
                    password: secret(),
                }
            ),
            format!(
                "{:?}",
                informatica::LoginRequest {
                    kind: None,
                    username: Some("u".into()),
                    password: secret(),
                }
            ),
            format!(
                "{:?}",
                informatica::LogoutRequest {
                    kind: None,
                    username: Some("u".into()),
                    password: secret(),
                }
            ),
            format!(
                "{:?}",
                oma::OmaCredentials {
                    user: "u".into(),
                    password: secret(),
                    token: secret(),
                    client: None,
                }
            ),
        ];
        for text in printed {
            assert!(!text.contains("hunter2"), "{text}");
            assert!(text.contains("<redacted>"), "{text}");
        }
    }
}
