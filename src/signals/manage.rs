//! Stream management as SSF specifies it: create, read, update, replace,
//! delete; status; subjects; verification. Every change is a
//! compare-and-set of the stream's document, so two replicas (or a push
//! worker advancing the position) never undo each other's change.
//!
//! Who may manage: the service credential (streams of one org, or of every
//! org) or an admin's `KIND_ADMIN` session (streams of its own org only).
//! Another org's stream is answered 404, exactly like a stream that does
//! not exist.

use std::collections::BTreeSet;

use axum::http::StatusCode;
use serde_json::{json, Map, Value};

use super::set;
use super::stream::{self, Delivery, Method, Status, Stream};
use super::{SsfError, Transmitter};
use crate::domain::{cursor, limits, Error};
use crate::sessions::{now_millis, Principal};
use crate::store::StreamRecord;

/// Longest `state` of a verification request, and `reason` of a status.
const MAX_STATE: usize = 1024;
/// Attempts of one change against concurrent changes of the same stream.
const CAS_TRIES: usize = 16;

fn random_id() -> Result<String, SsfError> {
    let mut b = [0u8; 16];
    getrandom::getrandom(&mut b)
        .map_err(|_| SsfError::from(crate::domain::Error::Internal("no randomness".into())))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

impl Transmitter {
    /// The caller, from `Authorization: Bearer`.
    pub async fn authorize(
        &self,
        token: Option<&str>,
        address: Option<&str>,
    ) -> Result<Principal, SsfError> {
        let Some(token) = token else {
            return Err(SsfError::new(
                StatusCode::UNAUTHORIZED,
                "authentication_failed",
                "send Authorization: Bearer with an admin session token or the service credential",
            ));
        };
        match self.sessions.admin_or_service(Some(token), address).await {
            Ok(p) => Ok(p),
            // A live session that is not an admin's console session is no
            // credential here at all: 401 like any other, as SSF's bearer
            // scheme has only the one kind of token.
            Err(Error::PermissionDenied(_)) => Err(SsfError::new(
                StatusCode::UNAUTHORIZED,
                "authentication_failed",
                "this token is not an admin console session (KIND_ADMIN) or the service credential",
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// The shards a stream of `org` reads.
    pub(super) fn shards_of(&self, org: Option<&str>) -> Vec<u16> {
        let feed: &dyn crate::store::FeedStore = self.store();
        match org {
            Some(o) => vec![feed.shard_of(o)],
            None => (0..feed.shards()).collect(),
        }
    }

    /// The feed cursor of "now" for a stream of `org`.
    pub(super) async fn head(&self, org: Option<&str>) -> Result<String, SsfError> {
        let feed: &dyn crate::store::FeedStore = self.store();
        let mut positions = cursor::Positions::new();
        for shard in self.shards_of(org) {
            positions.insert(shard, feed.last_sequence(shard).await?);
        }
        Ok(cursor::encode(feed.shards(), &positions))
    }

    /// A stream the caller may see, or 404.
    pub(super) async fn load(
        &self,
        who: &Principal,
        id: &str,
    ) -> Result<(StreamRecord, Stream), SsfError> {
        let rec = self
            .store()
            .stream(id)
            .await?
            .ok_or_else(SsfError::not_found)?;
        if let Some(org) = who.org() {
            if rec.org.as_deref() != Some(org) {
                return Err(SsfError::not_found());
            }
        }
        let doc: Stream = serde_json::from_str(&rec.body).map_err(|e| {
            SsfError::from(crate::domain::Error::Internal(format!(
                "stream {id} is unreadable: {e}"
            )))
        })?;
        Ok((rec, doc))
    }

    /// Writes `doc` over `rec` if nobody changed it meanwhile; the record
    /// written, or `None` when another change came first.
    pub(super) async fn save(
        &self,
        rec: &StreamRecord,
        doc: &Stream,
    ) -> Result<Option<StreamRecord>, SsfError> {
        let body = serde_json::to_string(doc)
            .map_err(|e| SsfError::from(crate::domain::Error::Internal(e.to_string())))?;
        let next = StreamRecord {
            id: rec.id.clone(),
            org: rec.org.clone(),
            version: rec.version + 1,
            body,
        };
        let written = self.store().replace_stream(&next, rec.version).await?;
        Ok(written.then_some(next))
    }

    /// Applies `change` to the caller's stream `id` and saves it, again on
    /// a fresh read whenever another change came first.
    pub(super) async fn change<T>(
        &self,
        who: &Principal,
        id: &str,
        mut change: impl FnMut(&mut Stream) -> Result<T, SsfError>,
    ) -> Result<(Stream, T), SsfError> {
        for _ in 0..CAS_TRIES {
            let (rec, mut doc) = self.load(who, id).await?;
            let out = change(&mut doc)?;
            if self.save(&rec, &doc).await?.is_some() {
                self.changed.notify_waiters();
                return Ok((doc, out));
            }
        }
        Err(
            crate::domain::Error::Unavailable("the stream is changing too often; retry".into())
                .into(),
        )
    }

    /// A signed control SET about the stream itself.
    pub(super) fn control_set(
        &self,
        doc: &Stream,
        event: &str,
        payload: Value,
    ) -> Result<(String, String), SsfError> {
        let jti = random_id()?;
        let claims = set::claims(
            set::Envelope {
                iss: &self.issuer,
                aud: &doc.aud,
                iat: now_millis().div_euclid(1000),
                jti: &jti,
                txn: None,
            },
            set::stream_subject(&doc.id),
            event,
            payload,
        );
        let jwt = self.keys.sign(&claims)?;
        Ok((jti, jwt))
    }

    fn config(&self, doc: &Stream) -> Value {
        doc.to_json(
            &self.issuer,
            self.settings.min_verification_interval.as_secs(),
        )
    }

    /// POST: a new stream, 201 with its configuration.
    pub async fn create(&self, who: &Principal, m: &Map<String, Value>) -> Result<Value, SsfError> {
        let org = match (who, m.get("org")) {
            (_, None | Some(Value::Null)) => who.org().map(str::to_owned),
            (_, Some(Value::String(o))) => {
                let o = limits::org(o).map_err(|e| SsfError::bad(e.to_string()))?;
                if who.org().is_some_and(|mine| mine != o) {
                    return Err(SsfError::new(
                        StatusCode::FORBIDDEN,
                        "access_denied",
                        "an admin may create streams of its own organization only",
                    ));
                }
                Some(o)
            }
            _ => return Err(SsfError::bad("org must be a string")),
        };
        let events = stream::events_requested(m)?
            .unwrap_or_else(|| set::SUPPORTED.iter().map(|s| (*s).to_owned()).collect());
        let delivery = stream::delivery(m, &self.settings.push_allow)?.unwrap_or(Delivery {
            method: Method::Poll,
            endpoint_url: String::new(),
            authorization_header: None,
        });
        let all_users = match stream::string(m, "default_subjects", 8)?.as_deref() {
            None | Some("ALL") => true,
            Some("NONE") => false,
            Some(_) => return Err(SsfError::bad("default_subjects must be ALL or NONE")),
        };
        let id = random_id()?;
        let doc = Stream {
            aud: format!("{}/ssf/streams/{id}", self.issuer),
            id: id.clone(),
            org: org.clone(),
            events_requested: events,
            description: stream::string(m, "description", stream::MAX_DESCRIPTION)?,
            delivery,
            status: Status::Enabled,
            reason: None,
            all_users,
            users: BTreeSet::new(),
            position: self.head(org.as_deref()).await?,
            acked: BTreeSet::new(),
            pending: Vec::new(),
            last_verification: None,
            last_error: None,
            created_at: now_millis(),
        };
        let body = serde_json::to_string(&doc)
            .map_err(|e| SsfError::from(crate::domain::Error::Internal(e.to_string())))?;
        let rec = StreamRecord {
            id: id.clone(),
            org: org.clone(),
            version: 1,
            body,
        };
        if !self
            .store()
            .create_stream(&rec, self.settings.max_streams_per_org)
            .await?
        {
            return Err(SsfError::new(
                StatusCode::CONFLICT,
                "too_many_streams",
                format!(
                    "this organization already has {} streams, the most allowed; delete one first",
                    self.settings.max_streams_per_org
                ),
            ));
        }
        tracing::info!(stream = %id, org = org.as_deref().unwrap_or("*"), "ssf: stream created");
        self.changed.notify_waiters();
        Ok(self.config(&doc))
    }

    /// GET: one stream, or the caller's streams as an array.
    pub async fn read(&self, who: &Principal, id: Option<&str>) -> Result<Value, SsfError> {
        if let Some(id) = id {
            let (_, doc) = self.load(who, id).await?;
            return Ok(self.config(&doc));
        }
        let recs = match who.org() {
            Some(org) => self.store().streams(Some(Some(org))).await?,
            None => self.store().streams(None).await?,
        };
        let mut out = Vec::with_capacity(recs.len());
        for rec in recs {
            if let Ok(doc) = serde_json::from_str::<Stream>(&rec.body) {
                out.push(self.config(&doc));
            }
        }
        Ok(Value::Array(out))
    }

    /// PATCH (`replace: false`) or PUT (`replace: true`).
    pub async fn modify(
        &self,
        who: &Principal,
        m: &Map<String, Value>,
        replace: bool,
    ) -> Result<Value, SsfError> {
        let id = stream::stream_id(m)?;
        let events = stream::events_requested(m)?;
        let delivery = stream::delivery(m, &self.settings.push_allow)?;
        let description = stream::string(m, "description", stream::MAX_DESCRIPTION)?;
        let (doc, ()) = self
            .change(who, &id, |doc| {
                stream::check_unchanged(m, &self.config(doc))?;
                if replace {
                    doc.events_requested = events.clone().unwrap_or_default();
                    doc.description = description.clone();
                    doc.delivery = delivery.clone().unwrap_or(Delivery {
                        method: Method::Poll,
                        endpoint_url: String::new(),
                        authorization_header: None,
                    });
                } else {
                    if let Some(e) = &events {
                        doc.events_requested = e.clone();
                    }
                    if m.contains_key("description") {
                        doc.description = description.clone();
                    }
                    if let Some(d) = &delivery {
                        doc.delivery = d.clone();
                    }
                }
                Ok(())
            })
            .await?;
        Ok(self.config(&doc))
    }

    /// DELETE: the stream, its position and its lease.
    pub async fn delete(&self, who: &Principal, id: &str) -> Result<(), SsfError> {
        self.load(who, id).await?;
        if !self.store().delete_stream(id).await? {
            return Err(SsfError::not_found());
        }
        tracing::info!(stream = %id, "ssf: stream deleted");
        self.changed.notify_waiters();
        Ok(())
    }

    /// GET status.
    pub async fn status(&self, who: &Principal, id: &str) -> Result<Value, SsfError> {
        let (_, doc) = self.load(who, id).await?;
        Ok(doc.status_json())
    }

    /// POST status: enabled, paused (events held, delivered on resume) or
    /// disabled (events not held). The receiver gets a stream-updated SET.
    pub async fn set_status(
        &self,
        who: &Principal,
        m: &Map<String, Value>,
    ) -> Result<Value, SsfError> {
        let id = stream::stream_id(m)?;
        let status =
            stream::string(m, "status", 16)?.ok_or_else(|| SsfError::bad("status is required"))?;
        let status = Status::parse(&status)
            .ok_or_else(|| SsfError::bad("status must be enabled, paused or disabled"))?;
        let reason = stream::string(m, "reason", MAX_STATE)?;
        let head = self.head_for(who, &id).await?;
        let (doc, ()) = self
            .change(who, &id, |doc| {
                self.apply_status(doc, status, reason.clone(), &head)
            })
            .await?;
        tracing::info!(stream = %id, status = status.as_str(), "ssf: stream status set");
        Ok(doc.status_json())
    }

    async fn head_for(&self, who: &Principal, id: &str) -> Result<String, SsfError> {
        let (_, doc) = self.load(who, id).await?;
        self.head(doc.org.as_deref()).await
    }

    /// Moves a stream to `status`, queueing the stream-updated SET. A
    /// disabled stream held nothing: it resumes from `head`.
    pub(super) fn apply_status(
        &self,
        doc: &mut Stream,
        status: Status,
        reason: Option<String>,
        head: &str,
    ) -> Result<(), SsfError> {
        if doc.status == Status::Disabled && status != Status::Disabled {
            doc.position = head.to_owned();
            doc.acked.clear();
        }
        let mut payload = json!({"status": status.as_str()});
        if let (Some(r), Some(map)) = (&reason, payload.as_object_mut()) {
            map.insert("reason".into(), Value::String(r.clone()));
        }
        let (jti, jwt) = self.control_set(doc, set::STREAM_UPDATED, payload)?;
        doc.queue(jti, jwt);
        doc.status = status;
        doc.reason = reason;
        Ok(())
    }

    /// POST add subject: the user's events are carried from now on.
    pub async fn add_subject(
        &self,
        who: &Principal,
        m: &Map<String, Value>,
    ) -> Result<(), SsfError> {
        self.subject(who, m, true).await
    }

    /// POST remove subject.
    pub async fn remove_subject(
        &self,
        who: &Principal,
        m: &Map<String, Value>,
    ) -> Result<(), SsfError> {
        self.subject(who, m, false).await
    }

    async fn subject(
        &self,
        who: &Principal,
        m: &Map<String, Value>,
        add: bool,
    ) -> Result<(), SsfError> {
        let id = stream::stream_id(m)?;
        let user = stream::subject_user(
            m.get("subject")
                .ok_or_else(|| SsfError::bad("subject is required"))?,
        )?;
        if let Some(v) = m.get("verified") {
            if !v.is_boolean() {
                return Err(SsfError::bad("verified must be a boolean"));
            }
        }
        self.change(who, &id, |doc| {
            // On an all-users stream the list names who is left out; on
            // the others, who is carried.
            let listed = add != doc.all_users;
            if listed {
                if !doc.users.contains(&user) && doc.users.len() >= stream::MAX_SUBJECTS {
                    return Err(SsfError::bad(format!(
                        "a stream names at most {} subjects",
                        stream::MAX_SUBJECTS
                    )));
                }
                doc.users.insert(user.clone());
            } else {
                doc.users.remove(&user);
            }
            Ok(())
        })
        .await?;
        Ok(())
    }

    /// POST verification: 204, then a verification SET carrying `state`;
    /// at most once per `min_verification_interval` (429 otherwise).
    pub async fn verify(&self, who: &Principal, m: &Map<String, Value>) -> Result<(), SsfError> {
        let id = stream::stream_id(m)?;
        let state = stream::string(m, "state", MAX_STATE)?;
        let every = self.settings.min_verification_interval;
        let every_ms = i64::try_from(every.as_millis()).unwrap_or(i64::MAX);
        self.change(who, &id, |doc| {
            let now = now_millis();
            if let Some(last) = doc.last_verification {
                let left = last.saturating_add(every_ms).saturating_sub(now);
                if left > 0 {
                    return Err(SsfError {
                        retry_after: Some(std::time::Duration::from_millis(
                            u64::try_from(left).unwrap_or(0),
                        )),
                        ..SsfError::new(
                            StatusCode::TOO_MANY_REQUESTS,
                            "too_many_requests",
                            format!(
                                "at most one verification per {} s (min_verification_interval)",
                                every.as_secs()
                            ),
                        )
                    });
                }
            }
            let payload = match &state {
                Some(s) => json!({"state": s}),
                None => json!({}),
            };
            let (jti, jwt) = self.control_set(doc, set::VERIFICATION, payload)?;
            doc.queue(jti, jwt);
            doc.last_verification = Some(now);
            Ok(())
        })
        .await?;
        Ok(())
    }
}
