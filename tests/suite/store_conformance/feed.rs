//! The store conformance cases of the revocation feed: in order, paged, each event once, and waiting for the next.

use super::*;

async fn events_page_in_order(s: Arc<dyn Store>) {
    let joe = user(&s, "joe@example.com", "example.com", Role::User).await;
    let now = now_millis();
    for _ in 0..7 {
        let (id, _) = open(&s, joe, Kind::Api, now).await;
        s.end_session(
            EndTarget {
                id,
                org: None,
                kind: None,
            },
            EndReason::Logoff,
            now,
            &audit(),
        )
        .await
        .unwrap();
    }
    let first = s.revocations_after(log(&s), 0, 4).await.unwrap();
    let rest = s
        .revocations_after(log(&s), first[3].sequence, 4)
        .await
        .unwrap();
    let seqs: Vec<u64> = first.iter().chain(&rest).map(|e| e.sequence).collect();
    assert_eq!(seqs, (1..=7).collect::<Vec<_>>());
    assert_eq!(s.last_sequence(log(&s)).await.unwrap(), 7);
}

/// A bulk ending bigger than one of its steps (Redis packs a step's events
/// into one stream entry): read in pages of odd sizes, which end inside a
/// step, every event comes once, in sequence order, one per session.
async fn a_bulk_ending_s_events_page_each_once(s: Arc<dyn Store>) {
    const N: usize = 450;
    let joe = user(&s, "joe@example.com", "example.com", Role::User).await;
    let now = now_millis();
    let before = s.last_sequence(log(&s)).await.unwrap();
    let mut ids = BTreeSet::new();
    for _ in 0..N {
        ids.insert(open(&s, joe, Kind::Api, now).await.0);
    }
    let n = logout_all(&s, now).await;
    assert_eq!(n as usize, N);
    // The events may follow the acknowledgement (they do on Redis).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while s.last_sequence(log(&s)).await.unwrap() < before + N as u64 {
        assert!(
            std::time::Instant::now() < deadline,
            "the events never came"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut seen = Vec::new();
    let mut after = before;
    for page in [1usize, 7, 199, 3, 250, 500].iter().cycle() {
        let events = s.revocations_after(log(&s), after, *page).await.unwrap();
        assert!(
            events.len() <= *page,
            "{} events for a page of {page}",
            events.len()
        );
        let Some(last) = events.last() else { break };
        after = last.sequence;
        seen.extend(events);
    }
    let seqs: Vec<u64> = seen.iter().map(|e| e.sequence).collect();
    assert_eq!(seqs, (before + 1..=before + N as u64).collect::<Vec<_>>());
    let ended: BTreeSet<i32> = seen.iter().map(|e| e.session_id).collect();
    assert_eq!(ended, ids);
    assert!(seen.iter().all(|e| e.reason == EndReason::LogoutAll
        && e.kind == Kind::Api
        && e.org == "example.com"));
}

async fn waiting_wakes_on_a_new_event_and_times_out_otherwise(s: Arc<dyn Store>) {
    let joe = user(&s, "joe@example.com", "example.com", Role::User).await;
    let now = now_millis();
    let (id, _) = open(&s, joe, Kind::Api, now).await;
    let last = s.last_sequence(log(&s)).await.unwrap();
    let started = std::time::Instant::now();
    s.wait_for_revocation(&[(log(&s), last)], Duration::from_millis(300))
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "nothing new: waits out the timeout"
    );
    let ender = {
        let s = s.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            s.end_session(
                EndTarget {
                    id,
                    org: None,
                    kind: None,
                },
                EndReason::Logoff,
                now,
                &audit(),
            )
            .await
            .unwrap();
        })
    };
    let started = std::time::Instant::now();
    s.wait_for_revocation(&[(log(&s), last)], Duration::from_secs(10))
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "woken by the ending, not the timeout"
    );
    ender.await.unwrap();
    assert_eq!(s.last_sequence(log(&s)).await.unwrap(), last + 1);
}

every_backend!(
    events_page_in_order,
    a_bulk_ending_s_events_page_each_once,
    waiting_wakes_on_a_new_event_and_times_out_otherwise,
);
