//! The one error vocabulary: every `google.rpc.ErrorInfo` reason this service
//! answers with, projected to a gRPC code and to a default HTTP status (each
//! REST vendor may refine the latter). The gRPC service picks the reason; the
//! shim reads it back with [`Reason::of`] and matches on it.

use http::StatusCode;
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// ErrorInfo domain of every error this service returns.
pub const ERROR_DOMAIN: &str = "sessiond";

/// An ErrorInfo reason; the strings are part of the API contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    InvalidArgument,
    TokenMissing,
    TokenInvalid,
    BadCredentials,
    PermissionDenied,
    SessionNotFound,
    MailboxNotFound,
    UserNotFound,
    AlreadyExists,
    TooManyAttempts,
    StoreUnavailable,
    CursorExpired,
    Overloaded,
    /// A validation-only endpoint (`sessiond edge`) was asked for another call.
    NotServedHere,
    Internal,
}

impl Reason {
    pub const ALL: [Reason; 15] = [
        Reason::InvalidArgument,
        Reason::TokenMissing,
        Reason::TokenInvalid,
        Reason::BadCredentials,
        Reason::PermissionDenied,
        Reason::SessionNotFound,
        Reason::MailboxNotFound,
        Reason::UserNotFound,
        Reason::AlreadyExists,
        Reason::TooManyAttempts,
        Reason::StoreUnavailable,
        Reason::CursorExpired,
        Reason::Overloaded,
        Reason::NotServedHere,
        Reason::Internal,
    ];

    /// The ErrorInfo `reason` string.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidArgument => "INVALID_ARGUMENT",
            Reason::TokenMissing => "TOKEN_MISSING",
            Reason::TokenInvalid => "TOKEN_INVALID",
            Reason::BadCredentials => "BAD_CREDENTIALS",
            Reason::PermissionDenied => "PERMISSION_DENIED",
            Reason::SessionNotFound => "SESSION_NOT_FOUND",
            Reason::MailboxNotFound => "MAILBOX_NOT_FOUND",
            Reason::UserNotFound => "USER_NOT_FOUND",
            Reason::AlreadyExists => "ALREADY_EXISTS",
            Reason::TooManyAttempts => "TOO_MANY_ATTEMPTS",
            Reason::StoreUnavailable => "STORE_UNAVAILABLE",
            Reason::CursorExpired => "CURSOR_EXPIRED",
            Reason::Overloaded => "OVERLOADED",
            Reason::NotServedHere => "NOT_SERVED_HERE",
            Reason::Internal => "INTERNAL",
        }
    }

    /// The gRPC code answered with this reason.
    pub const fn code(self) -> Code {
        match self {
            Reason::InvalidArgument => Code::InvalidArgument,
            Reason::TokenMissing | Reason::TokenInvalid | Reason::BadCredentials => {
                Code::Unauthenticated
            }
            Reason::PermissionDenied => Code::PermissionDenied,
            Reason::SessionNotFound | Reason::MailboxNotFound | Reason::UserNotFound => {
                Code::NotFound
            }
            Reason::AlreadyExists => Code::AlreadyExists,
            Reason::TooManyAttempts | Reason::Overloaded => Code::ResourceExhausted,
            Reason::StoreUnavailable => Code::Unavailable,
            Reason::CursorExpired => Code::OutOfRange,
            Reason::NotServedHere => Code::FailedPrecondition,
            Reason::Internal => Code::Internal,
        }
    }

    /// The HTTP status a REST answer carries unless its vendor documents
    /// another.
    pub const fn http_status(self) -> StatusCode {
        match self {
            Reason::InvalidArgument | Reason::CursorExpired => StatusCode::BAD_REQUEST,
            Reason::TokenMissing | Reason::TokenInvalid | Reason::BadCredentials => {
                StatusCode::UNAUTHORIZED
            }
            Reason::PermissionDenied => StatusCode::FORBIDDEN,
            Reason::SessionNotFound | Reason::MailboxNotFound | Reason::UserNotFound => {
                StatusCode::NOT_FOUND
            }
            Reason::AlreadyExists => StatusCode::CONFLICT,
            // A shed call shares 429 with throttling; vendors tell them apart
            // in their own words.
            Reason::TooManyAttempts | Reason::Overloaded => StatusCode::TOO_MANY_REQUESTS,
            Reason::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Reason::NotServedHere => StatusCode::PRECONDITION_FAILED,
            Reason::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The reason named by an ErrorInfo `reason` string.
    pub fn parse(s: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Why `status` failed: its ErrorInfo reason when it carries one of ours;
    /// otherwise (a transport failure reaching a remote upstream, a request
    /// tonic refused before our code ran) the reason nearest its bare code.
    pub fn of(status: &Status) -> Reason {
        status
            .get_details_error_info()
            .filter(|info| info.domain == ERROR_DOMAIN)
            .and_then(|info| Reason::parse(&info.reason))
            .unwrap_or_else(|| Reason::from_code(status.code()))
    }

    fn from_code(code: Code) -> Reason {
        match code {
            Code::InvalidArgument | Code::OutOfRange => Reason::InvalidArgument,
            Code::Unauthenticated => Reason::TokenInvalid,
            Code::PermissionDenied => Reason::PermissionDenied,
            Code::NotFound => Reason::SessionNotFound,
            Code::AlreadyExists => Reason::AlreadyExists,
            Code::ResourceExhausted => Reason::TooManyAttempts,
            Code::Unavailable => Reason::StoreUnavailable,
            _ => Reason::Internal,
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_reads_back_from_its_string() {
        for r in Reason::ALL {
            assert_eq!(Reason::parse(r.as_str()), Some(r));
        }
        assert_eq!(Reason::parse("NO_SUCH_REASON"), None);
    }

    #[test]
    fn a_status_without_our_error_info_is_read_by_its_code() {
        let s = Status::unavailable("transport error");
        assert_eq!(Reason::of(&s), Reason::StoreUnavailable);
        let s = Status::out_of_range("message too large");
        assert_eq!(Reason::of(&s), Reason::InvalidArgument);
        let s = Status::unimplemented("");
        assert_eq!(Reason::of(&s), Reason::Internal);
    }

    #[test]
    fn a_foreign_domain_is_not_ours() {
        let mut details = tonic_types::ErrorDetails::new();
        details.set_error_info(
            "OVERLOADED",
            "example.com",
            std::collections::HashMap::new(),
        );
        let s = Status::with_error_details(Code::ResourceExhausted, "", details);
        assert_eq!(Reason::of(&s), Reason::TooManyAttempts);
    }
}
