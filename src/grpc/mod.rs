//! The tonic service: reads metadata, turns proto fields into domain inputs,
//! calls `Sessions`, and maps errors through `status::to_status` only.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use std::future::Future;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use crate::domain::{limits, Error};
use crate::pb::{self, session_service_server::SessionService};
use crate::sessions::{ListFilter, Secret, Sessions, WatchRequest};
use crate::telemetry;

pub mod codec;
pub mod convert;
pub mod status;

use convert::{
    bearer_token, client_from_pb, kind_filter_from_pb, kind_from_pb, revocation_to_pb,
    session_to_pb,
};
use status::to_status;

/// `session.v1.SessionService` over the application service.
#[derive(Debug, Clone)]
pub struct SessionGrpc {
    sessions: Arc<Sessions>,
    /// Turns true when the server stops: open watch streams end then, so a
    /// graceful shutdown is not held open by them.
    shutdown: watch::Receiver<bool>,
    /// Peers whose `x-forwarded-for` names the real client (REST shims).
    trusted_proxies: Arc<[IpAddr]>,
    /// Calls in progress (admission control).
    admission: Arc<Semaphore>,
    /// Longest wait between a call's arrival and its start before it is shed.
    max_queue_delay: Duration,
}

/// When a call arrived, stamped by [`stamp_arrival`] as tonic dispatches it.
#[derive(Debug, Clone, Copy)]
pub struct Arrived(pub Instant);

/// The interceptor every `SessionService` server is wrapped in: it runs when
/// the request is dispatched, before any queueing in front of the handler.
pub fn stamp_arrival(mut req: Request<()>) -> Result<Request<()>, Status> {
    req.extensions_mut().insert(Arrived(Instant::now()));
    Ok(req)
}

fn arrived<T>(req: &Request<T>) -> Option<Instant> {
    req.extensions().get::<Arrived>().map(|a| a.0)
}

/// Longest wait before a call is shed, by default.
pub const DEFAULT_MAX_QUEUE_DELAY: Duration = Duration::from_millis(50);

/// Calls in progress at once before new ones are shed.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;

impl SessionGrpc {
    pub fn new(sessions: Arc<Sessions>, shutdown: watch::Receiver<bool>) -> Self {
        SessionGrpc {
            sessions,
            shutdown,
            trusted_proxies: Arc::from(Vec::new()),
            admission: Arc::new(Semaphore::new(DEFAULT_MAX_IN_FLIGHT)),
            max_queue_delay: DEFAULT_MAX_QUEUE_DELAY,
        }
    }

    /// At most `limit` calls in progress at once; past that, calls are shed
    /// at once with RESOURCE_EXHAUSTED instead of queueing (which would only
    /// grow every caller's latency).
    pub fn admitting(mut self, limit: usize) -> Self {
        self.admission = Arc::new(Semaphore::new(limit.max(1)));
        self
    }

    /// A call that waited longer than this between arriving and starting is
    /// shed: under a flood the queue is in front of the handlers (runtime
    /// tasks, HTTP/2 streams), where an in-flight count cannot see it.
    pub fn max_queue_delay(mut self, delay: Duration) -> Self {
        self.max_queue_delay = delay;
        self
    }

    /// Runs one call under admission control and records its metrics.
    async fn observed<T>(
        &self,
        rpc: &'static str,
        arrived: Option<Instant>,
        call: impl Future<Output = Result<Response<T>, Status>>,
    ) -> Result<Response<T>, Status> {
        let started = Instant::now();
        let waited_too_long = arrived.is_some_and(|t| started - t > self.max_queue_delay);
        let permit = if waited_too_long {
            None
        } else {
            self.admission.try_acquire().ok()
        };
        let result = match permit {
            Some(_permit) => call.await,
            None => {
                telemetry::record_shed(rpc);
                Err(to_status(Error::Overloaded))
            }
        };
        let code = result
            .as_ref()
            .map_or_else(|s| s.code(), |_| tonic::Code::Ok);
        telemetry::record_rpc(rpc, code, started.elapsed());
        result
    }

    /// Trusts these peers' `x-forwarded-for` for per-address throttling.
    pub fn trusting(mut self, proxies: &[IpAddr]) -> Self {
        self.trusted_proxies = Arc::from(proxies.to_vec());
        self
    }

    /// The caller's address for throttling: the TCP peer (a request cannot
    /// spoof it), unless the peer is a trusted shim or absent (in-process,
    /// from this process's shim); then the address the shim forwards.
    fn throttle_address<T>(&self, req: &Request<T>) -> Option<String> {
        let forwarded = || {
            req.metadata()
                .get(crate::rest::FORWARDED_FOR)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<IpAddr>().ok())
                .map(|ip| ip.to_string())
        };
        match req.remote_addr().map(|a| a.ip()) {
            None => forwarded(),
            Some(peer) if self.trusted_proxies.contains(&peer) => {
                forwarded().or_else(|| Some(peer.to_string()))
            }
            Some(peer) => Some(peer.to_string()),
        }
    }
}

/// Events buffered per watcher before the watch loop waits for the client.
const WATCH_BUFFER: usize = 256;

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchRevocationsResponse, Status>> + Send>>;

fn token_of<T>(req: &Request<T>) -> Result<Option<String>, Status> {
    bearer_token(req.metadata()).map_err(to_status)
}

impl SessionGrpc {
    async fn list_audit_records_inner(
        &self,
        req: Request<pb::ListAuditRecordsRequest>,
    ) -> Result<Response<pb::ListAuditRecordsResponse>, Status> {
        let token = token_of(&req)?;
        let msg = req.get_ref();
        let page_size = usize::try_from(msg.page_size)
            .map_err(|_| to_status(Error::invalid("page_size", "must not be negative")))?;
        let after = if msg.page_token.is_empty() {
            0
        } else {
            msg.page_token
                .parse::<u64>()
                .ok()
                .filter(|id| *id > 0)
                .ok_or_else(|| {
                    to_status(Error::invalid(
                        "page_token",
                        "not a token this service issued",
                    ))
                })?
        };
        let (records, next) = self
            .sessions
            .list_audit(token.as_deref(), page_size, after)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ListAuditRecordsResponse {
            records: records.into_iter().map(convert::audit_to_pb).collect(),
            next_page_token: next.map(|id| id.to_string()).unwrap_or_default(),
        }))
    }

    async fn login_inner(
        &self,
        req: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let kind = kind_from_pb("kind", req.get_ref().kind).map_err(to_status)?;
        let mut client = client_from_pb(req.get_ref().client.as_ref()).map_err(to_status)?;
        let address = self.throttle_address(&req);
        if client.address.is_none() {
            client.address = req.remote_addr().map(|a| a.to_string());
        }
        let msg = req.into_inner();
        let (token, session) = self
            .sessions
            .login(
                &msg.username,
                &msg.password,
                kind,
                client,
                address.as_deref(),
            )
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::LoginResponse {
            token: token.into_string(),
            session: Some(session_to_pb(session)),
        }))
    }

    async fn validate_session_inner(
        &self,
        req: Request<pb::ValidateSessionRequest>,
    ) -> Result<Response<pb::ValidateSessionResponse>, Status> {
        let session = self
            .sessions
            .validate(&req.get_ref().token)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ValidateSessionResponse {
            session: Some(session_to_pb(session)),
        }))
    }

    async fn logoff_inner(
        &self,
        req: Request<pb::LogoffRequest>,
    ) -> Result<Response<pb::LogoffResponse>, Status> {
        let token = token_of(&req)?;
        let ended = self
            .sessions
            .logoff(token.as_deref())
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::LogoffResponse {
            session_id: ended.id,
        }))
    }

    async fn logoff_other_inner(
        &self,
        req: Request<pb::LogoffOtherRequest>,
    ) -> Result<Response<pb::LogoffOtherResponse>, Status> {
        let token = token_of(&req)?;
        let ended = self
            .sessions
            .logoff_other(token.as_deref(), req.get_ref().session_id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::LogoffOtherResponse {
            session_id: ended.id,
        }))
    }

    async fn logout_user_inner(
        &self,
        req: Request<pb::LogoutUserRequest>,
    ) -> Result<Response<pb::LogoutUserResponse>, Status> {
        let msg = req.get_ref();
        let creds = msg
            .credentials
            .as_ref()
            .ok_or_else(|| to_status(Error::invalid("credentials", "must be present")))?;
        let secret = match &creds.secret {
            Some(pb::credentials::Secret::Password(p)) => Secret::Password(p.clone()),
            Some(pb::credentials::Secret::Token(t)) => Secret::Token(t.clone()),
            None => {
                return Err(to_status(Error::invalid(
                    "credentials",
                    "one of password or token must be present",
                )))
            }
        };
        limits::optional_text(
            "credentials.client",
            &creds.client,
            limits::MAX_CLIENT_ADDRESS,
        )
        .map_err(to_status)?;
        let address = self.throttle_address(&req);
        let ended = self
            .sessions
            .logout_user(&creds.user, &secret, &msg.user, address.as_deref())
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::LogoutUserResponse { ended }))
    }

    async fn logout_all_inner(
        &self,
        req: Request<pb::LogoutAllRequest>,
    ) -> Result<Response<pb::LogoutAllResponse>, Status> {
        let address = self.throttle_address(&req);
        let msg = req.get_ref();
        let ended = self
            .sessions
            .logout_all(&msg.username, &msg.password, address.as_deref())
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::LogoutAllResponse { ended }))
    }

    async fn watch_revocations_inner(
        &self,
        req: Request<pb::WatchRevocationsRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let token = token_of(&req)?;
        let msg = req.into_inner();
        let kinds = msg
            .kinds
            .iter()
            .map(|k| kind_from_pb("kinds", *k))
            .collect::<Result<Vec<_>, _>>()
            .map_err(to_status)?;
        let request = WatchRequest {
            after: msg.after_sequence,
            after_cursor: (!msg.after_cursor.is_empty()).then_some(msg.after_cursor),
            org: (!msg.org.is_empty()).then_some(msg.org),
            kinds,
        };
        let watch = self
            .sessions
            .start_watch(token.as_deref(), request)
            .await
            .map_err(to_status)?;
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let sessions = self.sessions.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move { sessions.run_watch(watch, tx, shutdown).await });
        let stream = ReceiverStream::new(rx).map(|event| {
            event
                .map(|e| pb::WatchRevocationsResponse {
                    revocation: Some(revocation_to_pb(&e)),
                })
                .map_err(to_status)
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn end_user_sessions_inner(
        &self,
        req: Request<pb::EndUserSessionsRequest>,
    ) -> Result<Response<pb::EndUserSessionsResponse>, Status> {
        let token = token_of(&req)?;
        let msg = req.get_ref();
        // Bounded before parsing: the list is read once, and its length checked again below.
        if msg.kinds.len() > crate::domain::Kind::ALL.len() {
            return Err(to_status(Error::invalid(
                "kinds",
                format!("at most {} entries", crate::domain::Kind::ALL.len()),
            )));
        }
        let kinds = msg
            .kinds
            .iter()
            .map(|k| kind_from_pb("kinds", *k))
            .collect::<Result<Vec<_>, _>>()
            .map_err(to_status)?;
        let ended = self
            .sessions
            .end_user_sessions(token.as_deref(), &msg.user, &kinds, msg.keep_current)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::EndUserSessionsResponse { ended }))
    }

    async fn change_password_inner(
        &self,
        req: Request<pb::ChangePasswordRequest>,
    ) -> Result<Response<pb::ChangePasswordResponse>, Status> {
        let token = token_of(&req)?;
        let address = self.throttle_address(&req);
        let msg = req.get_ref();
        let ended = self
            .sessions
            .change_password(
                token.as_deref(),
                &msg.current_password,
                &msg.new_password,
                address.as_deref(),
            )
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ChangePasswordResponse { ended }))
    }

    async fn list_sessions_inner(
        &self,
        req: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let token = token_of(&req)?;
        let msg = req.get_ref();
        let filter = list_filter(msg).map_err(to_status)?;
        let (sessions, next) = self
            .sessions
            .list(token.as_deref(), filter)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ListSessionsResponse {
            sessions: sessions.into_iter().map(session_to_pb).collect(),
            next_page_token: next.map(|id| id.to_string()).unwrap_or_default(),
        }))
    }
}

#[tonic::async_trait]
impl SessionService for SessionGrpc {
    type WatchRevocationsStream = WatchStream;

    async fn login(
        &self,
        req: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        self.observed("Login", arrived(&req), self.login_inner(req))
            .await
    }

    async fn validate_session(
        &self,
        req: Request<pb::ValidateSessionRequest>,
    ) -> Result<Response<pb::ValidateSessionResponse>, Status> {
        self.observed(
            "ValidateSession",
            arrived(&req),
            self.validate_session_inner(req),
        )
        .await
    }

    async fn logoff(
        &self,
        req: Request<pb::LogoffRequest>,
    ) -> Result<Response<pb::LogoffResponse>, Status> {
        self.observed("Logoff", arrived(&req), self.logoff_inner(req))
            .await
    }

    async fn logoff_other(
        &self,
        req: Request<pb::LogoffOtherRequest>,
    ) -> Result<Response<pb::LogoffOtherResponse>, Status> {
        self.observed("LogoffOther", arrived(&req), self.logoff_other_inner(req))
            .await
    }

    async fn logout_user(
        &self,
        req: Request<pb::LogoutUserRequest>,
    ) -> Result<Response<pb::LogoutUserResponse>, Status> {
        self.observed("LogoutUser", arrived(&req), self.logout_user_inner(req))
            .await
    }

    async fn logout_all(
        &self,
        req: Request<pb::LogoutAllRequest>,
    ) -> Result<Response<pb::LogoutAllResponse>, Status> {
        self.observed("LogoutAll", arrived(&req), self.logout_all_inner(req))
            .await
    }

    async fn watch_revocations(
        &self,
        req: Request<pb::WatchRevocationsRequest>,
    ) -> Result<Response<Self::WatchRevocationsStream>, Status> {
        self.observed(
            "WatchRevocations",
            arrived(&req),
            self.watch_revocations_inner(req),
        )
        .await
    }

    async fn list_audit_records(
        &self,
        req: Request<pb::ListAuditRecordsRequest>,
    ) -> Result<Response<pb::ListAuditRecordsResponse>, Status> {
        self.observed(
            "ListAuditRecords",
            arrived(&req),
            self.list_audit_records_inner(req),
        )
        .await
    }

    async fn end_user_sessions(
        &self,
        req: Request<pb::EndUserSessionsRequest>,
    ) -> Result<Response<pb::EndUserSessionsResponse>, Status> {
        self.observed(
            "EndUserSessions",
            arrived(&req),
            self.end_user_sessions_inner(req),
        )
        .await
    }

    async fn change_password(
        &self,
        req: Request<pb::ChangePasswordRequest>,
    ) -> Result<Response<pb::ChangePasswordResponse>, Status> {
        self.observed(
            "ChangePassword",
            arrived(&req),
            self.change_password_inner(req),
        )
        .await
    }

    async fn list_sessions(
        &self,
        req: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        self.observed("ListSessions", arrived(&req), self.list_sessions_inner(req))
            .await
    }
}

fn list_filter(msg: &pb::ListSessionsRequest) -> Result<ListFilter, Error> {
    let page_size = usize::try_from(msg.page_size)
        .map_err(|_| Error::invalid("page_size", "must not be negative"))?;
    let after_id = if msg.page_token.is_empty() {
        0
    } else {
        msg.page_token
            .parse::<i32>()
            .ok()
            .filter(|id| *id > 0)
            .ok_or_else(|| Error::invalid("page_token", "not a token this service issued"))?
    };
    Ok(ListFilter {
        username: (!msg.user.is_empty()).then(|| msg.user.clone()),
        kind: kind_filter_from_pb("kind", msg.kind)?,
        page_size,
        after_id,
    })
}
