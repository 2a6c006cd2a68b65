//! The proxy's journal of created tasks at start-up, when it is not what the proxy
//! wrote: huge, junk, absurd values, or no regular file. The daemon starts with bounded
//! memory, replays what is sane, commits, and its proxy serves.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use crate::follow::{create, daemon};
use crate::harness::{sample, sum};
use crate::mock_api::{MockApi, Step};

/// The key `follow::create` sends.
const KEY: &str = "key_f0llow_7d1e";

fn journal_path(dir: &Path) -> std::path::PathBuf {
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    state.join("proxy-created.journal")
}

/// A journal line created now.
fn line(id: &str, estimate: f64) -> String {
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    format!(
        r#"{{"id":"{id}","endpoint":"/v1/text_to_image","model":"gen4_turbo","estimate":{estimate},"at":{at}}}"#
    )
}

/// A journal of 126 MiB: good lines around one line of 96 MiB and a million junk lines,
/// two with an estimate of 1e308. Start-up reads it in bounded memory, replays the
/// good lines (the API source follows them to their end), charges no absurd estimate,
/// commits, and forgets the junk with the settled lines.
#[test]
fn a_huge_hostile_journal_is_replayed_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_path(dir.path());
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    writeln!(f, "{}", line("first", 1e308)).unwrap();
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..96 {
        f.write_all(&chunk).unwrap();
    }
    f.write_all(b"\n").unwrap();
    for i in 0..1_000_000 {
        writeln!(f, "junk {i:026}").unwrap();
    }
    writeln!(f, "{}", line("last", 1e308)).unwrap();
    f.flush().unwrap();
    drop(f);
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(size > 120 << 20, "{size}");
    let done = || vec![Step::Task("SUCCEEDED", None)];
    let timelines = vec![("first".to_string(), done()), ("last".to_string(), done())];
    let mock = MockApi::start(KEY, timelines);
    mock.on_create("made", 5.0, vec![Step::Task("RUNNING", None)]);
    let api = format!(
        "[api]\nbase_url = \"{}\"\npoll_interval = \"200ms\"\nmin_poll_interval = \"100ms\"\n",
        mock.url()
    );
    let env = [("RUNWAYML_API_SECRET", KEY)];
    let (mut d, proxy) = daemon(dir.path(), &mock, &api, &env);
    let peak = d.peak_rss();
    // Memory does not grow with the file: far under its size.
    assert!(
        peak < 64 << 20,
        "peak RSS {peak} with a journal of {size} bytes"
    );
    let warned = d.wait_log(
        "The journal of created tasks held lines the proxy did not write as they are: lines too long (over 4 KiB) or unreadable (cut by a crash, not an entry) were skipped, absurd estimates dropped and absurd times made now; bytes past its bounds were not read.",
        Duration::from_secs(10),
    );
    eprintln!("journal of {size} bytes: peak RSS at start-up {peak} bytes; {warned}");
    assert_eq!(warned["kept"], 2, "{warned}");
    assert_eq!(warned["too_long"], 1, "{warned}");
    assert_eq!(warned["mended"], 2, "{warned}");
    assert_eq!(warned["unreadable"], 1_000_000, "{warned}");
    let (m, _) = d.scrape_until(Duration::from_secs(30), |m| {
        sum(m, "runway_tasks_total", &[]) == 2.0
    });
    assert_eq!(sum(&m, "runway_tasks_total", &[]), 2.0, "{m}");
    let created = r#"runway_tasks_created_total{endpoint="/v1/text_to_image",model="gen4_turbo"}"#;
    assert_eq!(sample(&m, created), Some(2.0), "{m}");
    assert!(sum(&m, "runway_credits_charged_total", &[]) <= 1e9, "{m}");
    // The proxy serves, the state commits, and the settled lines leave the journal
    // with the junk around them.
    create(proxy, "gen4_turbo");
    let state = dir.path().join("state/runway-exporter.state");
    let small = || state.exists() && std::fs::metadata(&path).is_ok_and(|m| m.len() < 4096);
    let (m, _) = d.scrape_until(Duration::from_secs(30), |_| small());
    assert!(small(), "journal {:?}; {m}", std::fs::metadata(&path));
    assert_eq!(d.errors(), Vec::<serde_json::Value>::new());
}

/// A journal that is a FIFO (opening it to read would wait for a writer for ever) or
/// a directory: start-up warns and goes on, the proxy serves, and a create call is
/// counted as not journaled.
#[test]
fn a_journal_that_is_no_file_does_not_stop_the_proxy() {
    for fifo in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let path = journal_path(dir.path());
        if fifo {
            let made = std::process::Command::new("mkfifo").arg(&path).status();
            assert!(made.unwrap().success());
        } else {
            std::fs::create_dir(&path).unwrap();
        }
        let mock = MockApi::start(KEY, vec![]);
        mock.on_create("made", 5.0, vec![Step::Task("RUNNING", None)]);
        let (mut d, proxy) = daemon(dir.path(), &mock, "", &[]);
        let warned = d.wait_log(
            "Cannot read the journal of created tasks; the proxy serves without its lines (tasks created before a kill may be lost).",
            Duration::from_secs(10),
        );
        let kind = if fifo { "a FIFO" } else { "a directory" };
        assert!(warned["error"].as_str().unwrap().contains(kind), "{warned}");
        create(proxy, "gen4_turbo");
        let (m, _) = d.scrape_until(Duration::from_secs(10), |m| {
            sample(m, "runway_exporter_proxy_journal_failures_total") == Some(1.0)
        });
        let failures = sample(&m, "runway_exporter_proxy_journal_failures_total");
        assert_eq!(failures, Some(1.0), "{m}");
    }
}
