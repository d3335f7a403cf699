//! The store conformance cases of the Shared Signals job: signing keys,
//! streams (a versioned document each, changed by compare-and-set, limited
//! per org) and delivery leases.

use super::*;
use sessiond::store::{LeaseAction, SigningKeyRecord, StreamRecord};

fn key(kid: &str, at: Millis) -> SigningKeyRecord {
    SigningKeyRecord {
        kid: kid.into(),
        pkcs8: vec![1, 2, 3, kid.len() as u8],
        created_at: at,
    }
}

fn stream(id: &str, org: Option<&str>, body: &str) -> StreamRecord {
    StreamRecord {
        id: id.into(),
        org: org.map(str::to_owned),
        version: 1,
        body: body.into(),
    }
}

async fn signing_keys_are_kept_oldest_first_and_the_first_is_made_once(s: Arc<dyn Store>) {
    assert!(s.signing_keys().await.unwrap().is_empty());
    // Two replicas starting together: only the first key offered is kept.
    let kept = s.add_signing_key(key("a", 10), true).await.unwrap();
    assert_eq!(kept, vec![key("a", 10)]);
    let kept = s.add_signing_key(key("b", 11), true).await.unwrap();
    assert_eq!(kept, vec![key("a", 10)]);
    // A rotation adds a newer one.
    let kept = s.add_signing_key(key("c", 20), false).await.unwrap();
    assert_eq!(kept, vec![key("a", 10), key("c", 20)]);
    s.delete_signing_key("a").await.unwrap();
    assert_eq!(s.signing_keys().await.unwrap(), vec![key("c", 20)]);
}

async fn streams_change_by_compare_and_set_within_the_per_org_limit(s: Arc<dyn Store>) {
    assert!(s
        .create_stream(&stream("s1", Some("example.com"), "{1}"), 2)
        .await
        .unwrap());
    assert!(s
        .create_stream(&stream("s2", Some("example.com"), "{2}"), 2)
        .await
        .unwrap());
    // The org is full; another org and the every-org streams are not.
    assert!(!s
        .create_stream(&stream("s3", Some("example.com"), "{3}"), 2)
        .await
        .unwrap());
    assert!(s
        .create_stream(&stream("s4", Some("company.com"), "{4}"), 2)
        .await
        .unwrap());
    assert!(s
        .create_stream(&stream("s5", None, "{5}"), 2)
        .await
        .unwrap());
    assert_eq!(s.stream("s3").await.unwrap(), None);

    let ids = |v: Vec<StreamRecord>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(
        ids(s.streams(Some(Some("example.com"))).await.unwrap()),
        ["s1", "s2"]
    );
    assert_eq!(ids(s.streams(Some(None)).await.unwrap()), ["s5"]);
    assert_eq!(
        ids(s.streams(None).await.unwrap()),
        ["s1", "s2", "s4", "s5"]
    );
    assert_eq!(
        s.stream("s5").await.unwrap(),
        Some(stream("s5", None, "{5}"))
    );

    // A change wins only over the version it read.
    let mut next = stream("s1", Some("example.com"), "{1b}");
    next.version = 2;
    assert!(s.replace_stream(&next, 1).await.unwrap());
    let mut stale = stream("s1", Some("example.com"), "{1c}");
    stale.version = 2;
    assert!(!s.replace_stream(&stale, 1).await.unwrap());
    assert_eq!(s.stream("s1").await.unwrap(), Some(next));
    assert!(!s
        .replace_stream(&stream("nope", None, "{}"), 0)
        .await
        .unwrap());

    // Deleting frees a place in the org.
    assert!(s.delete_stream("s1").await.unwrap());
    assert!(!s.delete_stream("s1").await.unwrap());
    assert_eq!(s.stream("s1").await.unwrap(), None);
    assert!(s
        .create_stream(&stream("s6", Some("example.com"), "{6}"), 2)
        .await
        .unwrap());
}

async fn one_replica_holds_a_stream_lease_until_it_lapses(s: Arc<dyn Store>) {
    let ttl = Duration::from_millis(300);
    assert!(s
        .stream_lease("s", "r1", ttl, LeaseAction::Take)
        .await
        .unwrap());
    assert!(!s
        .stream_lease("s", "r2", ttl, LeaseAction::Take)
        .await
        .unwrap());
    assert!(s
        .stream_lease("s", "r1", ttl, LeaseAction::Keep)
        .await
        .unwrap());
    assert!(!s
        .stream_lease("s", "r2", ttl, LeaseAction::Keep)
        .await
        .unwrap());
    // Its holder stops renewing: another takes it over.
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert!(s
        .stream_lease("s", "r2", ttl, LeaseAction::Take)
        .await
        .unwrap());
    assert!(!s
        .stream_lease("s", "r1", ttl, LeaseAction::Keep)
        .await
        .unwrap());
    assert!(!s
        .stream_lease("s", "r2", ttl, LeaseAction::Drop)
        .await
        .unwrap());
    assert!(s
        .stream_lease("s", "r1", ttl, LeaseAction::Take)
        .await
        .unwrap());
}

every_backend!(
    signing_keys_are_kept_oldest_first_and_the_first_is_made_once,
    streams_change_by_compare_and_set_within_the_per_org_limit,
    one_replica_holds_a_stream_lease_until_it_lapses,
);
