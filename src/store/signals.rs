//! The Shared Signals job: the transmitter's signing keys and its event
//! streams. A stream is kept as an opaque document (its configuration,
//! status, subjects and delivery position, as `signals/` writes it) with a
//! version, so every change is a compare-and-set and two replicas never
//! overwrite each other's change unseen.

use std::time::Duration;

use async_trait::async_trait;

use crate::domain::{Millis, Result};

/// One signing key as the store keeps it. A key is never changed once
/// written: it is retired by the next newer key, from that key's
/// `created_at`.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKeyRecord {
    /// The key's id in the JWKS and in every SET header it signs.
    pub kid: String,
    /// The private key, PKCS#8 DER. Never printed.
    pub pkcs8: Vec<u8>,
    pub created_at: Millis,
}

impl std::fmt::Debug for SigningKeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeyRecord")
            .field("kid", &self.kid)
            .field("pkcs8", &"<redacted>")
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// One stream: its id, the org whose events it carries (`None`: every org,
/// a stream of the service credential), the version of its document, and
/// the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRecord {
    pub id: String,
    pub org: Option<String>,
    /// 1 when created; each change writes the next.
    pub version: u64,
    pub body: String,
}

/// What a lease call does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseAction {
    /// Take it if nobody holds it.
    Take,
    /// Renew it if this owner holds it.
    Keep,
    /// Give it up if this owner holds it.
    Drop,
}

/// Keys and streams of the transmitter, shared by every replica.
#[async_trait]
pub trait SignalStore: Send + Sync + 'static {
    /// Every signing key kept, oldest first.
    async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>>;
    /// Adds `key` as the newest; with `only_if_none`, only when the store
    /// holds no key yet (replicas starting together: one key wins).
    /// Returns every key kept afterwards, oldest first.
    async fn add_signing_key(
        &self,
        key: SigningKeyRecord,
        only_if_none: bool,
    ) -> Result<Vec<SigningKeyRecord>>;
    /// Forgets a key (one retired longer ago than the grace period).
    async fn delete_signing_key(&self, kid: &str) -> Result<()>;
    /// Creates a stream unless its org (or, for `org: None`, the streams of
    /// every org) already holds `max_per_org` streams; `false` then.
    async fn create_stream(&self, stream: &StreamRecord, max_per_org: usize) -> Result<bool>;
    async fn stream(&self, id: &str) -> Result<Option<StreamRecord>>;
    /// The streams of `org` (`Some(None)`: those of every org), or all
    /// streams (`None`), in no particular order.
    async fn streams(&self, org: Option<Option<&str>>) -> Result<Vec<StreamRecord>>;
    /// Writes `stream` (whose version is the new one) if the stored version
    /// is still `expected`; `false` when it changed or is gone.
    async fn replace_stream(&self, stream: &StreamRecord, expected: u64) -> Result<bool>;
    /// `false` when there was no such stream.
    async fn delete_stream(&self, id: &str) -> Result<bool>;
    /// The lease on delivering a stream: one replica at a time pushes it;
    /// one that stops renewing (a crash) loses it after `ttl`. Whether
    /// `owner` holds it afterwards.
    async fn stream_lease(
        &self,
        id: &str,
        owner: &str,
        ttl: Duration,
        action: LeaseAction,
    ) -> Result<bool>;
}
