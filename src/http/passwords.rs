//! Basic-auth password checks, on a few threads of their own, so that a flood of wrong
//! passwords cannot take the threads that count and commit.
//!
//! bcrypt is slow on purpose. A check first looks in two bounded memories, keyed by a
//! seeded 128-bit hash of user, password and bcrypt hash (so a reload that changes a
//! hash forgets what was checked against the old one): a password checked before is let
//! in or refused at once, on the async worker. Only a password not seen before goes to
//! bcrypt, through a queue of [`QUEUE`] in front of [`threads`] threads, started at the
//! first check. Which check runs next, and which is refused when the queue is full, is
//! [`super::turns`]' decision: by client (address, or IPv6 /64), the one given the fewest
//! wrong checks lately first, at most [`PER_CLIENT`] of one client queued or running. So
//! a flood, from one address or many, cannot keep a client that owes less than each
//! flooding one waiting for more than the running checks. A request finding no room, or pushed out of the
//! queue by a client with less debt, is answered at once ([`Verdict::Busy`]: 429), never
//! with a thread of its own, and a queued check whose request was dropped (the client
//! hung up and hyper saw it) is not run. A user that does not exist is checked like one
//! that does, against a hash of the same cost, so neither the time nor the answer tells
//! which users exist.
//!
//! Locks: the queue's and each memory's are taken one at a time, never nested, and never
//! across bcrypt or an `.await`.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use crate::sync::{lock, wait};
use std::time::Instant;

use tokio::sync::oneshot;

use super::turns::{Abandoned, Ended, Group, Turns};
use crate::webconfig::BasicAuth;

/// Checks waiting for a thread, at most.
pub const QUEUE: usize = 16;
/// Checks of one client (address, or IPv6 /64) queued or running, at most.
pub const PER_CLIENT: usize = 2;
/// Clients whose debts are kept, at most (about 1 MB).
const MAX_CLIENTS: usize = 16_384;
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
}

impl Abandoned for Job {
    fn abandoned(&self) -> bool {
        self.reply.is_closed()
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

/// The checks waiting, shared by the checker and its threads. A std `Mutex`: held for a
/// scan of at most [`QUEUE`] jobs, never across bcrypt.
struct Queue {
    state: Mutex<QueueState>,
    /// A job was queued, or the checker is gone.
    ready: Condvar,
    stats: Arc<Stats>,
}

struct QueueState {
    turns: Turns<Job>,
    /// The checker is gone: the threads end when the queue is empty.
    closed: bool,
}

impl Queue {
    fn new(queue: usize, stats: Arc<Stats>) -> Queue {
        Queue {
            state: Mutex::new(QueueState {
                turns: Turns::new(queue, PER_CLIENT, MAX_CLIENTS),
                closed: false,
            }),
            ready: Condvar::new(),
            stats,
        }
    }

    fn offer(&self, client: IpAddr, job: Job) -> Result<(), Job> {
        let mut state = lock(&self.state);
        self.drop_abandoned(&mut state);
        state.turns.offer(client, job, Instant::now())?;
        drop(state);
        self.ready.notify_one();
        Ok(())
    }

    /// The next job, waiting for one; `None` once the checker is gone and the queue
    /// is empty.
    fn take(&self) -> Option<(Group, Job)> {
        let mut state = lock(&self.state);
        loop {
            if let Some(next) = self.try_take_locked(&mut state) {
                return Some(next);
            }
            if state.closed {
                return None;
            }
            state = wait(&self.ready, state);
        }
    }

    /// The next job, if one is queued.
    #[cfg(test)]
    fn try_take(&self) -> Option<(Group, Job)> {
        self.try_take_locked(&mut lock(&self.state))
    }

    fn try_take_locked(&self, state: &mut QueueState) -> Option<(Group, Job)> {
        self.drop_abandoned(state);
        state.turns.next(Instant::now())
    }

    fn drop_abandoned(&self, state: &mut QueueState) {
        let n = state.turns.drop_abandoned() as u64;
        self.stats.dropped.fetch_add(n, Ordering::Relaxed);
    }

    fn settle(&self, group: Group, ended: Ended) {
        lock(&self.state).turns.settle(group, ended);
    }

    fn close(&self) {
        lock(&self.state).closed = true;
        self.ready.notify_all();
    }
}

/// The checker: its threads end when it is dropped.
pub struct Passwords {
    queue: Arc<Queue>,
    /// Threads still to start (at the first check).
    unstarted: Mutex<usize>,
    memory: Arc<Memory>,
    seed: u64,
    pub stats: Arc<Stats>,
}

impl Drop for Passwords {
    fn drop(&mut self) {
        self.queue.close();
    }
}

impl Passwords {
    /// A checker with `threads` threads (started at the first check) behind a queue of
    /// `queue`.
    pub fn start(threads: usize, queue: usize) -> Passwords {
        let stats = Arc::<Stats>::default();
        Passwords {
            queue: Arc::new(Queue::new(queue, stats.clone())),
            unstarted: Mutex::new(threads),
            memory: Arc::default(),
            seed: rand::random(),
            stats,
        }
    }

    fn start_threads(&self) {
        let threads = std::mem::take(&mut *lock(&self.unstarted));
        self.spawn_threads(threads);
    }

    fn spawn_threads(&self, threads: usize) {
        for i in 0..threads {
            let (queue, memory, stats) =
                (self.queue.clone(), self.memory.clone(), self.stats.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("password-check-{i}"))
                .spawn(move || work(&queue, &memory, &stats));
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
        self.start_threads();
        let (reply, answer) = oneshot::channel();
        let job = Job {
            key,
            password,
            hash: hash.to_string(),
            known,
            reply,
        };
        if self.queue.offer(client, job).is_err() {
            return self.busy();
        }
        // Dropped with the request: the queue then drops the job. Pushed out of the
        // queue for a client with less debt: busy.
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

/// One checking thread: takes jobs until the checker is dropped and the queue is empty.
fn work(queue: &Queue, memory: &Memory, stats: &Stats) {
    while let Some((group, job)) = queue.take() {
        run(queue, memory, stats, group, job);
    }
}

/// Runs one job taken from the queue, and settles its client's turn.
fn run(queue: &Queue, memory: &Memory, stats: &Stats, group: Group, job: Job) {
    if job.reply.is_closed() {
        stats.dropped.fetch_add(1, Ordering::Relaxed);
        queue.settle(group, Ended::NotRun);
        return;
    }
    // A password checked while this one waited in the queue.
    let (right, ended) = match memory.recall(job.key) {
        Some(right) => (right, Ended::NotRun),
        None => {
            stats.checked.fetch_add(1, Ordering::Relaxed);
            let right = bcrypt::verify(&job.password, &job.hash).unwrap_or(false) && job.known;
            memory.remember(job.key, right);
            (right, if right { Ended::Right } else { Ended::Wrong })
        }
    };
    queue.settle(group, ended);
    let _ = job.reply.send(right);
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
            // A client's own limit: no room for a third check of the first client.
            let mut queued = queue_checks(&p, &users, client(1), PER_CLIENT).await;
            let more = header("alice", "one-more");
            assert_eq!(p.check(&users, client(1), Some(&more)).await, Verdict::Busy);
            // Two more clients, one check each: the queue is full.
            queued.extend(queue_checks(&p, &users, client(2), 1).await);
            queued.extend(queue_checks(&p, &users, client(3), 1).await);
            // A fourth client pushes out a check of the first, which has two queued.
            queued.extend(queue_checks(&p, &users, client(4), 1).await);
            settle().await;
            assert_eq!(p.stats.busy.load(Ordering::Relaxed), 2);
            // A client that would score no less than any queued check finds no room.
            for i in 0..20 {
                let wrong = header("alice", &format!("x{i}"));
                assert_eq!(
                    p.check(&users, client(5), Some(&wrong)).await,
                    Verdict::Busy
                );
            }
            assert_eq!(p.stats.busy.load(Ordering::Relaxed), 22);
            // The clients of the queued checks go away.
            for t in queued {
                t.abort();
                let _ = t.await;
            }
        });
        // A thread takes the queue (here: this one, until the checker is gone).
        let (queue, memory, stats) = (p.queue.clone(), p.memory.clone(), p.stats.clone());
        drop(Arc::into_inner(p).unwrap());
        work(&queue, &memory, &stats);
        assert_eq!(stats.dropped.load(Ordering::Relaxed), 4, "not run");
        assert_eq!(stats.checked.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_new_right_password_goes_first_during_a_flood_from_many_addresses() {
        let users = Arc::new(users("s3cret", 4));
        let p = Arc::new(Passwords::start(0, QUEUE));
        let (queue, memory, stats) = (p.queue.clone(), p.memory.clone(), p.stats.clone());
        let run_next = || {
            let (group, job) = queue.try_take().expect("a queued check");
            run(&queue, &memory, &stats, group, job);
        };
        rt().block_on(async {
            // 40 addresses, each given one wrong check already.
            for n in 10..50 {
                let (p, users) = (p.clone(), users.clone());
                tokio::spawn(async move {
                    let wrong = header("alice", &format!("before-{n}"));
                    p.check(&users, client(n), Some(&wrong)).await
                });
                tokio::task::yield_now().await;
                run_next();
            }
            // Then they fill the queue, two checks each; most are refused at once.
            let mut flood = Vec::new();
            for n in 10..50 {
                flood.extend(queue_checks(&p, &users, client(n), PER_CLIENT).await);
            }
            settle().await;
            assert_eq!(p.stats.busy.load(Ordering::Relaxed), 80 - QUEUE as u64);
            // A right password not checked before, from another address: queued (one
            // flooding check pushed out, answered busy), and run next.
            let (p2, users2) = (p.clone(), users.clone());
            let scraper = tokio::spawn(async move {
                let right = header("alice", "s3cret");
                p2.check(&users2, client(200), Some(&right)).await
            });
            settle().await;
            assert_eq!(p.stats.busy.load(Ordering::Relaxed), 80 - QUEUE as u64 + 1);
            run_next();
            assert_eq!(scraper.await.unwrap(), Verdict::Right);
            assert_eq!(stats.checked.load(Ordering::Relaxed), 41);
            let pushed_out = futures_busy(flood).await;
            assert_eq!(pushed_out, 80 - QUEUE + 1);
        });
    }

    /// Lets the spawned checks run up to their waits (those answered: to their ends).
    async fn settle() {
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
    }

    /// How many of `checks` (all finished or left queued) were answered busy.
    async fn futures_busy(checks: Vec<tokio::task::JoinHandle<Verdict>>) -> usize {
        let mut busy = 0;
        for t in checks {
            if t.is_finished() {
                busy += usize::from(t.await.unwrap() == Verdict::Busy);
            } else {
                t.abort();
            }
        }
        busy
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
