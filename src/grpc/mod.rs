//! The tonic service: reads metadata, turns proto fields into domain inputs,
//! calls `Sessions`, and maps errors through `status::to_status` only.
//! Admission, shedding and metrics are not here: every call goes through
//! [`calls::CallLayer`] first.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use crate::domain::{limits, Error, Kind};
use crate::pb::{self, session_service_server::SessionService};
use crate::sessions::{ListFilter, Secret, Sessions, WatchItem, WatchRequest};
use crate::wire::FORWARDED_FOR;

pub mod calls;
pub mod convert;
pub mod status;

pub use calls::{CallLayer, DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_QUEUE_DELAY};
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
}

impl SessionGrpc {
    pub fn new(sessions: Arc<Sessions>, shutdown: watch::Receiver<bool>) -> Self {
        SessionGrpc {
            sessions,
            shutdown,
            trusted_proxies: Arc::from(Vec::new()),
        }
    }

    /// Trusts these peers' `x-forwarded-for` for per-address throttling.
    pub fn trusting(mut self, proxies: &[IpAddr]) -> Self {
        self.trusted_proxies = Arc::from(proxies.to_vec());
        self
    }

    /// The caller's address for throttling and the session's recorded peer
    /// address: the TCP peer (a request cannot
    /// spoof it), unless the peer is a trusted shim or absent (in-process,
    /// from this process's shim); then the address the shim forwards.
    fn throttle_address<T>(&self, req: &Request<T>) -> Option<String> {
        let forwarded = || {
            req.metadata()
                .get(FORWARDED_FOR)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<IpAddr>().ok())
                .map(|ip| ip.to_string())
        };
        match crate::net::peer_addr(req.extensions()).map(|a| a.ip()) {
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

#[tonic::async_trait]
impl SessionService for SessionGrpc {
    type WatchRevocationsStream = WatchStream;

    async fn login(
        &self,
        req: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let kind = kind_from_pb("kind", req.get_ref().kind).map_err(to_status)?;
        let mut client = client_from_pb(req.get_ref().client.as_ref()).map_err(to_status)?;
        let address = self.throttle_address(&req);
        if client.address.is_none() {
            client.address = crate::net::peer_addr(req.extensions()).map(|a| a.to_string());
        }
        // What the server saw, kept apart from what the caller reported.
        client.peer_address.clone_from(&address);
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
        crate::otel::record_session(&session);
        Ok(Response::new(pb::LoginResponse {
            token: token.into_string(),
            session: Some(session_to_pb(session)),
        }))
    }

    async fn validate_session(
        &self,
        req: Request<pb::ValidateSessionRequest>,
    ) -> Result<Response<pb::ValidateSessionResponse>, Status> {
        let session = self
            .sessions
            .validate(&req.get_ref().token)
            .await
            .map_err(to_status)?;
        crate::otel::record_session(&session);
        Ok(Response::new(pb::ValidateSessionResponse {
            session: Some(session_to_pb(session)),
        }))
    }

    async fn logoff(
        &self,
        req: Request<pb::LogoffRequest>,
    ) -> Result<Response<pb::LogoffResponse>, Status> {
        let token = token_of(&req)?;
        let address = self.throttle_address(&req);
        let ended = self
            .sessions
            .logoff(token.as_deref(), address.as_deref())
            .await
            .map_err(to_status)?;
        crate::otel::record_session(&ended);
        Ok(Response::new(pb::LogoffResponse {
            session_id: ended.id,
        }))
    }

    async fn logoff_other(
        &self,
        req: Request<pb::LogoffOtherRequest>,
    ) -> Result<Response<pb::LogoffOtherResponse>, Status> {
        let token = token_of(&req)?;
        let address = self.throttle_address(&req);
        // Unspecified is ADMIN: the Parallels RAS semantics this call began with.
        let kind =
            kind_filter_from_pb("kind", req.get_ref().kind).map(|k| k.unwrap_or(Kind::Admin));
        let ended = self
            .sessions
            .logoff_other(
                token.as_deref(),
                req.get_ref().session_id,
                kind,
                address.as_deref(),
            )
            .await
            .map_err(to_status)?;
        crate::otel::record_session(&ended);
        Ok(Response::new(pb::LogoffOtherResponse {
            session_id: ended.id,
        }))
    }

    async fn logout_user(
        &self,
        req: Request<pb::LogoutUserRequest>,
    ) -> Result<Response<pb::LogoutUserResponse>, Status> {
        let msg = req.get_ref();
        let (creds, secret) = credentials(msg.credentials.as_ref()).map_err(to_status)?;
        let address = self.throttle_address(&req);
        let ended = self
            .sessions
            .logout_user(&creds.user, &secret, &msg.user, address.as_deref())
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::LogoutUserResponse { ended }))
    }

    async fn logout_all(
        &self,
        req: Request<pb::LogoutAllRequest>,
    ) -> Result<Response<pb::LogoutAllResponse>, Status> {
        let address = self.throttle_address(&req);
        let token = token_of(&req)?;
        let msg = req.get_ref();
        let ended = match token {
            // No credentials in the message: the admin session in metadata.
            Some(token) if msg.username.is_empty() && msg.password.is_empty() => {
                self.sessions
                    .logout_all_as_admin(&token, address.as_deref())
                    .await
            }
            _ => {
                self.sessions
                    .logout_all(&msg.username, &msg.password, address.as_deref())
                    .await
            }
        }
        .map_err(to_status)?;
        Ok(Response::new(pb::LogoutAllResponse { ended }))
    }

    async fn watch_revocations(
        &self,
        req: Request<pb::WatchRevocationsRequest>,
    ) -> Result<Response<Self::WatchRevocationsStream>, Status> {
        let token = token_of(&req)?;
        let address = self.throttle_address(&req);
        let mut request = watch_request(req.into_inner()).map_err(to_status)?;
        request.address = address;
        let watch = self
            .sessions
            .start_watch(token.as_deref(), request)
            .await
            .map_err(to_status)?;
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let sessions = self.sessions.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move { sessions.run_watch(watch, tx, shutdown).await });
        let stream = ReceiverStream::new(rx).map(|item| {
            item.map(|item| match item {
                WatchItem::Event(e) => pb::WatchRevocationsResponse {
                    revocation: Some(revocation_to_pb(&e)),
                    heartbeat: None,
                },
                WatchItem::Heartbeat { cursor, at } => pb::WatchRevocationsResponse {
                    revocation: None,
                    heartbeat: Some(pb::WatchHeartbeat {
                        cursor,
                        at: Some(convert::timestamp(at)),
                    }),
                },
            })
            .map_err(to_status)
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_audit_records(
        &self,
        req: Request<pb::ListAuditRecordsRequest>,
    ) -> Result<Response<pb::ListAuditRecordsResponse>, Status> {
        let token = token_of(&req)?;
        let msg = req.get_ref();
        let page_size = page_size(msg.page_size).map_err(to_status)?;
        let after = page_token::<u64>(&msg.page_token).map_err(to_status)?;
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

    async fn end_user_sessions(
        &self,
        req: Request<pb::EndUserSessionsRequest>,
    ) -> Result<Response<pb::EndUserSessionsResponse>, Status> {
        let token = token_of(&req)?;
        let address = self.throttle_address(&req);
        let msg = req.get_ref();
        let kinds = kinds_from_pb(&msg.kinds).map_err(to_status)?;
        let ended = self
            .sessions
            .end_user_sessions(
                token.as_deref(),
                &msg.user,
                &kinds,
                msg.keep_current,
                address.as_deref(),
            )
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::EndUserSessionsResponse { ended }))
    }

    async fn change_password(
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

    async fn list_sessions(
        &self,
        req: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let token = token_of(&req)?;
        let filter = list_filter(req.get_ref()).map_err(to_status)?;
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

/// LogoutUser's credentials and the secret they carry.
fn credentials(creds: Option<&pb::Credentials>) -> Result<(&pb::Credentials, Secret), Error> {
    let creds = creds.ok_or_else(|| Error::invalid("credentials", "must be present"))?;
    let secret = match &creds.secret {
        Some(pb::credentials::Secret::Password(p)) => Secret::Password(p.clone()),
        Some(pb::credentials::Secret::Token(t)) => Secret::Token(t.clone()),
        None => {
            return Err(Error::invalid(
                "credentials",
                "one of password or token must be present",
            ))
        }
    };
    limits::optional_text(
        "credentials.client",
        &creds.client,
        limits::MAX_CLIENT_ADDRESS,
    )?;
    Ok((creds, secret))
}

fn watch_request(msg: pb::WatchRevocationsRequest) -> Result<WatchRequest, Error> {
    let kinds = msg
        .kinds
        .iter()
        .map(|k| kind_from_pb("kinds", *k))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(WatchRequest {
        after: msg.after_sequence,
        after_cursor: (!msg.after_cursor.is_empty()).then_some(msg.after_cursor),
        org: (!msg.org.is_empty()).then_some(msg.org),
        kinds,
        address: None,
        heartbeat: (msg.heartbeat_ms > 0)
            .then(|| std::time::Duration::from_millis(u64::from(msg.heartbeat_ms))),
    })
}

/// A list of kinds, bounded before parsing.
fn kinds_from_pb(kinds: &[i32]) -> Result<Vec<Kind>, Error> {
    if kinds.len() > Kind::ALL.len() {
        return Err(Error::invalid(
            "kinds",
            format!("at most {} entries", Kind::ALL.len()),
        ));
    }
    kinds.iter().map(|k| kind_from_pb("kinds", *k)).collect()
}

fn page_size(requested: i32) -> Result<usize, Error> {
    usize::try_from(requested).map_err(|_| Error::invalid("page_size", "must not be negative"))
}

/// A page token this service issued (a positive id), or 0 for the first page.
fn page_token<T: std::str::FromStr + Default + PartialOrd>(token: &str) -> Result<T, Error> {
    if token.is_empty() {
        return Ok(T::default());
    }
    token
        .parse::<T>()
        .ok()
        .filter(|id| *id > T::default())
        .ok_or_else(|| Error::invalid("page_token", "not a token this service issued"))
}

fn list_filter(msg: &pb::ListSessionsRequest) -> Result<ListFilter, Error> {
    let page_size = page_size(msg.page_size)?;
    let after_id = page_token::<i32>(&msg.page_token)?;
    Ok(ListFilter {
        username: (!msg.user.is_empty()).then(|| msg.user.clone()),
        kind: kind_filter_from_pb("kind", msg.kind)?,
        page_size,
        after_id,
    })
}
