//! Recently written objects, kept whole in memory so tailing consumers cost no GETs.
//!
//! Objects are immutable, so entries never need invalidation; the oldest is evicted first once
//! the byte budget is exceeded. Sections are served as zero-copy slices of the cached object.

use bytes::Bytes;
use std::collections::{HashMap, VecDeque};

#[derive(Debug)]
pub(crate) struct RecentObjects {
    max_bytes: usize,
    bytes: usize,
    objects: HashMap<String, Bytes>,
    order: VecDeque<String>,
}

impl RecentObjects {
    pub(crate) fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            bytes: 0,
            objects: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    pub(crate) fn insert(&mut self, key: String, object: Bytes) {
        if object.len() > self.max_bytes || self.objects.contains_key(&key) {
            return;
        }
        self.bytes += object.len();
        self.objects.insert(key.clone(), object);
        self.order.push_back(key);
        while self.bytes > self.max_bytes {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(evicted) = self.objects.remove(&oldest) {
                self.bytes -= evicted.len();
            }
        }
    }

    /// A slice of a cached object, if it is cached and the range is inside it.
    pub(crate) fn get(&self, key: &str, range: std::ops::Range<usize>) -> Option<Bytes> {
        let object = self.objects.get(key)?;
        (range.end <= object.len()).then(|| object.slice(range))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_oldest_beyond_budget() {
        let mut recent = RecentObjects::new(10);
        recent.insert("a".into(), Bytes::from_static(b"123456"));
        recent.insert("b".into(), Bytes::from_static(b"abcd"));
        assert_eq!(recent.get("a", 1..3).as_deref(), Some(&b"23"[..]));
        recent.insert("c".into(), Bytes::from_static(b"xy"));
        assert!(recent.get("a", 0..1).is_none());
        assert!(recent.get("b", 0..4).is_some());
        assert!(recent.get("c", 0..3).is_none(), "range past the end");
        recent.insert("huge".into(), Bytes::from(vec![0u8; 11]));
        assert!(recent.get("huge", 0..1).is_none());
    }
}
