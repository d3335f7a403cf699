//! One SSF stream: the document the store keeps, the configuration object
//! receivers see, and the checks on what receivers send (every member has a
//! type and a limit; anything else is a 400 that says which member).

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::set::SUPPORTED;
use super::SsfError;
use crate::domain::Millis;

pub const PUSH: &str = "urn:ietf:rfc:8935";
pub const POLL: &str = "urn:ietf:rfc:8936";

/// Longest `description` kept.
pub const MAX_DESCRIPTION: usize = 1024;
/// Longest push `endpoint_url`.
pub const MAX_URL: usize = 2048;
/// Longest push `authorization_header`.
pub const MAX_AUTHORIZATION: usize = 4096;
/// Most entries of `events_requested`, and the longest entry.
pub const MAX_EVENTS_REQUESTED: usize = 32;
pub const MAX_EVENT_URI: usize = 256;
/// Most subjects named on one stream.
pub const MAX_SUBJECTS: usize = 1000;
/// Control SETs (verification, stream-updated) held for a receiver at
/// once; past this the oldest is dropped.
pub const MAX_PENDING: usize = 32;
/// SET ids acknowledged out of order kept per stream.
pub const MAX_ACKED: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Enabled,
    Paused,
    Disabled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Enabled => "enabled",
            Status::Paused => "paused",
            Status::Disabled => "disabled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "enabled" => Some(Status::Enabled),
            "paused" => Some(Status::Paused),
            "disabled" => Some(Status::Disabled),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Method {
    Push,
    Poll,
}

/// How SETs reach the receiver.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub method: Method,
    /// Push: the receiver's URL. Poll: empty (the transmitter's own URL,
    /// made from the issuer when shown).
    pub endpoint_url: String,
    /// Push: sent as `Authorization` with every request. Never shown or
    /// printed.
    pub authorization_header: Option<String>,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("method", &self.method)
            .field("endpoint_url", &self.endpoint_url)
            .field(
                "authorization_header",
                &self.authorization_header.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// A control SET waiting for the receiver, already signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub jti: String,
    pub jwt: String,
}

/// The stream document kept in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stream {
    pub id: String,
    /// The org whose events it carries; `None`: every org.
    pub org: Option<String>,
    pub aud: String,
    pub events_requested: Vec<String>,
    pub description: Option<String>,
    pub delivery: Delivery,
    pub status: Status,
    pub reason: Option<String>,
    /// `true`: every user of its org(s) but `users`; `false`: only `users`.
    pub all_users: bool,
    pub users: BTreeSet<String>,
    /// The feed cursor of the last event accepted (or skipped as not
    /// wanted): delivery resumes after it.
    pub position: String,
    /// SET ids acknowledged ahead of `position` (out of order).
    pub acked: BTreeSet<String>,
    /// Verification and stream-updated SETs not yet accepted.
    pub pending: Vec<Pending>,
    pub last_verification: Option<Millis>,
    /// The last error a receiver reported (push 400, poll setErrs).
    pub last_error: Option<String>,
    pub created_at: Millis,
}

impl Stream {
    /// The event types delivered: those requested that this transmitter
    /// supports, in its order.
    pub fn events_delivered(&self) -> Vec<&'static str> {
        SUPPORTED
            .iter()
            .copied()
            .filter(|e| self.events_requested.iter().any(|r| r == e))
            .collect()
    }

    pub fn wants_user(&self, user: &str) -> bool {
        self.users.contains(user) != self.all_users
    }

    /// Queues a control SET, dropping the oldest past the bound.
    pub fn queue(&mut self, jti: String, jwt: String) {
        if self.pending.len() >= MAX_PENDING {
            self.pending.remove(0);
        }
        self.pending.push(Pending { jti, jwt });
    }

    /// The stream configuration object, as SSF's management API returns it.
    pub fn to_json(&self, issuer: &str, min_verification_secs: u64) -> Value {
        let endpoint = match self.delivery.method {
            Method::Push => self.delivery.endpoint_url.clone(),
            Method::Poll => poll_url(issuer, &self.id),
        };
        let method = match self.delivery.method {
            Method::Push => PUSH,
            Method::Poll => POLL,
        };
        let mut v = json!({
            "stream_id": self.id,
            "iss": issuer,
            "aud": self.aud,
            "events_supported": SUPPORTED,
            "events_requested": self.events_requested,
            "events_delivered": self.events_delivered(),
            "delivery": {"method": method, "endpoint_url": endpoint},
            "min_verification_interval": min_verification_secs,
        });
        if let (Some(d), Some(map)) = (&self.description, v.as_object_mut()) {
            map.insert("description".into(), Value::String(d.clone()));
        }
        v
    }

    /// The status object; `last_error` (beyond SSF's members) is the last
    /// delivery problem: a push receiver's 400, a failing push target, a
    /// poll receiver's `setErrs`.
    pub fn status_json(&self) -> Value {
        let mut v = json!({"stream_id": self.id, "status": self.status.as_str()});
        if let Some(map) = v.as_object_mut() {
            if let Some(r) = &self.reason {
                map.insert("reason".into(), Value::String(r.clone()));
            }
            if let Some(e) = &self.last_error {
                map.insert("last_error".into(), Value::String(e.clone()));
            }
        }
        v
    }
}

/// The poll endpoint of a stream.
pub fn poll_url(issuer: &str, id: &str) -> String {
    format!("{issuer}/ssf/poll/{id}")
}

/// A JSON object body, or 400.
pub fn object(body: &[u8]) -> Result<Map<String, Value>, SsfError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(SsfError::bad("the body must be a JSON object")),
        Err(e) => Err(SsfError::bad(format!("the body is not JSON: {e}"))),
    }
}

/// A string member within `max` bytes; `None` when absent or null.
pub fn string(m: &Map<String, Value>, name: &str, max: usize) -> Result<Option<String>, SsfError> {
    match m.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() <= max => Ok(Some(s.clone())),
        Some(Value::String(_)) => Err(SsfError::bad(format!("{name} is longer than {max} bytes"))),
        Some(_) => Err(SsfError::bad(format!("{name} must be a string"))),
    }
}

/// `stream_id`, required.
pub fn stream_id(m: &Map<String, Value>) -> Result<String, SsfError> {
    string(m, "stream_id", 64)?.ok_or_else(|| SsfError::bad("stream_id is required"))
}

/// `events_requested`: an array of event-type URIs (unknown ones are kept
/// and ignored, as SSF says).
pub fn events_requested(m: &Map<String, Value>) -> Result<Option<Vec<String>>, SsfError> {
    let Some(v) = m.get("events_requested") else {
        return Ok(None);
    };
    let Value::Array(items) = v else {
        return Err(SsfError::bad(
            "events_requested must be an array of strings",
        ));
    };
    if items.len() > MAX_EVENTS_REQUESTED {
        return Err(SsfError::bad(format!(
            "events_requested has more than {MAX_EVENTS_REQUESTED} entries"
        )));
    }
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Value::String(s) if s.len() <= MAX_EVENT_URI => {
                if !out.contains(s) {
                    out.push(s.clone());
                }
            }
            Value::String(_) => {
                return Err(SsfError::bad(format!(
                    "an events_requested entry is longer than {MAX_EVENT_URI} bytes"
                )))
            }
            _ => {
                return Err(SsfError::bad(
                    "events_requested must be an array of strings",
                ))
            }
        }
    }
    Ok(Some(out))
}

/// The `delivery` object a receiver sent (absent: poll, as SSF says).
/// Push URLs are checked against the operator's allow-list here and again
/// at each delivery.
pub fn delivery(
    m: &Map<String, Value>,
    allow: &super::push::AllowList,
) -> Result<Option<Delivery>, SsfError> {
    let Some(v) = m.get("delivery") else {
        return Ok(None);
    };
    let Value::Object(d) = v else {
        return Err(SsfError::bad("delivery must be an object"));
    };
    let method = string(d, "method", MAX_EVENT_URI)?
        .ok_or_else(|| SsfError::bad("delivery.method is required"))?;
    match method.as_str() {
        POLL => {
            // The poll URL is the transmitter's: a receiver's is ignored.
            Ok(Some(Delivery {
                method: Method::Poll,
                endpoint_url: String::new(),
                authorization_header: None,
            }))
        }
        PUSH => {
            let url = string(d, "endpoint_url", MAX_URL)?
                .ok_or_else(|| SsfError::bad("delivery.endpoint_url is required for push"))?;
            allow.check_url(&url)?;
            let auth = string(d, "authorization_header", MAX_AUTHORIZATION)?;
            if auth
                .as_deref()
                .is_some_and(|a| http::HeaderValue::from_str(a).is_err())
            {
                return Err(SsfError::bad(
                    "delivery.authorization_header is not a valid header value",
                ));
            }
            Ok(Some(Delivery {
                method: Method::Push,
                endpoint_url: url,
                authorization_header: auth,
            }))
        }
        other => Err(SsfError::bad(format!(
            "delivery.method {other:?} is not supported: use {PUSH} (push) or {POLL} (poll)"
        ))),
    }
}

/// Transmitter-supplied members a receiver may repeat in PATCH or PUT, but
/// only with the values they have.
pub fn check_unchanged(m: &Map<String, Value>, current: &Value) -> Result<(), SsfError> {
    for name in [
        "iss",
        "aud",
        "events_supported",
        "events_delivered",
        "min_verification_interval",
    ] {
        if let Some(sent) = m.get(name) {
            if Some(sent) != current.get(name) {
                return Err(SsfError::bad(format!(
                    "{name} is set by the transmitter and cannot be changed"
                )));
            }
        }
    }
    Ok(())
}

/// A user named by a subject: `email`, `opaque` (a username) or a complex
/// subject's `user` member. `None` for a subject that names no user.
pub fn subject_user(v: &Value) -> Result<String, SsfError> {
    let Value::Object(s) = v else {
        return Err(SsfError::bad("subject must be an object"));
    };
    let format =
        string(s, "format", 64)?.ok_or_else(|| SsfError::bad("subject.format is required"))?;
    let name = match format.as_str() {
        "email" => string(s, "email", 320)?,
        "opaque" => string(s, "id", 320)?,
        "complex" => match s.get("user") {
            Some(u) => return subject_user(u),
            None => return Err(SsfError::bad("a complex subject must name a user")),
        },
        other => {
            return Err(SsfError::bad(format!(
                "subject format {other:?} is not supported: use email, opaque (a username) or complex with a user"
            )))
        }
    };
    let name = name.ok_or_else(|| SsfError::bad("the subject's identifier is missing"))?;
    crate::domain::limits::username("subject", &name).map_err(|e| SsfError::bad(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream() -> Stream {
        Stream {
            id: "s".into(),
            org: Some("acme".into()),
            aud: "a".into(),
            events_requested: vec![
                "urn:unknown".into(),
                super::super::set::SESSION_REVOKED.into(),
            ],
            description: None,
            delivery: Delivery {
                method: Method::Push,
                endpoint_url: "http://127.0.0.1:9/r".into(),
                authorization_header: Some("Bearer hunter2".into()),
            },
            status: Status::Enabled,
            reason: None,
            all_users: true,
            users: BTreeSet::new(),
            position: String::new(),
            acked: BTreeSet::new(),
            pending: Vec::new(),
            last_verification: None,
            last_error: None,
            created_at: 0,
        }
    }

    #[test]
    fn the_configuration_never_shows_the_receivers_secret() {
        let s = stream();
        let shown = s.to_json("https://i", 10).to_string();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_eq!(
            s.to_json("https://i", 10)["events_delivered"],
            json!([super::super::set::SESSION_REVOKED])
        );
    }

    #[test]
    fn subjects_name_users_or_are_refused() {
        assert_eq!(
            subject_user(&json!({"format": "email", "email": "Bob@Example.com"})).unwrap(),
            "bob@example.com"
        );
        assert_eq!(
            subject_user(&json!({"format": "complex", "user": {"format": "opaque", "id": "al"}}))
                .unwrap(),
            "al"
        );
        for bad in [
            json!("x"),
            json!({"format": "phone_number", "phone_number": "+1"}),
            json!({"format": "email"}),
            json!({"format": "complex", "tenant": {"format": "opaque", "id": "o"}}),
        ] {
            assert!(subject_user(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn users_are_chosen_by_inclusion_or_exclusion() {
        let mut s = stream();
        s.users.insert("bob".into());
        assert!(s.wants_user("al") && !s.wants_user("bob"));
        s.all_users = false;
        assert!(!s.wants_user("al") && s.wants_user("bob"));
    }
}
