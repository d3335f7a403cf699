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

    /// RESOURCE_EXHAUSTED (with how long to wait) when either key is locked.
    /// Callers check and record while holding a hashing slot, so attempts in
    /// parallel can overshoot the limit by at most the number of slots.
    pub fn check(&self, user: &str, address: Option<&str>) -> Result<(), Error> {
        let now = Instant::now();
        let windows = self.lock();
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
        Ok(())
    }

    pub fn record_failure(&self, user: &str, address: Option<&str>) {
        let now = Instant::now();
        let mut windows = self.lock();
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
    }

    /// A successful check clears the user's counter (not the address's).
    pub fn record_success(&self, user: &str) {
        self.lock().remove(&format!("u:{user}"));
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
        for _ in 0..3 {
            assert!(t.check("joe", Some("1.2.3.4")).is_ok());
            t.record_failure("joe", Some("1.2.3.4"));
        }
        assert!(matches!(
            t.check("joe", Some("1.2.3.4")),
            Err(Error::TooManyAttempts { .. })
        ));
        assert!(t.check("ann", Some("1.2.3.4")).is_ok());
        std::thread::sleep(Duration::from_millis(250));
        assert!(t.check("joe", Some("1.2.3.4")).is_ok());
    }

    #[test]
    fn a_full_table_keeps_its_lockouts() {
        let limit = Limit {
            max_failures: 1,
            window: Duration::from_secs(60),
        };
        let mut t = Throttle::new(limit, limit);
        t.max_keys = 10;
        t.record_failure("victim", None);
        for i in 0..50 {
            t.record_failure(&format!("noise{i}"), None);
        }
        assert!(t.check("victim", None).is_err(), "still locked");
    }
}
