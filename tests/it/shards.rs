//! Two exporters sharing one task list (`api.shard = "0/2"` and `"1/2"`) scraped by one
//! real Prometheus with the shipped rules: each serves only its shard, and summed over
//! instances the counters, the duration histogram and the recording rules come to the
//! tasks served, each once.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::mock_api::{MockApi, Step};

const KEY: &str = "key_shards_5d2e";
const N: usize = 40;
/// How long before the mock's start the tasks were created: a task's duration is at
/// least its age, and less than its age plus the test's run time (under a minute).
const AGES: [u64; 3] = [0, 100, 1000];
/// What a task answers before it ends, as real tasks do: the poller times the change
/// between two of its answers (to a terminal status, or from waiting to `RUNNING`), so
/// every task here is timed, and the ones that run have a queue time too.
const BEFORE: [&[&str]; 3] = [
    &["PENDING"],
    &["PENDING", "RUNNING"],
    &["THROTTLED", "RUNNING"],
];
const JOB: &str = r#"job="runway-exporter""#;

struct Task {
    id: String,
    model: &'static str,
    status: &'static str,
    code: Option<&'static str>,
    /// Its answers before the terminal one.
    before: &'static [&'static str],
    age: u64,
}

fn tasks() -> Vec<Task> {
    (0..N)
        .map(|i| {
            let (status, code) = match (i / 2) % 4 {
                0 | 1 => ("SUCCEEDED", None),
                2 => ("FAILED", Some("SAFETY.INPUT.TEXT")),
                _ => ("FAILED", Some("INTERNAL")),
            };
            Task {
                id: format!("shard-{i}"),
                model: ["gen4_turbo", "veo3"][i % 2],
                status,
                code,
                before: BEFORE[i % 3],
                age: AGES[(i / 5) % 3],
            }
        })
        .collect()
}

fn timeline(t: &Task) -> Vec<Step> {
    let mut steps: Vec<Step> = t.before.iter().map(|s| Step::Task(s, None)).collect();
    steps.push(Step::Task(t.status, t.code));
    steps
}

fn config(dir: &Path, list: &Path, mock: &MockApi, shard: &str) -> String {
    format!(
        "[state]\ndir = \"{state}\"\ncommit_interval = \"100ms\"\n[file]\nstart_at = \"beginning\"\npoll_interval = \"50ms\"\n\
         [api]\ntask_list = \"{list}\"\nbase_url = \"{url}\"\nshard = \"{shard}\"\nmin_poll_interval = \"100ms\"\n\
         poll_interval = \"1s\"\nrequests_per_second = 200.0\norganization_interval = \"0s\"\nusage_interval = \"0s\"\n",
        state = dir.join("state").display(),
        list = list.display(),
        url = mock.url(),
    )
}

/// Waits until the query's single value is `want`; panics with the last answer.
fn wait_value(prom: &Prometheus, q: &str, want: f64, deadline: Instant) {
    wait_value_while(prom, q, want, deadline, || true);
}

/// [`wait_value`], given up (false) as soon as `valid` no longer holds.
fn wait_value_while(
    prom: &Prometheus,
    q: &str,
    want: f64,
    deadline: Instant,
    valid: impl Fn() -> bool,
) -> bool {
    loop {
        if !valid() {
            return false;
        }
        let got = prom.value(q);
        if got == Some(want) {
            return true;
        }
        assert!(Instant::now() < deadline, "{q}: {got:?}, want {want}");
        // A poll interval while Prometheus scrapes, not a synchronisation.
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

#[test]
fn two_shards_add_up_in_prometheus_with_the_recording_rules() {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(45);
    let tasks = tasks();
    let mock = MockApi::start(
        KEY,
        tasks.iter().map(|t| (t.id.clone(), timeline(t))).collect(),
    );
    for t in &tasks {
        mock.created_ago(&t.id, Duration::from_secs(t.age));
    }
    let shared = tempfile::tempdir().unwrap();
    let list = shared.path().join("tasks.list");
    append(&list, b"");
    let env = [("RUNWAYML_API_SECRET", KEY)];
    let mut dirs = Vec::new();
    let mut daemons = Vec::new();
    for shard in ["0/2", "1/2"] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), &list, &mock, shard);
        daemons.push(Daemon::start_env(dir.path(), &cfg, &[], &env));
        dirs.push(dir);
    }

    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/prometheus/rules.yml");
    let prom = Prometheus::start(
        shared.path(),
        &format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {rules:?}\n\
             scrape_configs:\n  - job_name: runway-exporter\n    static_configs:\n      - targets: [\"{}\", \"{}\"]\n",
            daemons[0].addr, daemons[1].addr
        ),
    );
    let utc_day = || jiff::Timestamp::now().as_second().div_euclid(86_400);
    let prom_day = utc_day();

    // In two halves, each served and scraped before the next: the second half's tasks
    // increase series that Prometheus already has, so the rates are not 0.
    let line = |t: &Task| {
        format!(
            "{{\"id\":\"{}\",\"model\":\"{}\",\"duration\":5}}\n",
            t.id, t.model
        )
    };
    let served = format!("sum(runway_tasks_total{{{JOB}}})");
    for (k, half) in tasks.chunks(N / 2).enumerate() {
        append(&list, half.iter().map(line).collect::<String>().as_bytes());
        wait_value(&prom, &served, ((k + 1) * N / 2) as f64, deadline);
    }
    let running = tasks
        .iter()
        .filter(|t| t.before.contains(&"RUNNING"))
        .count();
    wait_value(
        &prom,
        &format!("sum(runway_task_duration_seconds_count{{{JOB}}})"),
        N as f64,
        deadline,
    );
    wait_value(
        &prom,
        &format!("sum(runway_task_queue_seconds_count{{{JOB}}})"),
        running as f64,
        deadline,
    );

    // Each exporter alone: only its shard, and the shards add up to the list.
    let pages: Vec<String> = daemons.iter().map(Daemon::metrics).collect();
    let records = |m: &str, source: &str, result: &str| {
        sample(
            m,
            &format!("runway_exporter_records_total{{result=\"{result}\",source=\"{source}\"}}"),
        )
        .unwrap_or(0.0)
    };
    let mut each = Vec::new();
    for m in &pages {
        let n = sum(m, "runway_tasks_total", &[]);
        assert!(
            n > 0.0 && n < N as f64,
            "a shard serves some of the tasks: {n}"
        );
        assert_eq!(records(m, "api", "counted"), n);
        assert_eq!(records(m, "task_list", "tracked"), n);
        assert_eq!(sum(m, "runway_task_duration_seconds_count", &[]), n);
        assert_eq!(sum(m, "runway_exporter_untimed_tasks_total", &[]), 0.0);
        each.push(n);
    }
    let both = |f: &dyn Fn(&str) -> f64| pages.iter().map(|m| f(m)).sum::<f64>();
    assert_eq!(each.iter().sum::<f64>(), N as f64);
    assert_eq!(both(&|m| records(m, "task_list", "other_shard")), N as f64);
    assert_eq!(both(&|m| records(m, "api", "counted")), N as f64);
    // No id was polled by both.
    let requests = mock.task_requests();
    assert_eq!(requests.len(), N);
    for t in &tasks {
        assert_eq!(requests[&t.id].len(), t.before.len() + 1, "{}", t.id);
    }

    // Prometheus: summed over the instances, the tasks served, each once.
    let value = |q: &str| prom.value(q).unwrap_or_else(|| panic!("no value for {q}"));
    let expect = |q: String, want: f64| assert_eq!(value(&q), want, "{q}");
    let count = |f: &dyn Fn(&Task) -> bool| tasks.iter().filter(|t| f(t)).count() as f64;
    expect(served.clone(), N as f64);
    expect(
        format!("count(count by (instance) (runway_tasks_total{{{JOB}}}))"),
        2.0,
    );
    for status in ["SUCCEEDED", "FAILED"] {
        expect(
            format!("sum(runway_tasks_total{{{JOB},status=\"{status}\"}})"),
            count(&|t| t.status == status),
        );
    }
    for model in ["gen4_turbo", "veo3"] {
        expect(
            format!("sum(runway_tasks_total{{{JOB},model=\"{model}\"}})"),
            count(&|t| t.model == model),
        );
    }
    for code in ["SAFETY.INPUT.TEXT", "INTERNAL"] {
        expect(
            format!("sum(runway_task_failures_total{{{JOB},failure_code=\"{code}\"}})"),
            count(&|t| t.code == Some(code)),
        );
    }
    expect(
        format!("sum(runway_exporter_records_total{{{JOB},source=\"task_list\",result=\"other_shard\"}})"),
        N as f64,
    );
    // Durations: every task timed once, in the bucket its age puts it in (the run took
    // less than a minute, so a task created 100 s before took from 100 to 160 s).
    assert!(started.elapsed() < Duration::from_secs(60));
    expect(
        format!("sum(runway_task_duration_seconds_count{{{JOB}}})"),
        N as f64,
    );
    assert_eq!(
        prom.value(&format!(
            "sum(runway_exporter_untimed_tasks_total{{{JOB}}})"
        ))
        .unwrap_or(0.0),
        0.0,
        "a task not timed"
    );
    for (le, below) in [("60", 60), ("180", 180), ("1200", 1200), ("+Inf", u64::MAX)] {
        expect(
            format!("sum(runway_task_duration_seconds_bucket{{{JOB},le=\"{le}\"}})"),
            count(&|t| t.age < below),
        );
    }
    let seconds = value(&format!("sum(runway_task_duration_seconds_sum{{{JOB}}})"));
    assert!(close(
        seconds,
        both(&|m| sum(m, "runway_task_duration_seconds_sum", &[]))
    ));
    let ages: u64 = tasks.iter().map(|t| t.age).sum();
    assert!(
        seconds >= ages as f64 && seconds < (ages + 60 * N as u64) as f64,
        "{seconds} s for ages {ages} s"
    );
    expect(
        format!("sum(runway_task_queue_seconds_count{{{JOB}}})"),
        running as f64,
    );
    // The one recording rule that sums a counter as it is (before the first UTC midnight
    // Prometheus has seen): the credits charged today, summed over the shards. A
    // midnight that passes while waiting restarts it from 0, and ends the check.
    if utc_day() == prom_day {
        let counted = both(&|m| sum(m, "runway_credits_charged_total", &[]));
        assert!(counted > 0.0);
        // Once evaluated after the last scrape.
        wait_value_while(
            &prom,
            "sum(runway:credits_charged:utc_today)",
            counted,
            deadline,
            || utc_day() == prom_day,
        );
    }

    // The recording rules: at the time of a rule's evaluation, the same value as the
    // rates of both shards summed by hand.
    let pairs = [
        ("runway:tasks:rate5m", "runway_tasks_total", ""),
        (
            "runway:task_duration_seconds_count:rate5m",
            "runway_task_duration_seconds_count",
            "",
        ),
        (
            "runway:task_duration_seconds_sum:rate5m",
            "runway_task_duration_seconds_sum",
            "",
        ),
        (
            "runway:task_duration_seconds_bucket:rate5m",
            "runway_task_duration_seconds_bucket",
            ",le=\"+Inf\"",
        ),
        (
            "runway:task_duration_seconds_bucket:rate5m",
            "runway_task_duration_seconds_bucket",
            ",le=\"60\"",
        ),
        (
            "runway:task_queue_seconds_bucket:rate5m",
            "runway_task_queue_seconds_bucket",
            ",le=\"+Inf\"",
        ),
    ];
    for (rule, raw, le) in pairs {
        let recorded = format!("sum({rule}{{{JOB}{le}}})");
        let by_hand = format!("sum(rate({raw}{{{JOB}{le}}}[5m]))");
        // A rule evaluated after the last task was scraped. A scrape may be stored just
        // after an evaluation of its time; then the next evaluation is compared.
        loop {
            // Not yet evaluated with two scrapes of a series: no series.
            let at = prom
                .value(&format!("max(timestamp({rule}))"))
                .unwrap_or(0.0);
            let (r, h) = (prom.value_at(&recorded, at), prom.value_at(&by_hand, at));
            if prom.value_at(&served, at) == Some(N as f64)
                && r.zip(h).is_some_and(|(r, h)| close(r, h))
            {
                assert!(r.unwrap() > 0.0, "{recorded} at {at}: {r:?}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "at {at}: {recorded} = {r:?}, {by_hand} = {h:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    // And one series per job and model, without instance.
    for rule in [
        "runway:tasks:rate5m",
        "runway:task_duration_seconds_count:rate5m",
        "runway:task_duration_seconds_sum:rate5m",
        "runway:task_duration_seconds_bucket:rate5m",
        "runway:task_queue_seconds_bucket:rate5m",
    ] {
        let v = prom.query(rule);
        let series = v["data"]["result"]
            .as_array()
            .unwrap_or_else(|| panic!("{rule}: {v}"));
        assert!(!series.is_empty(), "{rule}: no series");
        for s in series {
            assert!(s["metric"].get("instance").is_none(), "{rule}: {s}");
            assert_eq!(s["metric"]["job"], "runway-exporter", "{rule}: {s}");
        }
        // The exporters show model="unknown" at 0 from the start.
        for model in ["gen4_turbo", "veo3"] {
            assert!(
                series.iter().any(|s| s["metric"]["model"] == model),
                "{rule}: no {model}"
            );
        }
        for s in series {
            if !["gen4_turbo", "veo3"].contains(&s["metric"]["model"].as_str().unwrap()) {
                assert_eq!(s["value"][1], "0", "{rule}: {s}");
            }
        }
    }
    drop(prom);
    eprintln!("two shards in Prometheus: {:?}", started.elapsed());
}
