//! Per-plugin call counters and latency histograms, cheap enough to update
//! on every call (a few relaxed atomic adds).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

/// An export of a plugin the runtime calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Export {
    /// `hooks.before-prompt`.
    BeforePrompt,
    /// `hooks.on-chunk`.
    OnChunk,
    /// `hooks.finish`.
    Finish,
    /// `hooks.after-answer`.
    AfterAnswer,
    /// `routes.handle`.
    Handle,
}

impl Export {
    /// Every export, in call order.
    pub const ALL: [Export; 5] = [
        Export::BeforePrompt,
        Export::OnChunk,
        Export::Finish,
        Export::AfterAnswer,
        Export::Handle,
    ];

    /// The WIT name.
    pub fn as_str(self) -> &'static str {
        match self {
            Export::BeforePrompt => "before-prompt",
            Export::OnChunk => "on-chunk",
            Export::Finish => "finish",
            Export::AfterAnswer => "after-answer",
            Export::Handle => "handle",
        }
    }
}

impl std::fmt::Display for Export {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Counters of one export of one plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExportStats {
    /// Which export.
    pub export: Export,
    /// Calls made.
    pub calls: u64,
    /// Calls that failed (trap, time, memory, invalid output).
    pub errors: u64,
    /// Median time of a call in µs (within ~10%), including the start of
    /// the plugin's instance on the first call of a generation.
    pub p50_us: u64,
    /// 99th percentile time of a call in µs (within ~10%).
    pub p99_us: u64,
}

// Log-linear buckets: values below 16 µs exactly, then 8 buckets per
// power of two, which keeps every bucket within 12.5% of its value.
const LINEAR: u64 = 16;
const SUB_BITS: u32 = 3;
const SUB: usize = 1 << SUB_BITS;
const BUCKETS: usize = LINEAR as usize + (64 - 4) * SUB;

fn bucket_of(us: u64) -> usize {
    if us < LINEAR {
        return us as usize;
    }
    let msb = 63 - us.leading_zeros();
    let sub = ((us >> (msb - SUB_BITS)) as usize) & (SUB - 1);
    LINEAR as usize + (msb as usize - 4) * SUB + sub
}

/// The smallest value that falls into bucket `b`.
fn floor_of(b: usize) -> u64 {
    if b < LINEAR as usize {
        return b as u64;
    }
    let i = b - LINEAR as usize;
    let msb = (i / SUB + 4) as u32;
    let sub = (i % SUB) as u64;
    (1u64 << msb) | (sub << (msb - SUB_BITS))
}

/// Counters and a latency histogram of one export.
pub(crate) struct Histogram {
    calls: AtomicU64,
    errors: AtomicU64,
    buckets: Box<[AtomicU64]>,
}

impl Histogram {
    fn new() -> Self {
        Histogram {
            calls: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn record(&self, took: Duration, failed: bool) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.buckets[bucket_of(us)].fetch_add(1, Ordering::Relaxed);
    }

    fn quantile(&self, counts: &[u64], total: u64, q: f64) -> u64 {
        if total == 0 {
            return 0;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (b, &n) in counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                // The middle of the bucket.
                let lo = floor_of(b);
                let hi = if b + 1 < BUCKETS { floor_of(b + 1) } else { lo };
                return lo + (hi - lo) / 2;
            }
        }
        floor_of(BUCKETS - 1)
    }

    fn snapshot(&self, export: Export) -> ExportStats {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total = counts.iter().sum();
        ExportStats {
            export,
            calls: self.calls.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            p50_us: self.quantile(&counts, total, 0.50),
            p99_us: self.quantile(&counts, total, 0.99),
        }
    }
}

/// The counters of every export of one plugin.
pub(crate) struct Stats {
    per_export: [Histogram; 5],
}

impl Stats {
    pub(crate) fn new() -> Self {
        Stats {
            per_export: std::array::from_fn(|_| Histogram::new()),
        }
    }

    pub(crate) fn record(&self, export: Export, took: Duration, failed: bool) {
        self.per_export[export as usize].record(took, failed);
    }

    pub(crate) fn snapshot(&self) -> Vec<ExportStats> {
        Export::ALL
            .iter()
            .map(|&e| self.per_export[e as usize].snapshot(e))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_tight() {
        let mut last = 0;
        for us in (0..100_000u64).chain([1 << 40, u64::MAX]) {
            let b = bucket_of(us);
            assert!(b >= last, "{us}");
            assert!(b < BUCKETS);
            assert!(floor_of(b) <= us, "{us}: floor {}", floor_of(b));
            if b + 1 < BUCKETS {
                assert!(us < floor_of(b + 1), "{us}");
            }
            last = b;
        }
    }

    #[test]
    fn quantiles_come_from_the_recorded_times() {
        let s = Stats::new();
        for _ in 0..98 {
            s.record(Export::OnChunk, Duration::from_micros(100), false);
        }
        s.record(Export::OnChunk, Duration::from_micros(5000), true);
        s.record(Export::OnChunk, Duration::from_micros(5000), true);
        let snap = &s.snapshot()[1];
        assert_eq!(snap.export, Export::OnChunk);
        assert_eq!((snap.calls, snap.errors), (100, 2));
        assert!((90..=110).contains(&snap.p50_us), "{snap:?}");
        assert!((4500..=5500).contains(&snap.p99_us), "{snap:?}");
        assert_eq!(s.snapshot()[0].calls, 0);
        assert_eq!(s.snapshot()[0].p99_us, 0);
    }
}
