//! Sliding-window attempt counters, used to slow down password guessing.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Counts attempts per key within a window.
#[derive(Debug, Default)]
pub struct RateLimiter {
    attempts: Mutex<HashMap<String, VecDeque<Instant>>>,
}

/// Past this many keys, stale ones are dropped on the next record.
const PRUNE_AT: usize = 10_000;

impl RateLimiter {
    pub fn new() -> Self {
        Self::default()
    }

    /// `Err(seconds until a slot frees)` when `key` already has `max`
    /// attempts within `window`.
    pub fn check(&self, key: &str, max: usize, window: Duration) -> Result<(), u64> {
        let now = Instant::now();
        let mut map = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
        let Some(times) = map.get_mut(key) else {
            return Ok(());
        };
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= window)
        {
            times.pop_front();
        }
        if times.len() < max {
            return Ok(());
        }
        let oldest = times.front().copied().unwrap_or(now);
        let wait = window.saturating_sub(now.duration_since(oldest));
        Err(wait.as_secs().max(1))
    }

    /// Records one attempt for `key`.
    pub fn record(&self, key: &str, window: Duration) {
        let now = Instant::now();
        let mut map = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= PRUNE_AT {
            map.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|t| now.duration_since(*t) < window)
            });
        }
        map.entry(key.to_owned()).or_default().push_back(now);
    }

    /// Forgets every attempt of `key`.
    pub fn clear(&self, key: &str) {
        let mut map = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_max_attempts_and_clears() {
        let limiter = RateLimiter::new();
        let window = Duration::from_secs(60);
        for _ in 0..3 {
            assert!(limiter.check("k", 3, window).is_ok());
            limiter.record("k", window);
        }
        let wait = limiter.check("k", 3, window).unwrap_err();
        assert!((1..=60).contains(&wait));
        assert!(limiter.check("other", 3, window).is_ok());
        limiter.clear("k");
        assert!(limiter.check("k", 3, window).is_ok());
    }

    #[test]
    fn old_attempts_leave_the_window() {
        let limiter = RateLimiter::new();
        let window = Duration::from_millis(20);
        limiter.record("k", window);
        assert!(limiter.check("k", 1, window).is_err());
        std::thread::sleep(Duration::from_millis(30));
        assert!(limiter.check("k", 1, window).is_ok());
    }
}
