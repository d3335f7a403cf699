//! Rate limits on calls that succeed (logins) or cost a durable write
//! (endings): at most `max` calls per key in a fixed window that starts
//! with the key's first call. Unlike [`super::throttle`], nothing here is
//! a lockout: a key past its limit is refused only until its window ends,
//! and only callers that already made `max` calls can be refused.
//!
//! Memory is bounded: at `max_keys` keys, expired windows are dropped
//! first, then the ones furthest from their limit (a caller that was
//! close to its limit is remembered longest).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most `max` calls per `window`; `max == 0` turns the limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub max: u32,
    pub window: Duration,
}

impl Rate {
    pub const fn per_minute(max: u32) -> Self {
        Rate {
            max,
            window: Duration::from_secs(60),
        }
    }

    pub fn is_off(&self) -> bool {
        self.max == 0 || self.window.is_zero()
    }
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    calls: u32,
}

/// Fixed-window counters by key (`u:<user>`, `a:<address>`, …).
#[derive(Debug)]
pub struct RateLimiter {
    max_keys: usize,
    windows: Mutex<HashMap<String, Window>>,
}

impl Default for RateLimiter {
    fn default() -> Self {
        RateLimiter::new(100_000)
    }
}

impl RateLimiter {
    pub fn new(max_keys: usize) -> Self {
        RateLimiter {
            max_keys: max_keys.max(1),
            windows: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Window>> {
        // A poisoned lock only means another thread panicked mid-update.
        self.windows.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `Err(time left)` when `key` already made `rate.max` calls in its
    /// window; counts nothing.
    pub fn check(&self, key: &str, rate: Rate) -> Result<(), Duration> {
        if rate.is_off() {
            return Ok(());
        }
        let now = Instant::now();
        match self.lock().get(key) {
            Some(w) => Self::verdict(w, rate, now),
            None => Ok(()),
        }
    }

    fn verdict(w: &Window, rate: Rate, now: Instant) -> Result<(), Duration> {
        let elapsed = now.duration_since(w.started);
        if elapsed < rate.window && w.calls >= rate.max {
            Err(rate.window - elapsed)
        } else {
            Ok(())
        }
    }

    /// Counts one call of `key`; `Err(time left)` (and nothing counted)
    /// when it is past its limit.
    pub fn hit(&self, key: &str, rate: Rate) -> Result<(), Duration> {
        if rate.is_off() {
            return Ok(());
        }
        let now = Instant::now();
        let mut windows = self.lock();
        if let Some(w) = windows.get_mut(key) {
            if now.duration_since(w.started) >= rate.window {
                *w = Window {
                    started: now,
                    calls: 0,
                };
            }
            Self::verdict(w, rate, now)?;
            w.calls = w.calls.saturating_add(1);
            return Ok(());
        }
        if windows.len() >= self.max_keys {
            self.make_room(&mut windows, now, rate.window);
        }
        windows.insert(
            key.to_owned(),
            Window {
                started: now,
                calls: 1,
            },
        );
        Ok(())
    }

    /// Drops expired windows; if that is not enough, the half of the keys
    /// with the fewest calls.
    fn make_room(&self, windows: &mut HashMap<String, Window>, now: Instant, window: Duration) {
        windows.retain(|_, w| now.duration_since(w.started) < window);
        if windows.len() < self.max_keys {
            return;
        }
        let mut calls: Vec<u32> = windows.values().map(|w| w.calls).collect();
        calls.sort_unstable();
        let median = calls.get(calls.len() / 2).copied().unwrap_or(0);
        windows.retain(|_, w| w.calls > median);
        if windows.len() >= self.max_keys {
            windows.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_past_the_limit_until_the_window_ends() {
        let r = RateLimiter::default();
        let rate = Rate {
            max: 3,
            window: Duration::from_millis(200),
        };
        for _ in 0..3 {
            assert!(r.check("u:joe", rate).is_ok());
            assert!(r.hit("u:joe", rate).is_ok());
        }
        assert!(r.check("u:joe", rate).is_err());
        assert!(r.hit("u:joe", rate).is_err());
        assert!(r.hit("u:ann", rate).is_ok());
        std::thread::sleep(Duration::from_millis(250));
        assert!(r.hit("u:joe", rate).is_ok());
    }

    #[test]
    fn memory_stays_bounded_and_busy_keys_are_kept() {
        let r = RateLimiter::new(100);
        let rate = Rate::per_minute(5);
        for _ in 0..5 {
            r.hit("busy", rate).unwrap();
        }
        for i in 0..10_000 {
            r.hit(&format!("junk{i}"), rate).unwrap();
        }
        assert!(r.lock().len() <= 100);
        assert!(r.hit("busy", rate).is_err(), "the busy key was forgotten");
    }

    #[test]
    fn zero_turns_it_off() {
        let r = RateLimiter::default();
        for _ in 0..100 {
            r.hit("k", Rate::per_minute(0)).unwrap();
        }
    }
}
