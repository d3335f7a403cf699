//! What a stream owes its receiver, and the poll endpoint (RFC 8936).
//!
//! A stream's SETs are computed from the feed after its position, never
//! stored: the SET of an event has the same `jti` every time it is made,
//! so a SET sent again (a poll not acknowledged, a push retried after a
//! crash) is recognisably the same. The position advances over an event
//! only once every SET of it was accepted; SETs acknowledged out of order
//! are remembered until the position passes them.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::set;
use super::stream::{self, Method, Status, Stream};
use super::{SsfError, Transmitter};
use crate::domain::{cursor, Error, Revocation};
use crate::sessions::{now_millis, Principal};

/// Most SETs one poll returns.
pub const MAX_EVENTS: usize = 1000;
/// SETs returned when the receiver does not say how many.
const DEFAULT_EVENTS: usize = 100;
/// Most SET ids one poll may acknowledge or report.
const MAX_ACKS: usize = 10_000;
/// Feed events one call reads at most looking for SETs (events of other
/// orgs and users are skipped): the rest waits for the next call.
const MAX_SCAN: usize = 20_000;
const FEED_BATCH: usize = 500;

/// A SET owed to the receiver: its id and claims, or an already signed
/// control SET.
#[derive(Debug, Clone)]
pub enum Owed {
    Event { jti: String, claims: Value },
    Control { jti: String, jwt: String },
}

impl Owed {
    pub fn jti(&self) -> &str {
        match self {
            Owed::Event { jti, .. } | Owed::Control { jti, .. } => jti,
        }
    }
}

/// The SETs a stream owes, oldest first.
#[derive(Debug, Default)]
pub struct Outstanding {
    pub sets: Vec<Owed>,
    /// More are owed than were taken.
    pub more: bool,
    /// How far the feed was read: a long poll waits for events after this
    /// (empty when the stream reads nothing: paused or disabled).
    pub read_to: Vec<(u16, u64)>,
    /// The stream was disabled just now (it fell behind retention): the
    /// caller writes it.
    pub disabled: bool,
}

impl Transmitter {
    /// The SET of one event for `doc`, when the stream carries it.
    fn event_set(&self, doc: &Stream, e: &Revocation) -> Option<Owed> {
        if doc.org.as_ref().is_some_and(|o| *o != e.org) || !doc.wants_user(&e.username) {
            return None;
        }
        if !doc.events_delivered().contains(&set::SESSION_REVOKED) {
            return None;
        }
        let txn = set::txn(e);
        let jti = set::jti(&doc.id, &txn, set::SESSION_REVOKED);
        let claims = set::claims(
            set::Envelope {
                iss: &self.issuer,
                aud: &doc.aud,
                iat: now_millis().div_euclid(1000),
                jti: &jti,
                txn: Some(&txn),
            },
            set::session_subject(e),
            set::SESSION_REVOKED,
            set::session_revoked(e),
        );
        Some(Owed::Event { jti, claims })
    }

    /// Takes up to `max` owed SETs: control SETs first, then (on an enabled
    /// stream) the feed's after the position. Moves the position over every
    /// event whose SET was accepted or that the stream does not carry; a
    /// cursor past retention disables the stream, with its reason.
    pub(super) async fn outstanding(
        &self,
        doc: &mut Stream,
        max: usize,
    ) -> Result<Outstanding, SsfError> {
        let mut out = Outstanding::default();
        for p in &doc.pending {
            if out.sets.len() >= max {
                // Still read on: the position moves over what was accepted.
                out.more = true;
                break;
            }
            out.sets.push(Owed::Control {
                jti: p.jti.clone(),
                jwt: p.jwt.clone(),
            });
        }
        if doc.status != Status::Enabled {
            return Ok(out);
        }
        let feed: &dyn crate::store::FeedStore = self.store();
        let shards = feed.shards();
        let mut positions = cursor::decode(&doc.position, shards)
            .map_err(|e| Error::Internal(format!("stream {} position: {e}", doc.id)))?;
        let mut scanned = 0usize;
        // SET ids accepted out of order that the scan met: the rest of
        // `acked` names nothing still owed (a repeated ack, a subject
        // removed since, a control SET already gone) and is forgotten once
        // the scan reaches the feed's head, so it cannot fill up.
        let mut met: std::collections::HashSet<String> = std::collections::HashSet::new();
        let mut reached_head = true;
        for (shard, position) in positions.iter_mut() {
            let mut read = *position;
            let mut clear = true;
            'shard: loop {
                let batch = match feed.revocations_after(*shard, read, FEED_BATCH).await {
                    Ok(b) => b,
                    Err(Error::CursorExpired { .. }) => {
                        self.fell_behind(doc).await?;
                        return Ok(Outstanding {
                            disabled: true,
                            ..Outstanding::default()
                        });
                    }
                    Err(e) => return Err(e.into()),
                };
                let full = batch.len() == FEED_BATCH;
                for e in &batch {
                    scanned += 1;
                    read = e.sequence;
                    let owed = self.event_set(doc, e);
                    let accepted = owed.as_ref().is_none_or(|o| doc.acked.contains(o.jti()));
                    if accepted && clear {
                        *position = e.sequence;
                        if let Some(o) = &owed {
                            doc.acked.remove(o.jti());
                        }
                        continue;
                    }
                    clear = false;
                    match owed {
                        Some(o) if accepted => {
                            met.insert(o.jti().to_owned());
                        }
                        Some(o) => {
                            if out.sets.len() >= max {
                                out.more = true;
                                reached_head = false;
                                break 'shard;
                            }
                            out.sets.push(o);
                        }
                        None => {}
                    }
                    if scanned >= MAX_SCAN {
                        out.more = true;
                        reached_head = false;
                        break 'shard;
                    }
                }
                if !full || scanned >= MAX_SCAN {
                    out.more |= full;
                    reached_head &= !full;
                    break;
                }
            }
            out.read_to.push((*shard, read));
        }
        doc.position = cursor::encode(shards, &positions);
        if reached_head {
            doc.acked.retain(|j| met.contains(j));
        }
        Ok(out)
    }

    /// A stream whose position fell out of the feed's retention: disabled,
    /// with the reason in its status and a stream-updated SET, never
    /// skipped silently.
    async fn fell_behind(&self, doc: &mut Stream) -> Result<(), SsfError> {
        let reason = "the stream fell behind the revocation feed's retention: events were \
                      purged before they were delivered; re-enable it to continue from now";
        tracing::warn!(stream = %doc.id, "ssf: stream fell behind retention; disabled");
        metrics::counter!("sessiond_ssf_streams_disabled_total", "reason" => "retention")
            .increment(1);
        let head = self.head(doc.org.as_deref()).await?;
        self.apply_status(doc, Status::Disabled, Some(reason.into()), &head)?;
        doc.last_error = Some(reason.into());
        Ok(())
    }

    /// Records SET ids the receiver accepted (or reported an error about:
    /// it has them), so they are not sent again.
    pub(super) fn accept(doc: &mut Stream, jtis: &[String]) {
        for jti in jtis {
            if let Some(i) = doc.pending.iter().position(|p| p.jti == *jti) {
                doc.pending.remove(i);
            } else if doc.acked.len() < stream::MAX_ACKED {
                doc.acked.insert(jti.clone());
            }
        }
    }

    /// Signs the SETs taken.
    pub(super) fn sign(&self, sets: Vec<Owed>) -> Result<Vec<(String, String)>, SsfError> {
        sets.into_iter().map(|o| self.sign_one(o)).collect()
    }

    /// One owed SET, signed: its id and compact JWS.
    pub(super) fn sign_one(&self, o: Owed) -> Result<(String, String), SsfError> {
        match o {
            Owed::Control { jti, jwt } => Ok((jti, jwt)),
            Owed::Event { jti, claims } => Ok((jti, self.keys.sign(&claims)?)),
        }
    }

    /// POST to a stream's poll endpoint.
    pub async fn poll(
        &self,
        who: &Principal,
        id: &str,
        m: &Map<String, Value>,
    ) -> Result<Value, SsfError> {
        let req = PollRequest::parse(m)?;
        let deadline = tokio::time::Instant::now()
            + if req.return_immediately {
                Duration::ZERO
            } else {
                self.settings.long_poll
            };
        let mut acks = req.acks();
        for (jti, (err, description)) in &req.set_errs {
            tracing::warn!(stream = %id, %jti, %err, %description, "ssf: a poll receiver reported a SET error");
            metrics::counter!("sessiond_ssf_set_errors_total", "method" => "poll").increment(1);
        }
        let (_, doc) = self.load(who, id).await?;
        if doc.delivery.method != Method::Poll {
            return Err(SsfError::bad(
                "this stream is delivered by push: it has no poll endpoint",
            ));
        }
        loop {
            let changed = self.changed.notified();
            let mut found = None;
            for _ in 0..16 {
                let (rec, mut doc) = self.load(who, id).await?;
                Self::accept(&mut doc, &acks);
                if let Some((err, _)) = req.set_errs.values().next() {
                    doc.last_error = Some(format!("the receiver reported {err}"));
                }
                let owed = self.outstanding(&mut doc, req.max_events).await?;
                let before: Stream = serde_json::from_str(&rec.body).map_err(|e| {
                    SsfError::from(Error::Internal(format!("stream {id} is unreadable: {e}")))
                })?;
                if doc == before || self.save(&rec, &doc).await?.is_some() {
                    found = Some(owed);
                    break;
                }
            }
            let owed = found.ok_or_else(|| {
                SsfError::from(Error::Unavailable(
                    "the stream is changing too often; retry".into(),
                ))
            })?;
            acks.clear();
            let now = tokio::time::Instant::now();
            if !owed.sets.is_empty() || req.max_events == 0 || now >= deadline {
                metrics::counter!("sessiond_ssf_sets_sent_total", "method" => "poll")
                    .increment(owed.sets.len() as u64);
                let sets: BTreeMap<String, String> = self.sign(owed.sets)?.into_iter().collect();
                return Ok(json!({"sets": sets, "moreAvailable": owed.more}));
            }
            // Nothing owed yet: wait for the feed (or a control SET made in
            // this process), at most until the deadline, re-checking every
            // second for changes made by other replicas.
            let wait = (deadline - now).min(Duration::from_secs(1));
            let feed: &dyn crate::store::FeedStore = self.store();
            tokio::select! {
                r = feed.wait_for_revocation(&owed.read_to, wait), if !owed.read_to.is_empty() => r?,
                // Paused or disabled: nothing to read; management may change it.
                _ = tokio::time::sleep(wait), if owed.read_to.is_empty() => {}
                _ = changed => {}
            }
        }
    }
}

/// A poll request's members (RFC 8936 §2.4).
#[derive(Debug, Default)]
struct PollRequest {
    max_events: usize,
    return_immediately: bool,
    ack: Vec<String>,
    set_errs: BTreeMap<String, (String, String)>,
}

fn jti_of(v: &Value, what: &str) -> Result<String, SsfError> {
    match v {
        Value::String(s) if !s.is_empty() && s.len() <= 256 => Ok(s.clone()),
        _ => Err(SsfError::bad(format!(
            "{what} must hold SET ids (strings of 1 to 256 bytes)"
        ))),
    }
}

impl PollRequest {
    fn parse(m: &Map<String, Value>) -> Result<Self, SsfError> {
        let max_events = match m.get("maxEvents") {
            None | Some(Value::Null) => DEFAULT_EVENTS,
            Some(v) => v
                .as_u64()
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX).min(MAX_EVENTS))
                .ok_or_else(|| SsfError::bad("maxEvents must be a non-negative integer"))?,
        };
        let return_immediately = match m.get("returnImmediately") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(SsfError::bad("returnImmediately must be a boolean")),
        };
        let ack = match m.get("ack") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) if items.len() <= MAX_ACKS => items
                .iter()
                .map(|v| jti_of(v, "ack"))
                .collect::<Result<_, _>>()?,
            Some(Value::Array(_)) => {
                return Err(SsfError::bad(format!(
                    "ack holds more than {MAX_ACKS} SET ids"
                )))
            }
            Some(_) => return Err(SsfError::bad("ack must be an array of SET ids")),
        };
        let mut set_errs = BTreeMap::new();
        match m.get("setErrs") {
            None | Some(Value::Null) => {}
            Some(Value::Object(errs)) if errs.len() <= MAX_ACKS => {
                for (jti, e) in errs {
                    let jti = jti_of(&Value::String(jti.clone()), "setErrs")?;
                    let Value::Object(e) = e else {
                        return Err(SsfError::bad(
                            "each setErrs entry must be an object with err and description",
                        ));
                    };
                    let err = stream::string(e, "err", 64)?
                        .ok_or_else(|| SsfError::bad("a setErrs entry needs err"))?;
                    let description = stream::string(e, "description", 1024)?.unwrap_or_default();
                    set_errs.insert(jti, (err, description));
                }
            }
            Some(_) => {
                return Err(SsfError::bad(format!(
                    "setErrs must be an object of at most {MAX_ACKS} SET ids"
                )))
            }
        }
        Ok(PollRequest {
            max_events,
            return_immediately,
            ack,
            set_errs,
        })
    }

    /// Every SET id the receiver has: acknowledged, or reported.
    fn acks(&self) -> Vec<String> {
        self.ack
            .iter()
            .cloned()
            .chain(self.set_errs.keys().cloned())
            .collect()
    }
}
