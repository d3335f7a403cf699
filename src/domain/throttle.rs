//! Lockout after repeated credential failures. Failures are counted per
//! (username, address), per address, and per username at a tenth of the
//! pace: a guesser is stopped at one address after `per_user.max_failures`,
//! while the owner, logging in from elsewhere, is only locked out when
//! guesses against the account come from many addresses
//! (`USER_WIDE_FACTOR` times the per-user limit in one window). A locked key
//! refuses every attempt (right or wrong password) until its window passes,
//! so guessing gains nothing while locked.
//!
//! Counters for a username are only kept for users that exist (the caller
//! says so), and those are never evicted: filling the table with junk
//! failures cannot reset a real account's count. Memory stays bounded by
//! the number of users plus `max_keys`.

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

/// How many more failures the user-wide counter allows than the per
/// (user, address) one.
pub const USER_WIDE_FACTOR: u32 = 10;

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

/// What a counter is keyed by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    /// Every failure against one existing user: never evicted.
    User(String),
    /// One existing user from one address.
    UserAt(String, String),
    /// Every failure from one address.
    Address(String),
}

/// Failure counters; memory is bounded by `max_keys` plus one counter per
/// existing user that failed (stale windows are pruned first; then
/// unlocked ones, never a user-wide counter).
#[derive(Debug)]
pub struct Throttle {
    per_user: Limit,
    per_address: Limit,
    max_keys: usize,
    windows: Mutex<HashMap<Key, Window>>,
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

    /// The keys an attempt touches; `user` is `None` when the failure must
    /// not count against any username (an unknown user, a token).
    fn keys(user: Option<&str>, address: Option<&str>) -> Vec<Key> {
        let mut keys = Vec::with_capacity(3);
        if let Some(u) = user {
            keys.push(Key::User(u.to_owned()));
            if let Some(a) = address {
                keys.push(Key::UserAt(u.to_owned(), a.to_owned()));
            }
        }
        if let Some(a) = address {
            keys.push(Key::Address(a.to_owned()));
        }
        keys
    }

    fn limit(&self, key: &Key) -> Limit {
        match key {
            Key::User(_) => Limit {
                max_failures: self.per_user.max_failures.saturating_mul(USER_WIDE_FACTOR),
                window: self.per_user.window,
            },
            Key::UserAt(..) => self.per_user,
            Key::Address(_) => self.per_address,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Window>> {
        // A poisoned lock only means another thread panicked mid-update of a
        // counter; the counters are still usable.
        self.windows.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// RESOURCE_EXHAUSTED (with how long to wait) when any key of this
    /// attempt is locked. Callers check and record while holding a hashing
    /// slot, so attempts in parallel can overshoot the limit by at most the
    /// number of slots.
    pub fn check(&self, user: &str, address: Option<&str>) -> Result<(), Error> {
        let now = Instant::now();
        let windows = self.lock();
        for key in Self::keys(Some(user), address) {
            let limit = self.limit(&key);
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

    /// Like [`Throttle::check`] for a call that names no user (a presented
    /// service credential).
    pub fn check_address(&self, address: &str) -> Result<(), Error> {
        let now = Instant::now();
        let key = Key::Address(address.to_owned());
        let limit = self.limit(&key);
        match self.lock().get(&key) {
            Some(w)
                if now.duration_since(w.started) < limit.window
                    && w.failures >= limit.max_failures =>
            {
                Err(Error::TooManyAttempts {
                    retry_after: limit.window - now.duration_since(w.started),
                })
            }
            _ => Ok(()),
        }
    }

    /// Counts a failed attempt. `user` is the username when it names an
    /// existing account, `None` otherwise (unknown user, or a token that
    /// proves nothing about the name presented): then only the address
    /// counts, so nobody can lock an account out with tokens or fill the
    /// never-evicted user counters with invented names.
    pub fn record_failure(&self, user: Option<&str>, address: Option<&str>) {
        let now = Instant::now();
        let mut windows = self.lock();
        self.make_room(&mut windows, now);
        for key in Self::keys(user, address) {
            let limit = self.limit(&key);
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

    /// A successful check clears the user's counters (not the address's).
    pub fn record_success(&self, user: &str, address: Option<&str>) {
        let mut windows = self.lock();
        windows.remove(&Key::User(user.to_owned()));
        if let Some(a) = address {
            windows.remove(&Key::UserAt(user.to_owned(), a.to_owned()));
        }
    }

    /// Keeps memory bounded without ever freeing a user-wide counter, nor a
    /// key that is locked while unlocked ones remain: expired windows go
    /// first, then unlocked ones. User-wide counters are counted apart:
    /// there is one per existing user at most.
    fn make_room(&self, windows: &mut HashMap<Key, Window>, now: Instant) {
        let users =
            |w: &HashMap<Key, Window>| w.keys().filter(|k| matches!(k, Key::User(_))).count();
        if windows.len() < self.max_keys {
            return;
        }
        if windows.len() - users(windows) < self.max_keys {
            return;
        }
        let longest = self.per_user.window.max(self.per_address.window);
        windows.retain(|k, w| matches!(k, Key::User(_)) || now.duration_since(w.started) < longest);
        if windows.len() - users(windows) < self.max_keys {
            return;
        }
        windows
            .retain(|k, w| matches!(k, Key::User(_)) || w.failures >= self.limit(k).max_failures);
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
            t.record_failure(Some("joe"), Some("1.2.3.4"));
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
        t.record_failure(Some("victim"), Some("9.9.9.9"));
        for i in 0..50 {
            t.record_failure(None, Some(&format!("10.0.0.{i}")));
        }
        assert!(t.check("victim", Some("9.9.9.9")).is_err(), "still locked");
    }

    fn limits(user: u32, address: u32) -> Throttle {
        let window = Duration::from_secs(60);
        Throttle::new(
            Limit {
                max_failures: user,
                window,
            },
            Limit {
                max_failures: address,
                window,
            },
        )
    }

    #[test]
    fn guesses_from_one_address_do_not_lock_the_owner_out_elsewhere() {
        let t = limits(3, 1000);
        for _ in 0..3 {
            t.record_failure(Some("joe"), Some("6.6.6.6"));
        }
        assert!(t.check("joe", Some("6.6.6.6")).is_err());
        assert!(t.check("joe", Some("1.2.3.4")).is_ok(), "owner elsewhere");
        for i in 0..(3 * USER_WIDE_FACTOR) {
            t.record_failure(Some("joe"), Some(&format!("6.6.{i}.1")));
        }
        assert!(t.check("joe", Some("1.2.3.4")).is_err(), "user-wide cap");
    }

    #[test]
    fn junk_filling_the_table_never_resets_a_user_counter() {
        let mut t = limits(10, 1_000_000);
        t.max_keys = 100;
        for _ in 0..9 {
            t.record_failure(Some("joe"), Some("6.6.6.6"));
        }
        for i in 0..10_000u32 {
            let a = format!("10.{}.{}.1", i / 256, i % 256);
            t.record_failure(None, Some(&a));
            t.record_failure(Some("ann"), Some(&a));
        }
        // The per-address counter was evicted; the user-wide one was not.
        for i in 0..(10 * USER_WIDE_FACTOR) {
            let a = format!("7.7.{}.{}", i / 256, i % 256);
            if t.check("joe", Some(&a)).is_err() {
                assert!(i <= 10 * USER_WIDE_FACTOR - 9, "after {i} more guesses");
                return;
            }
            t.record_failure(Some("joe"), Some(&a));
        }
        panic!("joe never locked");
    }

    #[test]
    fn failures_without_a_user_count_only_against_the_address() {
        let t = limits(1, 1000);
        for _ in 0..50 {
            t.record_failure(None, Some("6.6.6.6"));
        }
        assert!(t.check("admin", Some("1.2.3.4")).is_ok());
    }
}
