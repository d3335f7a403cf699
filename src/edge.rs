//! `sessiond edge`: the validator as a process, for services in any
//! language. It serves `session.v1.SessionService/ValidateSession` (the same
//! messages and errors as sessiond), health and reflection, answers every
//! other call FAILED_PRECONDITION (`NOT_SERVED_HERE`), and, on its own HTTP
//! listener, forward auth for gateways (`GET /auth`). It holds no store.
//! Wiring only: what is answered and why is in [`crate::validator`].

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::Stream;
use tonic::{Code, Request, Status};

use crate::domain::Error;
use crate::grpc::status::to_status;
use crate::grpc::CallLayer;
use crate::net::ConnLimits;
use crate::pb::{self, session_service_server::SessionService};
use crate::server::{bind, local_addr, serve_grpc, set_health, stopped, ServeError};
use crate::validator::{Validator, ValidatorConfig};

/// What `sessiond edge` runs with.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    pub validator: ValidatorConfig,
    pub grpc_addr: SocketAddr,
    /// The forward-auth listener (`GET /auth`), when set.
    pub auth_addr: Option<SocketAddr>,
    /// Forward auth also reads the token from this cookie.
    pub auth_cookie: Option<String>,
    pub metrics_addr: Option<SocketAddr>,
    pub connections: ConnLimits,
    pub max_in_flight: usize,
    pub max_queue_delay: Duration,
}

impl EdgeConfig {
    pub fn new(validator: ValidatorConfig, grpc_addr: SocketAddr) -> Self {
        EdgeConfig {
            validator,
            grpc_addr,
            auth_addr: None,
            auth_cookie: None,
            metrics_addr: None,
            connections: ConnLimits::default(),
            max_in_flight: crate::grpc::DEFAULT_MAX_IN_FLIGHT,
            max_queue_delay: crate::grpc::DEFAULT_MAX_QUEUE_DELAY,
        }
    }
}

/// A started edge.
#[derive(Debug)]
pub struct RunningEdge {
    pub grpc_addr: SocketAddr,
    pub auth_addr: Option<SocketAddr>,
    pub metrics_addr: Option<SocketAddr>,
    pub validator: Validator,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl RunningEdge {
    pub async fn shutdown(self) -> Result<(), ServeError> {
        let _ = self.shutdown.send(true);
        self.wait().await
    }

    pub async fn wait(self) -> Result<(), ServeError> {
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(ServeError::Config(format!("edge task failed: {e}"))),
        }
    }

    pub fn shutdown_handle(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

/// `session.v1.SessionService` answered by a validator: ValidateSession
/// only.
#[derive(Debug, Clone)]
pub struct EdgeGrpc {
    validator: Validator,
}

impl EdgeGrpc {
    pub fn new(validator: Validator) -> Self {
        EdgeGrpc { validator }
    }
}

fn not_here(call: &str) -> Status {
    to_status(Error::NotServedHere(format!(
        "sessiond edge answers ValidateSession only: send {call} to sessiond itself"
    )))
}

type NoStream = Pin<Box<dyn Stream<Item = Result<pb::WatchRevocationsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl SessionService for EdgeGrpc {
    type WatchRevocationsStream = NoStream;

    async fn validate_session(
        &self,
        req: Request<pb::ValidateSessionRequest>,
    ) -> Result<tonic::Response<pb::ValidateSessionResponse>, Status> {
        let session = self.validator.validate(&req.get_ref().token).await?;
        Ok(tonic::Response::new(pb::ValidateSessionResponse {
            session: Some(session),
        }))
    }

    async fn login(
        &self,
        _: Request<pb::LoginRequest>,
    ) -> Result<tonic::Response<pb::LoginResponse>, Status> {
        Err(not_here("Login"))
    }

    async fn logoff(
        &self,
        _: Request<pb::LogoffRequest>,
    ) -> Result<tonic::Response<pb::LogoffResponse>, Status> {
        Err(not_here("Logoff"))
    }

    async fn logoff_other(
        &self,
        _: Request<pb::LogoffOtherRequest>,
    ) -> Result<tonic::Response<pb::LogoffOtherResponse>, Status> {
        Err(not_here("LogoffOther"))
    }

    async fn logout_user(
        &self,
        _: Request<pb::LogoutUserRequest>,
    ) -> Result<tonic::Response<pb::LogoutUserResponse>, Status> {
        Err(not_here("LogoutUser"))
    }

    async fn logout_all(
        &self,
        _: Request<pb::LogoutAllRequest>,
    ) -> Result<tonic::Response<pb::LogoutAllResponse>, Status> {
        Err(not_here("LogoutAll"))
    }

    async fn list_sessions(
        &self,
        _: Request<pb::ListSessionsRequest>,
    ) -> Result<tonic::Response<pb::ListSessionsResponse>, Status> {
        Err(not_here("ListSessions"))
    }

    async fn watch_revocations(
        &self,
        _: Request<pb::WatchRevocationsRequest>,
    ) -> Result<tonic::Response<Self::WatchRevocationsStream>, Status> {
        Err(not_here("WatchRevocations"))
    }

    async fn end_user_sessions(
        &self,
        _: Request<pb::EndUserSessionsRequest>,
    ) -> Result<tonic::Response<pb::EndUserSessionsResponse>, Status> {
        Err(not_here("EndUserSessions"))
    }

    async fn change_password(
        &self,
        _: Request<pb::ChangePasswordRequest>,
    ) -> Result<tonic::Response<pb::ChangePasswordResponse>, Status> {
        Err(not_here("ChangePassword"))
    }

    async fn list_audit_records(
        &self,
        _: Request<pb::ListAuditRecordsRequest>,
    ) -> Result<tonic::Response<pb::ListAuditRecordsResponse>, Status> {
        Err(not_here("ListAuditRecords"))
    }
}

/// Validates a token for forward auth: the edge's validator, or `serve`'s
/// own service.
pub type Check = Arc<
    dyn Fn(String) -> Pin<Box<dyn Future<Output = Result<pb::Session, Status>> + Send>>
        + Send
        + Sync,
>;

#[derive(Clone)]
struct AuthState {
    check: Check,
    cookie: Option<Arc<str>>,
}

/// The forward-auth router: `/auth` (any method: gateways send their own)
/// answers 200 with `X-Session-*` headers for a live session, 401 for no or
/// a refused token, 503 (with `Retry-After`) when it cannot know. This is
/// what nginx `auth_request`, Traefik `forwardAuth` and Caddy
/// `forward_auth` expect of an authentication endpoint.
pub fn auth_router(check: Check, cookie: Option<String>) -> Router {
    Router::new()
        .route("/auth", axum::routing::any(forward_auth))
        .with_state(AuthState {
            check,
            cookie: cookie.map(Arc::from),
        })
}

/// The token from `Authorization: Bearer`, else from the named cookie.
fn token_of(headers: &HeaderMap, cookie: Option<&str>) -> Option<String> {
    // A gateway may send its own Authorization (Basic to a backend): only a
    // Bearer one is ours; otherwise the cookie is looked at.
    let bearer = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split_once(' '))
        .find(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, rest)| rest.trim().to_owned());
    if bearer.is_some() {
        return bearer;
    }
    let name = cookie?;
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"').to_owned())
}

fn kind_name(kind: i32) -> &'static str {
    match pb::Kind::try_from(kind) {
        Ok(pb::Kind::Admin) => "admin",
        Ok(pb::Kind::Api) => "api",
        Ok(pb::Kind::Imap) => "imap",
        Ok(pb::Kind::Pop) => "pop",
        _ => "unspecified",
    }
}

fn refused(status: StatusCode, retry: bool) -> Response {
    let mut r = status.into_response();
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::UNAUTHORIZED {
        h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    if retry {
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

async fn forward_auth(State(state): State<AuthState>, headers: HeaderMap) -> Response {
    let Some(token) = token_of(&headers, state.cookie.as_deref()) else {
        return refused(StatusCode::UNAUTHORIZED, false);
    };
    match (state.check)(token).await {
        Ok(session) => {
            let values = [
                ("x-session-id", HeaderValue::from(session.id)),
                // UTF-8 names go as their bytes (obs-text); a name with a
                // control character (never stored) fails closed.
                (
                    "x-session-user",
                    match HeaderValue::from_bytes(session.user.as_bytes()) {
                        Ok(v) => v,
                        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                    },
                ),
                (
                    "x-session-org",
                    match HeaderValue::from_bytes(session.org.as_bytes()) {
                        Ok(v) => v,
                        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                    },
                ),
                (
                    "x-session-kind",
                    HeaderValue::from_static(kind_name(session.kind)),
                ),
            ];
            let mut r = StatusCode::OK.into_response();
            let h = r.headers_mut();
            for (name, value) in values {
                h.insert(name, value);
            }
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(status) => match status.code() {
            Code::Unauthenticated | Code::InvalidArgument => {
                refused(StatusCode::UNAUTHORIZED, false)
            }
            _ => refused(StatusCode::SERVICE_UNAVAILABLE, true),
        },
    }
}

/// Starts the validator and the listeners; returns once they are bound.
pub async fn start(config: EdgeConfig) -> Result<RunningEdge, ServeError> {
    crate::telemetry::handle();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        upstream = %config.validator.upstream,
        max_staleness_ms = config.validator.max_staleness.as_millis() as u64,
        "sessiond edge starting"
    );
    let validator = Validator::start(config.validator.clone())
        .map_err(|e| ServeError::Config(e.to_string()))?;
    let grpc_listener = bind("gRPC", config.grpc_addr).await?;
    let grpc_addr = local_addr("gRPC", config.grpc_addr, &grpc_listener)?;
    tracing::info!("grpc listening on {grpc_addr}");
    let (shutdown_tx, shutdown_rx) = watch::channel(false);

    let mut listeners = Vec::new();
    let mut auth_addr = None;
    if let Some(addr) = config.auth_addr {
        let listener = bind("forward auth", addr).await?;
        let bound = local_addr("forward auth", addr, &listener)?;
        tracing::info!("auth listening on {bound}");
        let v = validator.clone();
        let check: Check = Arc::new(move |token| {
            let v = v.clone();
            Box::pin(async move { v.validate(&token).await })
        });
        listeners.push(tokio::spawn(crate::net::serve_http(
            listener,
            auth_router(check, config.auth_cookie.clone()),
            None,
            crate::net::Gate::new("auth", config.connections.clone()),
            stopped(shutdown_rx.clone()),
        )));
        auth_addr = Some(bound);
    }
    let mut metrics_addr = None;
    if let Some(addr) = config.metrics_addr {
        let listener = bind("metrics", addr).await?;
        let bound = local_addr("metrics", addr, &listener)?;
        tracing::info!("metrics listening on {bound}");
        listeners.push(tokio::spawn(crate::net::serve_http(
            listener,
            crate::rest::metrics_app(),
            None,
            crate::net::Gate::new("metrics", config.connections.clone()),
            stopped(shutdown_rx.clone()),
        )));
        metrics_addr = Some(bound);
    }

    // SERVING once started: a stale feed still answers (from upstream),
    // and the feed state is in the log and the metrics.
    let (health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, true).await;
    let calls = CallLayer::new(config.max_in_flight, config.max_queue_delay);
    let grpc_server = serve_grpc(
        EdgeGrpc::new(validator.clone()),
        calls,
        health_service,
        None,
        grpc_listener,
        &config.connections,
        stopped(shutdown_rx),
    )?;
    let task = tokio::spawn(async move {
        let result = grpc_server.await;
        for l in listeners {
            let _ = l.await;
        }
        tracing::info!("stopped");
        result.map_err(ServeError::from)
    });
    Ok(RunningEdge {
        grpc_addr,
        auth_addr,
        metrics_addr,
        validator,
        shutdown: shutdown_tx,
        task,
    })
}
