//! What slows down password guessing, without locking anyone out.
//!
//! Two kinds of state, both bounded in memory whatever a client sends:
//!
//! - **Per client address** (an IPv4 address, or an IPv6 /64): a sliding
//!   window of registrations and sign-ins that did not succeed. A flood
//!   from one address is refused with 429 and `Retry-After`; other
//!   addresses are not affected.
//! - **Per account**: failed passwords, counted by the username asked for
//!   (normalised and length-capped), whether or not such an account exists,
//!   so an unknown name waits exactly as a known one would and the wait
//!   does not tell which accounts exist. They make the next attempts on
//!   that name *wait* before the password is checked, growing from nothing
//!   (the first [`FREE_FAILURES`] failures) to [`MAX_DELAY`] between two
//!   checks. Each attempt reserves its own turn, so attempts sent in
//!   parallel are checked one after another, not together. A client that
//!   gives up while waiting gets no password checked. An attempt whose turn
//!   is more than [`MAX_QUEUE`] away is refused with 429; the owner is
//!   never locked out for longer than the guessing goes on.
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

/// Successful sign-ins of one account per address window that do not
/// count against their address (see [`SignInLimiter::refund`]).
pub const FREE_SIGN_INS: usize = 10;

/// How far ahead an attempt may be queued behind others on the same name.
pub const MAX_QUEUE: Duration = Duration::from_secs(30);
/// The longest part of a username that keys its failures.
pub const MAX_ACCOUNT_KEY_CHARS: usize = 64;

/// The key failures of `username` count under: trimmed, lowercased and cut
/// to [`MAX_ACCOUNT_KEY_CHARS`].
pub fn account_key(username: &str) -> String {
    username
        .trim()
        .to_lowercase()
        .chars()
        .take(MAX_ACCOUNT_KEY_CHARS)
        .collect()
}

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
    /// The earliest time the next attempt may have its password checked.
    next_turn: Option<Instant>,
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
    /// Recent successful sign-ins of each account.
    sign_ins: Mutex<Bounded<String, VecDeque<Instant>>>,
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
            sign_ins: Mutex::new(Bounded::new(limits.max_tracked)),
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

    /// Takes back the newest attempt of `bucket` after `account` signed in
    /// with it: people sharing an address (an office behind NAT) do not use
    /// up each other's window. Only the first [`FREE_SIGN_INS`] sign-ins of
    /// an account in a window are taken back, so that signing in again and
    /// again (each one a password hash and a stored session) is limited
    /// like failing is.
    pub fn refund(&self, bucket: IpAddr, account: &str) {
        self.refund_at(bucket, account, Instant::now());
    }

    fn refund_at(&self, bucket: IpAddr, account: &str, now: Instant) {
        let window = self.limits.address_window;
        {
            let mut sign_ins = lock(&self.sign_ins);
            let times = sign_ins.touch(&account.to_owned(), now, window);
            while times
                .front()
                .is_some_and(|t| now.saturating_duration_since(*t) >= window)
            {
                times.pop_front();
            }
            if times.len() >= FREE_SIGN_INS {
                return;
            }
            times.push_back(now);
        }
        if let Some(entry) = lock(&self.addresses).map.get_mut(&bucket) {
            entry.value.pop_back();
        }
    }

    /// Reserves the next turn of `account` (see [`account_key`]): how long
    /// this attempt waits before its password is checked, or `Err(seconds)`
    /// when its turn would be more than [`MAX_QUEUE`] away.
    pub fn reserve(&self, account: &str) -> Result<Duration, u64> {
        self.reserve_at(account, Instant::now())
    }

    fn reserve_at(&self, account: &str, now: Instant) -> Result<Duration, u64> {
        let mut accounts = lock(&self.accounts);
        let Some(entry) = accounts.map.get_mut(account) else {
            return Ok(Duration::ZERO);
        };
        let failures = &mut entry.value;
        let Some(last) = failures.last else {
            return Ok(Duration::ZERO);
        };
        if now.saturating_duration_since(last) >= FAILURE_MEMORY {
            return Ok(Duration::ZERO);
        }
        let step = backoff(failures.count);
        if step.is_zero() {
            return Ok(Duration::ZERO);
        }
        let turn = (last + step)
            .max(now)
            .max(failures.next_turn.unwrap_or(now));
        let wait = turn.saturating_duration_since(now);
        if wait > MAX_QUEUE {
            return Err(wait.saturating_sub(MAX_QUEUE).as_secs().max(1));
        }
        failures.next_turn = Some(turn + step);
        Ok(wait)
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
            failures.next_turn = None;
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
        l.refund_at(v4(1), "ada", t0 + Duration::from_secs(10));
        assert!(l.attempt_at(v4(1), t0 + Duration::from_secs(10)).is_ok());
        assert!(l.attempt_at(v4(1), t0 + Duration::from_secs(10)).is_err());
        // Another address has its own window.
        assert!(l.attempt_at(v4(2), t0 + Duration::from_secs(10)).is_ok());
        // The first attempt leaves the window at 60 s.
        assert!(l.attempt_at(v4(1), t0 + Duration::from_secs(60)).is_ok());
        assert!(l.attempt_at(v4(1), t0 + Duration::from_secs(60)).is_err());
    }

    #[test]
    fn only_an_accounts_first_sign_ins_in_a_window_are_taken_back() {
        let l = limiter(FREE_SIGN_INS + 2, 100);
        let t0 = Instant::now();
        for _ in 0..FREE_SIGN_INS {
            l.attempt_at(v4(1), t0).unwrap();
            l.refund_at(v4(1), "ada", t0);
        }
        // The same account again and again now uses up the window.
        for _ in 0..FREE_SIGN_INS + 2 {
            l.attempt_at(v4(1), t0).unwrap();
            l.refund_at(v4(1), "ada", t0);
        }
        assert!(l.attempt_at(v4(1), t0).is_err());
        // Another account's sign-in from that address is still taken back,
        // and a window later the account's are again.
        l.refund_at(v4(1), "bea", t0);
        l.attempt_at(v4(1), t0).unwrap();
        let later = t0 + Duration::from_secs(61);
        l.attempt_at(v4(1), later).unwrap();
        l.refund_at(v4(1), "ada", later);
        assert_eq!(lock(&l.addresses).map[&v4(1)].value.len(), 0);
    }

    #[test]
    fn failures_slow_an_account_down_but_never_lock_it() {
        let l = limiter(3, 100);
        let t0 = Instant::now();
        for _ in 0..FREE_FAILURES {
            l.failed_at("u1", t0);
        }
        assert_eq!(l.reserve_at("u1", t0), Ok(Duration::ZERO));
        assert_eq!(l.reserve_at("u1", t0), Ok(Duration::ZERO));
        l.failed_at("u1", t0);
        assert_eq!(l.reserve_at("u1", t0), Ok(FIRST_DELAY));
        for _ in 0..100 {
            l.failed_at("u1", t0);
        }
        // The wait counts from the last failure, and one attempt never
        // waits more than the cap.
        let later = t0 + Duration::from_secs(60);
        l.failed_at("u1", later);
        assert_eq!(
            l.reserve_at("u1", later + Duration::from_secs(1)),
            Ok(MAX_DELAY - Duration::from_secs(1))
        );
        assert_eq!(l.reserve_at("u2", t0), Ok(Duration::ZERO));
        // A success forgets; so does time.
        l.succeeded("u1");
        assert_eq!(l.reserve_at("u1", later), Ok(Duration::ZERO));
        for _ in 0..10 {
            l.failed_at("u3", t0);
        }
        let much_later = t0 + FAILURE_MEMORY;
        l.failed_at("u3", much_later);
        assert_eq!(
            l.reserve_at("u3", much_later),
            Ok(Duration::ZERO),
            "count restarted"
        );
    }

    #[test]
    fn parallel_attempts_on_one_account_take_turns() {
        let l = limiter(3, 100);
        let t0 = Instant::now();
        for _ in 0..20 {
            l.failed_at("u1", t0);
        }
        let waits: Vec<_> = (0..8).map(|_| l.reserve_at("u1", t0)).collect();
        let expected: Vec<Result<Duration, u64>> = (1..=7u32).map(|k| Ok(MAX_DELAY * k)).collect();
        assert_eq!(waits[..7], expected[..]);
        // The eighth turn is further away than an attempt may queue.
        assert_eq!(waits[7], Err(2));
        // Others' queue is their own.
        assert_eq!(l.reserve_at("u2", t0), Ok(Duration::ZERO));
        // Reservations from many threads never share a turn.
        let l = std::sync::Arc::new(limiter(3, 100));
        for _ in 0..20 {
            l.failed_at("u1", t0);
        }
        let mut waits: Vec<Duration> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..7)
                .map(|_| s.spawn(|| l.reserve_at("u1", t0).expect("queued")))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        waits.sort();
        assert_eq!(waits, (1..=7u32).map(|k| MAX_DELAY * k).collect::<Vec<_>>());
    }

    #[test]
    fn unknown_names_are_slowed_down_one_by_one_like_known_ones() {
        let l = limiter(3, 100);
        let t0 = Instant::now();
        let made_up = account_key("  Nobody-Here ");
        assert_eq!(made_up, "nobody-here");
        for _ in 0..10 {
            l.failed_at(&made_up, t0);
        }
        assert_eq!(l.reserve_at(&made_up, t0), Ok(MAX_DELAY));
        // Another made-up name waits as any untouched account would.
        assert_eq!(
            l.reserve_at(&account_key("someone-else"), t0),
            Ok(Duration::ZERO)
        );
        let long = "x".repeat(10_000);
        assert_eq!(account_key(&long).chars().count(), MAX_ACCOUNT_KEY_CHARS);
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
