//! The OpenID Shared Signals transmitter: every ending becomes a signed
//! CAEP `session-revoked` Security Event Token for the receivers that asked
//! for it, delivered by push (RFC 8935) or poll (RFC 8936).
//!
//! The revocation feed is the outbox: a stream's delivery position is a
//! feed cursor, advanced only when the receiver accepted the SETs before
//! it (a 202, or an acknowledgement in a poll). Nothing else is queued, so
//! nothing can be lost between an ending and its SET, and a receiver that
//! is slow or down never delays an ending.
//!
//! - `keys`: the ES256 signing keys and the JWKS;
//! - `set`: SET claims (the one mapping of end reasons to CAEP fields);
//! - `stream`: the stream document and the checks on what receivers send;
//! - `manage`: stream management, status, subjects, verification;
//! - `poll`: the poll endpoint;
//! - `push`: push delivery and the operator's allow-list;
//! - `routes`: the HTTP routes (discovery, JWKS and the above);
//! - `gtr`: Global Token Revocation, inbound (identity providers end a
//!   user's sessions).

pub mod gtr;
pub mod keys;
pub mod manage;
pub mod poll;
pub mod push;
pub mod routes;
pub mod set;
pub mod stream;

use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::domain::{Error, Result};
use crate::sessions::Sessions;

/// How the transmitter is configured (from `serve`'s flags).
#[derive(Debug, Clone)]
pub struct Settings {
    pub keys: keys::KeySource,
    pub push_allow: push::AllowList,
    pub max_streams_per_org: usize,
    /// The least time between two verification requests of one stream.
    pub min_verification_interval: Duration,
    /// The longest a poll waits for events when not told to return at once.
    pub long_poll: Duration,
    /// How often each process re-reads the store's signing keys, so a key
    /// added by `sessiond keys rotate` signs everywhere within this time.
    pub key_refresh: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            keys: keys::KeySource::Store {
                grace: keys::DEFAULT_GRACE,
                ahead: keys::KEY_AHEAD,
            },
            push_allow: push::AllowList::default(),
            max_streams_per_org: 16,
            min_verification_interval: Duration::from_secs(10),
            long_poll: Duration::from_secs(30),
            key_refresh: Duration::from_secs(30),
        }
    }
}

/// The transmitter of one process: shared by its routes and its push
/// workers.
pub struct Transmitter {
    sessions: Arc<Sessions>,
    keys: keys::Keys,
    settings: Settings,
    /// The issuer: `--public-url`, or the REST listener's own URL.
    issuer: String,
    /// Woken when a stream's control SETs or status change in this process.
    changed: tokio::sync::Notify,
}

impl std::fmt::Debug for Transmitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transmitter")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl Transmitter {
    /// Loads (or makes) the signing keys.
    pub async fn new(sessions: Arc<Sessions>, settings: Settings, issuer: String) -> Result<Self> {
        let keys = keys::Keys::load(settings.keys.clone(), &**sessions.store()).await?;
        Ok(Transmitter {
            sessions,
            keys,
            settings,
            issuer: issuer.trim_end_matches('/').to_owned(),
            changed: tokio::sync::Notify::new(),
        })
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn keys(&self) -> &keys::Keys {
        &self.keys
    }

    fn store(&self) -> &dyn crate::store::Store {
        &**self.sessions.store()
    }

    /// Background upkeep: re-reads the signing keys now and then (a key
    /// rotated by another process), until `stop`.
    pub async fn run_upkeep(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.settings.key_refresh) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            self.keys.refresh(self.store()).await;
        }
    }
}

/// An error of an SSF endpoint: the status SSF names, with a JSON body in
/// the shape of RFC 8935's error responses (`err`, `description`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsfError {
    pub status: StatusCode,
    pub err: &'static str,
    pub description: String,
    pub retry_after: Option<Duration>,
}

impl SsfError {
    pub fn new(status: StatusCode, err: &'static str, description: impl Into<String>) -> Self {
        SsfError {
            status,
            err,
            description: description.into(),
            retry_after: None,
        }
    }

    pub fn bad(description: impl Into<String>) -> Self {
        SsfError::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    pub fn not_found() -> Self {
        SsfError::new(StatusCode::NOT_FOUND, "not_found", "no such stream")
    }
}

impl From<Error> for SsfError {
    fn from(e: Error) -> Self {
        let text = e.to_string();
        match e {
            Error::InvalidArgument { .. } => SsfError::bad(text),
            Error::Unauthenticated(_) => {
                SsfError::new(StatusCode::UNAUTHORIZED, "authentication_failed", text)
            }
            Error::PermissionDenied(_) => {
                SsfError::new(StatusCode::FORBIDDEN, "access_denied", text)
            }
            Error::NotFound(_) => SsfError::not_found(),
            Error::TooManyAttempts { retry_after } | Error::RateLimited { retry_after } => {
                SsfError {
                    retry_after: Some(retry_after),
                    ..SsfError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_requests", text)
                }
            }
            Error::Overloaded => SsfError {
                retry_after: Some(Duration::from_secs(1)),
                ..SsfError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", text)
            },
            Error::Unavailable(_) => SsfError {
                retry_after: Some(Duration::from_secs(1)),
                ..SsfError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", text)
            },
            Error::AlreadyExists
            | Error::CursorExpired { .. }
            | Error::NotServedHere(_)
            | Error::Internal(_) => {
                tracing::error!(error = %text, "ssf: internal error");
                SsfError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "internal error",
                )
            }
        }
    }
}

impl IntoResponse for SsfError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"err": self.err, "description": self.description});
        let mut r = (self.status, axum::Json(body)).into_response();
        let h = r.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.status == StatusCode::UNAUTHORIZED {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"sessiond\""),
            );
        }
        if let Some(after) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&after.as_secs().max(1).to_string()) {
                h.insert(header::RETRY_AFTER, v);
            }
        }
        r
    }
}
