//! Building Security Event Tokens (the claims; [`super::keys`] signs
//! them): the one place that maps an end reason to CAEP's fields.
//!
//! Every ended session becomes one CAEP `session-revoked` SET whose
//! subject names exactly that session (a complex subject: the session by
//! its id, the user, the tenant by org; a complex subject matches only when
//! all of its members match, so it never claims more than the one session,
//! even for a LogoutAll, which ends API sessions only).

use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use crate::domain::{EndReason, Revocation};

pub const SESSION_REVOKED: &str =
    "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
pub const VERIFICATION: &str = "https://schemas.openid.net/secevent/ssf/event-type/verification";
pub const STREAM_UPDATED: &str =
    "https://schemas.openid.net/secevent/ssf/event-type/stream-updated";

/// The event types a stream may ask for (verification and stream-updated
/// are sent whatever it asks for, as SSF allows).
pub const SUPPORTED: [&str; 1] = [SESSION_REVOKED];

/// CAEP's `initiating_entity` and an administrator's explanation, per end
/// reason. `None` where the reason alone does not say who started it
/// (a user or an admin may end a user's sessions, or change a password):
/// the claim is optional, and a wrong one would mislead.
pub fn cause(reason: EndReason) -> (Option<&'static str>, &'static str) {
    match reason {
        EndReason::Logoff => (Some("user"), "The user logged off (Logoff)."),
        EndReason::LogoffOther => (
            Some("admin"),
            "An administrator ended the session (LogoffOther), or disabled or deleted its user.",
        ),
        EndReason::LogoutUser => (
            Some("admin"),
            "An administrator ended the mailbox's IMAP and POP sessions (LogoutUser).",
        ),
        EndReason::LogoutAll => (
            Some("admin"),
            "An administrator ended every API session of the organization (LogoutAll).",
        ),
        EndReason::Expired => (
            Some("system"),
            "The session passed its idle timeout or its absolute lifetime.",
        ),
        EndReason::EndUserSessions => (
            None,
            "The user, or an administrator of its organization, ended the user's sessions \
             (EndUserSessions).",
        ),
        EndReason::PasswordChanged => (
            None,
            "The user's password was changed, which ends its sessions.",
        ),
        EndReason::SessionLimit => (
            Some("policy"),
            "A newer login took the user past its limit of live sessions; the oldest ended.",
        ),
        EndReason::GlobalTokenRevocation => (
            Some("admin"),
            "The identity provider asked for every session of the user to end \
             (Global Token Revocation).",
        ),
    }
}

/// The user as a subject identifier: `email` when the username is an email
/// address (mailboxes are), else `opaque`.
pub fn user_subject(username: &str) -> Value {
    if looks_like_email(username) {
        json!({"format": "email", "email": username})
    } else {
        json!({"format": "opaque", "id": username})
    }
}

fn looks_like_email(s: &str) -> bool {
    match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        }
        None => false,
    }
}

/// The subject of one ended session.
pub fn session_subject(e: &Revocation) -> Value {
    json!({
        "format": "complex",
        "session": {"format": "opaque", "id": e.session_id.to_string()},
        "user": user_subject(&e.username),
        "tenant": {"format": "opaque", "id": e.org},
    })
}

/// The transaction id of an ending's event: the same on every stream
/// (receivers of two streams can tell one cause), unique per ended session.
pub fn txn(e: &Revocation) -> String {
    format!("{}.{}.{}", e.shard, e.sequence, e.session_id)
}

/// The SET id of `txn`'s event on `stream`: the same on every retry of the
/// same SET, different on every other stream and event.
pub fn jti(stream: &str, txn: &str, event: &str) -> String {
    let mut h = Sha256::new();
    for part in [stream, txn, event] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Who sends a SET to whom, and its identity.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    pub iss: &'a str,
    pub aud: &'a str,
    pub iat: i64,
    pub jti: &'a str,
    pub txn: Option<&'a str>,
}

/// A SET's claims: `iss`, `aud`, `iat`, `jti`, `sub_id`, `txn` and one
/// event. No `sub` and no `exp` (SSF forbids both).
pub fn claims(env: Envelope<'_>, sub_id: Value, event: &str, payload: Value) -> Value {
    let mut c = json!({
        "iss": env.iss,
        "aud": env.aud,
        "iat": env.iat,
        "jti": env.jti,
        "sub_id": sub_id,
        "events": {event: payload},
    });
    if let (Some(t), Some(map)) = (env.txn, c.as_object_mut()) {
        map.insert("txn".into(), Value::String(t.to_owned()));
    }
    c
}

/// The payload of a `session-revoked` event for `e`.
pub fn session_revoked(e: &Revocation) -> Value {
    let (initiating, why) = cause(e.reason);
    let mut p = json!({
        "event_timestamp": e.at.div_euclid(1000),
        "reason_admin": {"en": why},
    });
    if let (Some(who), Some(map)) = (initiating, p.as_object_mut()) {
        map.insert("initiating_entity".into(), Value::String(who.into()));
    }
    p
}

/// The subject of a stream itself (verification, stream-updated).
pub fn stream_subject(stream: &str) -> Value {
    json!({"format": "opaque", "id": stream})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Kind;

    fn event(reason: EndReason, user: &str) -> Revocation {
        Revocation {
            sequence: 7,
            shard: 2,
            cursor: String::new(),
            session_id: 41,
            username: user.into(),
            org: "acme".into(),
            kind: Kind::Api,
            reason,
            at: 1_700_000_000_123,
        }
    }

    #[test]
    fn a_session_revoked_event_names_the_one_session_and_why() {
        let e = event(EndReason::LogoutAll, "alice");
        let sub = session_subject(&e);
        assert_eq!(sub["format"], "complex");
        assert_eq!(sub["session"], json!({"format": "opaque", "id": "41"}));
        assert_eq!(sub["user"], json!({"format": "opaque", "id": "alice"}));
        assert_eq!(sub["tenant"], json!({"format": "opaque", "id": "acme"}));
        let p = session_revoked(&e);
        assert_eq!(p["initiating_entity"], "admin");
        assert_eq!(p["event_timestamp"], 1_700_000_000);
        assert!(p["reason_admin"]["en"]
            .as_str()
            .unwrap()
            .contains("LogoutAll"));
    }

    #[test]
    fn mailboxes_are_email_subjects() {
        assert_eq!(
            user_subject("bob@example.com"),
            json!({"format": "email", "email": "bob@example.com"})
        );
        for not in ["bob", "bob@", "@x.com", "a@b", "a@b@c.com", "a@.com"] {
            assert_eq!(user_subject(not)["format"], "opaque", "{not}");
        }
    }

    #[test]
    fn every_reason_has_an_explanation_and_a_known_entity_or_none() {
        for r in [
            EndReason::Logoff,
            EndReason::LogoffOther,
            EndReason::LogoutUser,
            EndReason::LogoutAll,
            EndReason::Expired,
            EndReason::EndUserSessions,
            EndReason::PasswordChanged,
            EndReason::SessionLimit,
            EndReason::GlobalTokenRevocation,
        ] {
            let (who, why) = cause(r);
            assert!(!why.is_empty());
            assert!(who.is_none_or(|w| ["user", "admin", "policy", "system"].contains(&w)));
            let p = session_revoked(&event(r, "u"));
            assert_eq!(p.get("initiating_entity").is_some(), who.is_some());
        }
    }

    #[test]
    fn jtis_repeat_per_stream_and_event_and_differ_otherwise() {
        let t = txn(&event(EndReason::Logoff, "u"));
        assert_eq!(t, "2.7.41");
        let a = jti("s1", &t, SESSION_REVOKED);
        assert_eq!(a, jti("s1", &t, SESSION_REVOKED));
        assert_eq!(a.len(), 32);
        assert_ne!(a, jti("s2", &t, SESSION_REVOKED));
        assert_ne!(a, jti("s1", &t, VERIFICATION));
        assert_ne!(jti("s1", "ab", "c"), jti("s1", "a", "bc"));
    }

    #[test]
    fn claims_have_no_sub_or_exp() {
        let c = claims(
            Envelope {
                iss: "https://i",
                aud: "aud",
                iat: 1,
                jti: "j",
                txn: Some("t"),
            },
            stream_subject("s"),
            VERIFICATION,
            json!({"state": "x"}),
        );
        assert!(c.get("sub").is_none() && c.get("exp").is_none());
        assert_eq!(c["txn"], "t");
        assert_eq!(c["events"][VERIFICATION]["state"], "x");
    }
}
