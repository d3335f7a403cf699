//! Who may do what. Every authority decision of the service is made here.

use super::{Error, Kind, Role, Session, User};

/// Only admins open ADMIN (console) sessions.
pub fn may_open(role: Role, kind: Kind) -> Result<(), Error> {
    if kind == Kind::Admin && role != Role::Admin {
        return Err(Error::PermissionDenied(
            "only admins may open ADMIN sessions",
        ));
    }
    Ok(())
}

/// LogoffOther: the caller must be an admin holding an ADMIN session. Which
/// sessions it may end (ADMIN, own org) is enforced by the ending itself, so a
/// session of another org is indistinguishable from a missing one.
pub fn may_logoff_other(caller: &Session) -> Result<(), Error> {
    if caller.role != Role::Admin {
        return Err(Error::PermissionDenied(
            "only admins may end other sessions",
        ));
    }
    if caller.kind != Kind::Admin {
        return Err(Error::PermissionDenied(
            "ending another admin session needs an ADMIN session",
        ));
    }
    Ok(())
}

/// Who is asking, for decisions about another user.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub id: i64,
    pub role: Role,
    pub org: &'a str,
}

impl<'a> From<&'a User> for Caller<'a> {
    fn from(u: &'a User) -> Self {
        Caller {
            id: u.id,
            role: u.role,
            org: &u.org,
        }
    }
}

impl<'a> From<&'a Session> for Caller<'a> {
    fn from(s: &'a Session) -> Self {
        Caller {
            id: s.user_id,
            role: s.role,
            org: &s.org,
        }
    }
}

/// The one refusal for every call that names another user: the same text
/// whether or not that user exists.
const NOT_YOURS: &str = "only the user itself or an admin of its organization may do this";

/// Authority over a named user (LogoutUser, EndUserSessions, the ListSessions
/// user filter): the user itself, or an admin of its org. Decided before
/// existence is revealed: a caller without authority is refused whether or
/// not `name` exists. A missing name belongs to the org its mail domain
/// names (`x@example.com` to `example.com`), so only an admin of that org
/// may learn that it does not exist; a name without a domain belongs to none.
pub fn may_reach_user(caller: Caller<'_>, name: &str, target: Option<&User>) -> Result<(), Error> {
    let entitled = match target {
        Some(t) => caller.id == t.id || (caller.role == Role::Admin && caller.org == t.org),
        None => {
            caller.role == Role::Admin
                && name
                    .rsplit_once('@')
                    .is_some_and(|(_, domain)| domain == caller.org)
        }
    };
    if entitled {
        Ok(())
    } else {
        Err(Error::PermissionDenied(NOT_YOURS))
    }
}

/// ListSessions, ListAuditRecords, WatchRevocations (the console's powers):
/// admins only, from a `KIND_ADMIN` session, and only their own org (the
/// query is scoped). An admin's IMAP, POP or API token sits in mail clients
/// and front ends: it must not carry org-wide power.
pub fn may_list(caller: &Session) -> Result<(), Error> {
    if caller.role != Role::Admin {
        return Err(Error::PermissionDenied("only admins may list sessions"));
    }
    if caller.kind != Kind::Admin {
        return Err(Error::PermissionDenied(
            "org-wide calls need an ADMIN (console) session",
        ));
    }
    Ok(())
}

/// LogoutAll by token: the same as listing, an admin's ADMIN session; its
/// own org is the only one it can name.
pub fn may_end_org(caller: &Session) -> Result<(), Error> {
    may_list(caller)
}
