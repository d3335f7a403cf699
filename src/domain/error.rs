use std::time::Duration;

/// Why a caller could not be authenticated. Each has its own ErrorInfo reason,
/// but wrong-user and wrong-password deliberately share one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No token was presented.
    TokenMissing,
    /// The token is malformed, unknown, expired or ended.
    TokenInvalid,
    /// Unknown user, wrong password or disabled user: one answer for all three.
    BadCredentials,
}

/// What a call looked for and did not find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotFound {
    /// No live ADMIN session with that id in the caller's org.
    Session,
    /// No such mailbox (user).
    Mailbox,
    /// No such user (user administration).
    User,
}

/// Every failure the service can report; `grpc::status` maps each to a code.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum Error {
    #[error("invalid {field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    #[error("{}", match .0 {
        AuthFailure::TokenMissing => "missing session token",
        AuthFailure::TokenInvalid => "invalid or expired session token",
        AuthFailure::BadCredentials => "invalid username or password",
    })]
    Unauthenticated(AuthFailure),
    #[error("permission denied: {0}")]
    PermissionDenied(&'static str),
    #[error("{}", match .0 {
        NotFound::Session => "no such live admin session in your organization",
        NotFound::Mailbox => "no such mailbox",
        NotFound::User => "no such user",
    })]
    NotFound(NotFound),
    #[error("user already exists")]
    AlreadyExists,
    #[error("too many failed attempts; retry in {} s", .retry_after.as_secs().max(1))]
    TooManyAttempts { retry_after: Duration },
    /// A per-caller rate limit (successful logins, endings): the same
    /// answer as a lockout (RESOURCE_EXHAUSTED, TOO_MANY_ATTEMPTS, retry
    /// info), in its own words.
    #[error("too many requests; retry in {} s", .retry_after.as_secs().max(1))]
    RateLimited { retry_after: Duration },
    #[error("after_sequence {after} is older than retention: the oldest event kept follows {oldest}; resync and watch from now")]
    CursorExpired { after: u64, oldest: u64 },
    #[error("server overloaded; retry shortly")]
    Overloaded,
    /// A call that this endpoint does not serve: `sessiond edge` answers
    /// ValidateSession only; the text says where to send the rest.
    #[error("{0}")]
    NotServedHere(String),
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            field,
            reason: reason.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
