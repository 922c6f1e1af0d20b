//! What slows down password guessing, without locking anyone out.
//!
//! Two kinds of state, both bounded in memory whatever a client sends:
//!
//! - **Per client address** (an IPv4 address, or an IPv6 /64): a sliding
//!   window of registrations and sign-ins that did not succeed. A flood
//!   from one address is refused with 429 and `Retry-After`; other
//!   addresses are not affected.
//! - **Per account**: failed passwords. They never refuse an attempt; they
//!   make the next attempts on that account *wait* before the password is
//!   checked, growing from nothing (the first [`FREE_FAILURES`] failures)
//!   to at most [`MAX_DELAY`]. The owner is never locked out: their attempt,
//!   from their own address, waits at most [`MAX_DELAY`] and then signs in,
//!   however many wrong passwords someone else sent. A guesser pays the
//!   same wait for every guess, and a client that gives up while waiting
//!   gets no password checked. Failures are counted by account id, so only
//!   real accounts have entries; every unknown username shares one entry
//!   (and waits the same way, so the wait does not tell which accounts
//!   exist).
//!
//! Each map holds at most `max_tracked` keys; past that the entries not
//! touched for longest are dropped first.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Failures of an account that cost nothing (typos).
pub const FREE_FAILURES: u32 = 3;
/// The wait after the first failure past [`FREE_FAILURES`]; it doubles with
/// each further failure up to [`MAX_DELAY`].
pub const FIRST_DELAY: Duration = Duration::from_millis(250);
/// The longest an attempt waits because of its account's failures.
pub const MAX_DELAY: Duration = Duration::from_secs(4);
/// An account's failures are forgotten this long after the last one.
pub const FAILURE_MEMORY: Duration = Duration::from_secs(15 * 60);

/// The key failures of unknown usernames share.
pub const UNKNOWN_ACCOUNT: &str = "(unknown)";

/// How much the limiter allows and keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignInLimits {
    /// Sign-in and registration attempts per address per window.
    pub per_address: usize,
    pub address_window: Duration,
    /// Most keys each map keeps.
    pub max_tracked: usize,
}

impl Default for SignInLimits {
    fn default() -> Self {
        SignInLimits {
            per_address: 30,
            address_window: Duration::from_secs(5 * 60),
            max_tracked: 10_000,
        }
    }
}

/// One key's state and when it was last touched.
struct Entry<V> {
    touched: Instant,
    value: V,
}

/// A map that keeps at most `max` keys, dropping the least recently
/// touched ones when full.
struct Bounded<K, V> {
    map: HashMap<K, Entry<V>>,
    max: usize,
}

impl<K: Eq + Hash + Clone, V: Default> Bounded<K, V> {
    fn new(max: usize) -> Self {
        Bounded {
            map: HashMap::new(),
            max: max.max(1),
        }
    }

    /// The entry of `key`, made (and room for it) when absent. Entries
    /// untouched for `stale` go first; if that is not enough, the oldest
    /// eighth, so that a flood of new keys costs O(log n) per key.
    fn touch(&mut self, key: &K, now: Instant, stale: Duration) -> &mut V {
        if !self.map.contains_key(key) && self.map.len() >= self.max {
            self.map
                .retain(|_, e| now.saturating_duration_since(e.touched) < stale);
            if self.map.len() >= self.max {
                let mut times: Vec<Instant> = self.map.values().map(|e| e.touched).collect();
                let drop = (self.max / 8).max(1).min(times.len() - 1);
                let (_, cut, _) = times.select_nth_unstable(drop);
                let cut = *cut;
                self.map.retain(|_, e| e.touched > cut);
            }
        }
        let entry = self.map.entry(key.clone()).or_insert_with(|| Entry {
            touched: now,
            value: V::default(),
        });
        entry.touched = now;
        &mut entry.value
    }
}

/// Failed passwords of one account.
#[derive(Debug, Default, Clone, Copy)]
struct Failures {
    count: u32,
    last: Option<Instant>,
}

/// The wait that `count` failures impose, counted from the last one.
pub fn backoff(count: u32) -> Duration {
    if count <= FREE_FAILURES {
        return Duration::ZERO;
    }
    let doublings = (count - FREE_FAILURES - 1).min(16);
    FIRST_DELAY.saturating_mul(1 << doublings).min(MAX_DELAY)
}

/// Sign-in throttling state of the host.
pub struct SignInLimiter {
    limits: SignInLimits,
    addresses: Mutex<Bounded<IpAddr, VecDeque<Instant>>>,
    accounts: Mutex<Bounded<String, Failures>>,
}

impl Default for SignInLimiter {
    fn default() -> Self {
        Self::new(SignInLimits::default())
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SignInLimiter {
    pub fn new(limits: SignInLimits) -> Self {
        SignInLimiter {
            limits,
            addresses: Mutex::new(Bounded::new(limits.max_tracked)),
            accounts: Mutex::new(Bounded::new(limits.max_tracked)),
        }
    }

    /// Counts an attempt from `bucket` (see
    /// [`crate::client_addr::bucket`]), or `Err(seconds until one is
    /// allowed)` when the address used up its window (a refused attempt is
    /// not counted).
    pub fn attempt(&self, bucket: IpAddr) -> Result<(), u64> {
        self.attempt_at(bucket, Instant::now())
    }

    fn attempt_at(&self, bucket: IpAddr, now: Instant) -> Result<(), u64> {
        let window = self.limits.address_window;
        let mut addresses = lock(&self.addresses);
        let times = addresses.touch(&bucket, now, window);
        while times
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= window)
        {
            times.pop_front();
        }
        if times.len() >= self.limits.per_address {
            let oldest = times.front().copied().unwrap_or(now);
            let wait = window.saturating_sub(now.saturating_duration_since(oldest));
            return Err(wait.as_secs().max(1));
        }
        times.push_back(now);
        Ok(())
    }

    /// Takes back the newest attempt of `bucket`: a sign-in that succeeded
    /// does not count against its address, so people sharing an address
    /// (an office behind NAT) do not use up each other's window.
    pub fn refund(&self, bucket: IpAddr) {
        if let Some(entry) = lock(&self.addresses).map.get_mut(&bucket) {
            entry.value.pop_back();
        }
    }

    /// How long an attempt on `account` (an account id, or
    /// [`UNKNOWN_ACCOUNT`]) waits before its password is checked.
    pub fn wait_for(&self, account: &str) -> Duration {
        self.wait_at(account, Instant::now())
    }

    fn wait_at(&self, account: &str, now: Instant) -> Duration {
        let accounts = lock(&self.accounts);
        let Some(entry) = accounts.map.get(account) else {
            return Duration::ZERO;
        };
        let Some(last) = entry.value.last else {
            return Duration::ZERO;
        };
        let since = now.saturating_duration_since(last);
        if since >= FAILURE_MEMORY {
            return Duration::ZERO;
        }
        backoff(entry.value.count).saturating_sub(since)
    }

    /// Counts a wrong password for `account`.
    pub fn failed(&self, account: &str) {
        self.failed_at(account, Instant::now());
    }

    fn failed_at(&self, account: &str, now: Instant) {
        let mut accounts = lock(&self.accounts);
        let failures = accounts.touch(&account.to_owned(), now, FAILURE_MEMORY);
        if failures
            .last
            .is_some_and(|t| now.saturating_duration_since(t) >= FAILURE_MEMORY)
        {
            failures.count = 0;
        }
        failures.count = failures.count.saturating_add(1);
        failures.last = Some(now);
    }

    /// Forgets the failures of `account` (its owner signed in).
    pub fn succeeded(&self, account: &str) {
        lock(&self.accounts).map.remove(account);
    }

    /// Keys held: `(addresses, accounts)`.
    pub fn tracked(&self) -> (usize, usize) {
        (
            lock(&self.addresses).map.len(),
            lock(&self.accounts).map.len(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_address: usize, max_tracked: usize) -> SignInLimiter {
        SignInLimiter::new(SignInLimits {
            per_address,
            address_window: Duration::from_secs(60),
            max_tracked,
        })
    }

    fn v4(n: u32) -> IpAddr {
        IpAddr::V4(n.into())
    }

    #[test]
    fn an_address_is_refused_past_its_window_and_let_in_after() {
        let l = limiter(3, 100);
        let t0 = Instant::now();
        for i in 0..3 {
            assert!(l.attempt_at(v4(1), t0 + Duration::from_secs(i)).is_ok());
        }
        let wait = l
            .attempt_at(v4(1), t0 + Duration::from_secs(10))
            .unwrap_err();
        assert_eq!(wait, 50);
        // A success is taken back.
        l.refund(v4(1));
        assert!(l.attempt_at(v4(1), t0 + Duration::from_secs(10)).is_ok());
        assert!(l.attempt_at(v4(1), t0 + Duration::from_secs(10)).is_err());
        // Another address has its own window.
        assert!(l.attempt_at(v4(2), t0 + Duration::from_secs(10)).is_ok());
        // The first attempt leaves the window at 60 s.
        assert!(l.attempt_at(v4(1), t0 + Duration::from_secs(60)).is_ok());
        assert!(l.attempt_at(v4(1), t0 + Duration::from_secs(60)).is_err());
    }

    #[test]
    fn failures_slow_an_account_down_but_never_lock_it() {
        let l = limiter(3, 100);
        let t0 = Instant::now();
        for _ in 0..FREE_FAILURES {
            l.failed_at("u1", t0);
        }
        assert_eq!(l.wait_at("u1", t0), Duration::ZERO);
        l.failed_at("u1", t0);
        assert_eq!(l.wait_at("u1", t0), FIRST_DELAY);
        for _ in 0..100 {
            l.failed_at("u1", t0);
        }
        assert_eq!(l.wait_at("u1", t0), MAX_DELAY);
        // The wait counts from the last failure, and never exceeds the cap.
        assert_eq!(
            l.wait_at("u1", t0 + Duration::from_secs(1)),
            MAX_DELAY - Duration::from_secs(1)
        );
        assert_eq!(l.wait_at("u1", t0 + MAX_DELAY), Duration::ZERO);
        assert_eq!(l.wait_at("u2", t0), Duration::ZERO);
        // A success forgets; so does time.
        l.succeeded("u1");
        assert_eq!(l.wait_at("u1", t0), Duration::ZERO);
        for _ in 0..10 {
            l.failed_at("u3", t0);
        }
        let later = t0 + FAILURE_MEMORY;
        l.failed_at("u3", later);
        assert_eq!(l.wait_at("u3", later), Duration::ZERO, "count restarted");
    }

    #[test]
    fn backoff_doubles_to_the_cap() {
        let waits: Vec<u128> = (0..=10).map(|n| backoff(n).as_millis()).collect();
        assert_eq!(waits, [0, 0, 0, 0, 250, 500, 1000, 2000, 4000, 4000, 4000]);
        assert_eq!(backoff(u32::MAX), MAX_DELAY);
    }

    #[test]
    fn a_flood_of_keys_stays_within_the_bound() {
        let l = limiter(1000, 500);
        let t0 = Instant::now();
        for i in 0..100_000u32 {
            let now = t0 + Duration::from_micros(u64::from(i));
            let _ = l.attempt_at(v4(i), now);
            l.failed_at(&format!("account-{i}"), now);
            let (addresses, accounts) = l.tracked();
            assert!(
                addresses <= 500 && accounts <= 500,
                "{addresses} {accounts}"
            );
        }
        // The newest keys are the ones kept.
        let accounts = lock(&l.accounts);
        assert!(accounts.map.contains_key("account-99999"));
        assert!(!accounts.map.contains_key("account-0"));
    }
}
