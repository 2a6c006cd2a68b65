//! The API source against the mock Runway API: exact counts, polite polling, faults,
//! restarts, shards, and a key that never leaks.

use std::path::Path;
use std::time::Duration;

use crate::harness::*;
use crate::mock_api::{MockApi, Step};

const KEY: &str = "key_e2e_7f3a9c1b";
const MIN_POLL: Duration = Duration::from_millis(100);
/// How far apart two request stamps of the mock may be from the daemon's send times.
const SLACK: Duration = Duration::from_millis(25);

/// A daemon's config with the API source polling `mock`, fast; `extra` goes in `[api]`.
pub(crate) fn api_config(dir: &Path, mock: &MockApi, extra: &str) -> String {
    format!(
        "[state]\ndir = \"{state}\"\ncommit_interval = \"100ms\"\n[file]\nstart_at = \"beginning\"\npoll_interval = \"50ms\"\n\
         [api]\ntask_list = \"{list}\"\nbase_url = \"{url}\"\nmin_poll_interval = \"100ms\"\npoll_interval = \"150ms\"\n\
         requests_per_second = 200.0\nrequest_timeout = \"1s\"\nbackoff_base = \"50ms\"\nbackoff_max = \"1s\"\n\
         auth_retry_interval = \"300ms\"\norganization_interval = \"200ms\"\n{extra}",
        state = dir.join("state").display(),
        list = dir.join("tasks.list").display(),
        url = mock.url(),
    )
}

fn records(m: &str, source: &str, result: &str) -> f64 {
    sample(
        m,
        &format!("runway_exporter_records_total{{result=\"{result}\",source=\"{source}\"}}"),
    )
    .unwrap_or(0.0)
}

fn timelines() -> Vec<(String, Vec<Step>)> {
    use Step::*;
    vec![
        (
            "t-fail".into(),
            vec![
                Task("PENDING", None),
                Task("THROTTLED", None),
                Task("RUNNING", None),
                Task("FAILED", Some("SAFETY.INPUT.TEXT")),
            ],
        ),
        (
            "t-ok".into(),
            vec![Task("RUNNING", None), Task("SUCCEEDED", None)],
        ),
        ("t-cancel".into(), vec![Task("CANCELLED", None)]),
        ("t-deleted".into(), vec![Task("RUNNING", None), Status(404)]),
        (
            "t-retry-after".into(),
            vec![RetryAfter(1), Task("SUCCEEDED", None)],
        ),
        (
            "t-503-retry-after".into(),
            vec![UnavailableRetryAfter(1), Task("SUCCEEDED", None)],
        ),
        ("t-429".into(), vec![Status(429), Task("SUCCEEDED", None)]),
        (
            "t-5xx".into(),
            vec![
                Status(500),
                Status(502),
                Status(503),
                Status(504),
                Task("SUCCEEDED", None),
            ],
        ),
        (
            "t-malformed".into(),
            vec![Malformed, Task("FAILED", Some("INTERNAL"))],
        ),
        ("t-reset".into(), vec![Reset, Task("SUCCEEDED", None)]),
        (
            "t-slow".into(),
            vec![Slow(Duration::from_millis(1500)), Task("SUCCEEDED", None)],
        ),
        (
            "t-null".into(),
            vec![Task("RUNNING", None), Task("FAILED", None)],
        ),
    ]
}

#[test]
fn tasks_are_polled_to_their_end_and_counted_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockApi::start(KEY, timelines());
    let mut list = String::new();
    for (id, _) in timelines() {
        if id == "t-ok" {
            list.push_str("{\"id\":\"t-ok\",\"model\":\"gen4_turbo\",\"duration\":10}\n");
        } else {
            list.push_str(&format!("{id}\n"));
        }
    }
    list.push_str("t-fail\n"); // listed twice
    list.push_str("not/a/task id\n");
    append(&dir.path().join("tasks.list"), list.as_bytes());
    let mut d = Daemon::start_env(
        dir.path(),
        &api_config(dir.path(), &mock, ""),
        &[],
        &[("RUNWAYML_API_SECRET", KEY)],
    );

    let (m, _) = d.scrape_until(Duration::from_secs(30), |m| {
        records(m, "api", "counted") + records(m, "api", "not_found") >= 12.0
    });
    // t-deleted answered 404 after RUNNING: deleted, so CANCELLED, not `not_found`.
    assert_eq!(records(&m, "api", "counted"), 12.0);
    assert_eq!(records(&m, "api", "not_found"), 0.0);
    assert_eq!(records(&m, "task_list", "tracked"), 12.0);
    assert_eq!(records(&m, "task_list", "duplicate"), 1.0);
    assert_eq!(
        sample(
            &m,
            "runway_exporter_parse_errors_total{reason=\"invalid_task_id\",source=\"task_list\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sum(
            &m,
            "runway_task_failures_total",
            &["failure_code=\"SAFETY.INPUT.TEXT\""]
        ),
        1.0
    );
    assert_eq!(
        sum(
            &m,
            "runway_task_failures_total",
            &["failure_code=\"INTERNAL\""]
        ),
        1.0
    );
    assert_eq!(
        sum(&m, "runway_task_failures_total", &["failure_code=\"none\""]),
        1.0
    );
    assert_eq!(
        sum(&m, "runway_tasks_total", &["status=\"SUCCEEDED\""]),
        7.0
    );
    assert_eq!(
        sum(&m, "runway_tasks_total", &["status=\"CANCELLED\""]),
        2.0
    );
    // The model and duration from the task list reach the counters and the estimate
    // (these answers have no cost, like the API's before it reported one).
    assert_eq!(
        sample(
            &m,
            "runway_credits_charged_total{model=\"gen4_turbo\",status=\"SUCCEEDED\"}"
        ),
        Some(50.0)
    );
    assert_eq!(
        sample(
            &m,
            "runway_credits_estimated_total{model=\"gen4_turbo\",origin=\"pricing\",status=\"SUCCEEDED\"}"
        ),
        Some(50.0)
    );
    assert_eq!(sample(&m, "runway_api_tasks_tracked"), Some(0.0));
    assert!(records(&m, "api", "non_terminal") >= 5.0);
    assert_eq!(records(&m, "api", "rejected"), 1.0, "the malformed answer");
    for code in [
        "429", "500", "502", "503", "504", "timeout", "error", "404", "200",
    ] {
        assert!(
            sample(
                &m,
                &format!(
                    "runway_exporter_api_requests_total{{code=\"{code}\",endpoint=\"tasks\"}}"
                )
            )
            .unwrap_or(0.0)
                >= 1.0,
            "code {code}"
        );
    }
    assert_eq!(
        sample(&m, "runway_exporter_source_up{source=\"api\"}"),
        Some(1.0)
    );

    // Organization gauges.
    let (m, _) = d.scrape_until(Duration::from_secs(5), |m| {
        sample(m, "runway_organization_credit_balance").is_some()
    });
    assert_eq!(
        sample(&m, "runway_organization_credit_balance"),
        Some(12345.0)
    );
    assert_eq!(
        sample(
            &m,
            "runway_organization_daily_generations{model=\"gen4_turbo\"}"
        ),
        Some(17.0)
    );
    assert_eq!(
        sample(
            &m,
            "runway_organization_max_daily_generations{model=\"gen4_turbo\"}"
        ),
        Some(200.0)
    );
    assert_eq!(
        sample(
            &m,
            "runway_organization_max_concurrent_generations{model=\"gen4_turbo\"}"
        ),
        Some(2.0)
    );
    assert!(mock.organization_requests() >= 1);
    promtool_check_metrics(&m);

    // Polite: no task was asked for more often than min_poll_interval, and every
    // request carried the key. The mock stamps a request when it reads it, not when
    // the daemon sent it, so each stamp carries the connect and the scheduling delay
    // of a busy machine (one run saw 94 ms between two sends 100 ms apart). Without
    // the minimum, a retry would come after backoff_base (50 ms) less jitter, so a
    // bound of 75 ms still tells the two apart with 25 ms to spare on either side.
    for (id, times) in mock.task_requests() {
        for pair in times.windows(2) {
            let gap = pair[1].duration_since(pair[0]);
            assert!(
                gap >= MIN_POLL - SLACK,
                "{id} polled {gap:?} after the previous request"
            );
        }
    }
    assert!(mock
        .auth_headers()
        .iter()
        .all(|a| a == &format!("Bearer {KEY}")));
    // Retry-After: 1 held the task back for a second, after a 429 and after a 503.
    for id in ["t-retry-after", "t-503-retry-after"] {
        let held = &mock.task_requests()[id];
        let gap = held[1].duration_since(held[0]);
        assert!(gap >= Duration::from_millis(950), "{id}: {gap:?}");
    }

    // The key never reaches the logs, the metrics or check-config.
    d.signal("TERM");
    assert_eq!(d.wait_exit(Duration::from_secs(10)).code(), Some(0));
    let logs = serde_json::to_string(d.logs()).unwrap();
    assert!(!logs.contains(KEY) && !m.contains(KEY));
    let cfg = dir.path().join("runway-exporter.toml");
    let (code, out, err) = run_env(
        &["check-config", "--config", cfg.to_str().unwrap()],
        &[("RUNWAYML_API_SECRET", KEY)],
    );
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains(KEY) && !err.contains(KEY));
}

#[test]
fn a_wrong_key_or_version_marks_the_source_down_and_loses_no_task() {
    use Step::*;
    let dir = tempfile::tempdir().unwrap();
    let mock = MockApi::start(KEY, vec![("t-1".into(), vec![Task("SUCCEEDED", None)])]);
    append(&dir.path().join("tasks.list"), b"t-1\n");
    let cfg = api_config(dir.path(), &mock, "");
    let mut d = Daemon::start_env(
        dir.path(),
        &cfg,
        &[],
        &[("RUNWAYML_API_SECRET", "wrong-key-123")],
    );
    let (m, _) = d.scrape_until(Duration::from_secs(10), |m| {
        sample(
            m,
            "runway_exporter_api_requests_total{code=\"401\",endpoint=\"tasks\"}",
        )
        .unwrap_or(0.0)
            >= 2.0
    });
    assert_eq!(
        sample(&m, "runway_exporter_source_up{source=\"api\"}"),
        Some(0.0)
    );
    assert_eq!(
        sample(&m, "runway_api_tasks_tracked"),
        Some(1.0),
        "the task is kept"
    );
    let errors = d.errors();
    assert_eq!(
        errors.len(),
        1,
        "one ERROR line, not one per request: {errors:?}"
    );
    let logs = serde_json::to_string(d.logs()).unwrap();
    assert!(!logs.contains("wrong-key-123"));
    // Slowly: no more often than auth_retry_interval (300 ms) after the first refusal.
    let times = &mock.task_requests()["t-1"];
    for pair in times.windows(2) {
        assert!(pair[1].duration_since(pair[0]) >= Duration::from_millis(290));
    }
    d.signal("TERM");
    d.wait_exit(Duration::from_secs(10));

    // With the right key (and the wrong API version: 400) the same.
    let cfg = api_config(dir.path(), &mock, "api_version = \"1999-01-01\"\n");
    let d = Daemon::start_env(dir.path(), &cfg, &[], &[("RUNWAYML_API_SECRET", KEY)]);
    let (m, _) = d.scrape_until(Duration::from_secs(10), |m| {
        sample(
            m,
            "runway_exporter_api_requests_total{code=\"400\",endpoint=\"tasks\"}",
        )
        .unwrap_or(0.0)
            >= 1.0
            && sample(m, "runway_exporter_source_up{source=\"api\"}") == Some(0.0)
    });
    assert_eq!(
        sample(&m, "runway_exporter_source_up{source=\"api\"}"),
        Some(0.0)
    );
    drop(d);

    // Right key and version: the task kept across the restarts is counted once.
    let d = Daemon::start_env(
        dir.path(),
        &api_config(dir.path(), &mock, ""),
        &[],
        &[("RUNWAYML_API_SECRET", KEY)],
    );
    let (m, _) = d.scrape_until(Duration::from_secs(10), |m| {
        records(m, "api", "counted") >= 1.0
    });
    assert_eq!(records(&m, "api", "counted"), 1.0);
    assert_eq!(
        sample(&m, "runway_exporter_source_up{source=\"api\"}"),
        Some(1.0)
    );

    // No key at all: a configuration error.
    let (code, _, err) = run_env(
        &[
            "--config",
            dir.path().join("runway-exporter.toml").to_str().unwrap(),
            "--web.listen-address",
            "127.0.0.1:0",
        ],
        &[],
    );
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("RUNWAYML_API_SECRET"), "{err}");
}

#[test]
fn tasks_being_polled_survive_a_crash_and_are_counted_once() {
    use Step::*;
    let dir = tempfile::tempdir().unwrap();
    let mut timeline = vec![Task("RUNNING", None); 8];
    timeline.push(Task("FAILED", Some("SAFETY.OUTPUT.VIDEO")));
    let mock = MockApi::start(
        KEY,
        vec![
            ("t-long".into(), timeline),
            ("t-quick".into(), vec![Task("SUCCEEDED", None)]),
        ],
    );
    append(&dir.path().join("tasks.list"), b"t-long\nt-quick\n");
    let cfg = api_config(dir.path(), &mock, "");
    let env = [("RUNWAYML_API_SECRET", KEY)];
    let mut d = Daemon::start_env(dir.path(), &cfg, &[], &env);
    let (m, _) = d.scrape_until(Duration::from_secs(10), |m| {
        records(m, "api", "counted") >= 1.0 && records(m, "api", "non_terminal") >= 2.0
    });
    assert_eq!(sample(&m, "runway_api_tasks_tracked"), Some(1.0));
    d.signal("KILL");
    d.wait_exit(Duration::from_secs(10));
    let d = Daemon::start_env(dir.path(), &cfg, &[], &env);
    let (m, _) = d.scrape_until(Duration::from_secs(20), |m| {
        records(m, "api", "counted") >= 2.0
    });
    assert_eq!(records(&m, "api", "counted"), 2.0);
    assert_eq!(
        records(&m, "task_list", "tracked"),
        2.0,
        "the list is not read twice"
    );
    assert_eq!(
        sum(&m, "runway_task_failures_total", &["SAFETY.OUTPUT.VIDEO"]),
        1.0
    );
    assert_eq!(sample(&m, "runway_api_tasks_tracked"), Some(0.0));
}

/// Runway forgets a task once it is deleted (`DELETE /v1/tasks/{id}`, which cancels it
/// if it has not ended): a polled task that answers 404 after it was seen waiting or
/// running ends CANCELLED, even when the exporter crashed in between; an id the API
/// never knew stays `not_found`.
#[test]
fn a_task_deleted_after_it_was_seen_ends_cancelled_across_a_crash() {
    use Step::*;
    let running = Json(
        r#"{"id":"d-run","createdAt":"2026-12-01T00:00:00Z","status":"RUNNING","estimatedCost":{"credits":42}}"#,
    );
    let waiting = Json(r#"{"id":"d-wait","status":"PENDING","estimatedCost":{"credits":42}}"#);
    let mock = MockApi::start(
        KEY,
        vec![
            ("d-run".into(), vec![running]),
            ("d-wait".into(), vec![waiting]),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    append(
        &dir.path().join("tasks.list"),
        b"{\"id\":\"d-run\",\"model\":\"gen4_turbo\",\"duration\":10}\n{\"id\":\"d-wait\",\"model\":\"gen4_turbo\",\"duration\":10}\nd-unknown\n",
    );
    let cfg = api_config(dir.path(), &mock, "");
    let env = [("RUNWAYML_API_SECRET", KEY)];
    let mut d = Daemon::start_env(dir.path(), &cfg, &[], &env);
    // What is published is committed: both answers are in the state file.
    let (m, _) = d.scrape_until(Duration::from_secs(10), |m| {
        records(m, "api", "non_terminal") >= 2.0 && records(m, "api", "not_found") >= 1.0
    });
    assert_eq!(sample(&m, "runway_api_tasks_tracked"), Some(2.0));
    d.signal("KILL");
    d.wait_exit(Duration::from_secs(10));
    mock.delete("d-run");
    mock.delete("d-wait");

    let d = Daemon::start_env(dir.path(), &cfg, &[], &env);
    let (m, _) = d.scrape_until(Duration::from_secs(20), |m| {
        records(m, "api", "counted") >= 2.0
    });
    assert_eq!(records(&m, "api", "counted"), 2.0);
    assert_eq!(records(&m, "api", "not_found"), 1.0, "d-unknown only");
    assert_eq!(
        sample(
            &m,
            "runway_tasks_total{model=\"gen4_turbo\",status=\"CANCELLED\"}"
        ),
        Some(2.0)
    );
    // d-run ran: its last estimate is charged, and marked estimated (Runway's own);
    // d-wait never ran.
    for name in ["charged", "estimated"] {
        let origin = if name == "estimated" {
            ",origin=\"estimated_cost\""
        } else {
            ""
        };
        assert_eq!(
            sample(
                &m,
                &format!(
                    "runway_credits_{name}_total{{model=\"gen4_turbo\"{origin},status=\"CANCELLED\"}}"
                )
            ),
            Some(42.0),
            "{name}"
        );
    }
    assert_eq!(
        sample(
            &m,
            "runway_exporter_untimed_tasks_total{measure=\"duration\",reason=\"deleted\"}"
        ),
        Some(2.0)
    );
    assert_eq!(
        sum(
            &m,
            "runway_task_duration_seconds_count",
            &["status=\"CANCELLED\""]
        ),
        0.0
    );
    assert_eq!(sample(&m, "runway_api_tasks_tracked"), Some(0.0));
    assert_eq!(sample(&m, "runway_api_credits_in_flight"), Some(0.0));
}

#[test]
fn two_shards_split_one_task_list() {
    use Step::*;
    let ids: Vec<String> = (0..40).map(|i| format!("shard-task-{i}")).collect();
    let mock = MockApi::start(
        KEY,
        ids.iter()
            .map(|id| (id.clone(), vec![Task("SUCCEEDED", None)]))
            .collect(),
    );
    let shared = tempfile::tempdir().unwrap();
    let list: String = ids.iter().map(|id| format!("{id}\n")).collect();
    append(&shared.path().join("tasks.list"), list.as_bytes());
    let env = [("RUNWAYML_API_SECRET", KEY)];
    let mut daemons = Vec::new();
    let mut dirs = Vec::new();
    for shard in ["0/2", "1/2"] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = api_config(dir.path(), &mock, &format!("shard = \"{shard}\"\n")).replace(
            &dir.path().join("tasks.list").display().to_string(),
            &shared.path().join("tasks.list").display().to_string(),
        );
        daemons.push(Daemon::start_env(dir.path(), &cfg, &[], &env));
        dirs.push(dir);
    }
    let mut counted = 0.0;
    let mut tracked = 0.0;
    let mut other = 0.0;
    for d in &daemons {
        let (m, _) = d.scrape_until(Duration::from_secs(20), |m| {
            records(m, "task_list", "tracked") + records(m, "task_list", "other_shard") >= 40.0
                && records(m, "api", "counted") >= records(m, "task_list", "tracked")
        });
        assert!(
            records(&m, "api", "counted") > 0.0,
            "each shard has some of 40 ids"
        );
        counted += records(&m, "api", "counted");
        tracked += records(&m, "task_list", "tracked");
        other += records(&m, "task_list", "other_shard");
    }
    assert_eq!((counted, tracked, other), (40.0, 40.0, 40.0));
    // And every id was asked for by one instance only: once each, in all.
    let requests = mock.task_requests();
    assert_eq!(requests.len(), 40);
    assert!(
        requests.values().all(|t| t.len() == 1),
        "an id polled twice"
    );
}

/// Runs 24 tasks through a daemon with `extra` settings; returns the mock.
fn run_24(timeline: fn() -> Vec<Step>, extra: &str) -> MockApi {
    let ids: Vec<String> = (0..24).map(|i| format!("cap-{i}")).collect();
    let mock = MockApi::start(KEY, ids.iter().map(|id| (id.clone(), timeline())).collect());
    let dir = tempfile::tempdir().unwrap();
    let list: String = ids.iter().map(|id| format!("{id}\n")).collect();
    append(&dir.path().join("tasks.list"), list.as_bytes());
    // Only task requests here: the organization poller is off ("0s").
    let cfg = api_config(dir.path(), &mock, extra)
        .replace("requests_per_second = 200.0\n", "")
        .replace(
            "organization_interval = \"200ms\"",
            "organization_interval = \"0s\"",
        );
    let d = Daemon::start_env(dir.path(), &cfg, &[], &[("RUNWAYML_API_SECRET", KEY)]);
    let (m, _) = d.scrape_until(Duration::from_secs(30), |m| {
        records(m, "api", "counted") >= 24.0
    });
    assert_eq!(records(&m, "api", "counted"), 24.0);
    assert_eq!(
        mock.organization_requests(),
        0,
        "organization_interval = 0s is off"
    );
    mock
}

#[test]
fn the_request_rate_is_capped() {
    // Instant answers and a high in-flight cap: only the rate holds requests back.
    let mock = run_24(
        || vec![Step::Task("SUCCEEDED", None)],
        "requests_per_second = 40.0\nmax_in_flight = 24\n",
    );
    let times = mock.task_request_times();
    assert_eq!(times.len(), 24);
    // At 40/s the daemon starts requests 25 ms apart, but the mock stamps them when it
    // reads them, and on a loaded machine one can be delayed on its way by tens of ms:
    // a single gap can look shorter, not the rate higher. So the bounds are on spans,
    // with 75-100 ms of slack: all 24 span at least 23 x 25 - 100 ms, any 8 in a row at
    // least 7 x 25 - 75. No cap would put them within a few ms; twice the rate, 287 ms
    // for all and 87 ms for 8.
    let all = times[23].duration_since(times[0]);
    assert!(
        all >= Duration::from_millis(23 * 25 - 100),
        "24 requests within {all:?} at 40/s"
    );
    for run in times.windows(8) {
        let span = run[7].duration_since(run[0]);
        assert!(
            span >= Duration::from_millis(7 * 25 - 75),
            "8 requests within {span:?} at 40/s"
        );
    }
}

#[test]
fn the_requests_in_flight_are_capped() {
    // Slow answers (150 ms, under the 1 s timeout) and a high rate: only the cap
    // keeps requests from piling up.
    let slow = || {
        vec![
            Step::Slow(Duration::from_millis(150)),
            Step::Task("SUCCEEDED", None),
        ]
    };
    let mock = run_24(slow, "requests_per_second = 500.0\nmax_in_flight = 3\n");
    assert!(
        mock.max_concurrent() <= 3,
        "{} requests at once",
        mock.max_concurrent()
    );
    assert!(
        mock.max_concurrent() >= 2,
        "requests should overlap up to the cap"
    );
}

#[test]
fn the_api_reports_costs_estimates_limits_and_usage() {
    use Step::*;
    let running = Json(
        r#"{"id":"c-cancel","createdAt":"2026-12-01T00:00:00Z","status":"RUNNING","progress":0.5,"estimatedCost":{"credits":30}}"#,
    );
    let mut cancel = vec![running; 15];
    cancel.push(Json(
        r#"{"id":"c-cancel","createdAt":"2026-12-01T00:00:00Z","status":"CANCELLED","cost":{"credits":50}}"#,
    ));
    let timelines = vec![
        (
            "c-ok".to_string(),
            vec![
                Json(r#"{"id":"c-ok","status":"PENDING","estimatedCost":{"credits":100}}"#),
                Json(
                    r#"{"id":"c-ok","status":"SUCCEEDED","output":["https://x/y.mp4"],"cost":{"credits":75}}"#,
                ),
            ],
        ),
        ("c-cancel".to_string(), cancel),
        (
            "c-internal".to_string(),
            vec![Json(
                r#"{"id":"c-internal","status":"FAILED","failure":"x","failureCode":"INTERNAL","cost":{"credits":20}}"#,
            )],
        ),
        (
            "c-absurd".to_string(),
            vec![Json(
                r#"{"id":"c-absurd","status":"SUCCEEDED","cost":{"credits":1e308}}"#,
            )],
        ),
    ];
    let mock = MockApi::start(KEY, timelines);
    let dir = tempfile::tempdir().unwrap();
    // c-ok would be estimated at 50 (10 s of gen4_turbo): the API says 75.
    append(
        &dir.path().join("tasks.list"),
        b"{\"id\":\"c-ok\",\"model\":\"gen4_turbo\",\"duration\":10}\nc-cancel\nc-internal\nc-absurd\n",
    );
    let d = Daemon::start_env(
        dir.path(),
        &api_config(dir.path(), &mock, "usage_interval = \"200ms\"\n"),
        &[],
        &[("RUNWAYML_API_SECRET", KEY)],
    );
    // While c-cancel runs (15 polls) and the others have ended, its estimate alone is
    // in flight. (Before the others' first answers the sum can be 30 too: wait for both.)
    let (m, _) = d.scrape_until(Duration::from_secs(20), |m| {
        sample(m, "runway_api_tasks_tracked") == Some(1.0)
            && sample(m, "runway_api_credits_in_flight") == Some(30.0)
    });
    assert_eq!(sample(&m, "runway_api_tasks_tracked"), Some(1.0));
    assert_eq!(sample(&m, "runway_api_credits_in_flight"), Some(30.0));
    let (m, _) = d.scrape_until(Duration::from_secs(20), |m| {
        records(m, "api", "counted") >= 4.0
            && sample(
                m,
                "runway_organization_daily_credits_used{model=\"veo3\",tasks=\"true\"}",
            )
            .is_some()
    });
    assert_eq!(records(&m, "api", "counted"), 4.0);
    assert_eq!(sample(&m, "runway_api_credits_in_flight"), Some(0.0));
    let charged = |status: &str, model: &str| {
        sample(
            &m,
            &format!("runway_credits_charged_total{{model=\"{model}\",status=\"{status}\"}}"),
        )
    };
    assert_eq!(
        charged("SUCCEEDED", "gen4_turbo"),
        Some(75.0),
        "the cost, not the estimate"
    );
    assert_eq!(charged("CANCELLED", "unknown"), Some(50.0));
    assert_eq!(charged("FAILED", "unknown"), Some(20.0));
    assert_eq!(
        charged("SUCCEEDED", "unknown"),
        Some(0.0),
        "1e308 is ignored"
    );
    assert_eq!(
        sample(&m, "runway_exporter_invalid_numbers_total"),
        Some(1.0)
    );
    assert_eq!(
        sum(&m, "runway_credits_estimated_total", &[]),
        0.0,
        "every cost was reported"
    );
    assert_eq!(
        sample(
            &m,
            "runway_credits_lost_total{failure_code=\"INTERNAL\",model=\"unknown\"}"
        ),
        Some(20.0)
    );
    assert_eq!(
        sample(
            &m,
            "runway_task_cost_mismatches_total{credits=\"refunded\",failure_code=\"INTERNAL\"}"
        ),
        Some(1.0)
    );
    // Organization: a null limit has no sample, never 0; the monthly cap; today's usage.
    assert_eq!(
        sample(
            &m,
            "runway_organization_max_daily_generations{model=\"gen4_turbo\"}"
        ),
        Some(200.0)
    );
    for family in [
        "runway_organization_max_daily_generations",
        "runway_organization_max_concurrent_generations",
    ] {
        assert_eq!(
            sample(&m, &format!("{family}{{model=\"veo3\"}}")),
            None,
            "{family}"
        );
    }
    assert_eq!(
        sample(&m, "runway_organization_max_monthly_credit_spend"),
        Some(100000.0)
    );
    assert_eq!(
        sample(
            &m,
            "runway_organization_daily_credits_used{model=\"gen4_turbo\",tasks=\"true\"}"
        ),
        Some(150.0)
    );
    assert_eq!(
        sample(
            &m,
            "runway_organization_daily_credits_used{model=\"veo3\",tasks=\"true\"}"
        ),
        Some(-40.0)
    );
    // The usage request asks for the current UTC day only.
    let body = &mock.usage_bodies()[0];
    let (start, before) = (
        body["startDate"].as_str().unwrap(),
        body["beforeDate"].as_str().unwrap(),
    );
    assert_eq!((start.len(), before.len()), (10, 10), "{body}");
    assert!(start < before, "{body}");
    assert!(
        sample(
            &m,
            "runway_exporter_api_requests_total{code=\"200\",endpoint=\"organization_usage\"}"
        )
        .unwrap_or(0.0)
            >= 1.0
    );
    promtool_check_metrics(&m);
}

/// An API that answers every request with an endless chunked body (no Content-Length):
/// the body is refused once it passes the cap, counted and retried like a malformed
/// answer, and memory stays bounded.
#[test]
fn an_oversized_api_body_is_refused_as_it_arrives() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        // At most 40 connections, each fed at most 32 MiB: bounded in count and time.
        for stream in listener.incoming().take(40) {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 64 * 1024 {
                    if stream.read(&mut byte).unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let chunk = vec![b' '; 64 * 1024];
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n");
                for _ in 0..512 {
                    let sent = write!(stream, "{:x}\r\n", chunk.len())
                        .and_then(|_| stream.write_all(&chunk))
                        .and_then(|_| stream.write_all(b"\r\n"));
                    if sent.is_err() {
                        return; // the exporter hung up
                    }
                }
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    append(&dir.path().join("tasks.list"), b"big-1\nbig-2\nbig-3\n");
    let cfg = format!(
        "[state]\ndir = \"{state}\"\ncommit_interval = \"100ms\"\n[file]\nstart_at = \"beginning\"\n\
         [api]\ntask_list = \"{list}\"\nbase_url = \"{url}\"\nmin_poll_interval = \"100ms\"\npoll_interval = \"150ms\"\n\
         backoff_base = \"50ms\"\nbackoff_max = \"200ms\"\norganization_interval = \"200ms\"\nusage_interval = \"200ms\"\n",
        state = dir.path().join("state").display(),
        list = dir.path().join("tasks.list").display(),
    );
    let d = Daemon::start_env(dir.path(), &cfg, &[], &[("RUNWAYML_API_SECRET", KEY)]);
    let before = d.peak_rss();
    let too_large = |m: &str, endpoint: &str| {
        sample(
            m,
            &format!(
                "runway_exporter_api_requests_total{{code=\"too_large\",endpoint=\"{endpoint}\"}}"
            ),
        )
        .unwrap_or(0.0)
    };
    let (m, _) = d.scrape_until(Duration::from_secs(20), |m| {
        too_large(m, "tasks") >= 6.0 && too_large(m, "organization") >= 1.0
    });
    assert!(too_large(&m, "tasks") >= 6.0, "{m}");
    assert!(too_large(&m, "organization") >= 1.0);
    assert!(
        sample(
            &m,
            "runway_exporter_parse_errors_total{reason=\"line_too_long\",source=\"api\"}"
        )
        .unwrap_or(0.0)
            >= 6.0
    );
    assert_eq!(
        sample(&m, "runway_api_tasks_tracked"),
        Some(3.0),
        "still polled"
    );
    let grown = d.peak_rss().saturating_sub(before);
    assert!(grown < 24 * 1024 * 1024, "peak RSS grew by {grown} bytes");
}

/// A daemon polling the one task `id` of `mock` until it is counted (20 s at most); its
/// directory, the daemon and the last scrape.
fn poll_until_counted(mock: &MockApi, id: &str) -> (tempfile::TempDir, Daemon, String) {
    let dir = tempfile::tempdir().unwrap();
    append(&dir.path().join("tasks.list"), format!("{id}\n").as_bytes());
    let d = Daemon::start_env(
        dir.path(),
        &api_config(dir.path(), mock, ""),
        &[],
        &[("RUNWAYML_API_SECRET", KEY)],
    );
    let (m, _) = d.scrape_until(Duration::from_secs(20), |m| {
        records(m, "api", "counted") >= 1.0
    });
    (dir, d, m)
}

/// A task body nested far too deep is a rejected answer, retried; the poller goes on and
/// counts the task when it answers sanely.
#[test]
fn a_deeply_nested_api_body_is_rejected_not_a_crash() {
    use Step::*;
    let deep: &'static str = Box::leak(
        format!(
            r#"{{"id":"deep-1","status":"RUNNING","x":{}{}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        )
        .into_boxed_str(),
    );
    let mock = MockApi::start(
        KEY,
        vec![(
            "deep-1".to_string(),
            vec![
                Json(deep),
                Json(r#"{"id":"deep-1","status":"SUCCEEDED","cost":{"credits":5}}"#),
            ],
        )],
    );
    let (_dir, d, m) = poll_until_counted(&mock, "deep-1");
    assert_eq!(records(&m, "api", "counted"), 1.0);
    assert_eq!(
        sample(
            &m,
            "runway_exporter_parse_errors_total{reason=\"too_deep\",source=\"api\"}"
        ),
        Some(1.0)
    );
    assert_eq!(get(d.addr, "/-/healthy").unwrap().0, 200);
}

/// A task's times come from the answers that saw it change: its duration from the
/// first terminal answer after a non-terminal one, its queue time from the first
/// RUNNING answer after a PENDING one. A task already ended (or running) at its first
/// answer, or first answered after a restart, changed at an unknown time: not timed.
#[test]
fn api_tasks_are_timed_only_by_answers_that_saw_them_change() {
    use Step::*;
    let dir = tempfile::tempdir().unwrap();
    let timed = vec![
        Task("PENDING", None),
        Task("THROTTLED", None),
        Task("RUNNING", None),
        Task("RUNNING", None),
        Task("SUCCEEDED", None),
    ];
    let mock = MockApi::start(
        KEY,
        vec![
            ("t-timed".into(), timed),
            ("t-ended".into(), vec![Task("FAILED", Some("INTERNAL"))]),
        ],
    );
    mock.created_ago("t-timed", Duration::from_secs(30));
    append(&dir.path().join("tasks.list"), b"t-timed\nt-ended\n");
    let cfg = api_config(dir.path(), &mock, "");
    let env = [("RUNWAYML_API_SECRET", KEY)];
    let d = Daemon::start_env(dir.path(), &cfg, &[], &env);
    let (m, _) = d.scrape_until(Duration::from_secs(20), |m| {
        records(m, "api", "counted") >= 2.0
    });
    assert_eq!(sum(&m, "runway_task_duration_seconds_count", &[]), 1.0);
    let took = sum(&m, "runway_task_duration_seconds_sum", &[]);
    assert!((30.0..40.0).contains(&took), "{took}");
    assert_eq!(sum(&m, "runway_task_queue_seconds_count", &[]), 1.0);
    let waited = sum(&m, "runway_task_queue_seconds_sum", &[]);
    assert!((30.0..took).contains(&waited), "{waited} {took}");
    assert_eq!(
        sample(
            &m,
            "runway_exporter_untimed_tasks_total{measure=\"duration\",reason=\"no_end\"}"
        ),
        Some(1.0),
        "t-ended was over at its first answer"
    );
}

/// An answer about another task (a confused cache or proxy in between) is not counted,
/// for either task: it is rejected as `other_task_id` and the task asked about is polled
/// again, and counted when its own answer comes.
#[test]
fn an_answer_naming_another_task_is_rejected_not_counted() {
    use Step::*;
    let mock = MockApi::start(
        KEY,
        vec![(
            "mine-1".to_string(),
            vec![
                Json(
                    r#"{"id":"theirs-9","status":"FAILED","failureCode":"SAFETY.INPUT.TEXT","cost":{"credits":40}}"#,
                ),
                Json(r#"{"id":"mine-1","status":"SUCCEEDED","cost":{"credits":5}}"#),
            ],
        )],
    );
    let (_dir, _d, m) = poll_until_counted(&mock, "mine-1");
    assert_eq!(
        sample(
            &m,
            "runway_exporter_parse_errors_total{reason=\"other_task_id\",source=\"api\"}"
        ),
        Some(1.0)
    );
    assert_eq!(sum(&m, "runway_tasks_total", &[]), 1.0);
    assert_eq!(
        sum(&m, "runway_tasks_total", &["status=\"SUCCEEDED\""]),
        1.0
    );
    assert_eq!(sum(&m, "runway_task_failures_total", &[]), 0.0);
    assert_eq!(sum(&m, "runway_credits_charged_total", &[]), 5.0);
}

/// The time from a task's first request to its second, at the mock.
fn second_request_after(mock: &MockApi, id: &str) -> Duration {
    let times = &mock.task_requests()[id];
    assert!(times.len() >= 2, "{id} asked {} times", times.len());
    times[1].duration_since(times[0])
}

fn requests(m: &str, code: &str) -> f64 {
    sample(
        m,
        &format!("runway_exporter_api_requests_total{{code=\"{code}\",endpoint=\"tasks\"}}"),
    )
    .unwrap_or(0.0)
}

/// The retry hints read the way the SDKs read them, on answers that hold only their
/// task (502, 400; a 429 or a 503 would hold all five): `retry-after-ms` before
/// `retry-after`, an absurd wait (a number of seconds past any sense, a date in the
/// year 9999) cut to `backoff_max` (1 s here), `x-should-retry: false` holding a task the API
/// would otherwise retry for `auth_retry_interval` (it stays tracked and is counted when
/// it answers), and `x-should-retry: true` retrying a 400 without marking the source down.
#[test]
fn retry_hints_are_read_the_way_the_sdks_read_them() {
    use Step::*;
    const MS_FIRST: &[(&str, &str)] = &[("retry-after-ms", "700"), ("retry-after", "5")];
    const HUGE_SECS: &[(&str, &str)] = &[("retry-after", "99999999999")];
    const HUGE_DATE: &[(&str, &str)] = &[("retry-after", "Fri, 31 Dec 9999 23:59:59 GMT")];
    const NO: &[(&str, &str)] = &[("x-should-retry", "false")];
    const YES: &[(&str, &str)] = &[("x-should-retry", "true")];
    let timelines: Vec<(String, Vec<Step>)> = [
        ("h-ms", Headers(502, MS_FIRST)),
        ("h-huge-secs", Headers(502, HUGE_SECS)),
        ("h-huge-date", Headers(502, HUGE_DATE)),
        ("h-no", Headers(502, NO)),
        ("h-yes", Headers(400, YES)),
    ]
    .into_iter()
    .map(|(id, first)| (id.to_string(), vec![first, Task("SUCCEEDED", None)]))
    .collect();
    let mock = MockApi::start(KEY, timelines);
    let dir = tempfile::tempdir().unwrap();
    append(
        &dir.path().join("tasks.list"),
        b"h-ms\nh-huge-secs\nh-huge-date\nh-no\nh-yes\n",
    );
    let cfg = api_config(dir.path(), &mock, "").replace(
        "auth_retry_interval = \"300ms\"",
        "auth_retry_interval = \"3s\"",
    );
    let d = Daemon::start_env(dir.path(), &cfg, &[], &[("RUNWAYML_API_SECRET", KEY)]);
    let (m, _) = d.scrape_until(Duration::from_secs(20), |m| {
        records(m, "api", "counted") >= 5.0
    });
    assert_eq!(records(&m, "api", "counted"), 5.0, "no task lost");
    let ms_first = second_request_after(&mock, "h-ms");
    assert!(
        ms_first >= Duration::from_millis(650) && ms_first < Duration::from_millis(2500),
        "retry-after-ms: 700 wins over retry-after: 5: {ms_first:?}"
    );
    for id in ["h-huge-secs", "h-huge-date"] {
        let gap = second_request_after(&mock, id);
        assert!(
            gap >= Duration::from_millis(950) && gap < Duration::from_millis(2500),
            "{id}: an absurd wait is cut to backoff_max (1 s): {gap:?}"
        );
    }
    let retried = second_request_after(&mock, "h-yes");
    assert!(retried < Duration::from_millis(2500), "h-yes: {retried:?}");
    let held = second_request_after(&mock, "h-no");
    assert!(
        held >= Duration::from_millis(2900),
        "x-should-retry: false holds the task for auth_retry_interval: {held:?}"
    );
    assert_eq!(
        sample(&m, "runway_exporter_source_up{source=\"api\"}"),
        Some(1.0)
    );
    assert_eq!(requests(&m, "502"), 4.0);
    assert_eq!(requests(&m, "400"), 1.0);
    assert_eq!(requests(&m, "200"), 5.0);
}

/// A 429 is about the account's quota, not one task: its wait (here `retry-after-ms`
/// alone) holds every request, and the other task is not asked meanwhile.
#[test]
fn a_429_holds_every_task_for_its_wait() {
    use Step::*;
    const WAIT: &[(&str, &str)] = &[("retry-after-ms", "800")];
    let mut other = vec![Task("RUNNING", None); 14];
    other.push(Task("SUCCEEDED", None));
    let mock = MockApi::start(
        KEY,
        vec![
            ("q-other".into(), other),
            (
                "q-429".into(),
                vec![
                    Task("RUNNING", None),
                    Task("RUNNING", None),
                    Headers(429, WAIT),
                    Task("SUCCEEDED", None),
                ],
            ),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    append(&dir.path().join("tasks.list"), b"q-other\nq-429\n");
    let d = Daemon::start_env(
        dir.path(),
        &api_config(dir.path(), &mock, ""),
        &[],
        &[("RUNWAYML_API_SECRET", KEY)],
    );
    let (m, _) = d.scrape_until(Duration::from_secs(20), |m| {
        records(m, "api", "counted") >= 2.0
    });
    assert_eq!(records(&m, "api", "counted"), 2.0);
    assert_eq!(requests(&m, "429"), 1.0);
    let quota = mock.task_requests()["q-429"].clone();
    let refused_at = quota[2];
    assert!(quota[3].duration_since(refused_at) >= Duration::from_millis(750));
    // The hold starts when the daemon reads the 429, so a request of q-other it started
    // before then may land after the mock's stamp (on a loaded machine, by a lot more
    // than the answer's trip). Without a hold for every task, q-other is polled every
    // 112-187 ms: at least two requests would land in 250-750 ms.
    let held = refused_at + Duration::from_millis(250)..refused_at + Duration::from_millis(750);
    let asked: Vec<_> = mock.task_requests()["q-other"]
        .iter()
        .filter(|t| held.contains(*t))
        .map(|t| t.duration_since(refused_at))
        .collect();
    assert!(asked.is_empty(), "q-other asked during the hold: {asked:?}");
}

/// A 400 about one task holds that task alone: the other is polled on time and
/// counted, the source stays up, and the refused task stays tracked, asked again only
/// after `auth_retry_interval`.
#[test]
fn a_400_about_one_task_holds_only_that_task() {
    use Step::*;
    let mut good = vec![Task("RUNNING", None); 6];
    good.push(Task("SUCCEEDED", None));
    let mock = MockApi::start(
        KEY,
        vec![("c-good".into(), good), ("c-bad".into(), vec![Status(400)])],
    );
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("tasks.list");
    append(&list, b"c-good\n");
    let cfg = api_config(dir.path(), &mock, "").replace(
        "auth_retry_interval = \"300ms\"",
        "auth_retry_interval = \"30s\"",
    );
    let mut d = Daemon::start_env(dir.path(), &cfg, &[], &[("RUNWAYML_API_SECRET", KEY)]);
    d.scrape_until(Duration::from_secs(10), |m| {
        records(m, "api", "non_terminal") >= 1.0
    });
    append(&list, b"c-bad\n");
    let (m, _) = d.scrape_until(Duration::from_secs(10), |m| {
        records(m, "api", "counted") >= 1.0
    });
    assert_eq!(records(&m, "api", "counted"), 1.0);
    assert_eq!(requests(&m, "400"), 1.0);
    assert_eq!(
        sample(&m, "runway_exporter_source_up{source=\"api\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&m, "runway_api_tasks_tracked"),
        Some(1.0),
        "c-bad kept"
    );
    assert_eq!(mock.task_requests()["c-bad"].len(), 1);
    for pair in mock.task_requests()["c-good"].windows(2) {
        let gap = pair[1].duration_since(pair[0]);
        assert!(gap < Duration::from_secs(1), "c-good polled {gap:?} apart");
    }
    assert!(d.errors().is_empty(), "{:?}", d.errors());
}

/// The answers that mean the API, not a task, is wrong still mark the source down: a
/// 400 to every tracked task (as when Runway stops taking `api_version` mid-run, after
/// it accepted requests) and a 405. Tasks are kept.
#[test]
fn a_400_to_every_task_or_a_405_marks_the_source_down() {
    use Step::*;
    let down = |m: &str| sample(m, "runway_exporter_source_up{source=\"api\"}") == Some(0.0);
    let retired = vec![Task("RUNNING", None), Task("RUNNING", None), Status(400)];
    let mock = MockApi::start(
        KEY,
        vec![("v-1".into(), retired.clone()), ("v-2".into(), retired)],
    );
    let dir = tempfile::tempdir().unwrap();
    append(&dir.path().join("tasks.list"), b"v-1\nv-2\n");
    let env = [("RUNWAYML_API_SECRET", KEY)];
    let mut d = Daemon::start_env(dir.path(), &api_config(dir.path(), &mock, ""), &[], &env);
    let (m, _) = d.scrape_until(Duration::from_secs(10), |m| {
        requests(m, "400") >= 2.0 && down(m)
    });
    assert!(down(&m), "{m}");
    assert_eq!(sample(&m, "runway_api_tasks_tracked"), Some(2.0));
    assert_eq!(d.errors().len(), 1, "{:?}", d.errors());
    drop(d);

    let mut running = vec![Task("RUNNING", None); 40];
    running.push(Task("SUCCEEDED", None));
    let mock = MockApi::start(
        KEY,
        vec![
            ("w-ok".into(), running),
            ("w-405".into(), vec![Status(405)]),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    append(&dir.path().join("tasks.list"), b"w-ok\nw-405\n");
    let d = Daemon::start_env(dir.path(), &api_config(dir.path(), &mock, ""), &[], &env);
    let (m, _) = d.scrape_until(Duration::from_secs(10), |m| {
        requests(m, "405") >= 1.0 && down(m)
    });
    assert!(down(&m), "{m}");
}

/// The organization and usage pollers read an error answer as the task poller reads it
/// (the interval here is 200 ms): `retry-after-ms` waited, `x-should-retry: false` and a
/// plain 400 held for `auth_retry_interval` (1.5 s), `x-should-retry: true` retrying a
/// 400 soon, a 503's `retry-after` waited by the usage poller; then they read again.
#[test]
fn the_organization_and_usage_pollers_honour_retry_hints() {
    use Step::*;
    const MS: &[(&str, &str)] = &[("retry-after-ms", "700")];
    const NO: &[(&str, &str)] = &[("x-should-retry", "false")];
    const YES: &[(&str, &str)] = &[("x-should-retry", "true")];
    const SECS: &[(&str, &str)] = &[("retry-after", "1")];
    let mock = MockApi::start(KEY, vec![]);
    mock.faults(
        "/v1/organization",
        vec![
            Headers(429, MS),
            Headers(500, NO),
            Headers(400, YES),
            Status(400),
        ],
    );
    mock.faults("/v1/organization/usage", vec![Headers(503, SECS)]);
    let dir = tempfile::tempdir().unwrap();
    append(&dir.path().join("tasks.list"), b"");
    let cfg = api_config(dir.path(), &mock, "usage_interval = \"200ms\"\n").replace(
        "auth_retry_interval = \"300ms\"",
        "auth_retry_interval = \"1500ms\"",
    );
    let mut d = Daemon::start_env(dir.path(), &cfg, &[], &[("RUNWAYML_API_SECRET", KEY)]);
    d.scrape_until(Duration::from_secs(20), |m| {
        let ok = |endpoint: &str| {
            let series = format!(
                "runway_exporter_api_requests_total{{code=\"200\",endpoint=\"{endpoint}\"}}"
            );
            sample(m, &series).is_some()
        };
        ok("organization") && ok("organization_usage")
    });
    let gaps = |path: &str| -> Vec<Duration> {
        let times = mock.request_times(path);
        times
            .windows(2)
            .map(|w| w[1].duration_since(w[0]))
            .collect()
    };
    let org = gaps("/v1/organization");
    assert!(org.len() >= 4, "{org:?}");
    let ms = Duration::from_millis;
    assert!(org[0] >= ms(650), "retry-after-ms: 700 waited: {org:?}");
    assert!(org[1] >= ms(1450), "x-should-retry: false held: {org:?}");
    assert!(org[2] < ms(1000), "x-should-retry: true retried: {org:?}");
    assert!(org[3] >= ms(1450), "a 400 held: {org:?}");
    let usage = gaps("/v1/organization/usage");
    assert!(
        usage[0] >= ms(950),
        "usage: retry-after: 1 waited: {usage:?}"
    );
    assert!(d.errors().is_empty(), "{:?}", d.errors());
}

/// A 404 with `x-should-retry: true` is the API asking to be asked again, not a task
/// gone: neither a task seen running (which a plain 404 ends CANCELLED) nor one never
/// seen (`not_found`) ends; both are asked again and counted as they end.
#[test]
fn a_404_the_api_says_to_retry_does_not_end_the_task() {
    use Step::*;
    const YES: &[(&str, &str)] = &[("x-should-retry", "true")];
    let mock = MockApi::start(
        KEY,
        vec![
            (
                "g-seen".into(),
                vec![
                    Task("RUNNING", None),
                    Headers(404, YES),
                    Task("SUCCEEDED", None),
                ],
            ),
            (
                "g-new".into(),
                vec![Headers(404, YES), Task("SUCCEEDED", None)],
            ),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    append(&dir.path().join("tasks.list"), b"g-seen\ng-new\n");
    let env = [("RUNWAYML_API_SECRET", KEY)];
    let d = Daemon::start_env(dir.path(), &api_config(dir.path(), &mock, ""), &[], &env);
    let (m, _) = d.scrape_until(Duration::from_secs(20), |m| {
        records(m, "api", "counted") + records(m, "api", "not_found") >= 2.0
    });
    assert_eq!(requests(&m, "404"), 2.0);
    assert_eq!(records(&m, "api", "not_found"), 0.0);
    assert_eq!(
        sum(&m, "runway_tasks_total", &["status=\"SUCCEEDED\""]),
        2.0,
        "{m}"
    );
    assert_eq!(
        sum(&m, "runway_tasks_total", &["status=\"CANCELLED\""]),
        0.0
    );
}
