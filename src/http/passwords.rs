//! Basic-auth password checks, on a few threads of their own, so that a flood of wrong
//! passwords cannot take the threads that count and commit.
//!
//! bcrypt is slow on purpose. A check first looks in two bounded memories, keyed by a
//! seeded hash of user, password and bcrypt hash (so a reload that changes a hash
//! forgets what was checked against the old one): a password checked before is let in
//! or refused at once, on the async worker. Only a password not seen before goes to
//! bcrypt, through a queue of [`QUEUE`] in front of [`threads`] threads. A full queue
//! is answered at once ([`Verdict::Busy`]: 429), never with a thread of its own, and a
//! queued check whose client has gone is dropped without being run.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::webconfig::BasicAuth;

/// Checks waiting for a thread, at most.
pub const QUEUE: usize = 16;
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
    /// Checks dropped unrun because their client had gone.
    pub dropped: AtomicU64,
    /// Requests answered [`Verdict::Busy`].
    pub busy: AtomicU64,
}

struct Job {
    key: u64,
    password: String,
    hash: String,
    reply: oneshot::Sender<bool>,
}

#[derive(Default)]
struct Memory {
    right: Mutex<HashSet<u64>>,
    wrong: Mutex<HashSet<u64>>,
}

impl Memory {
    fn recall(&self, key: u64) -> Option<bool> {
        if lock(&self.right).contains(&key) {
            return Some(true);
        }
        lock(&self.wrong).contains(&key).then_some(false)
    }

    fn remember(&self, key: u64, right: bool) {
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

/// The checker: its threads end when it is dropped.
pub struct Passwords {
    jobs: SyncSender<Job>,
    memory: Arc<Memory>,
    seed: u64,
    pub stats: Arc<Stats>,
}

impl Passwords {
    /// Starts `threads` checking threads behind a queue of `queue`.
    pub fn start(threads: usize, queue: usize) -> Passwords {
        let (passwords, rx) = Passwords::new(queue);
        passwords.spawn_threads(threads, &rx);
        passwords
    }

    fn new(queue: usize) -> (Passwords, Arc<Mutex<Receiver<Job>>>) {
        let (jobs, rx) = sync_channel::<Job>(queue);
        let passwords = Passwords {
            jobs,
            memory: Arc::default(),
            seed: rand::random(),
            stats: Arc::default(),
        };
        (passwords, Arc::new(Mutex::new(rx)))
    }

    fn spawn_threads(&self, threads: usize, rx: &Arc<Mutex<Receiver<Job>>>) {
        for i in 0..threads {
            let (rx, memory, stats) = (rx.clone(), self.memory.clone(), self.stats.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("password-check-{i}"))
                .spawn(move || work(&rx, &memory, &stats));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "Cannot start a password-check thread.");
            }
        }
    }

    /// Checks an `Authorization` header against the users.
    pub async fn check(&self, users: &BasicAuth, header: Option<&str>) -> Verdict {
        let Some((user, password)) = BasicAuth::credentials(header) else {
            return Verdict::Wrong;
        };
        let Some(hash) = users.hash(&user) else {
            return Verdict::Wrong;
        };
        let key = xxhash_rust::xxh3::xxh3_64_with_seed(
            format!("{user}\0{password}\0{hash}").as_bytes(),
            self.seed,
        );
        if let Some(right) = self.memory.recall(key) {
            return verdict(right);
        }
        let (reply, answer) = oneshot::channel();
        let job = Job {
            key,
            password,
            hash: hash.to_string(),
            reply,
        };
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.stats.busy.fetch_add(1, Ordering::Relaxed);
                return Verdict::Busy;
            }
        }
        // Dropped with the request when the client goes: the thread then skips the job.
        answer.await.map_or(Verdict::Busy, verdict)
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
                let right = bcrypt::verify(&job.password, &job.hash).unwrap_or(false);
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

    #[test]
    fn passwords_are_checked_once_and_remembered() {
        let users = users("s3cret", 4);
        let p = Passwords::start(1, QUEUE);
        rt().block_on(async {
            let right = header("alice", "s3cret");
            let wrong = header("alice", "wrong");
            for _ in 0..3 {
                assert_eq!(p.check(&users, Some(&right)).await, Verdict::Right);
                assert_eq!(p.check(&users, Some(&wrong)).await, Verdict::Wrong);
            }
            assert_eq!(p.stats.checked.load(Ordering::Relaxed), 2, "remembered");
            for bad in [
                None,
                Some("Bearer x".to_string()),
                Some(header("bob", "s3cret")),
            ] {
                assert_eq!(p.check(&users, bad.as_deref()).await, Verdict::Wrong);
            }
            assert_eq!(p.stats.checked.load(Ordering::Relaxed), 2, "no bcrypt");
        });
    }

    #[test]
    fn a_full_queue_is_answered_busy_and_abandoned_checks_are_dropped() {
        let users = Arc::new(users("s3cret", 4));
        // No thread yet: what is queued stays queued.
        let (p, rx) = Passwords::new(2);
        let p = Arc::new(p);
        rt().block_on(async {
            let mut queued = Vec::new();
            for i in 0..2 {
                let (p, users) = (p.clone(), users.clone());
                queued.push(tokio::spawn(async move {
                    p.check(&users, Some(&header("alice", &format!("w{i}"))))
                        .await
                }));
                // The spawned check runs up to its wait for the answer.
                tokio::task::yield_now().await;
            }
            for i in 0..20 {
                let wrong = header("alice", &format!("x{i}"));
                assert_eq!(p.check(&users, Some(&wrong)).await, Verdict::Busy);
            }
            assert_eq!(p.stats.busy.load(Ordering::Relaxed), 20);
            // The clients of the queued checks go away.
            for t in queued {
                t.abort();
                assert!(t.await.unwrap_err().is_cancelled());
            }
        });
        // A thread takes the queue (here: this one, until the checker is gone).
        let Passwords {
            jobs,
            memory,
            stats,
            ..
        } = Arc::into_inner(p).unwrap();
        drop(jobs);
        work(&rx, &memory, &stats);
        assert_eq!(stats.dropped.load(Ordering::Relaxed), 2, "not run");
        assert_eq!(stats.checked.load(Ordering::Relaxed), 0);
    }
}
