//! The window of recently counted task ids that makes counting once per task exact
//! within `ledger.dedupe_window` ids.

/// A bounded set of recently counted task ids, oldest evicted first.
///
/// The ids' hashes live in a ring (8 bytes each, in the order they came); a hash table
/// of 4-byte positions in the ring finds them, hashed by the stored hash itself (already
/// uniform). About 19 bytes per id with the default window, where a set of hashes next to
/// a queue of them took 26. Both grow as ids arrive, so a quiet deployment never pays
/// for the whole window, and the cost of a line stays the same from the first id to the
/// millionth (a table sized for the whole window at start-up made small runs dearer per
/// line: every id landed on a page not yet touched). The table is rebuilt from the ring
/// now and then, about four times larger each time; the last growth of the default
/// window, at 458,752 ids, holds both tables (~13 MB) for the few milliseconds it takes.
#[derive(Debug, Default)]
pub struct DedupeWindow {
    capacity: usize,
    /// The remembered hashes; once `capacity` are held, `oldest` is the next to go.
    ring: Vec<u64>,
    oldest: usize,
    /// Positions in `ring`.
    table: hashbrown::HashTable<u32>,
    /// How many times the table was rebuilt ([`DedupeWindow::regrow`]).
    rebuilds: u64,
}

impl DedupeWindow {
    /// The largest window: positions in the ring are 32-bit (configuration caps the
    /// window far below this).
    pub const MAX_CAPACITY: usize = u32::MAX as usize;

    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.min(Self::MAX_CAPACITY);
        DedupeWindow {
            capacity,
            ring: Vec::new(),
            oldest: 0,
            table: hashbrown::HashTable::new(),
            rebuilds: 0,
        }
    }

    /// The stable hash an id is remembered by.
    pub fn hash(id: &str) -> u64 {
        xxhash_rust::xxh3::xxh3_64(id.as_bytes())
    }

    /// Remembers `id`; false when it was already remembered.
    pub fn insert(&mut self, id: &str) -> bool {
        self.insert_hash(Self::hash(id))
    }

    /// Whether `id` is remembered.
    pub fn contains(&self, id: &str) -> bool {
        self.contains_hash(Self::hash(id))
    }

    /// Looks `hashes` up and forgets the answers, and so the oldest ids that as many
    /// inserts would evict from a full window: lookups that do not wait for each other
    /// fetch their parts of the table together, where the same lookups inside inserts
    /// would wait for one cache miss after another. A batch warmed first then inserts
    /// into (and evicts from) a table already in cache.
    pub fn warm(&self, hashes: impl Iterator<Item = u64>) {
        let mut n = 0;
        for h in hashes {
            std::hint::black_box(self.contains_hash(h));
            n += 1;
        }
        if self.ring.len() == self.capacity {
            for h in self.hashes().take(n) {
                std::hint::black_box(self.contains_hash(h));
            }
        }
    }

    /// Whether an already hashed id is remembered.
    pub fn contains_hash(&self, h: u64) -> bool {
        let ring = &self.ring;
        self.table.find(h, |&i| ring[i as usize] == h).is_some()
    }

    /// Changes how many ids are remembered; the oldest go first when it shrinks.
    pub fn set_capacity(&mut self, capacity: usize) {
        if capacity.min(Self::MAX_CAPACITY) == self.capacity {
            return;
        }
        let kept: Vec<u64> = self.hashes().collect();
        let mut window = DedupeWindow::new(capacity);
        for h in &kept[kept.len().saturating_sub(window.capacity)..] {
            window.insert_hash(*h);
        }
        *self = window;
    }

    /// Remembers an already hashed id (also restoring a saved window, oldest first);
    /// false when it was already remembered.
    pub fn insert_hash(&mut self, h: u64) -> bool {
        if self.capacity == 0 {
            return true;
        }
        if self.contains_hash(h) {
            return false;
        }
        if self.table.len() == self.table.capacity() {
            self.regrow();
        }
        let at = if self.ring.len() < self.capacity {
            if self.ring.len() == self.ring.capacity() {
                // Doubling, but never past the window.
                let more = self
                    .ring
                    .len()
                    .max(1024)
                    .min(self.capacity - self.ring.len());
                self.ring.reserve_exact(more);
            }
            self.ring.push(h);
            self.ring.len() - 1
        } else {
            let at = self.oldest;
            let gone = self.ring[at];
            if let Ok(entry) = self.table.find_entry(gone, |&i| i as usize == at) {
                entry.remove();
            }
            self.ring[at] = h;
            self.oldest = (at + 1) % self.capacity;
            at
        };
        let ring = &self.ring;
        // `at` < capacity <= MAX_CAPACITY, so it fits.
        self.table
            .insert_unique(h, at as u32, |&i| ring[i as usize]);
        true
    }

    /// Makes room in the table for more ids (or clears it of the marks removed ids
    /// leave), by building a new one from the ring. hashbrown would rebuild it too, but
    /// in its own order, reading each id's hash from a random place in the ring: a
    /// cache miss per id, a sixth of all the time a million-line scan took.
    #[cold]
    fn regrow(&mut self) {
        let wanted = (self.ring.len() * 2).max(1024).min(self.capacity);
        // Room for a quarter more: a full window's table fills with the marks of removed
        // ids, and a rebuild must buy many inserts, never one.
        let mut table = hashbrown::HashTable::with_capacity(wanted + wanted / 4 + 1);
        let ring = &self.ring;
        for (at, &h) in ring.iter().enumerate() {
            // `at` < capacity <= MAX_CAPACITY, so it fits.
            table.insert_unique(h, at as u32, |&i| ring[i as usize]);
        }
        self.table = table;
        self.rebuilds += 1;
    }

    /// The remembered hashes, oldest first.
    pub fn hashes(&self) -> impl Iterator<Item = u64> + '_ {
        let (newer, older) = self.ring.split_at(self.oldest);
        older.iter().chain(newer).copied()
    }

    pub fn len(&self) -> usize {
        self.ring.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The ring and its position table behave like the plain model they replace: a
        /// queue of the last `capacity` ids and a set of them, through wrap-arounds,
        /// repeats and resizes.
        #[test]
        fn dedupe_window_matches_a_queue_and_a_set(
            capacity in 0usize..8,
            ops in proptest::collection::vec((0u8..16, 0u8..20), 0..200),
        ) {
            let mut w = DedupeWindow::new(capacity);
            let mut model: std::collections::VecDeque<u64> = Default::default();
            let mut cap = capacity;
            for (n, op) in ops {
                let id = format!("task-{n}");
                let h = DedupeWindow::hash(&id);
                if op == 0 {
                    // A reload that resizes the window: the newest ids stay.
                    cap = usize::from(n % 7);
                    w.set_capacity(cap);
                    while model.len() > cap {
                        model.pop_front();
                    }
                } else {
                    let fresh = cap == 0 || !model.contains(&h);
                    proptest::prop_assert_eq!(w.insert(&id), fresh);
                    if cap > 0 && fresh {
                        model.push_back(h);
                        if model.len() > cap {
                            model.pop_front();
                        }
                    }
                }
                proptest::prop_assert_eq!(w.hashes().collect::<Vec<_>>(), model.iter().copied().collect::<Vec<_>>());
                proptest::prop_assert_eq!(w.len(), model.len());
                for other in 0u8..16 {
                    let other = format!("task-{other}");
                    proptest::prop_assert_eq!(w.contains(&other), model.contains(&DedupeWindow::hash(&other)));
                }
            }
        }
    }

    /// Past the small windows of the property test: tables rebuilt while they grow and
    /// again when a full window has filled them with the marks of removed ids, through
    /// three wrap-arounds, forget exactly the oldest, and a rebuild buys room for many
    /// inserts (at most one per quarter of a window).
    #[test]
    fn dedupe_window_rebuilds_keep_exactly_the_newest_ids() {
        for capacity in [1, 7, 1023, 1791, 5000] {
            let mut w = DedupeWindow::new(capacity);
            for n in 0..3 * capacity + 5 {
                assert!(w.insert(&format!("t{n}")), "t{n} is new");
                assert!(!w.insert(&format!("t{n}")), "t{n} is remembered");
            }
            assert!(
                w.rebuilds <= 4 + 3 * 4 + 1,
                "{capacity}: {} rebuilds",
                w.rebuilds
            );
            let newest = 2 * capacity + 5..3 * capacity + 5;
            for n in 0..3 * capacity + 5 {
                assert_eq!(
                    w.contains(&format!("t{n}")),
                    newest.contains(&n),
                    "{capacity}: t{n}"
                );
            }
            assert_eq!(w.len(), capacity);
        }
    }

    #[test]
    fn dedupe_window_is_bounded_and_forgets_oldest() {
        let mut w = DedupeWindow::new(3);
        assert!(w.insert("a") && w.insert("b") && w.insert("c"));
        assert!(!w.insert("a"));
        assert!(w.insert("d"));
        assert_eq!(w.len(), 3);
        assert!(w.insert("a"), "a was evicted and counts again");
        assert!(!w.insert("d"));
        let mut off = DedupeWindow::new(0);
        assert!(
            off.insert("x") && off.insert("x"),
            "a window of 0 turns dedupe off"
        );
    }
}
