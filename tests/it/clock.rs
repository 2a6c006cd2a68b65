//! Steps of the wall clock while the daemon runs: the real daemon under libfaketime
//! (Debian's `faketime`, installed by the test script), whose `CLOCK_REALTIME` is offset
//! by what a file says, read again at every call, while its monotonic clock stays real
//! (`FAKETIME_DONT_FAKE_MONOTONIC`), as with an NTP step or `date -s`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::harness::*;

const HOUR: i64 = 3600;
const DAY: i64 = 86_400;

/// The daemon's clock: an offset from the real one, in a file libfaketime reads.
struct FakeClock {
    file: PathBuf,
    lib: PathBuf,
}

impl FakeClock {
    /// Fails the test when libfaketime is missing: it never skips.
    fn new(dir: &Path) -> FakeClock {
        require_tool("faketime");
        let multiarch = format!("/usr/lib/{}-linux-gnu/faketime", std::env::consts::ARCH);
        let lib = [multiarch.as_str(), "/usr/lib/faketime", "/usr/local/lib/faketime"]
            .iter()
            .map(|d| Path::new(d).join("libfaketimeMT.so.1"))
            .find(|p| p.is_file())
            .unwrap_or_else(|| {
                panic!("libfaketimeMT.so.1 is not installed (package libfaketime): run scripts/test.sh, which installs what the tests need")
            });
        let clock = FakeClock {
            file: dir.join("faketime.rc"),
            lib,
        };
        clock.set(0);
        clock
    }

    /// The environment that puts a daemon on this clock.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("LD_PRELOAD", self.lib.display().to_string()),
            ("FAKETIME_TIMESTAMP_FILE", self.file.display().to_string()),
            ("FAKETIME_NO_CACHE", "1".into()),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1".into()),
        ]
    }

    /// Steps the clock to `offset` seconds from the real one (written whole, by a rename:
    /// the daemon never reads half a file).
    fn set(&self, offset: i64) {
        let tmp = self.file.with_extension("tmp");
        std::fs::write(&tmp, format!("{offset:+}\n")).unwrap();
        std::fs::rename(&tmp, &self.file).unwrap();
    }
}

fn real_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// RFC 3339 of a Unix time, to the millisecond.
fn rfc3339(unix: f64) -> String {
    jiff::Timestamp::from_millisecond((unix * 1000.0) as i64)
        .unwrap()
        .to_string()
}

fn env_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// `/api/v1/failures`.
fn failures(d: &Daemon) -> serde_json::Value {
    let (status, body) = get(d.addr, "/api/v1/failures").unwrap();
    assert_eq!(status, 200);
    serde_json::from_str(&body).unwrap()
}

/// Waits until the daemon's wall clock reads the real one plus `offset` (libfaketime
/// reads its file at every call: this is at once).
fn wait_clock(d: &Daemon, offset: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let at = failures(d)["generated_at"].as_f64().unwrap();
        if (at - (real_now() + offset as f64)).abs() < 30.0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon's clock did not move to {offset:+} s: it reads {at}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The last hour's and day's failures of `code` on the status page's JSON (none
/// before its first).
fn windows(d: &Daemon, code: &str) -> (u64, u64) {
    let j = failures(d);
    let codes = j["codes"].as_array().unwrap();
    codes
        .iter()
        .find(|c| c["failure_code"] == code)
        .map_or((0, 0), |c| {
            (
                c["last_hour"].as_u64().unwrap(),
                c["last_day"].as_u64().unwrap(),
            )
        })
}

/// What the durations say: the sum of all observations, how many, and how many tasks
/// were not timed.
fn durations(m: &str) -> (f64, f64, f64) {
    (
        sum(m, "runway_task_duration_seconds_sum", &[]),
        sum(m, "runway_task_duration_seconds_count", &[]),
        sum(
            m,
            "runway_exporter_untimed_tasks_total",
            &["measure=\"duration\""],
        ),
    )
}

/// How many commits the daemon makes in `span` while a task's line is appended every
/// 50 ms: the distinct values of its last commit's time, scraped every 10 ms. Returns
/// them and the lines appended.
fn commits_while_writing(d: &Daemon, log: &Path, span: Duration, tag: &str) -> (usize, u32) {
    let start = Instant::now();
    let mut seen = std::collections::BTreeSet::new();
    let mut lines = 0;
    let mut last_line = Instant::now() - Duration::from_secs(1);
    while start.elapsed() < span {
        if last_line.elapsed() >= Duration::from_millis(50) {
            lines += 1;
            let line = format!(
                "{{\"id\":\"tick-{tag}-{lines}\",\"status\":\"CANCELLED\",\"model\":\"gen4_turbo\"}}\n"
            );
            append(log, line.as_bytes());
            last_line = Instant::now();
        }
        if let Some(t) = sample(
            &d.metrics(),
            "runway_exporter_last_commit_timestamp_seconds",
        ) {
            seen.insert(t.to_bits());
        }
        // The scrapes' and the writer's pace, not a synchronisation.
        std::thread::sleep(Duration::from_millis(10));
    }
    (seen.len(), lines)
}

/// Appends, on the daemon's clock at `offset` (having been at `before`): two failures
/// and a success read live (created 5 s ago), and a success created 5 s before the
/// step, timed across it.
fn append_round(log: &Path, round: usize, offset: i64, before: i64) {
    let mut lines = String::new();
    for i in 0..2 {
        lines += &format!(
            "{{\"id\":\"f-{round}-{i}\",\"status\":\"FAILED\",\"failureCode\":\"INTERNAL\",\"model\":\"gen4_turbo\"}}\n"
        );
    }
    for (name, created) in [
        ("now", real_now() + offset as f64 - 5.0),
        ("across", real_now() + before as f64 - 5.0),
    ] {
        lines += &format!(
            "{{\"id\":\"s-{round}-{name}\",\"status\":\"SUCCEEDED\",\"model\":\"gen4_turbo\",\"createdAt\":\"{}\"}}\n",
            rfc3339(created)
        );
    }
    append(log, lines.as_bytes());
}

/// Polls the status page's JSON until `code`'s windows are `want`, at most 10 s.
fn windows_until(d: &Daemon, code: &str, want: (u64, u64)) -> (u64, u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let shown = windows(d, code);
        if shown == want || Instant::now() > deadline {
            return shown;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn steps_of_the_clock_keep_durations_windows_and_commits_sane() {
    let dir = tempfile::tempdir().unwrap();
    let clock = FakeClock::new(dir.path());
    let env = clock.env();
    let log = dir.path().join("app.log");
    append(&log, b"");
    let d = Daemon::start_env(dir.path(), &config(dir.path(), ""), &[], &env_refs(&env));
    let (mut offset, mut failed, mut tasks, mut last_sum) = (0i64, 0u64, 0f64, 0f64);
    // Back an hour, forward an hour, forward a day, back a day, back a day again (behind
    // the real clock) and forward to it: each step of the issue, both ways.
    for (round, step) in [0, -HOUR, HOUR, DAY, -DAY, -DAY, DAY]
        .into_iter()
        .enumerate()
    {
        let before = offset;
        offset += step;
        let context = format!("round {round}, a step of {step:+} s to {offset:+} s");
        clock.set(offset);
        wait_clock(&d, offset);
        append_round(&log, round, offset, before);
        failed += 2;
        tasks += 4.0;
        let (m, _) = d.scrape_until(Duration::from_secs(10), |m| {
            sum(m, "runway_tasks_total", &[]) >= tasks
        });
        assert_eq!(sum(&m, "runway_tasks_total", &[]), tasks, "{context}");

        // Durations: nothing negative (the sum never goes down), and every task timed
        // or counted as untimed with a reason.
        let (dsum, count, untimed) = durations(&m);
        assert!(
            dsum >= last_sum,
            "{context}: the durations' sum went from {last_sum} to {dsum}"
        );
        last_sum = dsum;
        assert_eq!(count + untimed, tasks, "{context}: timed + untimed\n{m}");

        // The windows: every failure so far was read in the last minute or so (elapsed),
        // whatever the wall clock says now.
        let shown = windows_until(&d, "INTERNAL", (failed, failed));
        assert_eq!(
            shown,
            (failed, failed),
            "{context}: the failures of the last hour and day on the status page"
        );

        // The commit loop: alive after the step, and no burst (at most one commit per
        // 200 ms interval, and a little slack).
        let span = Duration::from_millis(1500);
        let (commits, lines) = commits_while_writing(&d, &log, span, &round.to_string());
        assert!(
            (2..=10).contains(&commits),
            "{context}: {commits} commits in {span:?} with a line every 50 ms"
        );
        tasks += f64::from(lines);
    }
    stop(d);
}

/// The times of the systemd notifications received on `socket` within `span`.
fn pings(socket: &std::os::unix::net::UnixDatagram, span: Duration) -> Vec<Instant> {
    let (start, mut buf, mut at) = (Instant::now(), [0u8; 512], Vec::new());
    while start.elapsed() < span {
        if let Ok(n) = socket.recv(&mut buf) {
            if String::from_utf8_lossy(&buf[..n]).contains("WATCHDOG=1") {
                at.push(Instant::now());
            }
        }
    }
    at
}

#[test]
fn a_step_of_the_clock_does_not_stop_the_watchdog_pings() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().unwrap();
    let clock = FakeClock::new(dir.path());
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut env = clock.env();
    env.push(("NOTIFY_SOCKET", socket_path.display().to_string()));
    // Pings every 150 ms, as long as the commit loop's last round is recent; an idle
    // loop beats every 5 s.
    env.push(("WATCHDOG_USEC", "300000".into()));
    let config = format!(
        "[state]\ndir = \"{}\"\ncommit_interval = \"5s\"\n[file]\npaths = [\"{}/*.log\"]\n",
        dir.path().join("state").display(),
        dir.path().display()
    );
    let mut d = Daemon::start_env(dir.path(), &config, &[], &env_refs(&env));
    assert!(
        pings(&socket, Duration::from_secs(1)).len() >= 3,
        "no pings before the steps"
    );
    for offset in [HOUR, HOUR + DAY, -DAY] {
        clock.set(offset);
        wait_clock(&d, offset);
        let stepped = Instant::now();
        let span = Duration::from_millis(1500);
        let at = pings(&socket, span);
        // The longest wait for a ping: from the step to the first, between two.
        let longest = std::iter::once(stepped)
            .chain(at.iter().copied())
            .zip(at.iter().copied())
            .map(|(a, b)| b - a)
            .max()
            .unwrap_or(span);
        assert!(
            at.len() >= 5 && longest < Duration::from_secs(1),
            "the clock at {offset:+} s: {} pings in {span:?}, the longest wait {longest:?}",
            at.len()
        );
    }
    assert_eq!(
        d.count_logs("The commit loop is stuck"),
        0,
        "{:#?}",
        d.logs()
    );
    stop(d);
}

/// Stops the daemon with SIGTERM, as systemd does: libfaketime removes its shared
/// memory (`/dev/shm/faketime_*`) only when the process exits, not when it is killed.
fn stop(mut d: Daemon) {
    d.signal("TERM");
    assert_eq!(d.wait_exit(Duration::from_secs(10)).code(), Some(0));
}

/// Polls `check` every 20 ms until it holds, at most 10 s; says whether it did.
fn poll(check: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The UTC day of a Unix time, `YYYY-MM-DD`.
fn utc_day(unix: f64) -> String {
    rfc3339(unix)[..10].to_string()
}

/// A daemon's config with the API source polling `mock` (and usage every 200 ms).
fn api_config(dir: &Path, mock: &crate::mock_api::MockApi, extra: &str) -> String {
    crate::api::api_config(dir, mock, &format!("usage_interval = \"200ms\"\n{extra}"))
}

#[test]
fn a_step_of_the_clock_moves_the_usage_day_and_expires_no_task() {
    use crate::mock_api::{MockApi, Step};
    const KEY: &str = "key_clock_5d1e";
    let mock = MockApi::start(
        KEY,
        vec![("t-long".into(), vec![Step::Task("RUNNING", None)])],
    );
    let dir = tempfile::tempdir().unwrap();
    let clock = FakeClock::new(dir.path());
    let mut env = clock.env();
    env.push(("RUNWAYML_API_SECRET", KEY.into()));
    append(&dir.path().join("tasks.list"), b"t-long\n");
    // max_task_age at its default, a day.
    let config = api_config(dir.path(), &mock, "");
    let d = Daemon::start_env(dir.path(), &config, &[], &env_refs(&env));
    let polls = || mock.task_requests().get("t-long").map_or(0, Vec::len);
    assert!(poll(|| polls() >= 2), "t-long is not polled");
    let credits = "runway_organization_daily_credits_used{model=\"gen4_turbo\",tasks=\"true\"}";
    // Forward a day, back a day, back another.
    for offset in [DAY, 0, -DAY] {
        clock.set(offset);
        wait_clock(&d, offset);
        // The usage asked for is of the UTC day of the daemon's clock (either side of a
        // midnight passing meanwhile), and served as today's.
        let days = [
            utc_day(real_now() + offset as f64),
            utc_day(real_now() + offset as f64 + 20.0),
        ];
        let asked = |b: &serde_json::Value| days.iter().any(|d| b["startDate"] == d.as_str());
        assert!(
            poll(|| mock.usage_bodies().last().is_some_and(asked)),
            "the clock at {offset:+} s: no usage request for {days:?}: {:?}",
            mock.usage_bodies().last()
        );
        let body = mock.usage_bodies().last().cloned().unwrap();
        let start = jiff::civil::Date::strptime("%Y-%m-%d", body["startDate"].as_str().unwrap());
        let next = start.unwrap().tomorrow().unwrap().to_string();
        assert_eq!(body["beforeDate"], next.as_str(), "{body}");
        let (m, _) = d.scrape_until(Duration::from_secs(10), |m| {
            sample(m, credits) == Some(150.0)
        });
        assert_eq!(
            sample(&m, credits),
            Some(150.0),
            "the clock at {offset:+} s\n{m}"
        );

        // The running task: still polled, not expired (it is seconds old).
        let before = polls();
        assert!(
            poll(|| polls() >= before + 3),
            "the clock at {offset:+} s: t-long is no longer polled ({before} polls)\n{}",
            d.metrics()
        );
        let m = d.metrics();
        assert_eq!(sample(&m, "runway_api_tasks_tracked"), Some(1.0), "{m}");
        assert_eq!(
            sum(&m, "runway_exporter_records_total", &["result=\"expired\""]),
            0.0,
            "the clock at {offset:+} s"
        );
    }
    stop(d);
}

#[test]
fn a_task_expires_after_max_task_age_even_with_the_clock_stepped_back_a_day() {
    use crate::mock_api::{MockApi, Step};
    const KEY: &str = "key_clock_5d1e";
    let mock = MockApi::start(
        KEY,
        vec![("t-stuck".into(), vec![Step::Task("RUNNING", None)])],
    );
    let dir = tempfile::tempdir().unwrap();
    let clock = FakeClock::new(dir.path());
    let mut env = clock.env();
    env.push(("RUNWAYML_API_SECRET", KEY.into()));
    append(&dir.path().join("tasks.list"), b"t-stuck\n");
    let config = api_config(dir.path(), &mock, "max_task_age = \"3s\"\n");
    let d = Daemon::start_env(dir.path(), &config, &[], &env_refs(&env));
    // Read from the list at start (the clock right), then the clock goes back a day.
    clock.set(-DAY);
    wait_clock(&d, -DAY);
    let expired = |m: &str| sum(m, "runway_exporter_records_total", &["result=\"expired\""]);
    // It expires 3 s after it was read (not a day later), once.
    let (m, _) = d.scrape_until(Duration::from_secs(10), |m| expired(m) == 1.0);
    assert_eq!(expired(&m), 1.0, "not expired within 10 s\n{m}");
    assert_eq!(sample(&m, "runway_api_tasks_tracked"), Some(0.0), "{m}");
    stop(d);
}

/// Two INTERNAL failures, read live (ids `{tag}-0`, `{tag}-1`).
fn fail_twice(log: &Path, tag: &str) {
    let line = |i: u32| {
        format!("{{\"id\":\"{tag}-{i}\",\"status\":\"FAILED\",\"failureCode\":\"INTERNAL\",\"model\":\"gen4_turbo\"}}\n")
    };
    append(log, (line(0) + &line(1)).as_bytes());
}

#[test]
fn the_failure_windows_survive_a_restart_after_a_step_back() {
    let dir = tempfile::tempdir().unwrap();
    let clock = FakeClock::new(dir.path());
    let env = clock.env();
    let log = dir.path().join("app.log");
    append(&log, b"");
    let config = config(dir.path(), "");
    let d = Daemon::start_env(dir.path(), &config, &[], &env_refs(&env));
    fail_twice(&log, "before");
    assert_eq!(windows_until(&d, "INTERNAL", (2, 2)), (2, 2));
    // Back an hour, then stopped (its last commit notes the step) and restarted.
    clock.set(-HOUR);
    wait_clock(&d, -HOUR);
    assert_eq!(windows(&d, "INTERNAL"), (2, 2), "after the step");
    stop(d);
    // On the stepped clock: the two are still of the last hour, and two more.
    let d = Daemon::start_env(dir.path(), &config, &[], &env_refs(&env));
    assert_eq!(windows(&d, "INTERNAL"), (2, 2), "after the restart");
    fail_twice(&log, "after");
    assert_eq!(
        windows_until(&d, "INTERNAL", (4, 4)),
        (4, 4),
        "counted after the restart"
    );
    stop(d);
}
