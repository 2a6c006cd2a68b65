//! The Grafana dashboards against a real Prometheus: every panel's query (with the
//! Grafana variables substituted) parses and returns data from a real exporter, its
//! proxy on and the application's traffic through it; and every metric a panel uses is
//! documented.

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

/// `method path` with `body` through the proxy at `proxy`; the answer's status.
fn through(proxy: std::net::SocketAddr, key: &str, method: &str, path: &str, body: &str) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(proxy).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nX-Runway-Version: 2024-11-06\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    String::from_utf8_lossy(&out)[9..12].parse().unwrap()
}

/// The application's traffic through the proxy, in front of the mock: two create
/// calls, a 200, a 401 (wrong key), a 429 (the daily quota) and a 503.
fn application_traffic(mock: &MockApi, proxy: std::net::SocketAddr, key: &str) {
    mock.faults(
        "/v1/image_to_video",
        vec![
            Step::Json(r#"{"id":"c-1","estimatedCost":{"credits":25}}"#),
            Step::Json(r#"{"id":"c-2"}"#),
            Step::RetryAfter(1),
            Step::Status(503),
        ],
    );
    let create = r#"{"model":"gen4_turbo","promptText":"x"}"#;
    let calls = [
        (key, "POST", "/v1/image_to_video", create, 200),
        (key, "POST", "/v1/image_to_video", create, 200),
        (key, "POST", "/v1/image_to_video", create, 429),
        (key, "POST", "/v1/image_to_video", create, 503),
        (key, "GET", "/v1/organization", "", 200),
        ("key_wrong", "GET", "/v1/organization", "", 401),
    ];
    for (key, method, path, body, code) in calls {
        assert_eq!(
            through(proxy, key, method, path, body),
            code,
            "{method} {path}"
        );
    }
}

/// The metric names an expression uses (`runway_*`, histogram suffixes taken off).
fn metrics_of(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| t.starts_with("runway_"))
        .map(|t| {
            let t = t.strip_suffix("_bucket").unwrap_or(t);
            t.to_string()
        })
        .collect()
}

/// Every expression of every panel of both dashboards, with its dashboard and title.
fn panel_queries() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards");
    let mut out = Vec::new();
    for name in ["runway-overview.json", "runway-exporter-health.json"] {
        let board: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(root.join(name)).unwrap()).unwrap();
        for panel in board["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let title = format!("{name} / {}", panel["title"].as_str().unwrap());
                out.push((title, target["expr"].as_str().unwrap().to_string()));
            }
        }
    }
    out
}

/// Every metric a panel queries is in docs/metrics.md (the self metrics by their name
/// without the `runway_exporter_` prefix, as its table lists them), and the proxy's
/// metrics each have a panel.
#[test]
fn every_metric_a_panel_uses_is_documented_and_the_proxys_are_shown() {
    let docs =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/metrics.md"))
            .unwrap();
    let documented = |m: &str| {
        docs.contains(&format!("`{m}`"))
            || m.strip_prefix("runway_exporter_")
                .is_some_and(|own| docs.contains(&format!("`{own}`")))
    };
    let mut used = std::collections::BTreeSet::new();
    for (title, expr) in panel_queries() {
        for m in metrics_of(&expr) {
            assert!(documented(&m), "{title}: {m} is not in docs/metrics.md");
            used.insert(m);
        }
    }
    for proxy in [
        "runway_tasks_created_total",
        "runway_api_requests_total",
        "runway_api_request_duration_seconds",
        "runway_exporter_proxy_observations_dropped_total",
        "runway_exporter_proxy_answers_unobserved_total",
        "runway_proxy_tasks_open",
        "runway_exporter_proxy_refused_total",
        "runway_exporter_proxy_journal_failures_total",
        "runway_exporter_proxy_tasks_open_evicted_total",
    ] {
        assert!(used.contains(proxy), "no panel shows {proxy}: {used:?}");
    }
    // The HTTP errors have panels of their own, client (4xx) and server (5xx) apart.
    let queries = panel_queries();
    for class in ["code=~\"4..\"", "code=~\"5..\""] {
        assert!(
            queries
                .iter()
                .any(|(_, e)| e.contains("runway_api_requests_total") && e.contains(class)),
            "no panel of the answers with {class}"
        );
    }
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
    ) + &format!(
        "[proxy]\nenabled = true\nlisten = \"127.0.0.1:0\"\nupstream = \"{}\"\n",
        mock.url()
    );
    let mut d = Daemon::start_env(dir.path(), &cfg, &[], &[("RUNWAYML_API_SECRET", key)]);
    let proxy = d.wait_log("Proxy listening.", Duration::from_secs(10))["address"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    application_traffic(&mock, proxy, key);

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
            // And the proxy's answers, the last of them (the 401), in five scrapes.
            let p = query(
                prom_addr,
                "count_over_time(runway_api_requests_total{code=\"401\"}[1m]) >= 5",
            );
            if !v["data"]["result"].as_array().unwrap().is_empty()
                && !p["data"]["result"].as_array().unwrap().is_empty()
            {
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
    assert!(checked >= 30, "{checked} queries checked");
}
