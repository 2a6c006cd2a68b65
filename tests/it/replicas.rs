//! Replicas (issue 24 point 7): an application runs as two replicas, each with its own
//! exporter in front of it (`[proxy] count = "created_here"`), and a task created through
//! one is polled through the other. Each exporter counts only the tasks created through
//! it (and follows them to their end); the other only observes the requests. A real
//! Prometheus scraping both sums every task once.

use std::time::{Duration, Instant};

use crate::follow::{call, create, daemon};
use crate::harness::*;
use crate::mock_api::{MockApi, Step};

const KEY: &str = "key_f0llow_7d1e";
const N: usize = 10;

#[test]
fn two_proxies_count_each_task_once_in_prometheus() {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mock = MockApi::start(KEY, vec![]);
    let env = [("RUNWAYML_API_SECRET", KEY)];
    let extra = format!(
        "count = \"created_here\"\n[api]\nbase_url = \"{}\"\npoll_interval = \"1s\"\nmin_poll_interval = \"100ms\"\norganization_interval = \"0s\"\nusage_interval = \"0s\"\n",
        mock.url()
    );
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let (a, proxy_a) = daemon(dirs[0].path(), &mock, &extra, &env);
    let (b, proxy_b) = daemon(dirs[1].path(), &mock, &extra, &env);
    let shared = tempfile::tempdir().unwrap();
    let prom = Prometheus::start(
        shared.path(),
        &format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: runway-exporter\n    static_configs:\n      - targets: [\"{}\", \"{}\"]\n",
            a.addr, b.addr
        ),
    );
    // Tasks created through one replica, polled to their end through the other.
    let mut polled = 0;
    for i in 0..N {
        let id = format!("r-{i}");
        let end = if i % 2 == 0 {
            Step::Task("SUCCEEDED", None)
        } else {
            Step::Task("FAILED", Some("SAFETY.INPUT.TEXT"))
        };
        mock.on_create(&id, 10.0, vec![Step::Task("RUNNING", None), end]);
        let (creator, poller) = if i < N / 2 {
            (proxy_a, proxy_b)
        } else {
            (proxy_b, proxy_a)
        };
        create(creator, "gen4_turbo");
        loop {
            let (code, answer) = call(poller, "GET", &format!("/v1/tasks/{id}"), "");
            assert_eq!(code, 200, "{answer}");
            polled += 1;
            if !answer.contains("RUNNING") {
                break;
            }
        }
    }
    let q = |query: &str| prom.value(query);
    loop {
        let tasks = q("sum(runway_tasks_total)");
        let requests = q(r#"sum(runway_api_requests_total{method="GET"})"#);
        if tasks == Some(N as f64) && requests == Some(polled as f64) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "tasks {tasks:?}, GETs {requests:?}"
        );
        // A poll interval while Prometheus scrapes, not a synchronisation.
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(q("sum(runway_tasks_created_total)"), Some(N as f64));
    assert_eq!(
        q(r#"sum(runway_task_failures_total{model="gen4_turbo"})"#),
        Some((N / 2) as f64)
    );
    // Each replica counted the tasks created through it, and only those.
    for d in [&a, &b] {
        let m = d.metrics();
        assert_eq!(sum(&m, "runway_tasks_total", &[]), (N / 2) as f64, "{m}");
        assert_eq!(
            sum(&m, "runway_tasks_created_total", &[]),
            (N / 2) as f64,
            "{m}"
        );
    }
}

#[test]
fn created_here_without_a_key_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    let text = "[proxy]\nenabled = true\ncount = \"created_here\"\n";
    std::fs::write(&cfg, text).unwrap();
    let (code, _, err) = run(&["check-config", "--config", cfg.to_str().unwrap()], b"");
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("proxy.count"), "{err}");
    // With a key it is accepted.
    let env = [("RUNWAYML_API_SECRET", KEY)];
    let (code, _, err) = run_env(&["check-config", "--config", cfg.to_str().unwrap()], &env);
    assert_eq!(code, 0, "{err}");
}
