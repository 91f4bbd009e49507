//! How long each stage of a flush took: what an acknowledgement waited for, stage by stage, so an
//! operator (and the ack-latency benchmark) can tell a slow bucket from a slow metadata store from
//! the linger itself. One sample per flush (a few per second to a few hundred), so a mutex per
//! histogram costs nothing measurable.

use crate::latency::{LatencyHistogram as StageHistogram, StageSummary};

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
    /// Sizes of the flush objects uploaded.
    pub object_bytes: crate::latency::SizeHistogram,
}

impl FlushTimes {
    /// (stage, histogram) in the order the stages run.
    pub fn histograms(&self) -> [(&'static str, &StageHistogram); 5] {
        [
            ("buffered", &self.buffered),
            ("prepare", &self.prepare),
            ("upload", &self.upload),
            ("commit", &self.commit),
            ("rollup", &self.rollup),
        ]
    }

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
    use std::time::Duration;

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
