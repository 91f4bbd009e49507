//! Latency distributions: flush stages, object-store and metadata-store requests. Kept as
//! HDR histograms (two significant digits, a mutex each: a few thousand samples per second at
//! most) and read as quantile summaries (`/v1/stats`) or as Prometheus histogram buckets
//! (`/metrics`).

use hdrhistogram::Histogram;
use std::sync::Mutex;
use std::time::Duration;

/// Longest duration kept exactly; longer samples are clamped to it (an hour).
const SAMPLE_US_MAX: u64 = 3_600_000_000;

/// Durations, in microseconds, two significant digits.
pub struct LatencyHistogram(Mutex<Histogram<u64>>);

impl Default for LatencyHistogram {
    fn default() -> Self {
        let histogram = Histogram::new_with_bounds(1, SAMPLE_US_MAX, 2)
            .expect("bounds 1..=SAMPLE_US_MAX with 2 digits are valid");
        LatencyHistogram(Mutex::new(histogram))
    }
}

impl std::fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatencyHistogram")
            .field("summary", &self.summary())
            .finish()
    }
}

/// A distribution so far, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct StageSummary {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub sum_ms: f64,
}

impl LatencyHistogram {
    pub fn record(&self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros())
            .unwrap_or(SAMPLE_US_MAX)
            .clamp(1, SAMPLE_US_MAX);
        self.0
            .lock()
            .expect("histogram mutex poisoned")
            .saturating_record(us);
    }

    pub fn summary(&self) -> StageSummary {
        let h = self.0.lock().expect("histogram mutex poisoned");
        let ms = |us: u64| us as f64 / 1000.0;
        StageSummary {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.5)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
            sum_ms: h.mean() * h.len() as f64 / 1000.0,
        }
    }
}

/// Upper bounds (seconds) of the Prometheus buckets of request and flush-stage latencies:
/// a millisecond to ten seconds.
pub const REQUEST_BUCKETS_SECS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A histogram as Prometheus buckets: per bucket (not cumulative) counts, the last bucket
/// `+Inf`.
#[derive(Debug, Clone, PartialEq)]
pub struct Buckets {
    pub sum_secs: f64,
    pub count: u64,
    pub per_bucket: Vec<(f64, u64)>,
}

impl LatencyHistogram {
    /// The samples counted into buckets with these upper bounds (seconds, ascending).
    pub fn buckets(&self, bounds_secs: &[f64]) -> Buckets {
        let h = self.0.lock().expect("histogram mutex poisoned");
        let mut per_bucket = Vec::with_capacity(bounds_secs.len() + 1);
        let mut below = 0u64;
        for bound in bounds_secs {
            let us = (bound * 1e6) as u64;
            let cumulative = h.count_between(0, us.min(SAMPLE_US_MAX));
            per_bucket.push((*bound, cumulative.saturating_sub(below)));
            below = below.max(cumulative);
        }
        per_bucket.push((f64::INFINITY, h.len().saturating_sub(below)));
        Buckets {
            sum_secs: h.mean() * h.len() as f64 / 1e6,
            count: h.len(),
            per_bucket,
        }
    }
}

/// Upper bounds (bytes) of the Prometheus buckets of flush-object sizes: 4 KiB to 64 MiB.
pub const SIZE_BUCKETS_BYTES: [f64; 9] = [
    4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 8388608.0, 16777216.0, 67108864.0,
];

/// Sizes in bytes (flush objects), kept like latencies: a byte counts as a microsecond of the
/// underlying HDR histogram, so up to 3.6 GB with two significant digits.
#[derive(Debug, Default)]
pub struct SizeHistogram(LatencyHistogram);

impl SizeHistogram {
    pub fn record(&self, bytes: u64) {
        self.0.record(Duration::from_micros(bytes));
    }

    /// The sizes counted into buckets with these upper bounds (bytes, ascending); the sum in
    /// bytes.
    pub fn buckets(&self, bounds_bytes: &[f64]) -> Buckets {
        let bounds: Vec<f64> = bounds_bytes.iter().map(|b| b / 1e6).collect();
        let b = self.0.buckets(&bounds);
        Buckets {
            sum_secs: b.sum_secs * 1e6,
            count: b.count,
            per_bucket: b
                .per_bucket
                .into_iter()
                .map(|(bound, n)| {
                    (
                        if bound.is_finite() {
                            bound * 1e6
                        } else {
                            bound
                        },
                        n,
                    )
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_fall_in_byte_buckets() {
        let h = SizeHistogram::default();
        for bytes in [100, 5_000, 5_000, 2_000_000, 100_000_000] {
            h.record(bytes);
        }
        let b = h.buckets(&SIZE_BUCKETS_BYTES);
        assert_eq!(b.count, 5);
        assert_eq!(b.per_bucket[0], (4096.0, 1));
        assert_eq!(b.per_bucket[1], (16384.0, 2));
        assert_eq!(b.per_bucket[5], (4194304.0, 1));
        assert_eq!(b.per_bucket.last(), Some(&(f64::INFINITY, 1)));
        assert!((b.sum_secs - 102_010_100.0).abs() < 1_100_000.0, "{b:?}");
    }

    #[test]
    fn buckets_count_each_sample_once() {
        let h = LatencyHistogram::default();
        for ms in [0, 1, 3, 3, 40, 900, 20_000] {
            h.record(Duration::from_millis(ms));
        }
        let b = h.buckets(&REQUEST_BUCKETS_SECS);
        assert_eq!(b.count, 7);
        assert_eq!(b.per_bucket.iter().map(|(_, n)| n).sum::<u64>(), 7);
        let count_at = |bound: f64| {
            b.per_bucket
                .iter()
                .find(|(b, _)| *b == bound)
                .map(|(_, n)| *n)
        };
        assert_eq!(count_at(0.001), Some(2), "0 ms and 1 ms: {b:?}");
        assert_eq!(count_at(0.005), Some(2), "{b:?}");
        assert_eq!(count_at(0.05), Some(1), "{b:?}");
        assert_eq!(count_at(1.0), Some(1), "{b:?}");
        assert_eq!(count_at(f64::INFINITY), Some(1), "20 s: {b:?}");
        assert!((20.9..21.2).contains(&b.sum_secs), "{b:?}");
    }
}
