//! The store conformance cases of counters: rate-limit windows and
//! credential-failure counters, kept by a store that shares them.

use super::*;

/// A store that shares counters counts calls in a window and refuses the
/// one past `max` with the time left, and counts failures until cleared;
/// one that does not share them counts nothing (each process counts in
/// memory instead), whatever it is asked.
async fn windows_and_failures_count_when_shared(s: Arc<dyn Store>) {
    let window = Duration::from_secs(60);
    if !s.shares_counters() {
        for _ in 0..5 {
            assert_eq!(s.count_call("lu:joe", 2, window).await.unwrap(), None);
            s.record_failure("u:joe", window).await.unwrap();
        }
        assert_eq!(s.calls_exhausted("lu:joe", 2).await.unwrap(), None);
        assert_eq!(s.failures("u:joe").await.unwrap(), (0, Duration::ZERO));
        s.clear_failures("u:joe").await.unwrap();
        return;
    }
    assert_eq!(s.calls_exhausted("lu:joe", 2).await.unwrap(), None);
    assert_eq!(s.count_call("lu:joe", 2, window).await.unwrap(), None);
    assert_eq!(s.count_call("lu:joe", 2, window).await.unwrap(), None);
    let left = s.count_call("lu:joe", 2, window).await.unwrap();
    let left = left.expect("the third call of two is refused");
    assert!(left > Duration::ZERO && left <= window, "{left:?}");
    let exhausted = s.calls_exhausted("lu:joe", 2).await.unwrap();
    assert!(exhausted.is_some_and(|d| d <= window), "{exhausted:?}");
    // Keys are apart: another user's window is untouched.
    assert_eq!(s.calls_exhausted("lu:ann", 2).await.unwrap(), None);
    assert_eq!(s.count_call("lu:ann", 2, window).await.unwrap(), None);

    assert_eq!(s.failures("u:joe").await.unwrap(), (0, Duration::ZERO));
    s.record_failure("u:joe", window).await.unwrap();
    s.record_failure("u:joe", window).await.unwrap();
    s.record_failure("a:127.0.0.1", window).await.unwrap();
    let (n, left) = s.failures("u:joe").await.unwrap();
    assert_eq!(n, 2);
    assert!(left > Duration::ZERO && left <= window, "{left:?}");
    assert_eq!(s.failures("a:127.0.0.1").await.unwrap().0, 1);
    s.clear_failures("u:joe").await.unwrap();
    assert_eq!(s.failures("u:joe").await.unwrap(), (0, Duration::ZERO));
    assert_eq!(s.failures("a:127.0.0.1").await.unwrap().0, 1);
}

every_backend!(windows_and_failures_count_when_shared);
