//! The relay's memory of the events it delivered lately.

use std::collections::{HashSet, VecDeque};
use std::sync::{Mutex, PoisonError};

use uuid::Uuid;

/// How many event ids a relay remembers by default: a few batches' worth,
/// about half a megabyte.
pub const DEFAULT_DELIVERED_MEMORY: usize = 10_000;

/// The ids of the last events delivered, at most `capacity` of them (the
/// oldest forgotten first). A batch read again after an earlier failure
/// skips what this process already delivered, instead of publishing it
/// twice. Event ids are unique, so one memory serves every shard.
#[derive(Debug)]
pub(crate) struct Delivered {
    capacity: usize,
    ids: Mutex<(HashSet<Uuid>, VecDeque<Uuid>)>,
}

impl Delivered {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            ids: Mutex::new((
                HashSet::with_capacity(capacity),
                VecDeque::with_capacity(capacity),
            )),
        }
    }

    pub(crate) fn contains(&self, id: &Uuid) -> bool {
        self.ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .0
            .contains(id)
    }

    pub(crate) fn insert(&self, id: Uuid) {
        if self.capacity == 0 {
            return;
        }
        let mut guard = self.ids.lock().unwrap_or_else(PoisonError::into_inner);
        let (set, order) = &mut *guard;
        if !set.insert(id) {
            return;
        }
        order.push_back(id);
        if order.len() > self.capacity
            && let Some(oldest) = order.pop_front()
        {
            set.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_ids_are_forgotten_first() {
        let memory = Delivered::new(2);
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
        for id in &ids {
            memory.insert(*id);
        }
        memory.insert(ids[2]);
        assert!(!memory.contains(&ids[0]));
        assert!(memory.contains(&ids[1]) && memory.contains(&ids[2]));
        let none = Delivered::new(0);
        none.insert(ids[0]);
        assert!(!none.contains(&ids[0]));
    }
}
