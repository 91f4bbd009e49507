//! Skiff patch: a budget on the memory one decode may allocate.
//!
//! Array lengths are bounded by the bytes left in the frame, but an element of one wire byte can
//! decode into a struct of a hundred, so a frame of tiny elements decodes into ~100x its size.
//! A caller that decodes untrusted bytes sets a budget with [`with_budget`]; every array
//! allocation (`len * size_of::<T>()`) and every tagged-field section is charged against it,
//! and decoding fails once it is spent. Without a budget nothing is checked (upstream
//! behaviour). The budget is per thread: decoding is synchronous.

use anyhow::{bail, Result};
use std::cell::Cell;

/// What one unknown tagged field may cost once decoded (its map entry), charged per field.
const TAGGED_FIELD_BYTES: usize = 64;

thread_local! {
    static LEFT: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Runs `decode` with at most `bytes` of allocations charged; returns its result and the bytes
/// it was charged.
pub fn with_budget<T>(bytes: usize, decode: impl FnOnce() -> T) -> (T, usize) {
    let outer = LEFT.with(|left| left.replace(Some(bytes)));
    let result = decode();
    let left = LEFT.with(|left| left.replace(outer)).unwrap_or(0);
    (result, bytes - left)
}

/// Charges `bytes` to the current budget, failing when it does not hold them.
pub(crate) fn charge(bytes: usize) -> Result<()> {
    LEFT.with(|left| match left.get() {
        None => Ok(()),
        Some(remaining) if bytes <= remaining => {
            left.set(Some(remaining - bytes));
            Ok(())
        }
        Some(remaining) => {
            left.set(Some(0));
            bail!("decoding needs more than the {remaining} bytes left in its memory budget")
        }
    })
}

/// Charges an array of `len` elements of `T`.
pub(crate) fn charge_array<T>(len: usize) -> Result<()> {
    charge(len.saturating_mul(std::mem::size_of::<T>()))
}

/// Charges a tagged-field section of `count` fields.
pub fn charge_tagged_fields(count: u32) -> Result<()> {
    charge((count as usize).saturating_mul(TAGGED_FIELD_BYTES))
}
