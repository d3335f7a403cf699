//! The one place a domain `Error` becomes a `tonic::Status`: canonical code,
//! human message, and a `google.rpc.ErrorInfo` (domain `sessiond`) whose
//! reason clients can switch on.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::domain::{AuthFailure, Error, NotFound};

/// ErrorInfo domain of every error this service returns.
pub const ERROR_DOMAIN: &str = "sessiond";

/// ErrorInfo reasons; part of the API contract.
pub mod reason {
    pub const INVALID_ARGUMENT: &str = "INVALID_ARGUMENT";
    pub const TOKEN_MISSING: &str = "TOKEN_MISSING";
    pub const TOKEN_INVALID: &str = "TOKEN_INVALID";
    pub const BAD_CREDENTIALS: &str = "BAD_CREDENTIALS";
    pub const PERMISSION_DENIED: &str = "PERMISSION_DENIED";
    pub const SESSION_NOT_FOUND: &str = "SESSION_NOT_FOUND";
    pub const MAILBOX_NOT_FOUND: &str = "MAILBOX_NOT_FOUND";
    pub const USER_NOT_FOUND: &str = "USER_NOT_FOUND";
    pub const ALREADY_EXISTS: &str = "ALREADY_EXISTS";
    pub const TOO_MANY_ATTEMPTS: &str = "TOO_MANY_ATTEMPTS";
    pub const STORE_UNAVAILABLE: &str = "STORE_UNAVAILABLE";
    pub const CURSOR_EXPIRED: &str = "CURSOR_EXPIRED";
    pub const OVERLOADED: &str = "OVERLOADED";
    pub const INTERNAL: &str = "INTERNAL";
}

pub fn to_status(err: Error) -> Status {
    let mut details = ErrorDetails::new();
    let mut metadata = HashMap::new();
    let (code, why) = match &err {
        Error::InvalidArgument { field, reason: r } => {
            details.add_bad_request_violation(*field, r.clone());
            metadata.insert("field".to_owned(), (*field).to_owned());
            (Code::InvalidArgument, reason::INVALID_ARGUMENT)
        }
        Error::Unauthenticated(AuthFailure::TokenMissing) => {
            (Code::Unauthenticated, reason::TOKEN_MISSING)
        }
        Error::Unauthenticated(AuthFailure::TokenInvalid) => {
            (Code::Unauthenticated, reason::TOKEN_INVALID)
        }
        Error::Unauthenticated(AuthFailure::BadCredentials) => {
            (Code::Unauthenticated, reason::BAD_CREDENTIALS)
        }
        Error::PermissionDenied(_) => (Code::PermissionDenied, reason::PERMISSION_DENIED),
        Error::NotFound(NotFound::Session) => (Code::NotFound, reason::SESSION_NOT_FOUND),
        Error::NotFound(NotFound::Mailbox) => (Code::NotFound, reason::MAILBOX_NOT_FOUND),
        Error::NotFound(NotFound::User) => (Code::NotFound, reason::USER_NOT_FOUND),
        Error::AlreadyExists => (Code::AlreadyExists, reason::ALREADY_EXISTS),
        Error::TooManyAttempts { retry_after } => {
            details.set_retry_info(Some(*retry_after));
            (Code::ResourceExhausted, reason::TOO_MANY_ATTEMPTS)
        }
        Error::Overloaded => {
            details.set_retry_info(Some(std::time::Duration::from_millis(100)));
            (Code::ResourceExhausted, reason::OVERLOADED)
        }
        Error::CursorExpired { oldest, .. } => {
            metadata.insert("oldest_sequence".to_owned(), oldest.to_string());
            (Code::OutOfRange, reason::CURSOR_EXPIRED)
        }
        Error::Unavailable(detail) => {
            tracing::warn!(%detail, "store unavailable");
            (Code::Unavailable, reason::STORE_UNAVAILABLE)
        }
        Error::Internal(detail) => {
            tracing::error!(%detail, "internal error");
            (Code::Internal, reason::INTERNAL)
        }
    };
    // Store and internal details stay in the log, not in the answer.
    let message = match &err {
        Error::Unavailable(_) => "session store unavailable; try again".to_owned(),
        Error::Internal(_) => "internal error".to_owned(),
        other => other.to_string(),
    };
    details.set_error_info(why, ERROR_DOMAIN, metadata);
    Status::with_error_details(code, message, details)
}
