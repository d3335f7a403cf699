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

/// LogoutUser: the mailbox itself, or an admin of the mailbox's org.
pub fn may_logout_mailbox(caller: &User, mailbox: &User) -> Result<(), Error> {
    if caller.id == mailbox.id {
        return Ok(());
    }
    if caller.role == Role::Admin && caller.org == mailbox.org {
        return Ok(());
    }
    Err(Error::PermissionDenied(
        "only the mailbox itself or an admin of its organization may log it out",
    ))
}

/// ListSessions: admins only, and only their own org (the query is scoped).
pub fn may_list(caller: &Session) -> Result<(), Error> {
    if caller.role != Role::Admin {
        return Err(Error::PermissionDenied("only admins may list sessions"));
    }
    Ok(())
}
