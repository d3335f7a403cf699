//! Push delivery (RFC 8935) and what it may reach: the operator's
//! allow-list of push targets (`--ssf-push-allow`), so an admin who
//! creates a stream cannot make sessiond call an address the operator did
//! not allow (server-side request forgery).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::BackoffBuilder as _;

use super::stream::{Method, Stream};
use super::{SsfError, Transmitter};
use crate::sessions::Principal;
use crate::store::{LeaseAction, StreamRecord};

/// One allowed target: a host name (exactly, any port) or an address range.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Allowed {
    Host(String),
    Net { base: IpAddr, prefix: u8 },
}

/// The push targets the operator allows; empty: no push at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList(Vec<Allowed>);

fn in_net(ip: IpAddr, base: IpAddr, prefix: u8) -> bool {
    match (ip, base) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

impl AllowList {
    /// Parses `--ssf-push-allow`: comma-separated host names, addresses and
    /// CIDR ranges (`receiver.example.com,127.0.0.1,10.1.0.0/16`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            if let Some((addr, bits)) = item.split_once('/') {
                let base: IpAddr = addr
                    .parse()
                    .map_err(|_| format!("push allow-list entry {item:?}: not an address range"))?;
                let max = if base.is_ipv4() { 32 } else { 128 };
                let prefix: u8 =
                    bits.parse().ok().filter(|p| *p <= max).ok_or_else(|| {
                        format!("push allow-list entry {item:?}: bad prefix length")
                    })?;
                out.push(Allowed::Net { base, prefix });
            } else if let Ok(ip) = item.trim_matches(['[', ']']).parse::<IpAddr>() {
                let prefix = if ip.is_ipv4() { 32 } else { 128 };
                out.push(Allowed::Net { base: ip, prefix });
            } else if item.len() <= 253
                && item
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            {
                out.push(Allowed::Host(item.to_ascii_lowercase()));
            } else {
                return Err(format!(
                    "push allow-list entry {item:?}: expected a host name, an address or a CIDR range"
                ));
            }
        }
        Ok(AllowList(out))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a URL's host is allowed: an address inside an allowed
    /// range, or a name listed as such.
    pub fn allows_host(&self, host: &str) -> bool {
        let host = host.trim_matches(['[', ']']);
        match host.parse::<IpAddr>() {
            Ok(ip) => self.allows_ip(ip),
            Err(_) => {
                let host = host.to_ascii_lowercase();
                self.0
                    .iter()
                    .any(|a| matches!(a, Allowed::Host(h) if *h == host))
            }
        }
    }

    /// Whether an address the connection would go to is allowed (a listed
    /// name may resolve anywhere: the operator vouched for it).
    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        self.0
            .iter()
            .any(|a| matches!(a, Allowed::Net { base, prefix } if in_net(ip, *base, *prefix)))
    }

    /// A push `endpoint_url` a receiver asked for: an absolute http(s) URL
    /// without user info whose host is allowed; otherwise 400.
    pub fn check_url(&self, url: &str) -> Result<http::Uri, SsfError> {
        let uri: http::Uri = url
            .parse()
            .map_err(|_| SsfError::bad("delivery.endpoint_url is not a URL"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(SsfError::bad(
                "delivery.endpoint_url must be an http:// or https:// URL",
            ));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| SsfError::bad("delivery.endpoint_url must name a host"))?;
        if authority.as_str().contains('@') {
            return Err(SsfError::bad(
                "delivery.endpoint_url must not carry user info: use authorization_header",
            ));
        }
        if self.is_empty() {
            return Err(SsfError::bad(
                "push delivery is not enabled here: the operator allows no push targets \
                 (--ssf-push-allow); use poll delivery",
            ));
        }
        if !self.allows_host(authority.host()) {
            return Err(SsfError::bad(
                "delivery.endpoint_url is not an allowed push target (the operator's \
                 --ssf-push-allow)",
            ));
        }
        Ok(uri)
    }
}

/// How long a replica's hold on pushing a stream lasts unless renewed; one
/// that dies loses it after this, and another replica takes the stream over.
const LEASE: Duration = Duration::from_secs(15);
const RENEW: Duration = Duration::from_secs(5);
/// How often a replica looks for push streams nobody delivers.
const SCAN_EVERY: Duration = Duration::from_secs(2);
/// A receiver that has not answered within this is retried later.
const PUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// The position is written at most this often while SETs flow (a crash
/// between two writes sends a few SETs again: same `jti`).
const SAVE_EVERY: Duration = Duration::from_millis(200);
/// The backoff's cap between two attempts at a failing receiver; jitter
/// adds up to as much again, so a receiver back from an outage gets its
/// SETs within 20 s.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// SETs read from the feed at a time, then pushed one after the other.
const PUSH_BATCH: usize = 256;
/// Longest an idle worker waits before it looks at its stream again.
const IDLE_WAIT: Duration = Duration::from_secs(1);

/// This process's hold on pushing one stream.
struct Lease<'a> {
    id: &'a str,
    owner: &'a str,
    renewed: Instant,
}

impl Lease<'_> {
    /// Renews the lease when due; `false` once another replica holds it.
    async fn keep(&mut self, tx: &Transmitter) -> bool {
        if self.renewed.elapsed() < RENEW {
            return true;
        }
        match tx
            .store()
            .stream_lease(self.id, self.owner, LEASE, LeaseAction::Keep)
            .await
        {
            Ok(true) => {
                self.renewed = Instant::now();
                true
            }
            Ok(false) => false,
            Err(e) => {
                // Kept while it may still be ours; past its term another
                // replica may hold it, so this one stops.
                tracing::warn!(stream = %self.id, error = %e, "ssf: cannot renew a lease");
                self.renewed.elapsed() < LEASE
            }
        }
    }
}

/// What one push of one SET came to.
enum Pushed {
    /// 2xx (RFC 8935 answers 202).
    Accepted,
    /// 400 with the RFC's error: the receiver will not take this SET, so it
    /// is not retried forever.
    Refused(String),
    /// A timeout, a connection failure, another status: tried again later.
    Failed(String),
}

fn random_owner() -> String {
    let mut b = [0u8; 8];
    let _ = getrandom::getrandom(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Transmitter {
    /// The push deliverer of this process: finds push streams no replica
    /// delivers, takes their lease, and runs one task per stream, so a
    /// receiver that hangs or fails delays no other receiver (and no ending:
    /// endings only write the feed). Runs until `stop`.
    pub async fn run_push(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let client = match reqwest::Client::builder()
            .timeout(PUSH_TIMEOUT)
            .connect_timeout(PUSH_TIMEOUT)
            // A redirect would lead past the allow-list.
            .redirect(reqwest::redirect::Policy::none())
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "ssf: no HTTP client; push delivery is off");
                return;
            }
        };
        let owner = random_owner();
        let mut running: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
        loop {
            running.retain(|_, task| !task.is_finished());
            match self.store().streams(None).await {
                Ok(recs) => {
                    for rec in recs {
                        if running.contains_key(&rec.id) || !is_push(&rec) {
                            continue;
                        }
                        let held = self
                            .store()
                            .stream_lease(&rec.id, &owner, LEASE, LeaseAction::Take)
                            .await;
                        if matches!(held, Ok(true)) {
                            let task = tokio::spawn(self.clone().push_stream(
                                rec.id.clone(),
                                owner.clone(),
                                client.clone(),
                                stop.clone(),
                            ));
                            running.insert(rec.id, task);
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "ssf: cannot list streams"),
            }
            tokio::select! {
                _ = tokio::time::sleep(SCAN_EVERY) => {}
                _ = self.changed.notified() => {}
                _ = wait_stop(&mut stop) => break,
            }
        }
        for (_, task) in running {
            let _ = task.await;
        }
    }

    /// Delivers one stream's SETs in order, one at a time, while this
    /// process holds its lease: a batch of owed SETs is read from the feed
    /// after the position, pushed one after the other, and the position
    /// written at most every `SAVE_EVERY` (and whenever the stream idles).
    async fn push_stream(
        self: Arc<Self>,
        id: String,
        owner: String,
        client: reqwest::Client,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let who = Principal::Service;
        let Ok((mut rec, mut doc)) = self.load(&who, &id).await else {
            return;
        };
        let mut lease = Lease {
            id: &id,
            owner: &owner,
            renewed: Instant::now(),
        };
        // SET ids accepted since the last write ("" marks a change of the
        // stream's error, status or position alone).
        let mut delivered: Vec<String> = Vec::new();
        // The position as last written or read.
        let mut stored = doc.position.clone();
        // When the stream was last written or read: management changes
        // (another URL, a pause) are picked up at least this often.
        let mut synced = Instant::now();
        let mut backoff: Option<backon::ExponentialBackoff> = None;
        let mut failing = false;
        'stream: loop {
            if *stop.borrow() || doc.delivery.method != Method::Push {
                break;
            }
            if !lease.keep(&self).await {
                break;
            }
            let owed = match self.outstanding(&mut doc, PUSH_BATCH).await {
                Ok(o) => o,
                Err(e) => {
                    tracing::warn!(stream = %id, error = e.description, "ssf: cannot read the feed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            // Events the stream does not carry move the position too: kept,
            // so they are not read again after every wait.
            if owed.disabled || doc.position != stored {
                delivered.push(String::new());
            }
            let idle = owed.sets.is_empty();
            if idle || synced.elapsed() >= SAVE_EVERY {
                // Tried again after SAVE_EVERY when it fails: a store that
                // cannot take the position now (a failover) must not stop
                // delivery, which goes on from the copy held here.
                let result = self.sync(&mut rec, &mut doc, &mut delivered).await;
                synced = Instant::now();
                match result {
                    Ok(true) => {
                        stored = doc.position.clone();
                        if !idle {
                            // Read again from the (possibly changed) stream.
                            continue;
                        }
                    }
                    Ok(false) => return,
                    Err(e) => {
                        tracing::warn!(stream = %id, error = e.description, "ssf: cannot save a position")
                    }
                }
            }
            if idle {
                if owed.more {
                    // Past the most one call scans, with nothing owed yet.
                    continue;
                }
                let feed: &dyn crate::store::FeedStore = self.store();
                tokio::select! {
                    // A paused or disabled stream reads nothing: it waits
                    // for management (here or on another replica) instead.
                    r = feed.wait_for_revocation(&owed.read_to, IDLE_WAIT), if !owed.read_to.is_empty() => {
                        if r.is_err() {
                            tokio::time::sleep(IDLE_WAIT).await;
                        }
                    }
                    _ = tokio::time::sleep(IDLE_WAIT), if owed.read_to.is_empty() => {}
                    _ = self.changed.notified() => {}
                    _ = wait_stop(&mut stop) => {}
                }
                continue;
            }
            for (i, next) in owed.sets.into_iter().enumerate() {
                if *stop.borrow() || !lease.keep(&self).await {
                    break 'stream;
                }
                // At least one SET per batch, whatever the store's pace.
                if i > 0 && synced.elapsed() >= SAVE_EVERY {
                    // Write what was accepted and look at the stream again
                    // before the next SET (the rest of the batch is read
                    // afresh).
                    continue 'stream;
                }
                let (jti, jwt) = match self.sign_one(next) {
                    Ok(signed) => signed,
                    Err(e) => {
                        tracing::error!(stream = %id, error = e.description, "ssf: cannot sign");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue 'stream;
                    }
                };
                match self.push_one(&client, &doc, &jwt).await {
                    Pushed::Accepted => {
                        metrics::counter!("sessiond_ssf_push_total", "result" => "accepted")
                            .increment(1);
                        if failing {
                            tracing::info!(stream = %id, "ssf: push receiver accepts SETs again");
                            failing = false;
                        }
                        backoff = None;
                        Self::accept(&mut doc, std::slice::from_ref(&jti));
                        delivered.push(jti);
                    }
                    Pushed::Refused(why) => {
                        metrics::counter!("sessiond_ssf_push_total", "result" => "refused")
                            .increment(1);
                        tracing::warn!(stream = %id, %jti, error = %why, "ssf: push receiver refused a SET; not retried");
                        doc.last_error = Some(why);
                        Self::accept(&mut doc, std::slice::from_ref(&jti));
                        delivered.push(jti);
                    }
                    Pushed::Failed(why) => {
                        metrics::counter!("sessiond_ssf_push_total", "result" => "failed")
                            .increment(1);
                        if !failing {
                            tracing::warn!(stream = %id, error = %why, "ssf: push receiver unreachable; retrying with backoff");
                            failing = true;
                        }
                        if doc.last_error.as_deref() != Some(why.as_str()) {
                            doc.last_error = Some(why);
                            delivered.push(String::new());
                        }
                        let wait = backoff
                            .get_or_insert_with(|| {
                                backon::ExponentialBuilder::default()
                                    .with_min_delay(Duration::from_millis(100))
                                    .with_max_delay(MAX_BACKOFF)
                                    .with_jitter()
                                    .without_max_times()
                                    .build()
                            })
                            .next()
                            .unwrap_or(MAX_BACKOFF);
                        // Held through the wait: a failing receiver keeps
                        // its stream on one replica. A change made here
                        // (another URL, a pause) ends the wait.
                        let until = tokio::time::Instant::now() + wait;
                        while tokio::time::Instant::now() < until {
                            tokio::select! {
                                _ = tokio::time::sleep_until(until.min(tokio::time::Instant::now() + RENEW)) => {}
                                _ = self.changed.notified() => break,
                                _ = wait_stop(&mut stop) => break 'stream,
                            }
                            if !lease.keep(&self).await {
                                break 'stream;
                            }
                        }
                        // Look at the stream again (a change made on another
                        // replica), then from the first SET not accepted.
                        synced = Instant::now()
                            .checked_sub(SAVE_EVERY)
                            .unwrap_or_else(Instant::now);
                        continue 'stream;
                    }
                }
            }
        }
        if !delivered.is_empty() {
            let _ = self.persist(&mut rec, &mut doc, &delivered).await;
        }
        let _ = self
            .store()
            .stream_lease(&id, &owner, LEASE, LeaseAction::Drop)
            .await;
    }

    /// Brings this worker's copy of the stream and the store together: writes
    /// what was delivered (merged into the stream when management changed it
    /// meanwhile), or, with nothing to write, reads the stream again.
    /// `false` when the stream is gone.
    async fn sync(
        &self,
        rec: &mut StreamRecord,
        doc: &mut Stream,
        delivered: &mut Vec<String>,
    ) -> Result<bool, SsfError> {
        if !delivered.is_empty() {
            let kept = self.persist(rec, doc, delivered).await?;
            delivered.clear();
            return Ok(kept);
        }
        match self.load(&Principal::Service, &rec.id).await {
            Ok((r, d)) => {
                if r.version != rec.version {
                    (*rec, *doc) = (r, d);
                }
                Ok(true)
            }
            Err(e) if e.status == axum::http::StatusCode::NOT_FOUND => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Writes the position this worker reached; when management changed the
    /// stream meanwhile, on the fresh document (with the SETs delivered
    /// since the last write accepted again). `false` when the stream is gone.
    async fn persist(
        &self,
        rec: &mut StreamRecord,
        doc: &mut Stream,
        delivered: &[String],
    ) -> Result<bool, SsfError> {
        if let Some(written) = self.save(rec, doc).await? {
            *rec = written;
            return Ok(true);
        }
        for _ in 0..16 {
            let (fresh_rec, mut fresh) = match self.load(&Principal::Service, &rec.id).await {
                Ok(x) => x,
                Err(e) if e.status == axum::http::StatusCode::NOT_FOUND => return Ok(false),
                Err(e) => return Err(e),
            };
            let jtis: Vec<String> = delivered
                .iter()
                .filter(|j| !j.is_empty())
                .cloned()
                .collect();
            Self::accept(&mut fresh, &jtis);
            if fresh.last_error.is_none() {
                fresh.last_error = doc.last_error.clone();
            }
            self.outstanding(&mut fresh, 0).await?;
            if let Some(written) = self.save(&fresh_rec, &fresh).await? {
                (*rec, *doc) = (written, fresh);
                return Ok(true);
            }
        }
        Err(crate::domain::Error::Unavailable("the stream is changing too often".into()).into())
    }

    /// POSTs one SET to the stream's receiver (RFC 8935).
    async fn push_one(&self, client: &reqwest::Client, doc: &Stream, jwt: &str) -> Pushed {
        // Checked again at each delivery: the operator may have narrowed
        // the allow-list since the stream was made.
        if let Err(e) = self
            .settings
            .push_allow
            .check_url(&doc.delivery.endpoint_url)
        {
            return Pushed::Failed(e.description);
        }
        let mut req = client
            .post(&doc.delivery.endpoint_url)
            .header(http::header::CONTENT_TYPE, "application/secevent+jwt")
            .header(http::header::ACCEPT, "application/json")
            .body(jwt.to_owned());
        if let Some(auth) = &doc.delivery.authorization_header {
            req = req.header(http::header::AUTHORIZATION, auth);
        }
        match req.send().await {
            Ok(r) if r.status().is_success() => Pushed::Accepted,
            Ok(r) if r.status() == http::StatusCode::BAD_REQUEST => {
                let body: serde_json::Value =
                    serde_json::from_slice(&error_body(r).await).unwrap_or_default();
                let err = body["err"].as_str().unwrap_or("invalid_request");
                let description = body["description"].as_str().unwrap_or("");
                let text: String = format!("the receiver refused a SET: {err}: {description}")
                    .chars()
                    .take(512)
                    .collect();
                Pushed::Refused(text)
            }
            Ok(r) => Pushed::Failed(format!(
                "the receiver answered HTTP {}",
                r.status().as_u16()
            )),
            Err(e) if e.is_timeout() => {
                Pushed::Failed("the receiver did not answer in time".into())
            }
            Err(_) => Pushed::Failed("the receiver could not be reached".into()),
        }
    }
}

/// A receiver's error body, at most 4 KiB of it: RFC 8935's error JSON is
/// small, and a receiver must not make sessiond hold a large one.
async fn error_body(mut r: reqwest::Response) -> Vec<u8> {
    const MAX: usize = 4096;
    let mut out = Vec::new();
    while let Ok(Some(chunk)) = r.chunk().await {
        out.extend_from_slice(&chunk[..chunk.len().min(MAX - out.len())]);
        if out.len() >= MAX {
            break;
        }
    }
    out
}

/// Returns once `stop` turns true (holding no borrow of it afterwards).
async fn wait_stop(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn is_push(rec: &StreamRecord) -> bool {
    serde_json::from_str::<Stream>(&rec.body).is_ok_and(|d| d.delivery.method == Method::Push)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_names_and_ranges_are_reachable() {
        let allow = AllowList::parse("receiver.example.com, 127.0.0.1,10.1.0.0/16,::1").unwrap();
        for ok in [
            "https://receiver.example.com/ssf",
            "http://RECEIVER.example.com:8443/x",
            "http://127.0.0.1:9000/push",
            "http://10.1.200.3/push",
            "http://[::1]:80/p",
        ] {
            assert!(allow.check_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://127.0.0.2/push",
            "http://10.2.0.1/push",
            "http://evil.example.com/",
            "http://receiver.example.com.evil.com/",
            "ftp://127.0.0.1/",
            "http://u:p@127.0.0.1/",
            "/relative",
            "http://[::2]/",
        ] {
            assert!(allow.check_url(bad).is_err(), "{bad}");
        }
        assert!(AllowList::default().check_url("http://127.0.0.1/").is_err());
    }

    #[test]
    fn bad_entries_are_refused_at_start() {
        for bad in ["10.0.0.0/33", "not a host!", "1.2.3.4/x"] {
            assert!(AllowList::parse(bad).is_err(), "{bad}");
        }
        assert!(AllowList::parse("").unwrap().is_empty());
    }
}
