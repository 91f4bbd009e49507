//! Which flush-object leaves a job takes: a prefix of the partition's flush-object part, within
//! a byte budget, and what stands for the rest of a rollup it takes only in part.
//!
//! The flush-object part is a tree (rollups of rollups of sections, then the tail). A job takes
//! its leaves from the front. A top-level key whose leaves are all taken is consumed (deleted by
//! the swap); the one taken in part is consumed too and replaced by a rollup of what is left of
//! it, written as new index objects along the path to the cut ("path copying"): its untaken
//! children are reused as they are, so a cut writes at most one object per tree level.

use futures::future::BoxFuture;
use futures::FutureExt;
use skiff_tiering::keys::{IndexEntry, RollupBody, RollupEntry};
use skiff_tiering::layout::{self, IndexSnapshot, NewIndexObjects, TopKey};
use skiff_tiering::tree::{IndexObjects, ReadError, Slot};

/// Top-level keys one swap consumes at most: each is a compare and a delete in the swap's
/// transaction (etcd allows 128 of each).
pub const CONSUMED_KEYS_MAX: usize = 100;

/// What a job takes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cut {
    /// Sections to convert, in offset order (those wholly below the log start are only dropped).
    pub leaves: Vec<IndexEntry>,
    /// Top-level keys the swap deletes.
    pub consumed: Vec<TopKey>,
    /// The rollup that stands for the rest of a top-level rollup taken in part.
    pub remainder: Option<RollupEntry>,
    /// Index objects to write before the swap (the remainder's path).
    pub new_objects: NewIndexObjects,
}

impl Cut {
    /// The first offset after the leaves taken: the new end of the Parquet part.
    pub fn end(&self) -> Option<i64> {
        self.leaves.last().map(|leaf| leaf.last_offset + 1)
    }
}

/// The bytes a cut may take: at least one leaf, then leaves while they fit. Leaves wholly below
/// the log start cost nothing (they are dropped, not read).
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub max_bytes: u64,
    pub log_start: i64,
    taken_bytes: u64,
    taken_leaves: usize,
}

impl Budget {
    pub fn new(max_bytes: u64, log_start: i64) -> Self {
        Self {
            max_bytes,
            log_start,
            taken_bytes: 0,
            taken_leaves: 0,
        }
    }

    fn cost(&self, entry: &IndexEntry) -> u64 {
        if entry.last_offset < self.log_start {
            0
        } else {
            entry.length
        }
    }

    fn take(&mut self, entry: &IndexEntry) -> bool {
        let cost = self.cost(entry);
        if self.taken_leaves > 0 && self.taken_bytes + cost > self.max_bytes {
            return false;
        }
        self.taken_bytes += cost;
        self.taken_leaves += 1;
        true
    }

    /// Bytes of the leaves taken that must be read.
    pub fn taken_bytes(&self) -> u64 {
        self.taken_bytes
    }
}

/// How much of one level was taken: its first `whole` slots entirely, then, if `partial`, the
/// slot after them in part, `partial` standing for what is left of it (already rolled up).
struct LevelTake {
    whole: usize,
    partial: Option<RollupEntry>,
}

/// Takes a prefix of the snapshot's flush-object part within `budget`.
pub async fn cut(
    objects: &IndexObjects,
    snapshot: &IndexSnapshot,
    budget: &mut Budget,
    now_ms: i64,
) -> Result<Cut, ReadError> {
    let mut out = Cut::default();
    for slot in snapshot.wal_slots() {
        if out.consumed.len() == CONSUMED_KEYS_MAX {
            break;
        }
        match slot {
            Slot::Section(entry) => {
                if !budget.take(&entry) {
                    break;
                }
                let revision = snapshot.tail.get(&entry.base_offset).map_or(0, |(_, r)| *r);
                out.consumed.push(TopKey::Tail {
                    base_offset: entry.base_offset,
                    revision,
                });
                out.leaves.push(entry);
            }
            Slot::Rollup(rollup) => {
                let children = objects.children(&rollup).await?;
                let taken = take_level(objects, &children, budget, &mut out, now_ms).await?;
                if taken.whole == 0 && taken.partial.is_none() {
                    break;
                }
                let revision = snapshot
                    .rollups
                    .get(&rollup.base_offset)
                    .map_or(0, |(_, r)| *r);
                out.consumed.push(TopKey::Rollup {
                    base_offset: rollup.base_offset,
                    revision,
                });
                if taken.whole < children.len() {
                    out.remainder =
                        Some(roll_rest(&children, taken, &mut out.new_objects, now_ms)?);
                    break;
                }
            }
            Slot::File(file) => {
                return Err(ReadError::Corrupt(format!(
                    "parquet file object={} among flush-object slots",
                    file.object
                )))
            }
        }
    }
    Ok(out)
}

/// Takes leaves from the front of one level of a rollup's subtree.
fn take_level<'a>(
    objects: &'a IndexObjects,
    level: &'a [Slot],
    budget: &'a mut Budget,
    out: &'a mut Cut,
    now_ms: i64,
) -> BoxFuture<'a, Result<LevelTake, ReadError>> {
    async move {
        for (i, slot) in level.iter().enumerate() {
            match slot {
                Slot::Section(entry) => {
                    if !budget.take(entry) {
                        return Ok(LevelTake {
                            whole: i,
                            partial: None,
                        });
                    }
                    out.leaves.push(entry.clone());
                }
                Slot::Rollup(rollup) => {
                    let children = objects.children(rollup).await?;
                    let taken = take_level(objects, &children, budget, out, now_ms).await?;
                    if taken.whole == children.len() {
                        continue;
                    }
                    if taken.whole == 0 && taken.partial.is_none() {
                        return Ok(LevelTake {
                            whole: i,
                            partial: None,
                        });
                    }
                    return Ok(LevelTake {
                        whole: i,
                        partial: Some(roll_rest(&children, taken, &mut out.new_objects, now_ms)?),
                    });
                }
                Slot::File(file) => {
                    return Err(ReadError::Corrupt(format!(
                        "parquet file object={} in a flush-object rollup",
                        file.object
                    )))
                }
            }
        }
        Ok(LevelTake {
            whole: level.len(),
            partial: None,
        })
    }
    .boxed()
}

/// A rollup standing for what is left of a level after `taken`: the rollup of the partly taken
/// child's rest and the untaken children as they are (one rollup left stands for itself).
fn roll_rest(
    children: &[Slot],
    taken: LevelTake,
    written: &mut NewIndexObjects,
    now_ms: i64,
) -> Result<RollupEntry, ReadError> {
    let mut next = taken.whole;
    let mut rest = Vec::new();
    if let Some(partial) = taken.partial {
        rest.push(Slot::Rollup(partial));
        next += 1;
    }
    rest.extend(children[next..].iter().cloned());
    let body = match rest.as_slice() {
        [Slot::Rollup(only)] => return Ok(only.clone()),
        [Slot::Section(_), ..] => RollupBody::Sections(
            rest.into_iter()
                .filter_map(|s| match s {
                    Slot::Section(e) => Some(e),
                    _ => None,
                })
                .collect(),
        ),
        [Slot::Rollup(_), ..] => RollupBody::Rollups(
            rest.into_iter()
                .filter_map(|s| match s {
                    Slot::Rollup(r) => Some(r),
                    _ => None,
                })
                .collect(),
        ),
        _ => {
            return Err(ReadError::Corrupt(
                "an empty or mixed rollup remainder".into(),
            ))
        }
    };
    let (entry, object) = layout::roll(body, now_ms);
    written.push(object);
    Ok(entry)
}

#[cfg(test)]
mod tests;
