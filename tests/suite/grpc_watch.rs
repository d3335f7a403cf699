//! WatchRevocations on the embedded store: who may watch, what they see,
//! replay after a reconnect (each event once), expired cursors, expiry events,
//! and streams that end with their watcher's session or the server.

use std::time::Duration;

use crate::support::*;
use sessiond::pb::{self, Kind};
use sessiond::sessions::ServiceCredential;
use tonic::{Code, Request, Streaming};

const SERVICE_SECRET: &str = "service-credential-0123456789abcdef-xyz";

async fn server() -> TestServer {
    TestServer::start_with(|c| {
        c.policy.service_credential = Some(ServiceCredential::new(SERVICE_SECRET).unwrap());
    })
    .await
}

fn watch_request(after: Option<u64>, org: &str, kinds: &[Kind]) -> pb::WatchRevocationsRequest {
    pb::WatchRevocationsRequest {
        after_sequence: after,
        org: org.into(),
        kinds: kinds.iter().map(|k| *k as i32).collect(),
        after_cursor: String::new(),
        ..Default::default()
    }
}

async fn watch(
    c: &mut Client,
    token: &str,
    req: pb::WatchRevocationsRequest,
) -> Streaming<pb::WatchRevocationsResponse> {
    c.watch_revocations(authed(req, token))
        .await
        .unwrap_or_else(|s| panic!("watch refused: {s:?}"))
        .into_inner()
}

async fn next(stream: &mut Streaming<pb::WatchRevocationsResponse>) -> pb::Revocation {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("an event within 10 s")
        .expect("stream ok")
        .expect("stream open")
        .revocation
        .expect("revocation")
}

/// Asserts nothing arrives for a short while.
async fn quiet(stream: &mut Streaming<pb::WatchRevocationsResponse>) {
    if let Ok(got) = tokio::time::timeout(Duration::from_millis(300), stream.message()).await {
        panic!("unexpected message {got:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_sees_its_orgs_endings_as_they_happen() {
    let server = server().await;
    let mut c = server.client().await;
    let (admin, _) = login(&mut c, DOMAIN_ADMIN, Kind::Admin).await;
    let mut events = watch(&mut c, &admin, watch_request(None, "", &[])).await;
    let (_, imap) = login(&mut c, JOE, Kind::Imap).await;
    let (_, pop) = login(&mut c, JOE, Kind::Pop).await;
    let (other_org, _) = login(&mut c, USEREMAIL, Kind::Api).await;
    c.logoff(authed(pb::LogoffRequest {}, &other_org))
        .await
        .unwrap();
    assert_eq!(logout_joe(&mut c).await, 2);

    let first = next(&mut events).await;
    let second = next(&mut events).await;
    let mut ids = vec![first.session_id, second.session_id];
    ids.sort();
    assert_eq!(ids, vec![imap.id, pop.id]);
    for e in [&first, &second] {
        assert_eq!(e.reason, pb::EndReason::LogoutUser as i32);
        assert_eq!(e.user, JOE.0);
        assert_eq!(e.org, "example.com");
        assert!(e.at.is_some());
    }
    assert!(second.sequence > first.sequence);
    quiet(&mut events).await; // company.com's Logoff is not ours
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_credential_sees_every_org_and_filters_apply() {
    let server = server().await;
    let mut c = server.client().await;
    let mut all = watch(&mut c, SERVICE_SECRET, watch_request(None, "", &[])).await;
    let mut mail = watch(
        &mut c,
        SERVICE_SECRET,
        watch_request(None, "", &[Kind::Imap, Kind::Pop]),
    )
    .await;
    let mut company = watch(
        &mut c,
        SERVICE_SECRET,
        watch_request(None, "Company.com", &[]),
    )
    .await;
    let (api, api_s) = login(&mut c, USEREMAIL, Kind::Api).await;
    let (_, imap_s) = login(&mut c, JOE, Kind::Imap).await;
    c.logoff(authed(pb::LogoffRequest {}, &api)).await.unwrap();
    logout_joe(&mut c).await;

    assert_eq!(next(&mut all).await.session_id, api_s.id);
    assert_eq!(next(&mut all).await.session_id, imap_s.id);
    let e = next(&mut mail).await;
    assert_eq!((e.session_id, e.kind), (imap_s.id, Kind::Imap as i32));
    quiet(&mut mail).await;
    let e = next(&mut company).await;
    assert_eq!(
        (e.session_id, e.reason),
        (api_s.id, pb::EndReason::Logoff as i32)
    );
    quiet(&mut company).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resuming_watcher_gets_every_missed_event_once() {
    let server = server().await;
    let mut c = server.client().await;
    let mut first = watch(&mut c, SERVICE_SECRET, watch_request(Some(0), "", &[])).await;
    let mut ended = Vec::new();
    for _ in 0..3 {
        let (t, s) = login(&mut c, JOE, Kind::Api).await;
        c.logoff(authed(pb::LogoffRequest {}, &t)).await.unwrap();
        ended.push(s.id);
    }
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(next(&mut first).await);
    }
    let cursor = seen[1].sequence;
    drop(first); // disconnect after the second event was processed

    // Meanwhile more sessions end.
    for _ in 0..2 {
        let (t, s) = login(&mut c, JOE, Kind::Api).await;
        c.logoff(authed(pb::LogoffRequest {}, &t)).await.unwrap();
        ended.push(s.id);
    }
    let mut resumed = watch(&mut c, SERVICE_SECRET, watch_request(Some(cursor), "", &[])).await;
    let mut replay = Vec::new();
    for _ in 0..3 {
        replay.push(next(&mut resumed).await);
    }
    assert_eq!(
        replay.iter().map(|e| e.session_id).collect::<Vec<_>>(),
        ended[2..].to_vec(),
        "exactly the events after the cursor, in order"
    );
    assert!(replay.windows(2).all(|w| w[0].sequence < w[1].sequence));
    quiet(&mut resumed).await;
    // And it stays live.
    let (t, s) = login(&mut c, JOE, Kind::Api).await;
    c.logoff(authed(pb::LogoffRequest {}, &t)).await.unwrap();
    assert_eq!(next(&mut resumed).await.session_id, s.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_may_watch() {
    let server = server().await;
    let mut c = server.client().await;
    let (joe, _) = login(&mut c, JOE, Kind::Api).await;
    let (admin, _) = login(&mut c, DOMAIN_ADMIN, Kind::Admin).await;
    let cases: Vec<(Request<pb::WatchRevocationsRequest>, Code, &str)> = vec![
        (
            Request::new(watch_request(None, "", &[])),
            Code::Unauthenticated,
            "TOKEN_MISSING",
        ),
        (
            authed(watch_request(None, "", &[]), "not-the-secret"),
            Code::Unauthenticated,
            "TOKEN_INVALID",
        ),
        (
            authed(
                watch_request(None, "", &[]),
                "service-credential-0123456789abcdef-xyZ",
            ),
            Code::Unauthenticated,
            "TOKEN_INVALID",
        ),
        (
            authed(watch_request(None, "", &[]), &joe),
            Code::PermissionDenied,
            "PERMISSION_DENIED",
        ),
        (
            authed(watch_request(None, "company.com", &[]), &admin),
            Code::PermissionDenied,
            "PERMISSION_DENIED",
        ),
        (
            authed(watch_request(Some(10_000), "", &[]), &admin),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
        (
            authed(watch_request(None, "", &[Kind::Unspecified]), &admin),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
    ];
    for (req, code, why) in cases {
        assert_status(c.watch_revocations(req).await.map(|_| ()), code, why);
    }
    // An admin naming its own org is fine.
    watch(&mut c, &admin, watch_request(None, "example.com", &[])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_older_than_retention_is_out_of_range() {
    let server = TestServer::start_with(|c| {
        c.policy.service_credential = Some(ServiceCredential::new(SERVICE_SECRET).unwrap());
        c.retention = Duration::from_millis(300);
        c.sweep_interval = Duration::from_millis(100);
    })
    .await;
    let mut c = server.client().await;
    for _ in 0..2 {
        let (t, _) = login(&mut c, JOE, Kind::Api).await;
        c.logoff(authed(pb::LogoffRequest {}, &t)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(900)).await;
    let status = assert_status(
        c.watch_revocations(authed(watch_request(Some(0), "", &[]), SERVICE_SECRET))
            .await
            .map(|_| ()),
        Code::OutOfRange,
        "CURSOR_EXPIRED",
    );
    assert!(status.message().contains("retention"), "{status:?}");
    // From the retained edge on it works.
    watch(&mut c, SERVICE_SECRET, watch_request(Some(2), "", &[])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_is_an_event_too() {
    let server = TestServer::start_with(|c| {
        c.policy.service_credential = Some(ServiceCredential::new(SERVICE_SECRET).unwrap());
        c.policy
            .lifetimes
            .get_mut(&sessiond::domain::Kind::Pop)
            .unwrap()
            .idle = Duration::from_millis(200);
        c.sweep_interval = Duration::from_millis(100);
    })
    .await;
    let mut c = server.client().await;
    let mut events = watch(&mut c, SERVICE_SECRET, watch_request(None, "", &[])).await;
    let (_, s) = login(&mut c, JOE, Kind::Pop).await;
    let e = next(&mut events).await;
    assert_eq!(
        (e.session_id, e.reason),
        (s.id, pb::EndReason::Expired as i32)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_watch_ends_with_its_session() {
    let server = server().await;
    let mut c = server.client().await;
    let (admin, s) = login(&mut c, DOMAIN_ADMIN, Kind::Admin).await;
    let mut events = watch(&mut c, &admin, watch_request(None, "", &[])).await;
    c.logoff(authed(pb::LogoffRequest {}, &admin))
        .await
        .unwrap();
    assert_eq!(next(&mut events).await.session_id, s.id);
    let end = tokio::time::timeout(Duration::from_secs(10), events.message())
        .await
        .unwrap();
    assert_eq!(end.unwrap_err().code(), Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_open_watches_instead_of_hanging() {
    let server = server().await;
    let mut c = server.client().await;
    let mut events = watch(&mut c, SERVICE_SECRET, watch_request(None, "", &[])).await;
    tokio::time::timeout(Duration::from_secs(10), server.running.shutdown())
        .await
        .expect("shutdown does not wait for open watch streams")
        .unwrap();
    let end = tokio::time::timeout(Duration::from_secs(5), events.message())
        .await
        .unwrap();
    assert!(
        matches!(end, Err(ref s) if s.code() == Code::Unavailable) || matches!(end, Ok(None)),
        "{end:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_resumes_after_a_cursor_and_bad_cursors_are_refused() {
    let server = server().await;
    let mut c = server.client().await;
    let mut first = watch(&mut c, SERVICE_SECRET, watch_request(None, "", &[])).await;
    let mut ended = Vec::new();
    for _ in 0..4 {
        let (t, s) = login(&mut c, JOE, Kind::Api).await;
        c.logoff(authed(pb::LogoffRequest {}, &t)).await.unwrap();
        ended.push(s.id);
    }
    let mut seen = Vec::new();
    for _ in 0..2 {
        seen.push(next(&mut first).await);
    }
    assert!(!seen[1].cursor.is_empty(), "every event carries a cursor");
    drop(first);
    let mut req = watch_request(None, "", &[]);
    req.after_cursor = seen[1].cursor.clone();
    let mut resumed = watch(&mut c, SERVICE_SECRET, req).await;
    let replay = [next(&mut resumed).await, next(&mut resumed).await];
    assert_eq!(
        replay.iter().map(|e| e.session_id).collect::<Vec<_>>(),
        ended[2..].to_vec()
    );
    quiet(&mut resumed).await;
    for bad in ["garbage", "v1.99.0-1", &"v1.1.0-1".repeat(3000)] {
        let mut req = watch_request(None, "", &[]);
        req.after_cursor = bad.to_owned();
        let r = c.watch_revocations(authed(req, SERVICE_SECRET)).await;
        assert_eq!(
            r.unwrap_err().code(),
            tonic::Code::InvalidArgument,
            "{bad:.20}"
        );
    }
    let mut both = watch_request(Some(0), "", &[]);
    both.after_cursor = replay[1].cursor.clone();
    let r = c.watch_revocations(authed(both, SERVICE_SECRET)).await;
    assert_eq!(r.unwrap_err().code(), tonic::Code::InvalidArgument);
}

/// The next message of a watch that asked for heartbeats: an event, or a
/// heartbeat (`Err`).
async fn next_item(
    stream: &mut Streaming<pb::WatchRevocationsResponse>,
) -> Result<pb::Revocation, pb::WatchHeartbeat> {
    let msg = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a message within 10 s")
        .expect("stream ok")
        .expect("stream open");
    match (msg.revocation, msg.heartbeat) {
        (Some(r), None) => Ok(r),
        (None, Some(h)) => Err(h),
        other => panic!("a message is an event or a heartbeat: {other:?}"),
    }
}

fn heartbeat_request(every_ms: u32, after_cursor: &str) -> pb::WatchRevocationsRequest {
    pb::WatchRevocationsRequest {
        heartbeat_ms: every_ms,
        after_cursor: after_cursor.into(),
        ..Default::default()
    }
}

/// A quiet watch that asked for heartbeats gets one at once and one per
/// interval after; a heartbeat after an event carries that event's
/// position, and resuming from a heartbeat's cursor misses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_confirm_a_quiet_watch_s_position() {
    let server = server().await;
    let mut c = server.client().await;
    let mut w = watch(&mut c, SERVICE_SECRET, heartbeat_request(200, "")).await;
    let first = next_item(&mut w).await.expect_err("a heartbeat first");
    assert!(!first.cursor.is_empty() && first.at.is_some(), "{first:?}");
    let second = next_item(&mut w)
        .await
        .expect_err("quiet: another heartbeat");
    assert_eq!(second.cursor, first.cursor, "nothing ended in between");

    let (t, s) = login(&mut c, JOE, Kind::Api).await;
    c.logoff(authed(pb::LogoffRequest {}, &t)).await.unwrap();
    let ended = loop {
        if let Ok(e) = next_item(&mut w).await {
            break e;
        }
    };
    assert_eq!(ended.session_id, s.id);
    let beat = loop {
        if let Err(h) = next_item(&mut w).await {
            break h;
        }
    };
    assert_eq!(
        beat.cursor, ended.cursor,
        "the heartbeat stands at the event"
    );

    let (t2, s2) = login(&mut c, JOE, Kind::Api).await;
    c.logoff(authed(pb::LogoffRequest {}, &t2)).await.unwrap();
    let mut resumed = watch(&mut c, SERVICE_SECRET, heartbeat_request(0, &beat.cursor)).await;
    assert_eq!(next(&mut resumed).await.session_id, s2.id);
    // A watch that did not ask gets no heartbeats.
    quiet(&mut resumed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_intervals_out_of_range_are_refused() {
    let server = server().await;
    let mut c = server.client().await;
    for every in [1, 99, 60_001, u32::MAX] {
        let got = c
            .watch_revocations(authed(heartbeat_request(every, ""), SERVICE_SECRET))
            .await
            .map(|_| ());
        let status = got.expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{every}: {status:?}");
        assert!(status.message().contains("heartbeat_ms"), "{status:?}");
    }
    for every in [100, 60_000] {
        watch(&mut c, SERVICE_SECRET, heartbeat_request(every, "")).await;
    }
}
