//! Splitting events into sink-sized chunks.

use std::ops::Range;

use crate::ChunkLimits;

/// Splits items of the given sizes, in order, into consecutive ranges that
/// each hold at most `limits.max_entries` items and at most
/// `limits.max_bytes` bytes. An item bigger than `max_bytes` on its own gets
/// a range of its own (callers quarantine such items before chunking).
/// Nothing is lost and the order is kept: the ranges tile `0..sizes.len()`.
pub fn chunk_ranges(sizes: &[usize], limits: ChunkLimits) -> Vec<Range<usize>> {
    let mut chunker = Chunker::new(limits);
    let mut ranges = Vec::new();
    let mut start = 0;
    for (i, &size) in sizes.iter().enumerate() {
        if chunker.push(size) {
            ranges.push(start..i);
            start = i;
        }
    }
    if start < sizes.len() {
        ranges.push(start..sizes.len());
    }
    ranges
}

/// The cutting of [`chunk_ranges`], one item at a time, for items that
/// arrive one by one: the relay dispatches each chunk as soon as the next
/// item shows that it is complete.
#[derive(Debug, Clone)]
pub(crate) struct Chunker {
    limits: ChunkLimits,
    entries: usize,
    bytes: usize,
}

impl Chunker {
    /// A chunker for `limits`, with an empty first chunk.
    pub(crate) fn new(limits: ChunkLimits) -> Self {
        Self {
            limits,
            entries: 0,
            bytes: 0,
        }
    }

    /// Adds an item of `size` bytes. Returns `true` when it does not fit in
    /// the current chunk, which is then complete: the item starts the next.
    /// The first item of a chunk always fits, even when it is bigger than
    /// `max_bytes` on its own.
    pub(crate) fn push(&mut self, size: usize) -> bool {
        let full = self.entries == self.limits.max_entries.max(1)
            || (self.entries > 0 && self.bytes.saturating_add(size) > self.limits.max_bytes);
        if full {
            self.entries = 0;
            self.bytes = 0;
        }
        self.entries += 1;
        self.bytes = self.bytes.saturating_add(size);
        full
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIMITS: ChunkLimits = ChunkLimits {
        max_entries: 10,
        max_bytes: 1000,
    };

    #[test]
    fn ten_entries_per_chunk_at_most() {
        let ranges = chunk_ranges(&[1; 25], LIMITS);
        assert_eq!(ranges, vec![0..10, 10..20, 20..25]);
    }

    #[test]
    fn bytes_at_the_limit_fit_and_one_more_does_not() {
        assert_eq!(chunk_ranges(&[500, 500, 1], LIMITS), vec![0..2, 2..3]);
        assert_eq!(chunk_ranges(&[500, 501], LIMITS), vec![0..1, 1..2]);
        assert_eq!(chunk_ranges(&[1000], LIMITS), vec![0..1]);
        assert_eq!(chunk_ranges(&[], LIMITS), Vec::<Range<usize>>::new());
    }

    #[test]
    fn an_oversize_item_is_alone() {
        assert_eq!(chunk_ranges(&[10, 5000, 10], LIMITS), vec![0..1, 1..2, 2..3]);
    }

    proptest! {
        #[test]
        fn nothing_lost_order_kept_limits_held(
            sizes in proptest::collection::vec(1usize..1200, 0..200),
            max_entries in 1usize..12,
            max_bytes in 100usize..3000,
        ) {
            let limits = ChunkLimits { max_entries, max_bytes };
            let ranges = chunk_ranges(&sizes, limits);
            let mut next = 0;
            for r in &ranges {
                prop_assert_eq!(r.start, next, "ranges tile the input in order");
                prop_assert!(!r.is_empty());
                prop_assert!(r.len() <= max_entries);
                let bytes: usize = sizes[r.clone()].iter().sum();
                prop_assert!(bytes <= max_bytes || r.len() == 1, "only a lone oversize item may exceed the byte limit");
                next = r.end;
            }
            prop_assert_eq!(next, sizes.len());
        }
    }
}
