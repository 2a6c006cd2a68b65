//! The lock helpers, and the lock order.
//!
//! Every std lock of the crate is taken through [`lock`], [`read`], [`write`] or
//! [`wait`], which tolerate poisoning: a panic while a lock was held cannot leave plain
//! counters half-written in a way worth dying for, so the exporter keeps serving what
//! is there rather than panicking on every later use. A leaf: imports nothing of the
//! crate.
//!
//! # The locks, and the order they are taken in
//!
//! A lock is held for a short, bounded piece of work, never across an `.await`,
//! bcrypt, or a state file's fsync. Only the nestings below exist; a lock is taken
//! only while holding locks that come before it here, so there is no cycle:
//!
//! 1. `Pipeline::dead_letter` (`pipeline`): held while writing rejected lines; the
//!    ledger is then taken under it to count what was written.
//! 2. `Pipeline::ledger` (`pipeline`): the committed state. Under it, only:
//!    - `TaskLog::parser` (read; written alone at a reload), taken by the task log's
//!      handler while it counts a block;
//!    - `Pipeline::committed` (at a commit: the generation last committed). The
//!      commit's fsync (`PendingCommit::finish`) runs after both are released.
//!    - the proxy's `Journal` (`proxy::journal`: its file and lines), reconciled with
//!      the ledger before each commit. A request appends to it holding no other lock,
//!      and the rewrite after a durable commit holds it alone: the ledger is never
//!      taken under it.
//!
//! Every other lock is a leaf: taken while holding no other lock, and taking none.
//!
//! - `Pipeline::handlers` (read: the handler's `Arc` is cloned and the lock released
//!   before the ledger is taken), `Pipeline::warn` (log rate limits).
//! - `Snapshot::totals` (`metrics`; written by the committer's publish, read in a
//!   gather, under the `prometheus` registry's own lock, which is taken with nothing
//!   of ours held), `Exposition::page` (`http::exposition`; the rendered page, an `Arc`
//!   cloned out), `HttpState::security` (`http`; TLS and users, cloned out, written at a
//!   reload).
//! - `http::passwords`: `Queue::state` (with its `Condvar`, never held across bcrypt),
//!   `Memory::right`, `Memory::wrong`, `Passwords::unstarted`.
//! - `http::places`: `Waiting::queue`, `Places::warned`.
//! - `proxy::upstream`: a proxy thread's idle connections (`Upstream::idle`), taken by
//!   that thread's requests (and, when an answer outlives it, its drop).
//!
//! Threads: the tokio runtime's workers (the API source, the web server), the proxy's
//! threads (`proxy-N`, one a core, each a runtime of its own: `proxy::serve`), the
//! runtime's blocking threads (the committer's loop, `app::commit`, the file
//! tailer's reads, `source::file`, and the proxy's observation consumer,
//! `proxy::observe`), and the password-check threads
//! (`http::passwords`). Any of them may take any lock above, in that order.

use std::sync::{Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locks `m`, poisoned or not.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Read-locks `l`, poisoned or not.
pub fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

/// Write-locks `l`, poisoned or not.
pub fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

/// Waits on `c` with `guard`, poisoned or not.
pub fn wait<'a, T>(c: &Condvar, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    c.wait(guard).unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lock poisoned by a panic while held still gives its value.
    #[test]
    fn a_poisoned_lock_still_gives_its_value() {
        let m = std::sync::Arc::new(Mutex::new(1));
        let l = std::sync::Arc::new(RwLock::new(2));
        let (m2, l2) = (m.clone(), l.clone());
        let _ = std::thread::spawn(move || {
            let _m = m2.lock().unwrap();
            let _l = l2.write().unwrap();
            panic!("poison");
        })
        .join();
        assert!(m.is_poisoned() && l.is_poisoned());
        *lock(&m) += 1;
        assert_eq!(*lock(&m), 2);
        *write(&l) += 1;
        assert_eq!(*read(&l), 3);
    }
}
