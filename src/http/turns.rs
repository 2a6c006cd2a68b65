//! Whose password check runs next: fairness between clients, not first come first served.
//!
//! A *group* is one client: an IPv4 address, or an IPv6 /64 (what one host or site is
//! given). Each group has a *debt*: the bcrypt checks it was given that did not end
//! Right, halved every [`HALF_LIFE`]. Its *score* is its debt plus its checks queued or
//! running. The queue holds at most `capacity` checks, at most `per_group` of one group
//! (running ones included), and runs the check of the lowest score first (then the
//! earliest). When the queue is full, a check that would score lower than the worst
//! queued one takes its place, and that one is refused (429) at once; otherwise the new
//! check is refused. So a client that has not been given a check lately waits only for
//! the running checks and for clients as new as itself (an attacker needs a fresh
//! address for every check to keep up with it), and a right password neither adds to a
//! debt nor takes from it (alternating right and wrong buys nothing).
//!
//! The ledger of debts is bounded: a group's account goes when its debt falls below
//! [`FORGET`] and it has nothing queued, and when `max_groups` are kept, the eighth with
//! the least debt (and nothing queued) are forgotten at once and the *floor* is raised to
//! the most debt forgotten. A group the ledger does not know starts at the floor, so
//! flooding the ledger with new addresses resets no one's debt below what it was: it
//! only makes every unknown client, newcomers included, start where the least indebted
//! forgotten one stood. The floor is halved with the debts.
//!
//! Everything here is plain data behind the caller's lock; time is passed in.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Debts are halved this often.
pub const HALF_LIFE: Duration = Duration::from_secs(300);
/// An account with less debt than this, and nothing queued, is forgotten.
pub const FORGET: f64 = 1.0 / 16.0;

/// One client, as far as fairness goes: an IPv4 address or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Group {
    V4(u32),
    V6(u64),
}

impl Group {
    pub fn of(client: IpAddr) -> Group {
        match client {
            IpAddr::V4(a) => Group::V4(a.into()),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => Group::V4(v4.into()),
                None => Group::V6((u128::from(a) >> 64) as u64),
            },
        }
    }
}

/// A queued job whose requester may have gone away.
pub trait Abandoned {
    /// Nobody waits for the answer any more.
    fn abandoned(&self) -> bool;
}

/// How a check that was taken with [`Turns::next`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Right,
    Wrong,
    /// Not run (its requester went away, or its answer was already known).
    NotRun,
}

struct Queued<J> {
    group: Group,
    seq: u64,
    job: J,
}

/// The queue and the ledger.
pub struct Turns<J> {
    capacity: usize,
    per_group: usize,
    queued: Vec<Queued<J>>,
    next_seq: u64,
    ledger: Ledger,
}

impl<J: Abandoned> Turns<J> {
    pub fn new(capacity: usize, per_group: usize, max_groups: usize) -> Turns<J> {
        Turns {
            capacity,
            per_group,
            queued: Vec::with_capacity(capacity),
            next_seq: 0,
            ledger: Ledger::new(max_groups),
        }
    }

    /// Queues `job` of `client`, or gives it back when there is no room for it. A job
    /// it pushed out is dropped (its requester is answered busy).
    pub fn offer(&mut self, client: IpAddr, job: J, now: Instant) -> Result<(), J> {
        self.ledger.sweep(now);
        let group = Group::of(client);
        if self.ledger.pending(group) >= self.per_group {
            return Err(job);
        }
        if self.queued.len() >= self.capacity && !self.push_out(self.ledger.score(group) + 1.0) {
            return Err(job);
        }
        self.ledger.open(group);
        self.queued.push(Queued {
            group,
            seq: self.next_seq,
            job,
        });
        self.next_seq += 1;
        Ok(())
    }

    /// Drops the worst queued job if it scores more than `than`.
    fn push_out(&mut self, than: f64) -> bool {
        let Some(worst) = self.position(std::cmp::Ordering::Greater) else {
            return false;
        };
        if self.ledger.score(self.queued[worst].group) <= than {
            return false;
        }
        let gone = self.queued.swap_remove(worst);
        self.ledger.settle(gone.group, Ended::NotRun);
        true
    }

    /// The job to run next, taken out of the queue; its group's turn is over when
    /// [`Turns::settle`] is called.
    pub fn next(&mut self, now: Instant) -> Option<(Group, J)> {
        self.ledger.sweep(now);
        let best = self.position(std::cmp::Ordering::Less)?;
        let q = self.queued.swap_remove(best);
        Some((q.group, q.job))
    }

    /// A check taken with [`Turns::next`] ended.
    pub fn settle(&mut self, group: Group, ended: Ended) {
        self.ledger.settle(group, ended);
    }

    /// Drops the queued jobs nobody waits for; how many.
    pub fn drop_abandoned(&mut self) -> usize {
        let before = self.queued.len();
        let ledger = &mut self.ledger;
        self.queued.retain(|q| {
            let keep = !q.job.abandoned();
            if !keep {
                ledger.settle(q.group, Ended::NotRun);
            }
            keep
        });
        before - self.queued.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.queued.is_empty()
    }

    /// The queued job that ranks first (`Less`) or last (`Greater`): by score, then by
    /// arrival.
    fn position(&self, which: std::cmp::Ordering) -> Option<usize> {
        let rank = |q: &Queued<J>| (self.ledger.score(q.group), q.seq);
        (0..self.queued.len()).reduce(|a, b| {
            let (ra, rb) = (rank(&self.queued[a]), rank(&self.queued[b]));
            let order = ra.0.total_cmp(&rb.0).then(ra.1.cmp(&rb.1));
            if order == which {
                a
            } else {
                b
            }
        })
    }

    /// Groups the ledger keeps.
    #[cfg(test)]
    fn groups(&self) -> usize {
        self.ledger.accounts.len()
    }
}

struct Account {
    /// Checks given that did not end Right, halved every [`HALF_LIFE`].
    debt: f64,
    /// Checks queued or running.
    pending: usize,
}

struct Ledger {
    accounts: HashMap<Group, Account>,
    max: usize,
    /// Where a group the ledger does not know starts.
    floor: f64,
    /// When the debts are halved next (set at the first sweep).
    halving: Option<Instant>,
}

impl Ledger {
    fn new(max: usize) -> Ledger {
        Ledger {
            accounts: HashMap::new(),
            max: max.max(8),
            floor: 0.0,
            halving: None,
        }
    }

    fn score(&self, group: Group) -> f64 {
        self.accounts
            .get(&group)
            .map_or(self.floor, |a| a.debt + a.pending as f64)
    }

    fn pending(&self, group: Group) -> usize {
        self.accounts.get(&group).map_or(0, |a| a.pending)
    }

    /// One more check of `group` pending.
    fn open(&mut self, group: Group) {
        if !self.accounts.contains_key(&group) && self.accounts.len() >= self.max {
            self.make_room();
        }
        let floor = self.floor;
        let account = self.accounts.entry(group).or_insert(Account {
            debt: floor,
            pending: 0,
        });
        account.pending += 1;
    }

    fn settle(&mut self, group: Group, ended: Ended) {
        if let Some(a) = self.accounts.get_mut(&group) {
            a.pending = a.pending.saturating_sub(1);
            if ended == Ended::Wrong {
                a.debt += 1.0;
            }
        }
    }

    /// Forgets the eighth of the accounts with the least debt and nothing pending, and
    /// raises the floor to the most of what they owed. (Accounts with something pending
    /// are at most the queue and the threads, far fewer than `max`.)
    fn make_room(&mut self) {
        let mut idle: Vec<(f64, Group)> = self
            .accounts
            .iter()
            .filter(|(_, a)| a.pending == 0)
            .map(|(g, a)| (a.debt, *g))
            .collect();
        let n = (self.max / 8).clamp(1, idle.len().max(1));
        if idle.is_empty() {
            return;
        }
        idle.select_nth_unstable_by(n - 1, |a, b| a.0.total_cmp(&b.0));
        for (debt, group) in &idle[..n] {
            self.floor = self.floor.max(*debt);
            self.accounts.remove(group);
        }
    }

    /// Halves the debts (and the floor) once for each [`HALF_LIFE`] passed, and forgets
    /// the accounts that owe next to nothing.
    fn sweep(&mut self, now: Instant) {
        let due = *self.halving.get_or_insert(now + HALF_LIFE);
        if now < due {
            return;
        }
        let times = 1 + ((now - due).as_secs_f64() / HALF_LIFE.as_secs_f64()).min(64.0) as i32;
        let factor = 0.5f64.powi(times);
        self.floor *= factor;
        if self.floor < FORGET {
            self.floor = 0.0;
        }
        self.accounts.retain(|_, a| {
            a.debt *= factor;
            a.pending > 0 || a.debt >= FORGET
        });
        self.halving = Some(now + HALF_LIFE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    /// A job: its name, and whether its requester went away.
    struct Job(&'static str, Rc<Cell<bool>>);

    impl Abandoned for Job {
        fn abandoned(&self) -> bool {
            self.1.get()
        }
    }

    fn job(name: &'static str) -> Job {
        Job(name, Rc::default())
    }

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n))
    }

    /// Runs the next check to its end; its name.
    fn run(t: &mut Turns<Job>, now: Instant, ended: Ended) -> &'static str {
        let (group, job) = t.next(now).expect("a queued job");
        t.settle(group, ended);
        job.0
    }

    #[test]
    fn a_newcomer_goes_before_a_flood_from_many_addresses() {
        let now = Instant::now();
        let mut t = Turns::new(16, 2, 4096);
        // 40 addresses, each given one wrong check, then two more queued each: the
        // queue is full of them, the rest refused.
        for n in 0..40 {
            t.offer(ip(n), job("flood"), now).map_err(|_| ()).unwrap();
            assert_eq!(run(&mut t, now, Ended::Wrong), "flood");
        }
        let mut refused = 0;
        for n in 0..40 {
            for _ in 0..2 {
                refused += usize::from(t.offer(ip(n), job("flood"), now).is_err());
            }
        }
        // The first 8 addresses filled it with two each; the next 8 pushed their second
        // checks out: one check of 16 addresses is queued.
        assert_eq!(refused, 80 - 16 - 8);
        let groups: std::collections::HashSet<Group> = t.queued.iter().map(|q| q.group).collect();
        assert_eq!((t.queued.len(), groups.len()), (16, 16));
        // The newcomer pushes out the worst queued check and runs next.
        assert!(t.offer(ip(100), job("newcomer"), now).is_ok());
        assert_eq!(run(&mut t, now, Ended::Right), "newcomer");
        // A right password left no debt: its next check goes first again.
        assert!(t.offer(ip(100), job("again"), now).is_ok());
        assert_eq!(run(&mut t, now, Ended::Right), "again");
        // Then the flood, first come first served among equals.
        let (group, _) = t.next(now).unwrap();
        assert_eq!(group, Group::of(ip(0)));
    }

    #[test]
    fn an_equal_does_not_push_out_and_a_busy_group_is_refused() {
        let now = Instant::now();
        let mut t = Turns::new(2, 2, 4096);
        assert!(t.offer(ip(1), job("a"), now).is_ok());
        assert!(t.offer(ip(2), job("b"), now).is_ok());
        // Scores 1, 1: a third newcomer would score 1 too; no room.
        assert!(t.offer(ip(3), job("c"), now).is_err());
        // First come first served among equals.
        assert_eq!(run(&mut t, now, Ended::Wrong), "a");
        assert_eq!(run(&mut t, now, Ended::Wrong), "b");
        // The per-group limit counts running checks too.
        let mut t = Turns::new(16, 2, 4096);
        assert!(t.offer(ip(1), job("a"), now).is_ok());
        let (running, _) = t.next(now).unwrap();
        assert!(t.offer(ip(1), job("b"), now).is_ok());
        assert!(t.offer(ip(1), job("c"), now).is_err());
        t.settle(running, Ended::Wrong);
        assert!(t.offer(ip(1), job("c"), now).is_ok());
    }

    #[test]
    fn abandoned_jobs_go_without_debt() {
        let now = Instant::now();
        let mut t = Turns::new(4, 2, 4096);
        let gone = job("gone");
        let flag = gone.1.clone();
        assert!(t.offer(ip(1), gone, now).is_ok());
        assert!(t.offer(ip(2), job("b"), now).is_ok());
        flag.set(true);
        assert_eq!(t.drop_abandoned(), 1);
        assert_eq!(run(&mut t, now, Ended::Wrong), "b");
        assert!(t.is_empty());
        assert_eq!(t.ledger.score(Group::of(ip(1))), 0.0);
        assert_eq!(t.ledger.score(Group::of(ip(2))), 1.0);
    }

    #[test]
    fn ipv6_is_grouped_by_64_and_mapped_ipv4_is_ipv4() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Group::of(a), Group::of(b));
        assert_ne!(Group::of(a), Group::of(c));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(Group::of(mapped), Group::of(ip(1)));
        // One /64 shares the per-client limit.
        let now = Instant::now();
        let mut t = Turns::new(16, 2, 4096);
        assert!(t.offer(a, job("a"), now).is_ok());
        assert!(t.offer(b, job("b"), now).is_ok());
        assert!(t.offer(b, job("c"), now).is_err());
        assert!(t.offer(c, job("d"), now).is_ok());
    }

    #[test]
    fn debts_halve_and_are_forgotten() {
        let start = Instant::now();
        let mut t = Turns::new(16, 2, 4096);
        for _ in 0..4 {
            t.offer(ip(1), job("x"), start).map_err(|_| ()).unwrap();
            run(&mut t, start, Ended::Wrong);
        }
        t.offer(ip(2), job("y"), start).map_err(|_| ()).unwrap();
        run(&mut t, start, Ended::Right);
        assert_eq!(t.ledger.score(Group::of(ip(1))), 4.0);
        // The sweep set its first halving a half-life after the first offer.
        t.next(start + HALF_LIFE);
        assert_eq!(t.ledger.score(Group::of(ip(1))), 2.0);
        assert_eq!(t.groups(), 1, "a group that owes nothing is forgotten");
        // Five more halvings at once: FORGET is kept, one more and it is gone.
        t.next(start + HALF_LIFE * 6);
        assert_eq!(t.ledger.score(Group::of(ip(1))), FORGET);
        assert_eq!(t.groups(), 1);
        t.next(start + HALF_LIFE * 7);
        assert_eq!(t.groups(), 0);
        assert_eq!(t.ledger.score(Group::of(ip(1))), 0.0);
    }

    #[test]
    fn many_addresses_cannot_grow_the_ledger_nor_reset_a_debt() {
        let now = Instant::now();
        let max = 64;
        let mut t = Turns::new(16, 2, max);
        // The attacker's heavy address owes 10.
        for _ in 0..10 {
            t.offer(ip(0), job("heavy"), now).map_err(|_| ()).unwrap();
            run(&mut t, now, Ended::Wrong);
        }
        // 10,000 addresses, each given one wrong check (the queue drained each time),
        // then the heavy one again.
        for n in 1..=10_000 {
            t.offer(ip(n), job("many"), now).map_err(|_| ()).unwrap();
            run(&mut t, now, Ended::Wrong);
            assert!(t.groups() <= max);
        }
        // Nobody scores less than it owes: neither the heavy address nor any of the
        // 10,000, forgotten or not. One never seen starts at the floor.
        assert!(t.ledger.score(Group::of(ip(0))) >= 10.0);
        for n in 1..=10_000 {
            assert!(t.ledger.score(Group::of(ip(n))) >= 1.0, "{n}");
        }
        let floor = t.ledger.floor;
        assert!(floor >= 1.0);
        assert_eq!(t.ledger.score(Group::of(ip(20_000))), floor);
        // And the floor halves with the debts.
        t.next(now + HALF_LIFE);
        assert_eq!(t.ledger.floor, floor / 2.0);
    }
}
