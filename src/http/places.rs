//! Who may hold a connection: `max_connections` *places*, and which connection gives
//! its place up when a new one needs it.
//!
//! A connection is *waiting* while it has no request in progress: it has not sent its
//! request headers yet, or it waits between two requests. When every place is taken, a
//! new connection closes a waiting one: of the client address with the most waiting
//! connections, the one that has waited longest, provided it has waited at least
//! [`MIN_WAIT`]. So clients that drip their headers (slowloris) or sit idle only push
//! each other out, a client's flood pushes out its own connections first, and any
//! connection has at least [`MIN_WAIT`] to send its request however fast others
//! connect. When no waiting connection may be closed, the new one waits for a place
//! (the kernel's backlog holds the ones behind it).
//!
//! A request in progress is never closed for room: it stops waiting under the same lock
//! that picks what to close, until its response is written.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::sync::lock;
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A connection is not closed for room before it has waited this long: time enough to
/// send a request (a TLS 1.3 handshake and the headers take 1.5 round trips).
pub const MIN_WAIT: Duration = Duration::from_millis(100);

/// The places and the waiting connections.
pub struct Places {
    free: Arc<Semaphore>,
    waiting: Arc<Waiting>,
    /// When a connection was last closed for room, for a warning at most once a minute.
    warned: Mutex<Option<Instant>>,
}

#[derive(Default)]
struct Waiting {
    queue: Mutex<Queue>,
    /// A connection began to wait (it may be closed for room now, or soon).
    began: Notify,
}

/// Waiting connections by client address, each client's in the order they began to
/// wait, and the addresses ranked: most waiting connections first, then the one whose
/// first began to wait earliest.
#[derive(Default)]
struct Queue {
    next: u64,
    by_client: HashMap<IpAddr, BTreeMap<u64, Waiter>>,
    ranked: BTreeSet<Rank>,
}

/// `(waiting connections, Reverse(key of the first), client)`: the last is closed first.
type Rank = (usize, std::cmp::Reverse<u64>, IpAddr);

struct Waiter {
    since: Instant,
    close: CancellationToken,
}

/// What [`Queue::close_one`] did.
#[derive(Debug, PartialEq)]
enum Closed {
    One,
    /// Nothing may be closed before then.
    NotBefore(Instant),
    Nothing,
}

impl Queue {
    fn rank(client: IpAddr, mine: &BTreeMap<u64, Waiter>) -> Option<Rank> {
        let (&first, _) = mine.first_key_value()?;
        Some((mine.len(), std::cmp::Reverse(first), client))
    }

    fn insert(&mut self, client: IpAddr, waiter: Waiter) -> u64 {
        let key = self.next;
        self.next += 1;
        let mine = self.by_client.entry(client).or_default();
        if let Some(rank) = Self::rank(client, mine) {
            self.ranked.remove(&rank);
        }
        mine.insert(key, waiter);
        self.ranked.extend(Self::rank(client, mine));
        key
    }

    fn remove(&mut self, client: IpAddr, key: u64) {
        let Some(mine) = self.by_client.get_mut(&client) else {
            return;
        };
        let Some(before) = Self::rank(client, mine) else {
            return;
        };
        if mine.remove(&key).is_none() {
            return;
        }
        self.ranked.remove(&before);
        match Self::rank(client, mine) {
            Some(after) => {
                self.ranked.insert(after);
            }
            None => {
                self.by_client.remove(&client);
            }
        }
    }

    /// Closes the longest-waiting connection of the client with the most, when it has
    /// waited [`MIN_WAIT`].
    fn close_one(&mut self, now: Instant) -> Closed {
        let Some(&(_, _, client)) = self.ranked.last() else {
            return Closed::Nothing;
        };
        let Some((&key, waiter)) = self
            .by_client
            .get(&client)
            .and_then(|m| m.first_key_value())
        else {
            return Closed::Nothing;
        };
        let due = waiter.since + MIN_WAIT;
        if due > now {
            return Closed::NotBefore(due);
        }
        waiter.close.cancel();
        self.remove(client, key);
        Closed::One
    }

    fn close_all(&mut self) {
        for waiter in self.by_client.values().flat_map(|m| m.values()) {
            waiter.close.cancel();
        }
        *self = Queue {
            next: self.next,
            ..Queue::default()
        };
    }
}

impl Places {
    pub fn new(max: usize) -> Places {
        Places {
            free: Arc::new(Semaphore::new(max)),
            waiting: Arc::default(),
            warned: Mutex::new(None),
        }
    }

    /// A place for a new connection from `client`, which waits from now on: a free
    /// place, else one given up by a waiting connection (see the module doc).
    pub async fn take(&self, client: IpAddr) -> (OwnedSemaphorePermit, Arc<Standing>) {
        let place = loop {
            if let Ok(place) = self.free.clone().try_acquire_owned() {
                break place;
            }
            let began = self.waiting.began.notified();
            let closed = lock(&self.waiting.queue).close_one(Instant::now());
            let free = self.free.clone().acquire_owned();
            match closed {
                // Its task gives the place back when next polled.
                Closed::One => {
                    self.warn_once_a_minute();
                    break free.await.expect("the semaphore is never closed");
                }
                Closed::NotBefore(due) => tokio::select! {
                    place = free => break place.expect("the semaphore is never closed"),
                    _ = tokio::time::sleep_until(due) => {}
                },
                Closed::Nothing => tokio::select! {
                    place = free => break place.expect("the semaphore is never closed"),
                    _ = began => {}
                },
            }
        };
        (place, Standing::new(self.waiting.clone(), client))
    }

    /// Closes every waiting connection (at shutdown: those in a request finish).
    pub fn close_waiting(&self) {
        lock(&self.waiting.queue).close_all();
    }

    fn warn_once_a_minute(&self) {
        let mut warned = lock(&self.warned);
        if warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
            *warned = Some(Instant::now());
            tracing::warn!("All web.max_connections places are taken: closing the connections that waited longest for a request (slow or idle clients) to let new ones in.");
        }
    }
}

/// No key: not waiting.
const NOT_WAITING: u64 = u64::MAX;

/// One connection's standing: waiting (under which key) or in a request.
pub struct Standing {
    waiting: Arc<Waiting>,
    client: IpAddr,
    /// Cancelled when the connection is to close.
    pub close: CancellationToken,
    /// Its key in the queue while it waits; changed only under the queue's lock.
    key: AtomicU64,
    requests: AtomicU64,
}

impl Standing {
    fn new(waiting: Arc<Waiting>, client: IpAddr) -> Arc<Standing> {
        let s = Arc::new(Standing {
            waiting,
            client,
            close: CancellationToken::new(),
            key: AtomicU64::new(NOT_WAITING),
            requests: AtomicU64::new(0),
        });
        s.wait();
        s
    }

    fn wait(&self) {
        {
            let mut queue = lock(&self.waiting.queue);
            if self.close.is_cancelled() {
                return;
            }
            let key = queue.insert(
                self.client,
                Waiter {
                    since: Instant::now(),
                    close: self.close.clone(),
                },
            );
            let old = self.key.swap(key, Ordering::Relaxed);
            if old != NOT_WAITING {
                queue.remove(self.client, old);
            }
        }
        self.waiting.began.notify_one();
    }

    fn stop_waiting(&self, queue: &mut Queue) {
        let key = self.key.swap(NOT_WAITING, Ordering::Relaxed);
        if key != NOT_WAITING {
            queue.remove(self.client, key);
        }
    }

    /// Marks a request in progress until the guard is dropped (with the response
    /// written). Under the queue's lock: from here on it cannot be closed for room.
    pub fn serving(self: &Arc<Self>) -> Serving {
        self.stop_waiting(&mut lock(&self.waiting.queue));
        self.requests.fetch_add(1, Ordering::Relaxed);
        Serving(self.clone())
    }

    /// Requests begun on the connection.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

impl Drop for Standing {
    fn drop(&mut self) {
        self.stop_waiting(&mut lock(&self.waiting.queue));
    }
}

/// A request in progress: its connection waits again when this is dropped.
pub struct Serving(Arc<Standing>);

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    fn waiter(since: Instant) -> (Waiter, CancellationToken) {
        let close = CancellationToken::new();
        (
            Waiter {
                since,
                close: close.clone(),
            },
            close,
        )
    }

    #[test]
    fn the_client_with_most_waiting_loses_its_oldest_first() {
        let t0 = Instant::now();
        let now = t0 + MIN_WAIT * 10;
        let mut q = Queue::default();
        let (w, scraper) = waiter(t0);
        q.insert(ip(1), w);
        let mut flood = Vec::new();
        for i in 1..=3u32 {
            let (w, c) = waiter(t0 + MIN_WAIT * i);
            q.insert(ip(2), w);
            flood.push(c);
        }
        // The scraper waited longest, but the flooding client has more.
        assert_eq!(q.close_one(now), Closed::One);
        assert!(flood[0].is_cancelled() && !flood[1].is_cancelled());
        assert_eq!(q.close_one(now), Closed::One);
        assert!(flood[1].is_cancelled());
        // One each: the longest waiting goes.
        assert_eq!(q.close_one(now), Closed::One);
        assert!(scraper.is_cancelled() && !flood[2].is_cancelled());
        assert_eq!(q.close_one(now), Closed::One);
        assert_eq!(q.close_one(now), Closed::Nothing);
        assert!(q.by_client.is_empty() && q.ranked.is_empty());
    }

    #[test]
    fn nothing_is_closed_before_it_has_waited_min_wait() {
        let t0 = Instant::now();
        let mut q = Queue::default();
        let (w, c) = waiter(t0);
        let key = q.insert(ip(1), w);
        assert_eq!(q.close_one(t0), Closed::NotBefore(t0 + MIN_WAIT));
        assert!(!c.is_cancelled());
        q.remove(ip(1), key);
        q.remove(ip(1), key);
        assert_eq!(q.close_one(t0 + MIN_WAIT), Closed::Nothing);
    }

    #[tokio::test]
    async fn a_request_in_progress_is_never_closed_for_room() {
        let places = Places::new(1);
        let (_place, first) = places.take(ip(1)).await;
        let serving = first.serving();
        // Every place in a request: a new connection waits for a place.
        let taking = places.take(ip(2));
        tokio::pin!(taking);
        assert!(
            tokio::time::timeout(MIN_WAIT * 10, &mut taking)
                .await
                .is_err(),
            "a place was taken from a request in progress"
        );
        assert!(!first.close.is_cancelled());
        // Its response written, the connection waits again, and may be closed.
        drop(serving);
        let closing = async {
            first.close.cancelled().await;
            drop(_place);
        };
        let ((_, second), ()) = tokio::join!(&mut taking, closing);
        assert_eq!(first.requests(), 1);
        assert!(!second.close.is_cancelled());
        places.close_waiting();
        assert!(second.close.is_cancelled());
    }
}
