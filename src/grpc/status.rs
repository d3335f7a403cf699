//! The one place a domain `Error` becomes a `tonic::Status`: canonical code,
//! human message, and a `google.rpc.ErrorInfo` (domain `sessiond`) whose
//! [`Reason`] clients can switch on.

use std::collections::HashMap;
use std::time::Duration;

use tonic::Status;
use tonic_types::{ErrorDetails, StatusExt};

use crate::domain::{AuthFailure, Error, NotFound};
use crate::wire::{Reason, ERROR_DOMAIN};

/// How long a shed caller is told to wait before retrying.
const OVERLOAD_RETRY: Duration = Duration::from_millis(100);

/// The ErrorInfo reason of each error.
pub fn reason_of(err: &Error) -> Reason {
    match err {
        Error::InvalidArgument { .. } => Reason::InvalidArgument,
        Error::Unauthenticated(AuthFailure::TokenMissing) => Reason::TokenMissing,
        Error::Unauthenticated(AuthFailure::TokenInvalid) => Reason::TokenInvalid,
        Error::Unauthenticated(AuthFailure::BadCredentials) => Reason::BadCredentials,
        Error::PermissionDenied(_) => Reason::PermissionDenied,
        Error::NotFound(NotFound::Session) => Reason::SessionNotFound,
        Error::NotFound(NotFound::Mailbox) => Reason::MailboxNotFound,
        Error::NotFound(NotFound::User) => Reason::UserNotFound,
        Error::AlreadyExists => Reason::AlreadyExists,
        Error::TooManyAttempts { .. } | Error::RateLimited { .. } => Reason::TooManyAttempts,
        Error::Overloaded => Reason::Overloaded,
        Error::CursorExpired { .. } => Reason::CursorExpired,
        Error::NotServedHere(_) => Reason::NotServedHere,
        Error::Unavailable(_) => Reason::StoreUnavailable,
        Error::Internal(_) => Reason::Internal,
    }
}

pub fn to_status(err: Error) -> Status {
    let reason = reason_of(&err);
    let mut details = ErrorDetails::new();
    let mut metadata = HashMap::new();
    match &err {
        Error::InvalidArgument { field, reason: r } => {
            details.add_bad_request_violation(*field, r.clone());
            metadata.insert("field".to_owned(), (*field).to_owned());
        }
        Error::TooManyAttempts { retry_after } | Error::RateLimited { retry_after } => {
            details.set_retry_info(Some(*retry_after));
        }
        Error::Overloaded => {
            details.set_retry_info(Some(OVERLOAD_RETRY));
        }
        Error::CursorExpired { oldest, .. } => {
            metadata.insert("oldest_sequence".to_owned(), oldest.to_string());
        }
        Error::Unavailable(detail) => tracing::warn!(%detail, "store unavailable"),
        Error::Internal(detail) => tracing::error!(%detail, "internal error"),
        _ => {}
    }
    // Store and internal details stay in the log, not in the answer.
    let message = match &err {
        Error::Unavailable(_) => "session store unavailable; try again".to_owned(),
        Error::Internal(_) => "internal error".to_owned(),
        other => other.to_string(),
    };
    details.set_error_info(reason.as_str(), ERROR_DOMAIN, metadata);
    Status::with_error_details(reason.code(), message, details)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_reads_back_as_its_reason_with_its_code() {
        let errors = [
            Error::invalid("username", "must not be empty"),
            Error::Unauthenticated(AuthFailure::TokenMissing),
            Error::Unauthenticated(AuthFailure::TokenInvalid),
            Error::Unauthenticated(AuthFailure::BadCredentials),
            Error::PermissionDenied("not yours"),
            Error::NotFound(NotFound::Session),
            Error::NotFound(NotFound::Mailbox),
            Error::NotFound(NotFound::User),
            Error::AlreadyExists,
            Error::TooManyAttempts {
                retry_after: Duration::from_secs(3),
            },
            Error::RateLimited {
                retry_after: Duration::from_secs(3),
            },
            Error::CursorExpired {
                after: 1,
                oldest: 2,
            },
            Error::Overloaded,
            Error::NotServedHere("call sessiond".into()),
            Error::Unavailable("down".into()),
            Error::Internal("bug".into()),
        ];
        let mut seen = Vec::new();
        for err in errors {
            let reason = reason_of(&err);
            let status = to_status(err);
            assert_eq!(Reason::of(&status), reason);
            assert_eq!(status.code(), reason.code(), "{reason}");
            seen.push(reason);
        }
        for r in Reason::ALL {
            assert!(seen.contains(&r), "{r} is never answered");
        }
    }
}
