//! Running the real binary and talking to it over loopback.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_runway-exporter");

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Runs the binary to completion with extra environment variables.
pub fn run_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    run_with(args, b"", env)
}

/// Runs the binary to completion.
pub fn run(args: &[&str], stdin: &[u8]) -> (i32, String, String) {
    run_with(args, stdin, &[])
}

fn run_with(args: &[&str], stdin: &[u8], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("RUNWAYML_API_SECRET")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn runway-exporter");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A tool the tests need: its absence fails the test, it never skips it.
pub fn require_tool(name: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!("{name} is not installed: run scripts/test.sh, which installs what the tests need")
    })
}

/// `promtool check metrics` on a Prometheus text exposition.
pub fn promtool_check_metrics(text: &str) {
    let promtool = require_tool("promtool");
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One HTTP/1.1 GET with extra request header lines (each ending in `\r\n`); returns
/// the response head, lower-cased, and the raw body.
pub fn get_raw(addr: SocketAddr, path: &str, headers: &str) -> std::io::Result<(String, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Connection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let at = raw.windows(4).position(|w| w == b"\r\n\r\n");
    let (head, body) = match at {
        Some(at) => (&raw[..at], raw[at + 4..].to_vec()),
        None => (&raw[..], Vec::new()),
    };
    Ok((String::from_utf8_lossy(head).to_ascii_lowercase(), body))
}

/// One HTTP/1.1 GET; returns status and body.
pub fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let (head, body) = get_raw(addr, path, "")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// The value of one sample in a text exposition, by its exact name and labels as
/// rendered (`name{a="b"}`), or `None`.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.rsplit_once(' ')
            .filter(|(s, _)| *s == series)
            .map(|(_, v)| v.parse().unwrap())
    })
}

/// The sum of every sample of a family whose labels contain all of `with`.
pub fn sum(text: &str, family: &str, with: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")) || l.starts_with(&format!("{family} ")))
        .filter(|l| with.iter().all(|w| l.contains(w)))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

/// A daemon started for a test, killed when dropped.
pub struct Daemon {
    pub pid: u32,
    gone: bool,
    exited: Receiver<ExitStatus>,
    pub addr: SocketAddr,
    logs: Receiver<serde_json::Value>,
    pub seen: Vec<serde_json::Value>,
}

impl Daemon {
    /// Starts the daemon with a config file and extra flags, and waits until it is ready.
    pub fn start(dir: &Path, config: &str, args: &[&str]) -> Daemon {
        Self::start_env(dir, config, args, &[])
    }

    /// Starts the daemon with extra environment variables.
    pub fn start_env(dir: &Path, config: &str, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let config_path = dir.join("runway-exporter.toml");
        std::fs::write(&config_path, config).unwrap();
        let mut child = Command::new(BIN)
            .arg("--config")
            .arg(&config_path)
            .args([
                "--web.listen-address",
                "127.0.0.1:0",
                "--log.format",
                "json",
                "--log.level",
                "info",
            ])
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn runway-exporter");
        let (tx, logs) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let v = serde_json::from_str(&line).unwrap_or(serde_json::json!({ "raw": line }));
                if tx.send(v).is_err() {
                    return;
                }
            }
        });
        let pid = child.id();
        let (exit_tx, exited) = mpsc::channel();
        std::thread::spawn(move || {
            let mut child: Child = child;
            if let Ok(status) = child.wait() {
                let _ = exit_tx.send(status);
            }
        });
        let mut d = Daemon {
            pid,
            gone: false,
            exited,
            addr: "127.0.0.1:1".parse().unwrap(),
            logs,
            seen: Vec::new(),
        };
        let listening = d.wait_log("Listening.", Duration::from_secs(20));
        d.addr = listening["address"].as_str().unwrap().parse().unwrap();
        d.wait_log("Ready.", Duration::from_secs(20));
        d
    }

    /// Waits for a log line with this message; panics with the logs seen on timeout.
    pub fn wait_log(&mut self, message: &str, timeout: Duration) -> serde_json::Value {
        if let Some(v) = self.seen.iter().find(|v| v["message"] == message) {
            return v.clone();
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.logs.recv_timeout(left) {
                Ok(v) => {
                    self.seen.push(v.clone());
                    if v["message"] == message {
                        return v;
                    }
                }
                Err(_) => panic!(
                    "no log {message:?} within {timeout:?}; logs: {:#?}",
                    self.seen
                ),
            }
        }
    }

    /// ERROR log lines received so far.
    pub fn errors(&mut self) -> Vec<serde_json::Value> {
        self.logs()
            .iter()
            .filter(|l| l["level"] == "ERROR")
            .cloned()
            .collect()
    }

    /// Log lines received so far.
    /// How many log lines so far have a message starting with `prefix`.
    pub fn count_logs(&mut self, prefix: &str) -> usize {
        self.logs()
            .iter()
            .filter(|v| v["message"].as_str().unwrap_or("").starts_with(prefix))
            .count()
    }

    pub fn logs(&mut self) -> &[serde_json::Value] {
        while let Ok(v) = self.logs.try_recv() {
            self.seen.push(v);
        }
        &self.seen
    }

    pub fn metrics(&self) -> String {
        let (status, body) = get(self.addr, "/metrics").expect("scrape");
        assert_eq!(status, 200);
        body
    }

    /// Scrapes until `check` holds or `timeout` passes; returns the last scrape and
    /// the time it took.
    pub fn scrape_until(
        &self,
        timeout: Duration,
        check: impl Fn(&str) -> bool,
    ) -> (String, Duration) {
        let start = Instant::now();
        loop {
            let m = self.metrics();
            if check(&m) || start.elapsed() > timeout {
                return (m, start.elapsed());
            }
            // A poll interval, not a synchronisation: the loop ends on the condition.
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig}");
    }

    /// Waits for the process to exit, at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let status = self
            .exited
            .recv_timeout(timeout)
            .unwrap_or_else(|_| panic!("daemon did not exit within {timeout:?}"));
        self.gone = true;
        status
    }

    /// Peak resident memory (VmHWM) in bytes.
    pub fn peak_rss(&self) -> u64 {
        proc_status_bytes(self.pid, "VmHWM")
    }

    /// Current resident memory (VmRSS) in bytes.
    pub fn rss(&self) -> u64 {
        proc_status_bytes(self.pid, "VmRSS")
    }
}

/// A memory field of `/proc/PID/status` (given in kB there), in bytes.
pub fn proc_status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    kb * 1024
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if !self.gone && self.exited.try_recv().is_err() {
            let _ = Command::new("kill")
                .args(["-KILL", &self.pid.to_string()])
                .status();
            let _ = self.exited.recv_timeout(Duration::from_secs(10));
        }
    }
}

/// A command's standard output and error, together.
pub fn output_text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Appends bytes to a file.
pub fn append(path: &Path, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(bytes).unwrap();
}

/// A config for tests: fast commits, the given files.
pub fn config(dir: &Path, extra: &str) -> String {
    format!(
        "[state]\ndir = \"{}\"\ncommit_interval = \"200ms\"\n[file]\npaths = [\"{}/*.log\"]\npoll_interval = \"100ms\"\nglob_interval = \"200ms\"\n{extra}",
        dir.join("state").display(),
        dir.display()
    )
}

/// A real Prometheus (the `prometheus` binary) on a free loopback port, with its
/// configuration and TSDB in a test's directory; killed when dropped.
pub struct Prometheus {
    child: Child,
    pub addr: SocketAddr,
}

impl Prometheus {
    /// Writes `config` as `dir/prometheus.yml`, starts Prometheus on it and waits until
    /// it is ready.
    pub fn start(dir: &Path, config: &str) -> Prometheus {
        let bin = require_tool("prometheus");
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let p = Prometheus { child, addr };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !get(addr, "/-/ready").is_ok_and(|(s, _)| s == 200) {
            assert!(
                Instant::now() < deadline,
                "Prometheus not ready within 30 s"
            );
            // A poll interval while another process starts, not a synchronisation.
            std::thread::sleep(Duration::from_millis(100));
        }
        p
    }

    /// An instant query at the current time; panics unless Prometheus answers 200.
    pub fn query(&self, q: &str) -> serde_json::Value {
        query(self.addr, q)
    }

    /// An instant query at `time` (Unix seconds).
    pub fn query_at(&self, q: &str, time: f64) -> serde_json::Value {
        query_path(self.addr, q, &format!("&time={time:.3}"))
    }

    /// The value of a query whose answer is one sample (an aggregation without `by`),
    /// or `None` when it has none.
    pub fn value(&self, q: &str) -> Option<f64> {
        single_value(q, &self.query(q))
    }

    /// [`Prometheus::value`] at `time`.
    pub fn value_at(&self, q: &str, time: f64) -> Option<f64> {
        single_value(q, &self.query_at(q, time))
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn single_value(q: &str, v: &serde_json::Value) -> Option<f64> {
    let result = v["data"]["result"]
        .as_array()
        .unwrap_or_else(|| panic!("{q}: {v}"));
    assert!(result.len() <= 1, "{q}: more than one series: {v}");
    result
        .first()
        .map(|s| s["value"][1].as_str().unwrap().parse().unwrap())
}

/// Percent-encodes a query parameter.
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// An instant query to the Prometheus at `prom`; panics unless it answers 200.
pub fn query(prom: SocketAddr, q: &str) -> serde_json::Value {
    query_path(prom, q, "")
}

fn query_path(prom: SocketAddr, q: &str, extra: &str) -> serde_json::Value {
    let path = format!("/api/v1/query?query={}{extra}", encode(q));
    let (head, mut body) = get_raw(prom, &path, "").unwrap();
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    if head.contains("\r\ntransfer-encoding: chunked") {
        body = dechunk(&body);
    }
    let body = String::from_utf8_lossy(&body);
    let v: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|_| serde_json::json!({"raw": body}));
    assert_eq!(status, 200, "query {q:?}: {v}");
    v
}

/// The body of a `Transfer-Encoding: chunked` response (Prometheus chunks the larger ones).
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let at = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size = std::str::from_utf8(&raw[..at]).unwrap();
        let size = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).unwrap();
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&raw[at + 2..at + 2 + size]);
        raw = &raw[at + 2 + size + 2..];
    }
}
