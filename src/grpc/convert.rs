//! Proto <-> domain translations for the gRPC layer.

use std::fmt;

use prost_types::Timestamp;
use tonic::metadata::MetadataMap;

use crate::domain::{
    limits, AuditRecord, ClientInfo, EndReason, Error, Kind, Millis, Revocation, Session,
};
use crate::pb;

pub fn timestamp(ms: Millis) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

pub fn kind_to_pb(kind: Kind) -> pb::Kind {
    match kind {
        Kind::Admin => pb::Kind::Admin,
        Kind::Api => pb::Kind::Api,
        Kind::Imap => pb::Kind::Imap,
        Kind::Pop => pb::Kind::Pop,
    }
}

/// A required kind: unspecified or unknown numbers are INVALID_ARGUMENT.
pub fn kind_from_pb(field: &'static str, value: i32) -> Result<Kind, Error> {
    match pb::Kind::try_from(value) {
        Ok(pb::Kind::Admin) => Ok(Kind::Admin),
        Ok(pb::Kind::Api) => Ok(Kind::Api),
        Ok(pb::Kind::Imap) => Ok(Kind::Imap),
        Ok(pb::Kind::Pop) => Ok(Kind::Pop),
        Ok(pb::Kind::Unspecified) => Err(Error::invalid(field, "kind must be specified")),
        Err(_) => Err(Error::invalid(field, format!("unknown kind {value}"))),
    }
}

/// An optional kind filter: unspecified means "any".
pub fn kind_filter_from_pb(field: &'static str, value: i32) -> Result<Option<Kind>, Error> {
    if value == pb::Kind::Unspecified as i32 {
        return Ok(None);
    }
    kind_from_pb(field, value).map(Some)
}

pub fn reason_to_pb(reason: EndReason) -> pb::EndReason {
    match reason {
        EndReason::Logoff => pb::EndReason::Logoff,
        EndReason::LogoffOther => pb::EndReason::LogoffOther,
        EndReason::LogoutUser => pb::EndReason::LogoutUser,
        EndReason::LogoutAll => pb::EndReason::LogoutAll,
        EndReason::Expired => pb::EndReason::Expired,
        EndReason::EndUserSessions => pb::EndReason::EndUserSessions,
        EndReason::PasswordChanged => pb::EndReason::PasswordChanged,
        EndReason::SessionLimit => pb::EndReason::SessionLimit,
        EndReason::GlobalTokenRevocation => pb::EndReason::GlobalTokenRevocation,
    }
}

pub fn revocation_to_pb(r: &Revocation) -> pb::Revocation {
    pb::Revocation {
        sequence: r.sequence,
        session_id: r.session_id,
        user: r.username.clone(),
        org: r.org.clone(),
        kind: kind_to_pb(r.kind) as i32,
        reason: reason_to_pb(r.reason) as i32,
        at: Some(timestamp(r.at)),
        cursor: r.cursor.clone(),
    }
}

/// Moves the session's strings into the message (no copies on the hot path).
pub fn audit_to_pb(r: AuditRecord) -> pb::AuditRecord {
    pb::AuditRecord {
        id: r.id,
        at: Some(timestamp(r.at)),
        actor: r.actor,
        actor_session_id: r.actor_session_id.unwrap_or(0),
        reason: reason_to_pb(r.reason) as i32,
        target: r.target,
        ended: r.ended,
    }
}

pub fn session_to_pb(s: Session) -> pb::Session {
    let reported = s.client.address.is_some() || s.client.user_agent.is_some();
    let client = reported.then(|| pb::ClientInfo {
        address: s.client.address.unwrap_or_default(),
        user_agent: s.client.user_agent.unwrap_or_default(),
    });
    pb::Session {
        id: s.id,
        kind: kind_to_pb(s.kind) as i32,
        user: s.username,
        org: s.org,
        created_at: Some(timestamp(s.created_at)),
        last_seen_at: Some(timestamp(s.last_seen_at)),
        expires_at: Some(timestamp(s.expires_at)),
        idle_expires_at: Some(timestamp(s.idle_deadline.min(s.expires_at))),
        client,
        peer_address: s.client.peer_address.unwrap_or_default(),
    }
}

pub fn client_from_pb(client: Option<&pb::ClientInfo>) -> Result<ClientInfo, Error> {
    let Some(c) = client else {
        return Ok(ClientInfo::default());
    };
    Ok(ClientInfo {
        address: limits::optional_text("client.address", &c.address, limits::MAX_CLIENT_ADDRESS)?,
        user_agent: limits::optional_text(
            "client.user_agent",
            &c.user_agent,
            limits::MAX_USER_AGENT,
        )?,
        // Never from the request: the server fills it in.
        peer_address: None,
    })
}

/// The token of `authorization: Bearer <token>`. `Err` when present but not
/// readable; `Ok(None)` when absent.
pub fn bearer_token(metadata: &MetadataMap) -> Result<Option<String>, Error> {
    let Some(value) = metadata.get(crate::wire::AUTHORIZATION) else {
        return Ok(None);
    };
    let invalid = || Error::Unauthenticated(crate::domain::AuthFailure::TokenInvalid);
    let text = value.to_str().map_err(|_| invalid())?;
    let (scheme, token) = text.trim().split_once(' ').ok_or_else(invalid)?;
    if !scheme.eq_ignore_ascii_case(crate::wire::BEARER) {
        return Err(invalid());
    }
    Ok(Some(token.trim().to_owned()))
}

// Debug for messages that carry secrets: never print them.
struct Redacted;
impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Debug for pb::LoginRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginRequest")
            .field("username", &self.username)
            .field("password", &Redacted)
            .field("kind", &self.kind)
            .field("client", &self.client)
            .finish()
    }
}

impl fmt::Debug for pb::LoginResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginResponse")
            .field("token", &Redacted)
            .field("session", &self.session)
            .finish()
    }
}

impl fmt::Debug for pb::ValidateSessionRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValidateSessionRequest")
            .field("token", &Redacted)
            .finish()
    }
}

impl fmt::Debug for pb::Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("secret", &self.secret)
            .field("client", &self.client)
            .finish()
    }
}

impl fmt::Debug for pb::credentials::Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            pb::credentials::Secret::Password(_) => f.write_str("Password(<redacted>)"),
            pb::credentials::Secret::Token(_) => f.write_str("Token(<redacted>)"),
        }
    }
}

impl fmt::Debug for pb::LogoutAllRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogoutAllRequest")
            .field("username", &self.username)
            .field("password", &Redacted)
            .finish()
    }
}

impl fmt::Debug for pb::ChangePasswordRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChangePasswordRequest")
            .field("current_password", &Redacted)
            .field("new_password", &Redacted)
            .finish()
    }
}
