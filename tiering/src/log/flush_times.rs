//! How long each stage of a flush took: what an acknowledgement waited for, stage by stage, so an
//! operator (and the ack-latency benchmark) can tell a slow bucket from a slow metadata store from
//! the linger itself. One sample per flush (a few per second to a few hundred), so a mutex per
//! histogram costs nothing measurable.

use hdrhistogram::Histogram;
use std::sync::Mutex;
use std::time::Duration;

/// Longest duration kept exactly; longer samples are clamped to it (an hour).
const SAMPLE_US_MAX: u64 = 3_600_000_000;

/// Durations of one stage, in microseconds, two significant digits.
pub struct StageHistogram(Mutex<Histogram<u64>>);

impl Default for StageHistogram {
    fn default() -> Self {
        let histogram = Histogram::new_with_bounds(1, SAMPLE_US_MAX, 2)
            .expect("bounds 1..=SAMPLE_US_MAX with 2 digits are valid");
        StageHistogram(Mutex::new(histogram))
    }
}

impl std::fmt::Debug for StageHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageHistogram")
            .field("summary", &self.summary())
            .finish()
    }
}

/// A stage's distribution so far, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct StageSummary {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub sum_ms: f64,
}

impl StageHistogram {
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

/// The stages of a flush, in the order they run (see `writer`).
#[derive(Debug, Default)]
pub struct FlushTimes {
    /// Age of the oldest buffered append when its flush took it: the linger actually waited,
    /// plus any wait behind the flush before it.
    pub buffered: StageHistogram,
    /// Loading partitions, checking sequences and leadership, assembling the object.
    pub prepare: StageHistogram,
    /// The object's PUT.
    pub upload: StageHistogram,
    /// The metadata commits of all the flush's chunks (including waiting for other commits).
    pub commit: StageHistogram,
    /// Index roll-ups run after a flush, before the next one can start.
    pub rollup: StageHistogram,
}

impl FlushTimes {
    pub fn summaries(&self) -> [(&'static str, StageSummary); 5] {
        [
            ("buffered", self.buffered.summary()),
            ("prepare", self.prepare.summary()),
            ("upload", self.upload.summary()),
            ("commit", self.commit.summary()),
            ("rollup", self.rollup.summary()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_report_milliseconds() {
        let h = StageHistogram::default();
        assert_eq!(h.summary().count, 0);
        for ms in 1..=100 {
            h.record(Duration::from_millis(ms));
        }
        let s = h.summary();
        assert_eq!(s.count, 100);
        assert!((49.0..=51.0).contains(&s.p50_ms), "{s:?}");
        assert!((98.0..=100.5).contains(&s.p99_ms), "{s:?}");
        assert!((99.5..=100.5).contains(&s.max_ms), "{s:?}");
        assert!((5000.0..=5100.0).contains(&s.sum_ms), "{s:?}");
    }

    #[test]
    fn long_and_zero_samples_are_clamped_not_lost() {
        let h = StageHistogram::default();
        h.record(Duration::ZERO);
        h.record(Duration::from_secs(10_000));
        let s = h.summary();
        assert_eq!(s.count, 2);
        assert!(s.max_ms >= 3_590_000.0, "{s:?}");
    }
}
