//! Follows the upstream's revocation feed: every ending drops its session
//! from the cache, every heartbeat confirms the position, and the watch is
//! resumed by cursor after any break; a cursor upstream no longer keeps
//! empties the cache and starts over from now. Also the reporter: each
//! change of state logged once, and the counts exported as metrics.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::Code;

use super::{FeedState, Shared};
use crate::pb;

const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

pub(super) async fn follow(shared: Arc<Shared>) {
    let heartbeat = shared.config.heartbeat();
    let heartbeat_ms = u32::try_from(heartbeat.as_millis()).unwrap_or(60_000);
    // A watch silent for this long is broken, whatever TCP says.
    let silence = heartbeat * 3;
    let mut cursor: Option<String> = None;
    let mut backoff = BACKOFF_MIN;
    // The smallest (local wall clock - heartbeat's `at`) seen: transit time
    // plus clock skew. What a heartbeat exceeds it by is how late it came
    // (queued behind events, buffered by a proxy).
    let mut min_offset: Option<i64> = None;
    loop {
        let req = pb::WatchRevocationsRequest {
            org: shared
                .config
                .credential
                .org()
                .unwrap_or_default()
                .to_owned(),
            after_cursor: cursor.clone().unwrap_or_default(),
            heartbeat_ms,
            ..Default::default()
        };
        match shared.upstream.watch(req).await {
            Ok(mut stream) => {
                if cursor.is_none() {
                    // Answers read before this watch began may predate an
                    // ending it will never send: none of them is kept.
                    shared.cache.reset(false);
                }
                loop {
                    match tokio::time::timeout(silence, stream.message()).await {
                        Ok(Ok(Some(msg))) => {
                            let at = Instant::now();
                            if let Some(r) = msg.revocation {
                                shared.cache.revoke(r.session_id, at);
                                shared.counters.feed_events.fetch_add(1, Ordering::Relaxed);
                                cursor = Some(r.cursor).filter(|c| !c.is_empty());
                            } else if let Some(h) = msg.heartbeat {
                                cursor = Some(h.cursor).filter(|c| !c.is_empty());
                                if cursor.is_none() {
                                    // No position to resume from: start over.
                                    break;
                                }
                                let offset = super::now_millis()
                                    - h.at.as_ref().map_or(0, |t| {
                                        t.seconds.saturating_mul(1000)
                                            + i64::from(t.nanos / 1_000_000)
                                    });
                                let least = *min_offset.get_or_insert(offset);
                                min_offset = Some(least.min(offset));
                                let lag = Duration::from_millis(
                                    u64::try_from(offset - least.min(offset)).unwrap_or(0),
                                );
                                shared.cache.follow();
                                shared.confirm(at, lag);
                                backoff = BACKOFF_MIN;
                            }
                        }
                        Ok(Ok(None)) => {
                            tracing::info!("revocation feed: upstream ended the watch; resuming");
                            break;
                        }
                        Ok(Err(status)) => {
                            lost_or_broken(&shared, &status, &mut cursor);
                            break;
                        }
                        Err(_) => {
                            tracing::warn!(
                                silent_ms = silence.as_millis() as u64,
                                "revocation feed: no heartbeat; reconnecting"
                            );
                            break;
                        }
                    }
                }
            }
            Err(status) => lost_or_broken(&shared, &status, &mut cursor),
        }
        tokio::time::sleep(jitter(backoff)).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// A failed watch: a lost position resets; a refused credential is said
/// loudly (until it changes, every validation asks upstream).
fn lost_or_broken(shared: &Shared, status: &tonic::Status, cursor: &mut Option<String>) {
    match status.code() {
        Code::OutOfRange => {
            tracing::warn!(
                "revocation feed: position out of upstream retention; cache emptied, watching from now"
            );
            shared.cache.reset(false);
            shared.counters.feed_resets.fetch_add(1, Ordering::Relaxed);
            *cursor = None;
        }
        Code::Unauthenticated | Code::PermissionDenied => {
            tracing::error!(
                code = ?status.code(),
                message = status.message(),
                "revocation feed: upstream refused the credential; every validation goes upstream"
            );
        }
        Code::InvalidArgument => {
            // A cursor upstream cannot read (another store): start over.
            tracing::warn!(
                message = status.message(),
                "revocation feed: upstream refused the position; cache emptied, watching from now"
            );
            shared.cache.reset(false);
            shared.counters.feed_resets.fetch_add(1, Ordering::Relaxed);
            *cursor = None;
        }
        _ => tracing::debug!(code = ?status.code(), "revocation feed: watch failed; retrying"),
    }
}

/// Between half and all of `d`, so many validators do not reconnect at once.
fn jitter(d: Duration) -> Duration {
    let mut b = [0u8; 2];
    let r = getrandom::getrandom(&mut b).map_or(0, |_| u16::from_be_bytes(b));
    d / 2 + d.mul_f64(f64::from(r) / f64::from(u16::MAX) / 2.0)
}

/// Logs each change of state once and keeps the metrics current.
pub(super) async fn report(shared: Arc<Shared>) {
    let mut last: Option<FeedState> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tick.tick().await;
        let state = shared.state_at(Instant::now());
        if last != Some(state) {
            match state {
                FeedState::Starting => tracing::info!("validator: starting; every validation asks upstream"),
                FeedState::Fresh => tracing::info!("validator: feed fresh; answering from memory"),
                FeedState::Stale => tracing::warn!(
                    max_staleness_ms = shared.config.max_staleness.as_millis() as u64,
                    "validator: feed stale; every validation asks upstream, UNAVAILABLE if it cannot answer"
                ),
            }
            for s in [FeedState::Starting, FeedState::Fresh, FeedState::Stale] {
                metrics::gauge!("sessiond_validator_state", "state" => s.as_str())
                    .set(if s == state { 1.0 } else { 0.0 });
            }
            if last.is_some() {
                metrics::counter!("sessiond_validator_state_changes_total", "to" => state.as_str())
                    .increment(1);
            }
            last = Some(state);
        }
        let s = shared.stats();
        for (name, v) in [
            ("from_memory", s.from_memory),
            ("refused_locally", s.refused_locally),
            ("from_upstream", s.from_upstream),
            ("unavailable", s.unavailable),
        ] {
            metrics::counter!("sessiond_validator_answers_total", "source" => name).absolute(v);
        }
        metrics::counter!("sessiond_validator_upstream_calls_total", "purpose" => "validate")
            .absolute(s.upstream_calls);
        metrics::counter!("sessiond_validator_upstream_calls_total", "purpose" => "touch")
            .absolute(s.touches);
        metrics::counter!("sessiond_validator_feed_events_total").absolute(s.feed_events);
        metrics::counter!("sessiond_validator_feed_resets_total").absolute(s.feed_resets);
        metrics::gauge!("sessiond_validator_cache_entries").set(s.entries as f64);
        metrics::gauge!("sessiond_validator_cache_bytes").set(s.bytes as f64);
    }
}
