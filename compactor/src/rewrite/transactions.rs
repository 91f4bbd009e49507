//! Transactions in a cleaning (Kafka's cleaner, for data below the last stable offset): how
//! each transactional batch of the cleaned range ended, told by the marker that follows it in
//! the range. Committed records are compacted like any others; aborted ones are removed; a batch
//! whose marker lies beyond the range is kept whole and counts for nothing until a later
//! cleaning sees its marker. A marker stays while any record of its transaction does, then for
//! `delete.retention.ms`, like a tombstone.
//!
//! Pure: fed the range's batches in offset order.

use bytes::Bytes;
use skiff_tiering::batch::BatchHeader;
use skiff_tiering::records::Record;
use std::collections::HashMap;

/// A transactional record's key and offset, to count as its key's latest once committed.
pub type KeyAt = (Bytes, i64);

#[derive(Debug, Default)]
pub struct Classifier {
    /// Per producer: its transactional batches (base offsets) and keyed records since its last
    /// marker in the range.
    pending: HashMap<i64, (Vec<i64>, Vec<KeyAt>)>,
    /// Transactional data batches whose marker was seen, by base offset: committed or not.
    outcomes: HashMap<i64, bool>,
}

impl Classifier {
    /// Feeds one transactional batch (data or marker) in offset order. For a commit marker,
    /// returns the keys its transaction wrote in the range; otherwise nothing.
    pub fn feed(&mut self, header: &BatchHeader, records: &[Record]) -> Vec<KeyAt> {
        debug_assert!(header.is_transactional());
        let pending = self.pending.entry(header.producer_id).or_default();
        if !header.is_control() {
            pending.0.push(header.base_offset);
            pending.1.extend(records.iter().filter_map(|r| {
                let key = r.key.as_ref()?;
                Some((Bytes::copy_from_slice(key), r.offset))
            }));
            return Vec::new();
        }
        let Some(commit) = records.first().and_then(marker_commits) else {
            // Not a transaction marker (no other control type is ever written): its
            // transaction stays undecided, and is kept whole.
            return Vec::new();
        };
        let (batches, keys) = std::mem::take(pending);
        for base in batches {
            self.outcomes.insert(base, commit);
        }
        if commit {
            keys
        } else {
            Vec::new()
        }
    }

    /// Whether the transactional data batch at `base_offset` committed (`None`: its marker is
    /// not in the range).
    pub fn outcome(&self, base_offset: i64) -> Option<bool> {
        self.outcomes.get(&base_offset).copied()
    }

    /// Bytes the pending keys hold (for the dedupe buffer's bound).
    pub fn pending_key_bytes(&self) -> u64 {
        self.pending
            .values()
            .flat_map(|(_, keys)| keys)
            .map(|(key, _)| key.len() as u64 + 48)
            .sum()
    }
}

/// Whether a control record is a commit (`Some(true)`) or abort (`Some(false)`) marker: its
/// key is (version: i16, type: i16), type 0 abort and 1 commit.
pub fn marker_commits(record: &Record) -> Option<bool> {
    let key = record.key.as_deref()?;
    match key.get(2..4)? {
        [0, 0] => Some(false),
        [0, 1] => Some(true),
        _ => None,
    }
}

/// Per producer, the records kept since its last marker: a marker goes only once its
/// transaction kept nothing.
#[derive(Debug, Default)]
pub struct MarkerKeeper {
    kept_since_marker: HashMap<i64, usize>,
}

impl MarkerKeeper {
    /// Notes `count` records of `producer_id`'s transaction kept.
    pub fn kept(&mut self, producer_id: i64, count: usize) {
        *self.kept_since_marker.entry(producer_id).or_default() += count;
    }

    /// At a marker: whether its transaction kept no record (then the marker itself may go once
    /// past `delete.retention.ms`).
    pub fn transaction_emptied(&mut self, producer_id: i64) -> bool {
        self.kept_since_marker.remove(&producer_id).unwrap_or(0) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_tiering::producers::Marker;
    use skiff_tiering::records;

    fn data(producer_id: i64, base_offset: i64, keys: &[&str]) -> (BatchHeader, Vec<Record>) {
        let header = BatchHeader {
            base_offset,
            size_bytes: 0,
            partition_leader_epoch: -1,
            magic: 2,
            crc: 0,
            // Transactional.
            attributes: 0x10,
            last_offset_delta: keys.len() as i32 - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id,
            producer_epoch: 0,
            base_sequence: 0,
            records_count: keys.len() as i32,
        };
        let records = keys
            .iter()
            .enumerate()
            .map(|(i, k)| Record {
                offset: base_offset + i as i64,
                timestamp: 0,
                key: Some(Bytes::from(k.to_string())),
                value: Some(Bytes::from_static(b"v")),
                headers: Vec::new(),
            })
            .collect();
        (header, records)
    }

    fn marker(producer_id: i64, offset: i64, commit: bool) -> (BatchHeader, Vec<Record>) {
        let bytes = records::control_batch(
            &Marker {
                producer_id,
                epoch: 0,
                commit,
                revision: 1,
                end: 0,
            },
            0,
        );
        let mut header = skiff_tiering::batch::parse_header(&bytes).expect("header");
        let mut records = records::decode(&header, &bytes).expect("decode");
        header.base_offset = offset;
        records[0].offset = offset;
        (header, records)
    }

    #[test]
    fn batches_learn_their_outcome_from_the_next_marker_of_their_producer() {
        let mut c = Classifier::default();
        let feed = |c: &mut Classifier, (h, r): (BatchHeader, Vec<Record>)| c.feed(&h, &r);
        assert!(feed(&mut c, data(1, 0, &["a", "b"])).is_empty());
        assert!(feed(&mut c, data(2, 2, &["c"])).is_empty());
        assert!(feed(&mut c, data(1, 3, &["d"])).is_empty());
        // Producer 2 aborts: its batch is aborted, no key counts.
        assert!(feed(&mut c, marker(2, 4, false)).is_empty());
        // Producer 1 commits: both its batches, and all three keys count.
        let keys = feed(&mut c, marker(1, 5, true));
        let keys: Vec<(&[u8], i64)> = keys.iter().map(|(k, o)| (&k[..], *o)).collect();
        assert_eq!(keys, [(&b"a"[..], 0), (&b"b"[..], 1), (&b"d"[..], 3)]);
        // Producer 1 again, without a marker in the range: undecided.
        assert!(feed(&mut c, data(1, 6, &["e"])).is_empty());
        assert_eq!(
            [0, 2, 3, 6].map(|base| c.outcome(base)),
            [Some(true), Some(false), Some(true), None]
        );
        assert!(c.pending_key_bytes() > 0, "the undecided key is held");
    }

    #[test]
    fn a_marker_goes_only_after_its_transaction_kept_nothing() {
        let mut keeper = MarkerKeeper::default();
        keeper.kept(1, 2);
        keeper.kept(2, 0);
        assert!(!keeper.transaction_emptied(1));
        assert!(keeper.transaction_emptied(2));
        // The count starts again after each marker.
        assert!(keeper.transaction_emptied(1));
    }
}
