//! Lockout after repeated credential failures, per username and per client
//! address. A locked key refuses every attempt (right or wrong password) until
//! its window passes, so guessing gains nothing while locked.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Error;

/// Limits for one kind of key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Failures allowed within `window` before the key locks.
    pub max_failures: u32,
    pub window: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

/// Failure counters; memory is bounded by `max_keys` (stale windows are
/// pruned first; past that the oldest windows go).
#[derive(Debug)]
pub struct Throttle {
    per_user: Limit,
    per_address: Limit,
    max_keys: usize,
    windows: Mutex<HashMap<String, Window>>,
}

impl Throttle {
    pub fn new(per_user: Limit, per_address: Limit) -> Self {
        Throttle {
            per_user,
            per_address,
            max_keys: 100_000,
            windows: Mutex::new(HashMap::new()),
        }
    }

    fn keys(user: &str, address: Option<&str>) -> [(Option<String>, bool); 2] {
        [
            (Some(format!("u:{user}")), true),
            (address.map(|a| format!("a:{a}")), false),
        ]
    }

    fn limit(&self, is_user: bool) -> Limit {
        if is_user {
            self.per_user
        } else {
            self.per_address
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Window>> {
        // A poisoned lock only means another thread panicked mid-update of a
        // counter; the counters are still usable.
        self.windows.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a credential check: RESOURCE_EXHAUSTED (with how long to wait)
    /// when either key is locked, otherwise the attempt is counted against
    /// both keys now, before the password is verified, so attempts sent in
    /// parallel cannot all slip under the limit. `succeeded` refunds it.
    pub fn begin(&self, user: &str, address: Option<&str>) -> Result<(), Error> {
        let now = Instant::now();
        let mut windows = self.lock();
        for (key, is_user) in Self::keys(user, address) {
            let Some(key) = key else { continue };
            let limit = self.limit(is_user);
            if let Some(w) = windows.get(&key) {
                let elapsed = now.duration_since(w.started);
                if elapsed < limit.window && w.failures >= limit.max_failures {
                    return Err(Error::TooManyAttempts {
                        retry_after: limit.window - elapsed,
                    });
                }
            }
        }
        self.make_room(&mut windows, now);
        for (key, is_user) in Self::keys(user, address) {
            let Some(key) = key else { continue };
            let limit = self.limit(is_user);
            let w = windows.entry(key).or_insert(Window {
                started: now,
                failures: 0,
            });
            if now.duration_since(w.started) >= limit.window {
                *w = Window {
                    started: now,
                    failures: 0,
                };
            }
            w.failures = w.failures.saturating_add(1);
        }
        Ok(())
    }

    /// The attempt begun was right: the user's counter is cleared and the
    /// address gets its attempt back.
    pub fn succeeded(&self, user: &str, address: Option<&str>) {
        let mut windows = self.lock();
        windows.remove(&format!("u:{user}"));
        if let Some(a) = address {
            if let Some(w) = windows.get_mut(&format!("a:{a}")) {
                w.failures = w.failures.saturating_sub(1);
            }
        }
    }

    /// The attempt begun could not be decided (store down): it does not count.
    pub fn refund(&self, user: &str, address: Option<&str>) {
        let mut windows = self.lock();
        for (key, _) in Self::keys(user, address) {
            if let Some(w) = key.and_then(|k| windows.get_mut(&k)) {
                w.failures = w.failures.saturating_sub(1);
            }
        }
    }

    /// Keeps memory bounded without ever freeing a key that is locked while
    /// unlocked ones remain: expired windows go first, then unlocked ones.
    fn make_room(&self, windows: &mut HashMap<String, Window>, now: Instant) {
        if windows.len() < self.max_keys {
            return;
        }
        let longest = self.per_user.window.max(self.per_address.window);
        windows.retain(|_, w| now.duration_since(w.started) < longest);
        if windows.len() < self.max_keys {
            return;
        }
        let (pu, pa) = (self.per_user, self.per_address);
        windows.retain(|k, w| {
            let limit = if k.starts_with("u:") { pu } else { pa };
            w.failures >= limit.max_failures
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_max_failures_and_unlocks_after_window() {
        let t = Throttle::new(
            Limit {
                max_failures: 3,
                window: Duration::from_millis(200),
            },
            Limit {
                max_failures: 100,
                window: Duration::from_secs(60),
            },
        );
        // Three attempts begun at once (none finished yet) use up the quota.
        for _ in 0..3 {
            assert!(t.begin("joe", Some("1.2.3.4")).is_ok());
        }
        assert!(matches!(
            t.begin("joe", Some("1.2.3.4")),
            Err(Error::TooManyAttempts { .. })
        ));
        assert!(t.begin("ann", Some("1.2.3.4")).is_ok());
        t.succeeded("ann", Some("1.2.3.4"));
        std::thread::sleep(Duration::from_millis(250));
        assert!(t.begin("joe", Some("1.2.3.4")).is_ok());
    }

    #[test]
    fn success_refunds_the_attempt() {
        let limit = Limit {
            max_failures: 2,
            window: Duration::from_secs(60),
        };
        let t = Throttle::new(limit, limit);
        for _ in 0..10 {
            t.begin("joe", Some("1.2.3.4")).unwrap();
            t.succeeded("joe", Some("1.2.3.4"));
        }
    }

    #[test]
    fn a_full_table_keeps_its_lockouts() {
        let limit = Limit {
            max_failures: 1,
            window: Duration::from_secs(60),
        };
        let mut t = Throttle::new(limit, limit);
        t.max_keys = 10;
        t.begin("victim", None).unwrap();
        for i in 0..50 {
            let _ = t.begin(&format!("noise{i}"), None);
            t.succeeded(&format!("noise{i}"), None);
        }
        assert!(t.begin("victim", None).is_err(), "still locked");
    }
}
