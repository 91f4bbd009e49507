//! The compactor's settings: plain data, validated once at start (the `skiff` binary maps its
//! flags onto them).

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactorSettings {
    /// Records are in Parquet at most about this long after they were acknowledged (the pass
    /// interval and a job's duration included).
    pub freshness_ms: i64,
    /// Flush-object bytes one job converts at most: about the largest Parquet file's input.
    pub job_max_bytes: u64,
    /// Flush-object bytes one pass reads at most before it starts converting (the compactor's
    /// memory is about twice this); a pass that hit it starts the next one at once.
    pub pass_max_bytes: u64,
    /// The longest a writer may take from naming an object to committing it (brokers'
    /// `--object-commit-timeout-ms`); this compactor's own jobs keep it too.
    pub object_commit_timeout_ms: i64,
    /// How often garbage collection runs.
    pub gc_interval_ms: i64,
    /// How long an object nothing references any more stays, for reads that started before
    /// it was replaced.
    pub gc_grace_ms: i64,
    /// Unreferenced objects younger than this are never deleted: they may be uploads whose
    /// commit is still coming. Must exceed `object_commit_timeout_ms`.
    pub orphan_age_ms: i64,
    /// Memory for the keys of one log-compaction pass over a partition (Kafka's
    /// `log.cleaner.dedupe.buffer.size`): a partition with more distinct keys in its cleanable
    /// range is not cleaned (the job fails and says so).
    pub dedupe_buffer_max_bytes: u64,
    /// TTL of the lease this compactor's job claims live on: a crashed compactor's jobs are
    /// free again after it.
    pub lease_ttl_ms: i64,
}

impl Default for CompactorSettings {
    fn default() -> Self {
        Self {
            freshness_ms: 60_000,
            job_max_bytes: 64 * 1024 * 1024,
            pass_max_bytes: 64 * 1024 * 1024,
            object_commit_timeout_ms: skiff_tiering::log::OBJECT_COMMIT_TIMEOUT_MS,
            gc_interval_ms: 300_000,
            gc_grace_ms: 300_000,
            orphan_age_ms: 3_600_000,
            lease_ttl_ms: 10_000,
            dedupe_buffer_max_bytes: 64 * 1024 * 1024,
        }
    }
}

impl CompactorSettings {
    /// Checks the settings, with messages that say what to fix.
    pub fn validate(&self) -> Result<(), String> {
        if self.freshness_ms < 1_000 {
            return Err("the compactor freshness must be at least 1000 ms".into());
        }
        if self.job_max_bytes == 0 || self.pass_max_bytes < self.job_max_bytes {
            return Err("the compactor's pass budget must be at least its job budget (> 0)".into());
        }
        if self.orphan_age_ms <= self.object_commit_timeout_ms {
            return Err(format!(
                "the orphan age ({} ms) must exceed the object commit timeout ({} ms): younger unreferenced objects may still be committed",
                self.orphan_age_ms, self.object_commit_timeout_ms
            ));
        }
        if self.gc_interval_ms <= 0 || self.gc_grace_ms < 0 || self.lease_ttl_ms < 1_000 {
            return Err(
                "gc interval must be positive, gc grace not negative, lease TTL at least 1000 ms"
                    .into(),
            );
        }
        Ok(())
    }

    /// Between passes: a quarter of the freshness, within 1 to 15 s.
    pub fn pass_interval(&self) -> Duration {
        Duration::from_millis((self.freshness_ms / 4).clamp(1_000, 15_000) as u64)
    }

    /// Unconverted data this old is converted by the next pass: with the pass interval and a
    /// job's time it is in Parquet within the freshness.
    pub fn convert_after_ms(&self) -> i64 {
        (self.freshness_ms / 2).max(0)
    }
}
