//! The one-shot commands: scan, classify, check-config, --version.

use crate::harness::*;

/// The golden scan output, without the build_info line (it names the version).
fn without_build_info(text: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with("runway_exporter_build_info{"))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn scan_fixture_gives_exact_counts_and_matches_the_golden_file() {
    let log = fixture("tasks.log");
    let (code, out, err) = run(&["scan", log.to_str().unwrap()], b"");
    assert_eq!(code, 0, "{err}");
    promtool_check_metrics(&out);

    // Exact counts, worked out by hand from the fixture (see its generator notes).
    let lines = std::fs::read(&log).unwrap().split(|b| *b == b'\n').count() as f64 - 1.0;
    let records = |r: &str| {
        sample(
            &out,
            &format!("runway_exporter_records_total{{result=\"{r}\",source=\"file\"}}"),
        )
        .unwrap()
    };
    assert_eq!(records("counted"), 24.0);
    assert_eq!(records("duplicate"), 2.0);
    assert_eq!(records("non_terminal"), 27.0);
    assert_eq!(records("rejected"), 6.0);
    assert_eq!(
        sum(&out, "runway_exporter_records_total", &[]),
        lines,
        "results add up to the lines read"
    );
    assert_eq!(sum(&out, "runway_exporter_parse_errors_total", &[]), 6.0);
    assert_eq!(
        sum(&out, "runway_tasks_total", &["status=\"FAILED\""]),
        16.0
    );
    assert_eq!(
        sum(&out, "runway_tasks_total", &["status=\"SUCCEEDED\""]),
        5.0
    );
    assert_eq!(
        sum(&out, "runway_tasks_total", &["status=\"CANCELLED\""]),
        3.0
    );
    assert_eq!(
        sum(
            &out,
            "runway_task_failures_total",
            &["category=\"safety_input\""]
        ),
        4.0
    );
    assert_eq!(
        sum(
            &out,
            "runway_task_failures_total",
            &["category=\"safety_output\""]
        ),
        2.0
    );
    assert_eq!(
        sum(
            &out,
            "runway_task_failures_total",
            &["failure_code=\"none\"", "category=\"internal\""]
        ),
        2.0
    );
    assert_eq!(
        sum(
            &out,
            "runway_task_failures_total",
            &["category=\"unknown\""]
        ),
        1.0
    );
    assert_eq!(
        sum(
            &out,
            "runway_task_failures_total",
            &["retry=\"after_delay\""]
        ),
        5.0
    );
    assert_eq!(
        sample(&out, "runway_exporter_unknown_failure_codes_total"),
        Some(1.0)
    );
    // 5 credits/s x 10 s (estimated) + 25 (from the record), both SAFETY.INPUT.TEXT.
    assert_eq!(
        sample(
            &out,
            "runway_credits_lost_total{failure_code=\"SAFETY.INPUT.TEXT\",model=\"gen4_turbo\"}"
        ),
        Some(75.0)
    );
    assert_eq!(sum(&out, "runway_credits_lost_total", &[]), 300.0);
    // Charged: SUCCEEDED tasks' credits, and the FAILED ones' that were lost; none of
    // these records reports its own cost, so the estimated part is counted apart.
    assert_eq!(
        sum(
            &out,
            "runway_credits_charged_total",
            &["status=\"SUCCEEDED\""]
        ),
        115.0
    );
    assert_eq!(
        sum(&out, "runway_credits_charged_total", &["status=\"FAILED\""]),
        300.0
    );
    assert_eq!(
        sum(
            &out,
            "runway_credits_charged_total",
            &["status=\"CANCELLED\""]
        ),
        0.0
    );
    assert!(sum(&out, "runway_credits_estimated_total", &[]) > 0.0);
    assert!(
        sum(&out, "runway_credits_estimated_total", &[])
            < sum(&out, "runway_credits_charged_total", &[])
    );
    assert_eq!(
        sample(
            &out,
            "runway_exporter_credits_unpriced_total{status=\"SUCCEEDED\"}"
        ),
        Some(2.0)
    );

    // Every counted task is timed or counted as untimed, once.
    assert_eq!(
        sum(&out, "runway_task_duration_seconds_count", &[])
            + sum(
                &out,
                "runway_exporter_untimed_tasks_total",
                &["measure=\"duration\""]
            ),
        sum(&out, "runway_tasks_total", &[])
    );
    assert!(sum(&out, "runway_task_duration_seconds_count", &[]) >= 10.0);
    assert!(sum(&out, "runway_task_queue_seconds_count", &[]) >= 5.0);

    let golden = fixture("tasks.prom");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, without_build_info(&out)).unwrap();
    }
    let want = std::fs::read_to_string(&golden).unwrap();
    let got = without_build_info(&out);
    let differ: Vec<String> = got
        .lines()
        .zip(want.lines().chain(std::iter::repeat("<end>")))
        .filter(|(g, w)| g != w)
        .take(5)
        .map(|(g, w)| format!("got  {g}\nwant {w}"))
        .collect();
    assert!(
        got == want,
        "scan output differs from {} (rerun with UPDATE_GOLDEN=1 if the change is meant):\n{}",
        golden.display(),
        differ.join("\n")
    );
    assert!(out.contains("runway_exporter_build_info{api_version=\"2024-11-06\",revision="));
}

#[test]
fn scan_json_format() {
    let log = fixture("tasks.log");
    let (code, out, err) = run(&["scan", "--format", "json", log.to_str().unwrap()], b"");
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let family = v
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "runway_tasks_total")
        .unwrap();
    assert_eq!(family["type"], "counter");
    let failed: f64 = family["samples"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["labels"]["status"] == "FAILED")
        .map(|s| s["value"].as_f64().unwrap())
        .sum();
    assert_eq!(failed, 16.0);
}

#[test]
fn scan_reads_a_last_line_without_newline_and_fails_on_a_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("t.log");
    std::fs::write(
        &log,
        "{\"id\":\"a\",\"status\":\"FAILED\",\"failureCode\":\"ASSET.INVALID\"}",
    )
    .unwrap();
    let (code, out, _) = run(&["scan", log.to_str().unwrap()], b"");
    assert_eq!(code, 0);
    assert_eq!(
        sum(&out, "runway_task_failures_total", &["ASSET.INVALID"]),
        1.0
    );
    let (code, _, err) = run(&["scan", "/nonexistent/t.log"], b"");
    assert_eq!(code, 1);
    assert!(err.contains("/nonexistent/t.log"), "{err}");
}

#[test]
fn classify_explains_codes_from_arguments_and_stdin() {
    let (code, out, _) = run(
        &[
            "classify",
            "SAFETY.INPUT.TEXT",
            "internal.bad_output.code01",
            "WHAT.IS.THIS",
        ],
        b"",
    );
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3);
    assert!(
        lines[0].starts_with(
            "SAFETY.INPUT.TEXT\tcategory=safety_input retry=never credits=lost rule=SAFETY.INPUT.*"
        ),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with(
            "INTERNAL.BAD_OUTPUT.CODE01\tcategory=bad_output retry=unlikely credits=refunded"
        ),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].starts_with("WHAT.IS.THIS\tcategory=unknown retry=unknown credits=unknown rule=-"),
        "{}",
        lines[2]
    );
    let (code, out, _) = run(&["classify"], b"ASSET.INVALID\n\nTHIRD_PARTY.UNAVAILABLE\n");
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 2);
    assert!(out.contains("ASSET.INVALID\tcategory=asset_invalid retry=never credits=refunded"));
    assert!(out.contains("THIRD_PARTY.UNAVAILABLE\tcategory=third_party retry=after_delay"));
}

#[test]
fn check_config_prints_the_effective_config_or_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "[ledger]\nmax_models = 7\n").unwrap();
    let c = cfg.to_str().unwrap();
    let (code, out, err) = run(
        &[
            "check-config",
            "--config",
            c,
            "--web.listen-address",
            "127.0.0.1:9999",
            "--file",
            "/var/log/a.log",
        ],
        b"",
    );
    assert_eq!(code, 0, "{err}");
    let v: toml::Value = toml::from_str(&out).unwrap();
    assert_eq!(v["ledger"]["max_models"].as_integer(), Some(7));
    assert_eq!(v["web"]["listen_address"].as_str(), Some("127.0.0.1:9999"));
    assert_eq!(v["file"]["paths"][0].as_str(), Some("/var/log/a.log"));

    // The shipped configs are valid.
    for shipped in ["config/runway-exporter.toml", "config/demo.toml"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(shipped);
        let (code, _, err) = run(&["check-config", "--config", path.to_str().unwrap()], b"");
        assert_eq!(code, 0, "{shipped}: {err}");
    }

    for (text, key) in [
        (
            "[web]\nlisten_address = \"localhost\"\n",
            "web.listen_address",
        ),
        ("[file]\nmax_line_bytes = \"big\"\n", "max_line_bytes"),
        ("[nope]\nx = 1\n", "nope"),
    ] {
        std::fs::write(&cfg, text).unwrap();
        let (code, _, err) = run(&["check-config", "--config", c], b"");
        assert_eq!(code, 64, "{text}");
        assert!(err.contains(key), "{err:?} should name {key}");
    }
    let (code, _, err) = run(&["check-config", "--config", "/nonexistent.toml"], b"");
    assert_eq!(code, 64);
    assert!(err.contains("/nonexistent.toml"), "{err}");
    // Flags are checked too, and the daemon refuses a bad config the same way.
    std::fs::write(&cfg, "[ledger]\nmax_models = 7\n").unwrap();
    let (code, _, err) = run(&["--config", c, "--web.listen-address", "nope"], b"");
    assert_eq!(code, 64, "{err}");
    // The API source without a key: check-config fails exactly as run does, and with
    // the key it passes without printing it.
    std::fs::write(
        &cfg,
        format!("[api]\ntask_list = \"{}/ids\"\n", dir.path().display()),
    )
    .unwrap();
    let (code, _, err) = run(&["check-config", "--config", c], b"");
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("api") && err.contains("RUNWAYML_API_SECRET"),
        "{err}"
    );
    let (code, _, err) = run(&["--config", c], b"");
    assert_eq!(code, 64, "{err}");
    let (code, out, err) = run_env(
        &["check-config", "--config", c],
        &[("RUNWAYML_API_SECRET", "key_check_9f2e")],
    );
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("key_check_9f2e") && !err.contains("key_check_9f2e"));
}

#[test]
fn check_config_refuses_a_bcrypt_cost_above_the_ceiling_as_run_does() {
    let dir = tempfile::tempdir().unwrap();
    let web = dir.path().join("web.yml");
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!("[web]\nconfig_file = \"{}\"\n", web.display()),
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    let salt = "a".repeat(53);
    for (cost, expect) in [(12, 0), (13, 64), (31, 64)] {
        std::fs::write(
            &web,
            format!("basic_auth_users:\n  prometheus: '$2y${cost}${salt}'\n"),
        )
        .unwrap();
        let (code, _, err) = run(&["check-config", "--config", c], b"");
        assert_eq!(code, expect, "cost {cost}: {err}");
        if expect == 64 {
            assert!(
                err.contains("web.config_file")
                    && err.contains(&format!("bcrypt cost {cost} is above the limit of 12")),
                "{err}"
            );
            let (code, _, err) = run(&["--config", c], b"");
            assert_eq!(code, 64, "run must refuse it too: {err}");
        }
    }
}

#[test]
fn version_flag() {
    let (code, out, _) = run(&["--version"], b"");
    assert_eq!(code, 0);
    assert_eq!(
        out.trim(),
        format!("runway-exporter {}", env!("CARGO_PKG_VERSION"))
    );
}

/// A task as Python's `json.dumps(task, indent=0)` writes it (generated with Python 3):
/// nested objects in the first column, an array's elements too.
const PY_INDENT_0: &str = "{\n\"id\": \"p0\",\n\"status\": \"FAILED\",\n\"failureCode\": \"SAFETY.INPUT.TEXT\",\n\"model\": \"gen4_turbo\",\n\"failure\": {\n\"reason\": \"Task failed.\",\n\"details\": [\n{\n\"at\": 1\n},\n{}\n]\n},\n\"output\": []\n}";

/// A task written by serde_json: on one line, with an indent of two spaces, or with an
/// empty indent (the shape of Python's `indent=0` and Go's `MarshalIndent(v, "", "")`).
fn task_json(id: &str, status: &str, code: Option<&str>, indent: Option<&[u8]>) -> String {
    let mut task = serde_json::json!({
        "id": id,
        "status": status,
        "model": "gen4_turbo",
        "failure": {"reason": "x", "details": [{"at": 1, "why": "} {"}, {}, {"n": [{"m": []}]}]},
        "output": [],
    });
    if let Some(code) = code {
        task["failureCode"] = code.into();
    }
    let Some(indent) = indent else {
        return task.to_string();
    };
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(indent);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
    serde::Serialize::serialize(&task, &mut ser).unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn scan_reads_every_json_writers_shape_exactly() {
    let unindented =
        |id: &str, status: &str, code: Option<&str>| task_json(id, status, code, Some(b""));
    let indented = |id: &str, status: &str| task_json(id, status, None, Some(b"  "));
    let one_line = |id: &str, status: &str| task_json(id, status, None, None);
    let safety = Some("SAFETY.INPUT.TEXT");
    let asset = Some("ASSET.INVALID");
    // Cut short by a writer that died: after a member, and where an array's element
    // starts (the next record is read as an element until the one after it starts).
    let cut_member = "{\n\"id\": \"c1\",\n\"status\": \"FAILED\",";
    let cut_element = "{\n\"id\": \"c2\",\n\"failure\": {\n\"details\": [\n{\n\"at\": 1\n},";
    let log = [
        one_line("a1", "SUCCEEDED"),
        "\n".into(),
        PY_INDENT_0.into(),
        "\n".into(),
        unindented("a2", "FAILED", safety),
        // Glued after a closing brace: a one-line record, a multi-line one, with a space.
        one_line("a3", "SUCCEEDED"),
        "\n".into(),
        indented("a4", "CANCELLED"),
        unindented("a5", "FAILED", asset),
        " ".into(),
        indented("a6", "SUCCEEDED"),
        "\r\n".into(),
        cut_member.into(),
        "\n".into(),
        unindented("a7", "FAILED", safety),
        "\n".into(),
        cut_element.into(),
        "\n".into(),
        unindented("a8", "FAILED", asset),
        "\n".into(),
        one_line("a9", "SUCCEEDED"),
        "\n".into(),
        // One-line records glued on one line.
        one_line("b1", "SUCCEEDED"),
        one_line("b2", "SUCCEEDED"),
        " ".into(),
        one_line("b3", "CANCELLED"),
        "\n".into(),
        cut_element.replace("c2", "c3"),
        "\n".into(),
        // The last record, without a newline, read as an element of the cut one until
        // the file ends.
        unindented("a10", "SUCCEEDED", None),
    ]
    .concat();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shapes.log");
    std::fs::write(&path, &log).unwrap();
    let (code, out, err) = run(&["scan", path.to_str().unwrap()], b"");
    assert_eq!(code, 0, "{err}");
    let records = |r: &str| {
        sample(
            &out,
            &format!("runway_exporter_records_total{{result=\"{r}\",source=\"file\"}}"),
        )
        .unwrap_or(0.0)
    };
    assert_eq!(records("counted"), 14.0, "{out}");
    assert_eq!(records("rejected"), 3.0, "{out}");
    assert_eq!(
        sum(
            &out,
            "runway_exporter_parse_errors_total",
            &["invalid_json"]
        ),
        3.0
    );
    assert_eq!(sum(&out, "runway_exporter_parse_errors_total", &[]), 3.0);
    let tasks = |status: &str| {
        sum(
            &out,
            "runway_tasks_total",
            &[&format!("status=\"{status}\"")],
        )
    };
    assert_eq!(
        (tasks("SUCCEEDED"), tasks("FAILED"), tasks("CANCELLED")),
        (7.0, 5.0, 2.0)
    );
    let failures = |code: &str| sum(&out, "runway_task_failures_total", &[code]);
    assert_eq!(
        (failures("SAFETY.INPUT.TEXT"), failures("ASSET.INVALID")),
        (3.0, 2.0)
    );
}
