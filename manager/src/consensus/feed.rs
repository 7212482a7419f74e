//! What each applied entry touched, for readers that follow the store by its changes: a
//! bounded ring of the recent (index, touched) pairs. A reader keeps the index it has seen
//! and asks for what came after; when the ring no longer reaches back that far (or a
//! snapshot replaced the whole state) it is told to resync from the state instead.
//!
//! The raft thread writes an entry while it still holds the state's write lock, so a reader
//! holding the read lock sees a [`Feed::head`] that is exactly the state it reads.

use crate::store::Touched;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// Entries kept. A reader that falls further behind than this resyncs, which costs it one
/// pass over the state; a few thousand entries are seconds of the busiest write load.
pub const FEED_ENTRIES: usize = 4096;

#[derive(Clone, Debug, PartialEq)]
pub struct FeedEntry {
    pub index: u64,
    pub touched: Arc<Touched>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the change feed starts after index {covered_from}; a reader at {asked} must resync from the state"
)]
pub struct TooFarBehind {
    pub asked: u64,
    pub covered_from: u64,
}

#[derive(Debug)]
struct Ring {
    entries: VecDeque<FeedEntry>,
    /// Every entry after this index that touched something is in `entries`.
    covered_from: u64,
    /// The newest index applied.
    head: u64,
    capacity: usize,
}

#[derive(Debug)]
pub struct Feed(Mutex<Ring>);

impl Feed {
    /// A feed whose state is the one applied through `index`.
    pub fn new(index: u64, capacity: usize) -> Arc<Feed> {
        Arc::new(Feed(Mutex::new(Ring {
            entries: VecDeque::with_capacity(capacity.min(1024)),
            covered_from: index,
            head: index,
            capacity: capacity.max(1),
        })))
    }

    /// Entry `index` was applied. One that touched nothing only moves the head.
    pub fn push(&self, index: u64, touched: Touched) {
        let mut r = self.0.lock().expect("feed lock");
        debug_assert!(index > r.head || r.head == 0, "entries arrive in log order");
        r.head = index;
        if touched.is_empty() {
            return;
        }
        if r.entries.len() == r.capacity
            && let Some(old) = r.entries.pop_front()
        {
            r.covered_from = old.index;
        }
        r.entries.push_back(FeedEntry {
            index,
            touched: Arc::new(touched),
        });
    }

    /// The state was replaced as of `index` (a snapshot from the leader): nothing before it
    /// says what changed.
    pub fn reset(&self, index: u64) {
        let mut r = self.0.lock().expect("feed lock");
        r.entries.clear();
        r.covered_from = index;
        r.head = index;
    }

    pub fn head(&self) -> u64 {
        self.0.lock().expect("feed lock").head
    }

    /// The entries after `index` that touched something, oldest first.
    pub fn read_after(&self, index: u64) -> Result<Vec<FeedEntry>, TooFarBehind> {
        let r = self.0.lock().expect("feed lock");
        if index < r.covered_from {
            return Err(TooFarBehind {
                asked: index,
                covered_from: r.covered_from,
            });
        }
        // Indexes rise along the ring: skip what the reader has by binary search.
        let start = r.entries.partition_point(|e| e.index <= index);
        Ok(r.entries.range(start..).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ObjectKind;

    fn task(id: &str) -> Touched {
        let mut t = Touched::default();
        t.touch(ObjectKind::Task, id);
        t
    }

    fn indexes(entries: &[FeedEntry]) -> Vec<u64> {
        entries.iter().map(|e| e.index).collect()
    }

    #[test]
    fn a_reader_gets_what_came_after_its_index() {
        let feed = Feed::new(10, 8);
        feed.push(11, task("a"));
        feed.push(12, Touched::default());
        feed.push(13, task("b"));
        assert_eq!(feed.head(), 13);
        assert_eq!(indexes(&feed.read_after(10).unwrap()), [11, 13]);
        assert_eq!(indexes(&feed.read_after(11).unwrap()), [13]);
        // An index the feed skipped (nothing touched) reads like the one before it.
        assert_eq!(indexes(&feed.read_after(12).unwrap()), [13]);
        assert!(feed.read_after(13).unwrap().is_empty());
        assert_eq!(
            feed.read_after(13).unwrap(),
            feed.read_after(99).unwrap(),
            "a reader ahead of the feed has nothing to read"
        );
        assert_eq!(*feed.read_after(12).unwrap()[0].touched, task("b"));
    }

    #[test]
    fn a_reader_older_than_the_ring_must_resync() {
        let feed = Feed::new(0, 3);
        for i in 1..=5 {
            feed.push(i, task(&i.to_string()));
        }
        // 1 and 2 fell out: a reader at 0 or 1 would miss them.
        for behind in [0, 1] {
            assert_eq!(
                feed.read_after(behind),
                Err(TooFarBehind {
                    asked: behind,
                    covered_from: 2
                })
            );
        }
        assert_eq!(indexes(&feed.read_after(2).unwrap()), [3, 4, 5]);
        assert_eq!(indexes(&feed.read_after(4).unwrap()), [5]);
    }

    #[test]
    fn a_reader_from_before_the_start_resyncs() {
        let feed = Feed::new(100, 8);
        assert!(feed.read_after(99).is_err());
        assert!(feed.read_after(100).unwrap().is_empty());
    }

    #[test]
    fn a_snapshot_sends_every_reader_to_resync() {
        let feed = Feed::new(0, 8);
        feed.push(1, task("a"));
        feed.push(2, task("b"));
        feed.reset(50);
        assert_eq!(feed.head(), 50);
        assert!(feed.read_after(2).is_err());
        assert!(feed.read_after(50).unwrap().is_empty());
        feed.push(51, task("c"));
        assert_eq!(indexes(&feed.read_after(50).unwrap()), [51]);
    }
}
