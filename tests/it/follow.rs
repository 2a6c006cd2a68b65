//! Tasks created through the proxy: labelled with their create call's model wherever
//! they end, open until seen to end, and followed to their end by the API source when
//! a key is configured, without asking for a task the application asks for itself.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use crate::harness::{append, config, sample, sum, Daemon};
use crate::mock_api::{MockApi, Step};

const KEY: &str = "key_f0llow_7d1e";

/// One request through the proxy, as an SDK sends it; the status and body.
pub(crate) fn call(proxy: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(proxy).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nX-Runway-Version: 2024-11-06\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(&[head.as_bytes(), body.as_bytes()].concat())
        .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (code, body)
}

/// A create call of `model` through the proxy.
pub(crate) fn create(proxy: SocketAddr, model: &str) {
    let body = format!(r#"{{"model":"{model}","promptText":"a cat"}}"#);
    let (code, answer) = call(proxy, "POST", "/v1/text_to_image", &body);
    assert_eq!(code, 200, "{answer}");
}

/// A daemon with the proxy in front of `mock`; `extra` is more configuration, `env` the
/// environment (the API key, to follow tasks).
pub(crate) fn daemon(
    dir: &Path,
    mock: &MockApi,
    extra: &str,
    env: &[(&str, &str)],
) -> (Daemon, SocketAddr) {
    let proxy = format!(
        "[proxy]\nenabled = true\nlisten = \"127.0.0.1:0\"\nupstream = \"{}\"\n{extra}",
        mock.url()
    );
    let mut d = Daemon::start_env(dir, &config(dir, &proxy), &[], env);
    let addr = d.wait_log("Proxy listening.", Duration::from_secs(10))["address"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    (d, addr)
}

fn failures(m: &str, model: &str) -> f64 {
    sum(
        m,
        "runway_task_failures_total",
        &[&format!("model=\"{model}\"")],
    )
}

fn open(m: &str) -> Option<f64> {
    sample(m, "runway_proxy_tasks_open")
}

#[test]
fn a_task_polled_through_the_proxy_has_its_create_calls_model() {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockApi::start(KEY, vec![]);
    let failed = vec![Step::Task("FAILED", Some("SAFETY.INPUT.TEXT"))];
    mock.on_create("img-1", 5.0, failed);
    let (d, proxy) = daemon(dir.path(), &mock, "", &[]);
    create(proxy, "gen4_image");
    let (m, _) = d.scrape_until(Duration::from_secs(20), |m| open(m) == Some(1.0));
    assert_eq!(open(&m), Some(1.0), "{m}");
    // The answer has no model, as Runway's task object has none.
    let (code, answer) = call(proxy, "GET", "/v1/tasks/img-1", "");
    assert_eq!(code, 200);
    assert!(!answer.contains("model"), "{answer}");
    let (m, _) = d.scrape_until(Duration::from_secs(20), |m| {
        failures(m, "gen4_image") == 1.0
    });
    assert_eq!(failures(&m, "gen4_image"), 1.0, "{m}");
    assert_eq!(failures(&m, "unknown"), 0.0, "{m}");
    assert_eq!(open(&m), Some(0.0), "{m}");
}

#[test]
fn a_log_record_without_a_model_has_its_create_calls_model() {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockApi::start(KEY, vec![]);
    mock.on_create("img-2", 5.0, vec![Step::Task("RUNNING", None)]);
    let (d, proxy) = daemon(dir.path(), &mock, "", &[]);
    create(proxy, "gen4_image_turbo");
    d.scrape_until(Duration::from_secs(20), |m| open(m) == Some(1.0));
    // The SDK's task object, logged as it is: no model.
    let line =
        br#"{"id":"img-2","status":"FAILED","failure":"x","failureCode":"SAFETY.INPUT.TEXT"}"#;
    append(&dir.path().join("app.log"), &[&line[..], b"\n"].concat());
    let (m, _) = d.scrape_until(Duration::from_secs(20), |m| {
        failures(m, "gen4_image_turbo") == 1.0
    });
    assert_eq!(failures(&m, "gen4_image_turbo"), 1.0, "{m}");
    assert_eq!(failures(&m, "unknown"), 0.0, "{m}");
    assert_eq!(open(&m), Some(0.0), "{m}");
}

#[test]
fn a_post_that_creates_no_task_is_not_a_created_task() {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockApi::start(KEY, vec![]);
    // Both answers carry an `id`: the upload's is not a task's.
    mock.on_create("upload-1", 0.0, vec![Step::Task("RUNNING", None)]);
    mock.on_create("img-3", 5.0, vec![Step::Task("RUNNING", None)]);
    let (d, proxy) = daemon(dir.path(), &mock, "", &[]);
    let (code, answer) = call(proxy, "POST", "/v1/uploads", r#"{"filename":"a.png"}"#);
    assert_eq!(code, 200, "{answer}");
    assert!(answer.contains("upload-1"), "{answer}");
    create(proxy, "gen4_image");
    let (m, _) = d.scrape_until(Duration::from_secs(20), |m| {
        sum(m, "runway_api_requests_total", &[]) == 2.0
    });
    let created = |endpoint: &str| {
        sum(
            &m,
            "runway_tasks_created_total",
            &[&format!("endpoint=\"{endpoint}\"")],
        )
    };
    assert_eq!(created("/v1/text_to_image"), 1.0, "{m}");
    assert_eq!(created("/v1/uploads"), 0.0, "{m}");
    assert_eq!(open(&m), Some(1.0), "{m}");
}

/// A create answer whose `id` is no task id (a path, or over 128 bytes: it would go into
/// the URL of a poll) reaches the application as it came, but creates no task, is not
/// journalled (`journal::tests::a_live_entry_the_replay_would_skip_is_not_written`) and
/// is rejected as `invalid_task_id`, as a journal line or a log's would be.
#[test]
fn a_create_answer_whose_id_is_no_task_id_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockApi::start(KEY, vec![]);
    let long = "t".repeat(200);
    for id in ["../../v1/organization", &long, "fine-1"] {
        mock.on_create(id, 5.0, vec![Step::Task("RUNNING", None)]);
    }
    let (d, proxy) = daemon(dir.path(), &mock, "", &[]);
    let body = r#"{"model":"gen4_image","promptText":"a cat"}"#;
    let (code, answer) = call(proxy, "POST", "/v1/text_to_image", body);
    assert_eq!(code, 200, "{answer}");
    assert!(answer.contains("../../v1/organization"), "{answer}");
    create(proxy, "gen4_image");
    create(proxy, "gen4_image");
    let rejected = r#"runway_exporter_parse_errors_total{reason="invalid_task_id",source="proxy"}"#;
    let (m, _) = d.scrape_until(Duration::from_secs(20), |m| {
        sum(m, "runway_api_requests_total", &[]) == 3.0
            && sample(m, rejected) == Some(2.0)
            && sum(m, "runway_tasks_created_total", &[]) == 1.0
    });
    assert_eq!(sample(&m, rejected), Some(2.0), "{m}");
    assert_eq!(sum(&m, "runway_tasks_created_total", &[]), 1.0, "{m}");
    assert_eq!(open(&m), Some(1.0), "{m}");
    // Its line may be settled and gone by now; the others were never written.
    let journal = std::fs::read_to_string(dir.path().join("state/proxy-created.journal")).unwrap();
    assert!(!journal.contains("organization"), "{journal}");
    assert!(!journal.contains(&long), "{journal}");
}

/// How many times the mock was asked for each of `ids`.
fn asked(mock: &MockApi, ids: &[&str]) -> Vec<usize> {
    let requests = mock.task_requests();
    ids.iter()
        .map(|id| requests.get(*id).map_or(0, Vec::len))
        .collect()
}

#[test]
fn with_a_key_abandoned_tasks_are_followed_and_polled_ones_are_not_asked_twice() {
    use Step::Task;
    let dir = tempfile::tempdir().unwrap();
    let mock = MockApi::start(KEY, vec![]);
    let polled = vec![
        Task("RUNNING", None),
        Task("RUNNING", None),
        Task("SUCCEEDED", None),
    ];
    mock.on_create("polled", 20.0, polled);
    let abandoned = vec![
        Task("RUNNING", None),
        Task("FAILED", Some("SAFETY.INPUT.TEXT")),
    ];
    mock.on_create("abandoned", 30.0, abandoned);
    // The exporter asks for a task only after a second without the application asking.
    let api = format!(
        "[api]\nbase_url = \"{}\"\npoll_interval = \"1s\"\nmin_poll_interval = \"100ms\"\n",
        mock.url()
    );
    let env = [("RUNWAYML_API_SECRET", KEY)];
    let (d, proxy) = daemon(dir.path(), &mock, &api, &env);
    create(proxy, "gen4_turbo");
    create(proxy, "veo3");
    // The application polls the first to its end, and forgets the second.
    let mut app_asked = 0;
    loop {
        let (code, answer) = call(proxy, "GET", "/v1/tasks/polled", "");
        assert_eq!(code, 200, "{answer}");
        app_asked += 1;
        if answer.contains("SUCCEEDED") {
            break;
        }
    }
    let (m, _) = d.scrape_until(Duration::from_secs(30), |m| {
        sum(m, "runway_tasks_total", &[]) == 2.0 && open(m) == Some(0.0)
    });
    let tasks = |status: &str, model: &str| {
        let series = format!("runway_tasks_total{{model=\"{model}\",status=\"{status}\"}}");
        sample(&m, &series)
    };
    assert_eq!(tasks("SUCCEEDED", "gen4_turbo"), Some(1.0), "{m}");
    assert_eq!(tasks("FAILED", "veo3"), Some(1.0), "{m}");
    assert_eq!(failures(&m, "veo3"), 1.0, "{m}");
    // The task polled by the application ended without a cost: charged its create
    // call's estimate.
    let charged = r#"runway_credits_charged_total{model="gen4_turbo",status="SUCCEEDED"}"#;
    assert_eq!(sample(&m, charged), Some(20.0), "{m}");
    // The exporter added no request for the task the application polled, and asked
    // for the abandoned one to its end: twice (RUNNING, then FAILED).
    assert_eq!(
        asked(&mock, &["polled", "abandoned"]),
        [app_asked, 2],
        "{m}"
    );
    let counted = |source: &str| {
        let series =
            format!("runway_exporter_records_total{{result=\"counted\",source=\"{source}\"}}");
        sample(&m, &series).unwrap_or(0.0)
    };
    assert_eq!((counted("proxy"), counted("api")), (1.0, 1.0), "{m}");
}

#[test]
fn a_created_task_survives_a_kill_right_after_its_answer() {
    use Step::Task;
    let dir = tempfile::tempdir().unwrap();
    let mock = MockApi::start(KEY, vec![]);
    mock.on_create(
        "killed",
        25.0,
        vec![Task("RUNNING", None), Task("SUCCEEDED", None)],
    );
    // No commit for an hour but the start-up one: only the journal can keep the task.
    let setup = |commit: &str| {
        format!(
            "[state]\ndir = \"{state}\"\ncommit_interval = \"{commit}\"\n\
             [proxy]\nenabled = true\nlisten = \"127.0.0.1:0\"\nupstream = \"{url}\"\n\
             [api]\nbase_url = \"{url}\"\npoll_interval = \"200ms\"\nmin_poll_interval = \"100ms\"\n",
            state = dir.path().join("state").display(),
            url = mock.url(),
        )
    };
    let env = [("RUNWAYML_API_SECRET", KEY)];
    let mut d = Daemon::start_env(dir.path(), &setup("1h"), &[], &env);
    let proxy = d.wait_log("Proxy listening.", Duration::from_secs(10))["address"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    create(proxy, "gen4_turbo");
    // The application has its answer: the exporter dies at once.
    d.signal("KILL");
    d.wait_exit(Duration::from_secs(10));
    let d = Daemon::start_env(dir.path(), &setup("100ms"), &[], &env);
    let (m, _) = d.scrape_until(Duration::from_secs(30), |m| {
        sum(m, "runway_tasks_total", &[]) == 1.0
    });
    let created = r#"runway_tasks_created_total{endpoint="/v1/text_to_image",model="gen4_turbo"}"#;
    assert_eq!(sample(&m, created), Some(1.0), "{m}");
    let done = r#"runway_tasks_total{model="gen4_turbo",status="SUCCEEDED"}"#;
    assert_eq!(sample(&m, done), Some(1.0), "{m}");
    let charged = r#"runway_credits_charged_total{model="gen4_turbo",status="SUCCEEDED"}"#;
    assert_eq!(sample(&m, charged), Some(25.0), "{m}");
    // Nothing open (the gauge shows once this process has passed a request or holds a
    // task open).
    assert_eq!(open(&m).unwrap_or(0.0), 0.0, "{m}");
}
