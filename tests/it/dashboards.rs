//! The Grafana dashboards against a real Prometheus: every panel's query (with the
//! Grafana variables substituted) parses and returns data from a real exporter.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::mock_api::{MockApi, Step};

/// Grafana's variables as a dashboard sees them with everything selected.
fn substitute(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__range", "5m")
        .replace("$__interval", "15s")
        .replace("$job", "runway-exporter")
        .replace("$instance", ".*")
        .replace("$model", ".*")
}

#[test]
fn every_panel_query_returns_data_from_a_real_prometheus() {
    let dir = tempfile::tempdir().unwrap();
    // A real exporter: the fixture log, and the API source against the mock.
    let key = "key_dash_1";
    let mock = MockApi::start(
        key,
        vec![(
            "d-1".into(),
            vec![Step::Task("RUNNING", None), Step::Task("SUCCEEDED", None)],
        )],
    );
    std::fs::copy(fixture("tasks.log"), dir.path().join("app.log")).unwrap();
    append(&dir.path().join("tasks.list"), b"d-1\n");
    let cfg = format!(
        "[state]\ndir = \"{s}\"\ncommit_interval = \"200ms\"\n[file]\npaths = [\"{d}/app.log\"]\nstart_at = \"beginning\"\n\
         [api]\ntask_list = \"{d}/tasks.list\"\nbase_url = \"{u}\"\nmin_poll_interval = \"100ms\"\npoll_interval = \"150ms\"\norganization_interval = \"200ms\"\nusage_interval = \"200ms\"\n",
        s = dir.path().join("state").display(),
        d = dir.path().display(),
        u = mock.url()
    );
    let d = Daemon::start_env(dir.path(), &cfg, &[], &[("RUNWAYML_API_SECRET", key)]);

    let prom = Prometheus::start(
        dir.path(),
        &format!("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: runway-exporter\n    static_configs:\n      - targets: [\"{}\"]\n", d.addr),
    );
    let prom_addr = prom.addr;
    // Wait for enough scrapes for rate() over a minute: five, after the API task ended.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = get(prom_addr, "/-/ready")
            .map(|(s, _)| s == 200)
            .unwrap_or(false);
        if ready {
            let v = query(prom_addr, "count_over_time(runway_api_tasks_tracked{job=\"runway-exporter\"}[1m]) >= 5 and runway_api_tasks_tracked == 0");
            if !v["data"]["result"].as_array().unwrap().is_empty() {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus did not get five scrapes in time"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards");
    let mut checked = 0;
    for name in ["runway-overview.json", "runway-exporter-health.json"] {
        let board: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(root.join(name)).unwrap()).unwrap();
        assert_eq!(board["__inputs"][0]["name"], "DS_PROMETHEUS", "{name}");
        assert!(
            board["uid"].as_str().is_some_and(|u| !u.is_empty()),
            "{name}: a fixed uid"
        );
        assert!(
            board["schemaVersion"].as_u64().unwrap() >= 36,
            "{name}: a current schemaVersion"
        );
        let vars: Vec<&str> = board["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        assert!(
            vars.contains(&"job") && vars.contains(&"instance"),
            "{name}: {vars:?}"
        );
        for panel in board["panels"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["type"] != "row")
        {
            for target in panel["targets"].as_array().unwrap() {
                let expr = substitute(target["expr"].as_str().unwrap());
                let v = query(prom_addr, &expr);
                assert_eq!(
                    v["status"], "success",
                    "{name} / {}: {expr}\n{v}",
                    panel["title"]
                );
                let result = v["data"]["result"].as_array().unwrap();
                assert!(
                    !result.is_empty(),
                    "{name} / {}: no data for {expr}",
                    panel["title"]
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 20, "{checked} queries checked");
}
