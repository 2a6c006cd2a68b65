//! Basic-auth password checks, on a few threads of their own, so that a flood of wrong
//! passwords cannot take the threads that count and commit.
//!
//! bcrypt is slow on purpose. A check first looks in two bounded memories, keyed by a
//! seeded 128-bit hash of user, password and bcrypt hash (so a reload that changes a
//! hash forgets what was checked against the old one): a password checked before is let
//! in or refused at once, on the async worker. Only a password not seen before goes to
//! bcrypt, through a queue of [`QUEUE`] in front of [`threads`] threads, started at the
//! first check; a client address has at most [`PER_CLIENT`] checks queued or running,
//! so one flooding client leaves room for the others. A request finding no room is
//! answered at once ([`Verdict::Busy`]: 429), never with a thread of its own, and a
//! queued check whose request was dropped (the client hung up and hyper saw it) is not
//! run. A user that does not exist is checked like one that does, against a hash of
//! the same cost, so neither the time nor the answer tells which users exist.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::webconfig::BasicAuth;

/// Checks waiting for a thread, at most.
pub const QUEUE: usize = 16;
/// Checks of one client address queued or running, at most.
pub const PER_CLIENT: usize = 2;
/// Right passwords remembered, at most (the memory starts over when full).
const MAX_RIGHT: usize = 1024;
/// Wrong passwords remembered, at most (the memory starts over when full).
const MAX_WRONG: usize = 4096;

/// Threads running bcrypt: half the cores (at least one, at most four), so counting
/// keeps the rest.
pub fn threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get() / 2)
        .unwrap_or(1)
        .clamp(1, 4)
}

/// The answer to one request's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Right,
    Wrong,
    /// Too many checks waiting: try again later.
    Busy,
}

/// What the checker did, for tests and logs.
#[derive(Debug, Default)]
pub struct Stats {
    /// bcrypt checks run.
    pub checked: AtomicU64,
    /// Checks dropped unrun because their request was dropped.
    pub dropped: AtomicU64,
    /// Requests answered [`Verdict::Busy`].
    pub busy: AtomicU64,
}

struct Job {
    key: u128,
    password: String,
    hash: String,
    /// The user exists: without, the check runs all the same and fails.
    known: bool,
    reply: oneshot::Sender<bool>,
    _ticket: Ticket,
}

/// One of a client's [`PER_CLIENT`] checks: given back when dropped.
struct Ticket {
    client: IpAddr,
    pending: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Ticket {
    fn take(pending: &Arc<Mutex<HashMap<IpAddr, usize>>>, client: IpAddr) -> Option<Ticket> {
        let mut map = lock(pending);
        let n = map.entry(client).or_default();
        if *n >= PER_CLIENT {
            return None;
        }
        *n += 1;
        Some(Ticket {
            client,
            pending: pending.clone(),
        })
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut map = lock(&self.pending);
        if let Some(n) = map.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.client);
            }
        }
    }
}

#[derive(Default)]
struct Memory {
    right: Mutex<HashSet<u128>>,
    wrong: Mutex<HashSet<u128>>,
}

impl Memory {
    fn recall(&self, key: u128) -> Option<bool> {
        if lock(&self.right).contains(&key) {
            return Some(true);
        }
        lock(&self.wrong).contains(&key).then_some(false)
    }

    fn remember(&self, key: u128, right: bool) {
        let (set, max) = if right {
            (&self.right, MAX_RIGHT)
        } else {
            (&self.wrong, MAX_WRONG)
        };
        let mut set = lock(set);
        if set.len() >= max {
            set.clear();
        }
        set.insert(key);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

type Jobs = Arc<Mutex<Receiver<Job>>>;

/// The checker: its threads end when it is dropped.
pub struct Passwords {
    jobs: SyncSender<Job>,
    /// Where the threads take jobs from.
    rx: Jobs,
    /// Threads still to start (at the first check).
    unstarted: Mutex<usize>,
    memory: Arc<Memory>,
    pending: Arc<Mutex<HashMap<IpAddr, usize>>>,
    seed: u64,
    pub stats: Arc<Stats>,
}

impl Passwords {
    /// A checker with `threads` threads (started at the first check) behind a queue of
    /// `queue`.
    pub fn start(threads: usize, queue: usize) -> Passwords {
        let (jobs, rx) = sync_channel::<Job>(queue);
        Passwords {
            jobs,
            rx: Arc::new(Mutex::new(rx)),
            unstarted: Mutex::new(threads),
            memory: Arc::default(),
            pending: Arc::default(),
            seed: rand::random(),
            stats: Arc::default(),
        }
    }

    fn start_threads(&self) {
        let threads = std::mem::take(&mut *lock(&self.unstarted));
        self.spawn_threads(threads);
    }

    fn spawn_threads(&self, threads: usize) {
        for i in 0..threads {
            let (rx, memory, stats) = (self.rx.clone(), self.memory.clone(), self.stats.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("password-check-{i}"))
                .spawn(move || work(&rx, &memory, &stats));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "Cannot start a password-check thread.");
            }
        }
    }

    /// Checks an `Authorization` header from `client` against the users.
    pub async fn check(&self, users: &BasicAuth, client: IpAddr, header: Option<&str>) -> Verdict {
        let Some((user, password)) = BasicAuth::credentials(header) else {
            return Verdict::Wrong;
        };
        let (hash, known) = match users.hash(&user) {
            Some(hash) => (hash, true),
            None => (users.unknown_user_hash(), false),
        };
        let key = xxhash_rust::xxh3::xxh3_128_with_seed(
            format!("{user}\0{password}\0{hash}").as_bytes(),
            self.seed,
        );
        if let Some(right) = self.memory.recall(key) {
            return verdict(right && known);
        }
        let Some(ticket) = Ticket::take(&self.pending, client) else {
            return self.busy();
        };
        self.start_threads();
        let (reply, answer) = oneshot::channel();
        let job = Job {
            key,
            password,
            hash: hash.to_string(),
            known,
            reply,
            _ticket: ticket,
        };
        if self.jobs.try_send(job).is_err() {
            return self.busy();
        }
        // Dropped with the request: the thread then skips the job.
        match answer.await {
            Ok(right) => verdict(right),
            Err(_) => self.busy(),
        }
    }

    fn busy(&self) -> Verdict {
        self.stats.busy.fetch_add(1, Ordering::Relaxed);
        Verdict::Busy
    }
}

fn verdict(right: bool) -> Verdict {
    if right {
        Verdict::Right
    } else {
        Verdict::Wrong
    }
}

/// One checking thread: takes jobs until the checker is dropped.
fn work(rx: &Mutex<Receiver<Job>>, memory: &Memory, stats: &Stats) {
    loop {
        let Ok(job) = lock(rx).recv() else { return };
        if job.reply.is_closed() {
            stats.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        // A password checked while this one waited in the queue.
        let right = match memory.recall(job.key) {
            Some(right) => right,
            None => {
                stats.checked.fetch_add(1, Ordering::Relaxed);
                let right = bcrypt::verify(&job.password, &job.hash).unwrap_or(false) && job.known;
                memory.remember(job.key, right);
                right
            }
        };
        let _ = job.reply.send(right);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn users(password: &str, cost: u32) -> BasicAuth {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("web.yml");
        let hash = bcrypt::hash(password, cost).unwrap();
        std::fs::write(&p, format!("basic_auth_users:\n  alice: '{hash}'\n")).unwrap();
        let auth = crate::webconfig::WebSecurity::load(&p).unwrap().auth;
        Arc::into_inner(auth.unwrap()).unwrap()
    }

    fn header(user: &str, password: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    fn client(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn passwords_are_checked_once_and_remembered() {
        let users = users("s3cret", 4);
        let p = Passwords::start(1, QUEUE);
        rt().block_on(async {
            let right = header("alice", "s3cret");
            let wrong = header("alice", "wrong");
            for _ in 0..3 {
                assert_eq!(
                    p.check(&users, client(1), Some(&right)).await,
                    Verdict::Right
                );
                assert_eq!(
                    p.check(&users, client(1), Some(&wrong)).await,
                    Verdict::Wrong
                );
            }
            assert_eq!(p.stats.checked.load(Ordering::Relaxed), 2, "remembered");
            for bad in [None, Some("Bearer x".to_string())] {
                assert_eq!(
                    p.check(&users, client(1), bad.as_deref()).await,
                    Verdict::Wrong
                );
            }
            assert_eq!(p.stats.checked.load(Ordering::Relaxed), 2, "no bcrypt");
            // A user that does not exist is checked like one that does, and refused.
            let nobody = header("bob", "s3cret");
            assert_eq!(
                p.check(&users, client(1), Some(&nobody)).await,
                Verdict::Wrong
            );
            assert_eq!(p.stats.checked.load(Ordering::Relaxed), 3);
        });
    }

    /// Queues `n` checks of new wrong passwords from `from`, each left waiting.
    async fn queue_checks(
        p: &Arc<Passwords>,
        users: &Arc<BasicAuth>,
        from: IpAddr,
        n: usize,
    ) -> Vec<tokio::task::JoinHandle<Verdict>> {
        let mut queued = Vec::new();
        for i in 0..n {
            let (p, users) = (p.clone(), users.clone());
            queued.push(tokio::spawn(async move {
                let wrong = header("alice", &format!("{from}-{i}"));
                p.check(&users, from, Some(&wrong)).await
            }));
            // The spawned check runs up to its wait for the answer.
            tokio::task::yield_now().await;
        }
        queued
    }

    #[test]
    fn a_full_queue_or_a_busy_client_is_answered_at_once_and_dropped_checks_are_not_run() {
        let users = Arc::new(users("s3cret", 4));
        // No thread runs: what is queued stays queued.
        let p = Arc::new(Passwords::start(0, 4));
        rt().block_on(async {
            // Two clients fill the queue, PER_CLIENT each.
            let mut queued = queue_checks(&p, &users, client(1), PER_CLIENT).await;
            // Their own: no room for a third check of the first client.
            let more = header("alice", "one-more");
            assert_eq!(p.check(&users, client(1), Some(&more)).await, Verdict::Busy);
            queued.extend(queue_checks(&p, &users, client(2), PER_CLIENT).await);
            // The queue: no room for anybody.
            for i in 0..20 {
                let wrong = header("alice", &format!("x{i}"));
                assert_eq!(
                    p.check(&users, client(3), Some(&wrong)).await,
                    Verdict::Busy
                );
            }
            assert_eq!(p.stats.busy.load(Ordering::Relaxed), 21);
            // The clients of the queued checks go away.
            for t in queued {
                t.abort();
                assert!(t.await.unwrap_err().is_cancelled());
            }
        });
        // A thread takes the queue (here: this one, until the checker is gone).
        let Passwords {
            jobs,
            rx,
            memory,
            stats,
            ..
        } = Arc::into_inner(p).unwrap();
        drop(jobs);
        work(&rx, &memory, &stats);
        assert_eq!(stats.dropped.load(Ordering::Relaxed), 4, "not run");
        assert_eq!(stats.checked.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_flooding_client_leaves_room_for_another() {
        let users = Arc::new(users("s3cret", 4));
        let p = Arc::new(Passwords::start(0, QUEUE));
        let rt = rt();
        rt.block_on(async {
            let _flood = queue_checks(&p, &users, client(1), PER_CLIENT).await;
            for i in 0..50 {
                let wrong = header("alice", &format!("flood-{i}"));
                assert_eq!(
                    p.check(&users, client(1), Some(&wrong)).await,
                    Verdict::Busy
                );
            }
        });
        // The scraper's first check, from elsewhere, gets a place and its answer.
        p.spawn_threads(1);
        let right = header("alice", "s3cret");
        let scraper = rt.block_on(p.check(&users, client(2), Some(&right)));
        assert_eq!(scraper, Verdict::Right);
    }
}
