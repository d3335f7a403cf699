//! The in-process validator: answers `ValidateSession` next to the service
//! that needs it, from memory, and still refuses an ended session within
//! milliseconds of the ending.
//!
//! It learns sessions from upstream `ValidateSession` answers, keeps them
//! (bounded, keyed by the token's digest, never by the token), follows the
//! upstream's `WatchRevocations` feed to drop each ended session (resuming
//! by cursor after any reconnection), enforces each session's absolute
//! deadline and asks upstream again past its idle one, and tells upstream of
//! use at most once per touch interval per session, off the request path.
//!
//! **Staleness and failing closed.** The feed's heartbeats confirm its
//! position. Once the last confirmation is older than
//! [`ValidatorConfig::max_staleness`], nothing is answered from memory:
//! every call asks upstream, and when upstream cannot answer either the
//! answer is `UNAVAILABLE`, never valid. A feed position that fell out of
//! upstream retention empties the cache. It heals by itself when upstream
//! returns.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use sessiond::validator::{Credential, Validator, ValidatorConfig};
//!
//! let config = ValidatorConfig::new(
//!     "http://127.0.0.1:50051",
//!     Credential::service(std::env::var("SESSIOND_SERVICE_CREDENTIAL")?),
//! );
//! let validator = Validator::start(config)?;
//! match validator.validate("the token a request carried").await {
//!     Ok(session) => println!("{} of {}", session.user, session.org),
//!     Err(status) => println!("refused: {}", status.message()),
//! }
//! # Ok(())
//! # }
//! ```
//!
//! `examples/validate.rs` is the same as a program.

mod cache;
mod follower;
mod upstream;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{OnceCell, Semaphore};
use tokio::task::JoinHandle;
use tonic::Status;

pub use cache::entry_bytes;
use cache::{Admit, Bounds, Cache, Lookup};

use crate::domain::{AuthFailure, Error, Millis, Token, TokenDigest};
use crate::grpc::status::to_status;
use crate::pb;

/// How the validator authenticates its watch of the feed.
#[derive(Clone)]
pub enum Credential {
    /// The upstream's service credential: the feed of every org.
    Service(String),
    /// An admin session's token: the feed of its org only; sessions of
    /// other orgs are then answered by upstream each time, never kept.
    Admin { token: String, org: String },
}

impl Credential {
    pub fn service(secret: impl Into<String>) -> Self {
        Credential::Service(secret.into())
    }

    pub fn admin(token: impl Into<String>, org: impl Into<String>) -> Self {
        Credential::Admin {
            token: token.into(),
            org: org.into(),
        }
    }

    fn secret(&self) -> &str {
        match self {
            Credential::Service(s) => s,
            Credential::Admin { token, .. } => token,
        }
    }

    fn org(&self) -> Option<&str> {
        match self {
            Credential::Service(_) => None,
            Credential::Admin { org, .. } => Some(org),
        }
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Service(_) => f.write_str("Service(<redacted>)"),
            Credential::Admin { org, .. } => {
                write!(f, "Admin {{ org: {org:?}, token: <redacted> }}")
            }
        }
    }
}

/// What a validator needs; [`ValidatorConfig::new`] fills in the defaults.
#[derive(Debug, Clone)]
pub struct ValidatorConfig {
    /// The sessiond gRPC endpoint (`http://` or `https://`).
    pub upstream: String,
    /// The CA certificate (PEM) an `https://` upstream must chain to.
    pub upstream_ca: Option<Vec<u8>>,
    pub credential: Credential,
    /// Past this age of the feed's last confirmed position, nothing is
    /// answered from memory (default 1 s).
    pub max_staleness: Duration,
    /// Use of a session is told upstream at most this often (default 30 s;
    /// at least twice per idle period in any case).
    pub touch_interval: Duration,
    /// Sessions kept at most (default 100,000).
    pub max_entries: usize,
    /// Bytes of kept sessions at most (default 64 MiB).
    pub max_bytes: usize,
    /// How long an upstream refusal of a token is remembered (default 1 s).
    pub refusal_ttl: Duration,
    /// Upstream calls in flight at most; past it a validation that would
    /// need one answers UNAVAILABLE at once (default 64).
    pub max_upstream_calls: usize,
    /// An upstream call that takes longer fails UNAVAILABLE (default 2 s).
    pub call_timeout: Duration,
}

impl ValidatorConfig {
    pub fn new(upstream: impl Into<String>, credential: Credential) -> Self {
        ValidatorConfig {
            upstream: upstream.into(),
            upstream_ca: None,
            credential,
            max_staleness: Duration::from_millis(1000),
            touch_interval: Duration::from_secs(30),
            max_entries: 100_000,
            max_bytes: 64 << 20,
            refusal_ttl: Duration::from_secs(1),
            max_upstream_calls: 64,
            call_timeout: Duration::from_secs(2),
        }
    }

    /// The heartbeat interval asked of the feed: four per staleness bound,
    /// within what upstream accepts.
    fn heartbeat(&self) -> Duration {
        (self.max_staleness / 4).clamp(Duration::from_millis(100), Duration::from_secs(60))
    }
}

/// Why a validator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(String),
}

/// How fresh the validator's knowledge of endings is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedState {
    /// No position confirmed yet: every call asks upstream.
    Starting,
    /// Confirmed within the staleness bound: answers come from memory.
    Fresh,
    /// The last confirmation is too old: every call asks upstream.
    Stale,
}

impl FeedState {
    pub fn as_str(self) -> &'static str {
        match self {
            FeedState::Starting => "starting",
            FeedState::Fresh => "fresh",
            FeedState::Stale => "stale",
        }
    }
}

/// Counts since start.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    /// Answered from memory (valid).
    pub from_memory: u64,
    /// Refused without asking upstream (malformed, remembered, ended, past
    /// deadline).
    pub refused_locally: u64,
    /// Answered by an upstream call.
    pub from_upstream: u64,
    /// Answered UNAVAILABLE by the validator itself (upstream unreachable,
    /// the concurrency limit).
    pub unavailable: u64,
    /// Upstream ValidateSession calls made to answer a validation.
    pub upstream_calls: u64,
    /// Upstream ValidateSession calls made to tell use (touches).
    pub touches: u64,
    /// Endings received from the feed.
    pub feed_events: u64,
    /// Times the cache was emptied because the feed position was lost.
    pub feed_resets: u64,
    /// Sessions kept now, and their bytes.
    pub entries: usize,
    pub bytes: usize,
}

#[derive(Default)]
struct Counters {
    from_memory: AtomicU64,
    refused_locally: AtomicU64,
    from_upstream: AtomicU64,
    unavailable: AtomicU64,
    upstream_calls: AtomicU64,
    touches: AtomicU64,
    feed_events: AtomicU64,
    feed_resets: AtomicU64,
}

type Answer = Result<pb::Session, Status>;

struct Shared {
    config: ValidatorConfig,
    cache: Cache,
    upstream: upstream::Upstream,
    calls: Arc<Semaphore>,
    /// Touches have their own, smaller budget: they never take the upstream
    /// calls a validation needs.
    touches: Arc<Semaphore>,
    /// Validations of one digest waiting on one upstream call.
    in_flight: Mutex<HashMap<TokenDigest, Arc<OnceCell<Answer>>>>,
    /// Nanoseconds after `epoch` of the last confirmed feed position; 0: none yet.
    confirmed: AtomicU64,
    epoch: Instant,
    counters: Counters,
}

/// A validator: cheap to clone; the feed is followed while any clone lives.
#[derive(Clone)]
pub struct Validator {
    shared: Arc<Shared>,
    _tasks: Arc<Tasks>,
}

struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

impl fmt::Debug for Validator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Validator")
            .field("upstream", &self.shared.config.upstream)
            .field("state", &self.state())
            .finish()
    }
}

/// Takes a digest's shared call out of the map when a validation waiting on
/// it is done, unless another call already replaced it.
struct Leave<'a> {
    map: &'a Mutex<HashMap<TokenDigest, Arc<OnceCell<Answer>>>>,
    digest: TokenDigest,
    cell: &'a Arc<OnceCell<Answer>>,
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map
            .get(&self.digest)
            .is_some_and(|c| Arc::ptr_eq(c, self.cell))
        {
            map.remove(&self.digest);
        }
    }
}

/// The answer sessiond gives for an unknown, ended or expired token.
fn token_invalid() -> Status {
    to_status(Error::Unauthenticated(AuthFailure::TokenInvalid))
}

fn unavailable(why: &str) -> Status {
    to_status(Error::Unavailable(why.to_owned()))
}

fn now_millis() -> Millis {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| {
        Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX)
    })
}

impl Validator {
    /// Starts following the upstream's feed (on the current tokio runtime)
    /// and returns at once; until the feed's position is confirmed, every
    /// validation asks upstream.
    pub fn start(config: ValidatorConfig) -> Result<Validator, StartError> {
        if config.max_staleness < Duration::from_millis(200) {
            return Err(StartError::Config(
                "max staleness must be at least 200 ms (two of the shortest heartbeat interval upstream sends)"
                    .into(),
            ));
        }
        if config.touch_interval > Duration::from_secs(86_400) || config.touch_interval.is_zero() {
            return Err(StartError::Config(
                "the touch interval must be from 1 ms to one day".into(),
            ));
        }
        if config.max_entries == 0 || config.max_bytes == 0 || config.max_upstream_calls == 0 {
            return Err(StartError::Config(
                "cache entries, cache bytes and upstream calls must be above 0".into(),
            ));
        }
        let upstream = upstream::Upstream::new(&config).map_err(StartError::Config)?;
        let bounds = Bounds {
            max_entries: config.max_entries,
            max_bytes: config.max_bytes,
            // Longer than any call in flight can take, with room for clocks.
            tombstone_ttl: config.call_timeout * 2 + Duration::from_secs(5),
            max_tombstones: 1 << 20,
            refusal_ttl: config.refusal_ttl,
            max_refusals: 10_000,
            touch_interval: config.touch_interval,
        };
        let shared = Arc::new(Shared {
            cache: Cache::new(bounds),
            calls: Arc::new(Semaphore::new(config.max_upstream_calls)),
            touches: Arc::new(Semaphore::new((config.max_upstream_calls / 4).max(1))),
            in_flight: Mutex::new(HashMap::new()),
            confirmed: AtomicU64::new(0),
            epoch: Instant::now(),
            counters: Counters::default(),
            upstream,
            config,
        });
        let tasks = vec![
            tokio::spawn(follower::follow(shared.clone())),
            tokio::spawn(follower::report(shared.clone())),
        ];
        Ok(Validator {
            shared,
            _tasks: Arc::new(Tasks(tasks)),
        })
    }

    /// The live session behind `token`, with the same errors sessiond
    /// answers (UNAUTHENTICATED `TOKEN_MISSING`/`TOKEN_INVALID`, ...), or
    /// UNAVAILABLE when neither memory nor upstream can say.
    pub async fn validate(&self, token: &str) -> Result<pb::Session, Status> {
        let s = &self.shared;
        if token.is_empty() {
            s.counters.refused_locally.fetch_add(1, Ordering::Relaxed);
            return Err(to_status(Error::Unauthenticated(AuthFailure::TokenMissing)));
        }
        let digest = match Token::digest_of(token) {
            Ok(d) => d,
            Err(e) => {
                s.counters.refused_locally.fetch_add(1, Ordering::Relaxed);
                return Err(to_status(e));
            }
        };
        let at = Instant::now();
        let fresh = s.state_at(at) == FeedState::Fresh;
        match s.cache.lookup(&digest, now_millis(), at, fresh) {
            Lookup::Hit { session, touch } => {
                s.counters.from_memory.fetch_add(1, Ordering::Relaxed);
                if touch {
                    s.touch(token, digest);
                }
                return Ok(session);
            }
            Lookup::Refused(status) => {
                s.counters.refused_locally.fetch_add(1, Ordering::Relaxed);
                return Err(status);
            }
            Lookup::Miss => {}
        }
        s.ask_once(token, digest).await
    }

    /// How fresh the feed is now.
    pub fn state(&self) -> FeedState {
        self.shared.state_at(Instant::now())
    }

    /// Waits until the feed is fresh, at most `timeout`; true if it is.
    pub async fn ready(&self, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            if self.state() == FeedState::Fresh {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.state() == FeedState::Fresh
    }

    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }
}

impl Shared {
    fn state_at(&self, at: Instant) -> FeedState {
        let confirmed = self.confirmed.load(Ordering::Acquire);
        if confirmed == 0 {
            return FeedState::Starting;
        }
        let age = at
            .saturating_duration_since(self.epoch)
            .saturating_sub(Duration::from_nanos(confirmed));
        if age < self.config.max_staleness {
            FeedState::Fresh
        } else {
            FeedState::Stale
        }
    }

    /// The feed confirmed, at `at`, its position as of `lag` earlier.
    fn confirm(&self, at: Instant, lag: Duration) {
        let at = at.checked_sub(lag).unwrap_or(self.epoch);
        let nanos = u64::try_from(at.saturating_duration_since(self.epoch).as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        self.confirmed.store(nanos, Ordering::Release);
    }

    fn stats(&self) -> Stats {
        let c = &self.counters;
        let (entries, bytes, _, _) = self.cache.sizes();
        Stats {
            from_memory: c.from_memory.load(Ordering::Relaxed),
            refused_locally: c.refused_locally.load(Ordering::Relaxed),
            from_upstream: c.from_upstream.load(Ordering::Relaxed),
            unavailable: c.unavailable.load(Ordering::Relaxed),
            upstream_calls: c.upstream_calls.load(Ordering::Relaxed),
            touches: c.touches.load(Ordering::Relaxed),
            feed_events: c.feed_events.load(Ordering::Relaxed),
            feed_resets: c.feed_resets.load(Ordering::Relaxed),
            entries,
            bytes,
        }
    }

    /// One upstream call for every validation of `digest` waiting at once.
    async fn ask_once(self: &Arc<Self>, token: &str, digest: TokenDigest) -> Answer {
        let cell = {
            let mut map = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            let cell = map.entry(digest).or_default();
            // A call that already answered is not joined: its answer may
            // predate an ending that made this validation miss.
            if cell.initialized() {
                *cell = Arc::default();
            }
            cell.clone()
        };
        // Removed however this call ends, a caller that gave up included.
        let _leave = Leave {
            map: &self.in_flight,
            digest,
            cell: &cell,
        };
        cell.get_or_init(|| self.ask(token, digest)).await.clone()
    }

    async fn ask(&self, token: &str, digest: TokenDigest) -> Answer {
        let Ok(_permit) = self.calls.try_acquire() else {
            self.counters.unavailable.fetch_add(1, Ordering::Relaxed);
            return Err(unavailable(
                "the validator is at its limit of upstream calls in flight",
            ));
        };
        self.counters.upstream_calls.fetch_add(1, Ordering::Relaxed);
        let fill = self.cache.begin_fill();
        match self.upstream.validate(token).await {
            Ok(session) => {
                let keep = self
                    .config
                    .credential
                    .org()
                    .is_none_or(|org| org == session.org);
                let admit = self.cache.finish_fill(
                    fill,
                    digest,
                    &session,
                    now_millis(),
                    Instant::now(),
                    keep,
                );
                if admit == Admit::Ended {
                    self.counters
                        .refused_locally
                        .fetch_add(1, Ordering::Relaxed);
                    return Err(token_invalid());
                }
                self.counters.from_upstream.fetch_add(1, Ordering::Relaxed);
                Ok(session)
            }
            Err(upstream::Failure::Refused(status)) => {
                self.cache.refuse(digest, status.clone(), Instant::now());
                self.counters.from_upstream.fetch_add(1, Ordering::Relaxed);
                Err(status)
            }
            Err(upstream::Failure::Answered(status)) => {
                self.counters.from_upstream.fetch_add(1, Ordering::Relaxed);
                Err(status)
            }
            Err(upstream::Failure::Unreachable(why)) => {
                self.counters.unavailable.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%why, "validation: upstream unreachable");
                Err(unavailable("the session service cannot be reached"))
            }
        }
    }

    /// Tells upstream of use, in the background; a touch that cannot be
    /// made now is made at the next use after the interval (the session is
    /// asked for again past its idle deadline in any case).
    fn touch(self: &Arc<Self>, token: &str, digest: TokenDigest) {
        let Ok(permit) = self.touches.clone().try_acquire_owned() else {
            return;
        };
        self.counters.touches.fetch_add(1, Ordering::Relaxed);
        let shared = self.clone();
        let token = token.to_owned();
        tokio::spawn(async move {
            let fill = shared.cache.begin_fill();
            match shared.upstream.validate(&token).await {
                Ok(session) => {
                    let keep = shared
                        .config
                        .credential
                        .org()
                        .is_none_or(|org| org == session.org);
                    shared.cache.finish_fill(
                        fill,
                        digest,
                        &session,
                        now_millis(),
                        Instant::now(),
                        keep,
                    );
                }
                Err(upstream::Failure::Refused(status)) => {
                    shared.cache.refuse(digest, status, Instant::now());
                }
                Err(_) => {}
            }
            drop(permit);
        });
    }
}
