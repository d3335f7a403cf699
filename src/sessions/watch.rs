//! WatchRevocations: who may watch, where a watch starts, and the loop
//! that streams the revocation feed to one watcher.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::Sessions;
use crate::domain::cursor;
use crate::domain::{limits, policy, AuthFailure, Error, Kind, Millis, Result, Revocation, Role};

/// What a watcher asked for.
#[derive(Debug, Clone, Default)]
pub struct WatchRequest {
    /// Replay events after this sequence first (one event log only).
    pub after: Option<u64>,
    /// Replay events after this cursor first; neither: from now on.
    pub after_cursor: Option<String>,
    pub org: Option<String>,
    /// Empty: every kind.
    pub kinds: Vec<Kind>,
    /// The caller's address, for throttling wrong credentials.
    pub address: Option<String>,
    /// Send a heartbeat at least this often (none when `None`).
    pub heartbeat: Option<Duration>,
}

/// Heartbeat intervals a watcher may ask for: fast enough for a validator's
/// staleness bound of a few hundred milliseconds, slow enough that a
/// heartbeat's store read per shard stays cheap.
pub const HEARTBEAT_MIN: Duration = Duration::from_millis(100);
pub const HEARTBEAT_MAX: Duration = Duration::from_secs(60);

/// What a watch stream carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchItem {
    Event(Revocation),
    /// Every event of the watch up to `cursor` has been sent, as read from
    /// every shard it covers at `at`.
    Heartbeat {
        cursor: String,
        at: Millis,
    },
}

/// An authorized watch, ready to run.
#[derive(Debug)]
pub struct Watch {
    /// The admin session (token, id), re-checked while the stream is open;
    /// `None` for the service credential.
    admin: Option<(String, i32)>,
    org: Option<String>,
    kinds: Vec<Kind>,
    /// The last sequence delivered from each shard the watch reads.
    positions: cursor::Positions,
    heartbeat: Option<Duration>,
    /// Counts this stream against its principal's cap until dropped.
    _slot: WatchSlot,
}

/// One open watch stream of one principal; gives its place back when the
/// stream ends (the watch is dropped).
#[derive(Debug)]
struct WatchSlot {
    principal: String,
    open: Arc<std::sync::Mutex<HashMap<String, usize>>>,
}

impl WatchSlot {
    fn take(
        open: &Arc<std::sync::Mutex<HashMap<String, usize>>>,
        principal: String,
        max: usize,
    ) -> Result<Self> {
        let mut map = open.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(principal.clone()).or_insert(0);
        if *n >= max.max(1) {
            return Err(Error::Overloaded);
        }
        *n += 1;
        Ok(WatchSlot {
            principal,
            open: open.clone(),
        })
    }
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut map = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.principal) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.principal);
            }
        }
    }
}

impl Watch {
    fn wants(&self, e: &Revocation) -> bool {
        self.org.as_ref().is_none_or(|o| *o == e.org)
            && (self.kinds.is_empty() || self.kinds.contains(&e.kind))
    }
}

/// Events read from the store per query while catching up.
const WATCH_BATCH: usize = 500;
/// How long a watcher sleeps between checks when nothing happens; an admin
/// watcher's own session is re-checked at this pace too.
const WATCH_RECHECK: Duration = Duration::from_secs(5);

impl Sessions {
    /// Authorizes a watcher and fixes its starting point. Errors here are the
    /// RPC's status; nothing has been streamed yet.
    pub async fn start_watch(&self, token: Option<&str>, req: WatchRequest) -> Result<Watch> {
        let org = req.org.as_deref().map(limits::org).transpose()?;
        if let Some(every) = req.heartbeat {
            if !(HEARTBEAT_MIN..=HEARTBEAT_MAX).contains(&every) {
                return Err(Error::invalid(
                    "heartbeat_ms",
                    format!(
                        "from {} to {} (or 0: no heartbeats)",
                        HEARTBEAT_MIN.as_millis(),
                        HEARTBEAT_MAX.as_millis()
                    ),
                ));
            }
        }
        if let Some(address) = req.address.as_deref() {
            self.throttle.check_address(address)?;
        }
        let is_service = match (token, &self.policy.service_credential) {
            (Some(t), Some(cred)) => cred.matches(t),
            _ => false,
        };
        let (admin, org, principal) = if is_service {
            (None, org, "service".to_owned())
        } else {
            let caller = match self.session_of(token).await {
                Ok(c) => c,
                Err(e) => {
                    // Guessing the service credential is throttled per address.
                    self.throttle.record_failure(None, req.address.as_deref());
                    return Err(e);
                }
            };
            if caller.role != Role::Admin {
                return Err(Error::PermissionDenied(
                    "only admins (or the service credential) may watch revocations",
                ));
            }
            policy::may_list(&caller)?;
            if org.as_ref().is_some_and(|o| *o != caller.org) {
                return Err(Error::PermissionDenied(
                    "an admin may watch its own organization only",
                ));
            }
            let token = token.map(str::to_owned).unwrap_or_default();
            let principal = format!("user:{}", caller.user_id);
            (Some((token, caller.id)), Some(caller.org), principal)
        };
        let shards: Vec<u16> = match &org {
            Some(o) => vec![self.feed().shard_of(o)],
            None => (0..self.feed().shards()).collect(),
        };
        let positions = self.start_positions(&shards, &req).await?;
        let _slot = WatchSlot::take(
            &self.watchers,
            principal,
            self.policy.max_watches_per_principal,
        )?;
        Ok(Watch {
            admin,
            org,
            kinds: req.kinds,
            positions,
            heartbeat: req.heartbeat,
            _slot,
        })
    }

    /// Where a watch over `shards` starts: the request's cursor or sequence,
    /// checked against the store now (not mid-stream), or the newest events.
    async fn start_positions(
        &self,
        shards: &[u16],
        req: &WatchRequest,
    ) -> Result<cursor::Positions> {
        let given = match (&req.after_cursor, req.after) {
            (Some(_), Some(_)) => {
                return Err(Error::invalid(
                    "after_cursor",
                    "give after_cursor or after_sequence, not both",
                ))
            }
            (Some(c), None) => Some(cursor::decode(c, self.feed().shards())?),
            (None, Some(seq)) if shards.len() == 1 => Some([(shards[0], seq)].into()),
            (None, Some(_)) => {
                return Err(Error::invalid(
                    "after_sequence",
                    "this watch reads several event logs: resume with after_cursor",
                ))
            }
            (None, None) => None,
        };
        let field = if req.after_cursor.is_some() {
            "after_cursor"
        } else {
            "after_sequence"
        };
        let mut positions = cursor::Positions::new();
        for &shard in shards {
            let last = self.feed().last_sequence(shard).await?;
            let Some(given) = &given else {
                positions.insert(shard, last);
                continue;
            };
            let after = *given.get(&shard).ok_or_else(|| {
                Error::invalid(
                    field,
                    "the cursor does not cover this watch's organizations",
                )
            })?;
            if after > last {
                // The newest sequence may be shared with other orgs: not told.
                return Err(Error::invalid(
                    field,
                    format!("{after} is ahead of the newest event"),
                ));
            }
            // Fails now when the cursor is past retention.
            self.feed().revocations_after(shard, after, 1).await?;
            positions.insert(shard, after);
        }
        Ok(positions)
    }

    /// Sends the events after the watch's positions (of the shards in
    /// `only`, or all); `Ok(true)` when a shard had a full batch (more to
    /// read at once), `Err(())` when the stream is over.
    async fn deliver(
        &self,
        watch: &mut Watch,
        out: &mpsc::Sender<Result<WatchItem>>,
        only: Option<Vec<u16>>,
    ) -> std::result::Result<bool, ()> {
        let shards: Vec<(u16, u64)> = watch
            .positions
            .iter()
            .filter(|(s, _)| only.as_ref().is_none_or(|o| o.contains(s)))
            .map(|(s, q)| (*s, *q))
            .collect();
        let mut full = false;
        for (shard, after) in shards {
            let batch = match self
                .feed()
                .revocations_after(shard, after, WATCH_BATCH)
                .await
            {
                Ok(b) => b,
                Err(e) => {
                    let _ = out.send(Err(e)).await;
                    return Err(());
                }
            };
            full |= batch.len() == WATCH_BATCH;
            for mut event in batch {
                watch.positions.insert(shard, event.sequence);
                event.cursor = cursor::encode(self.feed().shards(), &watch.positions);
                // The watcher's own admin session ended: this is its last event.
                let own_end = watch
                    .admin
                    .as_ref()
                    .is_some_and(|(_, id)| *id == event.session_id);
                if watch.wants(&event) && out.send(Ok(WatchItem::Event(event))).await.is_err() {
                    return Err(());
                }
                if own_end {
                    let _ = out
                        .send(Err(Error::Unauthenticated(AuthFailure::TokenInvalid)))
                        .await;
                    return Err(());
                }
            }
        }
        Ok(full)
    }

    /// Streams the watch's events into `out` until the receiver goes away,
    /// `shutdown` turns true, the store fails, or an admin watcher's session
    /// ends. Each event is sent once, in order within its shard. A watch
    /// that asked for heartbeats gets one as soon as it is caught up, then
    /// one per interval, each after a read of every shard it covers.
    pub async fn run_watch(
        &self,
        mut watch: Watch,
        out: mpsc::Sender<Result<WatchItem>>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut checked = tokio::time::Instant::now();
        let mut only: Option<Vec<u16>> = None;
        // A heartbeat is due at once: it tells the watcher where it starts.
        let mut beat_due = tokio::time::Instant::now();
        loop {
            if *shutdown.borrow() {
                let _ = out
                    .send(Err(Error::Unavailable("server shutting down".into())))
                    .await;
                return;
            }
            let beat = watch
                .heartbeat
                .filter(|_| tokio::time::Instant::now() >= beat_due);
            // A heartbeat speaks for every shard of the watch: read them all.
            let read = if beat.is_some() { None } else { only.take() };
            let read_at = super::now_millis();
            match self.deliver(&mut watch, &out, read).await {
                Err(()) => return,
                Ok(true) => continue,
                Ok(false) => {}
            }
            if let Some(every) = beat {
                let cursor = cursor::encode(self.feed().shards(), &watch.positions);
                let item = WatchItem::Heartbeat {
                    cursor,
                    at: read_at,
                };
                if out.send(Ok(item)).await.is_err() {
                    return;
                }
                beat_due = tokio::time::Instant::now() + every;
            }
            if let Some((token, _)) = &watch.admin {
                if checked.elapsed() >= WATCH_RECHECK {
                    checked = tokio::time::Instant::now();
                    if let Err(e) = self.session_of(Some(token)).await {
                        let _ = out.send(Err(e)).await;
                        return;
                    }
                }
            }
            let after: Vec<(u16, u64)> = watch.positions.iter().map(|(s, q)| (*s, *q)).collect();
            let wait = match watch.heartbeat {
                Some(_) => WATCH_RECHECK
                    .min(beat_due.saturating_duration_since(tokio::time::Instant::now())),
                None => WATCH_RECHECK,
            };
            tokio::select! {
                woke = self.feed().wait_for_revocation(&after, wait) => {
                    if let Err(e) = woke {
                        let _ = out.send(Err(e)).await;
                        return;
                    }
                    only = self.feed().fresh_shards(&after);
                }
                _ = out.closed() => return,
                changed = shutdown.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
        }
    }
}
