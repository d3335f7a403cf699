use std::fmt;
use std::str::FromStr;

/// What a session is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Admin,
    Api,
    Imap,
    Pop,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Admin, Kind::Api, Kind::Imap, Kind::Pop];
    /// The kinds a mailbox logout (OMA `logout_user`) ends.
    pub const MAIL: [Kind; 2] = [Kind::Imap, Kind::Pop];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Admin => "ADMIN",
            Kind::Api => "API",
            Kind::Imap => "IMAP",
            Kind::Pop => "POP",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown kind {s:?}"))
    }
}

/// A user's role. An admin has authority over its own org only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    User,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "user" => Ok(Role::User),
            "admin" => Ok(Role::Admin),
            _ => Err(format!("unknown role {s:?} (expected user or admin)")),
        }
    }
}

/// Why a session ended; one revocation event carries one reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndReason {
    Logoff,
    LogoffOther,
    LogoutUser,
    LogoutAll,
    Expired,
    /// EndUserSessions: the user itself or an admin of its org ended them.
    EndUserSessions,
    /// The user's password changed (ChangePassword, `sessiond user passwd`).
    PasswordChanged,
    /// A login took its user past the live-session cap: the oldest ended.
    SessionLimit,
    /// An identity provider asked for every session of the user to end
    /// (the Global Token Revocation call).
    GlobalTokenRevocation,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Logoff => "LOGOFF",
            EndReason::LogoffOther => "LOGOFF_OTHER",
            EndReason::LogoutUser => "LOGOUT_USER",
            EndReason::LogoutAll => "LOGOUT_ALL",
            EndReason::Expired => "EXPIRED",
            EndReason::EndUserSessions => "END_USER_SESSIONS",
            EndReason::PasswordChanged => "PASSWORD_CHANGED",
            EndReason::SessionLimit => "SESSION_LIMIT",
            EndReason::GlobalTokenRevocation => "GLOBAL_TOKEN_REVOCATION",
        }
    }
}

impl FromStr for EndReason {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            EndReason::Logoff,
            EndReason::LogoffOther,
            EndReason::LogoutUser,
            EndReason::LogoutAll,
            EndReason::Expired,
            EndReason::EndUserSessions,
            EndReason::PasswordChanged,
            EndReason::SessionLimit,
            EndReason::GlobalTokenRevocation,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
        .ok_or_else(|| format!("unknown end reason {s:?}"))
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
