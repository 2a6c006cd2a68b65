#!/usr/bin/env python3
"""Checks for scripts/sdk-proxy/run.sh (python3 stdlib only). Each exits 1 on a difference.

    check.py requests DIRECT_RECORD PROXY_RECORD
        The requests the stand-in got straight from the SDKs and through the proxy are the
        same: method, path, end-to-end headers (not Host) and body, as a multiset (the
        two SDKs run side by side, so their requests interleave differently).
    check.py metrics RECORD METRICS_URL
        The exporter's /metrics holds exactly the counts that follow from what the stand-in
        answered (RECORD, its /_record), by the counting rules of docs/proxy.md and
        docs/metrics.md. Only the series named here are compared, each summed over the
        labels not named, so series added later do not break the check.
    check.py stream RECORD METRICS_URL CLIENT_OUT...
        After a restart under a stream of SDK calls: every request, every created task and
        every task that ended, as the stand-in answered them, counted exactly once; and the
        tasks the clients saw to their end (CLIENT_OUT: client.py/.mjs stream's output)
        are the tasks the stand-in created.
    check.py wait-port PORT SECONDS
        Waits until 127.0.0.1:PORT accepts a connection (checked every 2 ms); prints the
        milliseconds it took; exit 1 if it did not within SECONDS.
    check.py get URL
        Prints what GET URL answers (the stand-in's /_record and /_count).
    check.py wait-count URL N SECONDS
        Waits until the stand-in at URL has answered N requests (its /_count, checked every
        10 ms); prints how many it had. Exit 1 if not within SECONDS.
    check.py outage PORT SECONDS READY_FILE
        Connects to 127.0.0.1:PORT every 2 ms (touching READY_FILE once it has connected),
        until the port has refused a connection and then accepted one again; prints the
        wall-clock nanoseconds of the first refusal and of the first accept after it.
        Exit 1 if that did not happen within SECONDS.
"""
import json
import re
import socket
import sys
import time
import urllib.request
from collections import Counter

TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")
SERIES = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def load(path):
    with open(path) as f:
        return json.load(f)


def get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


def parse(text):
    """[(name, {label: value}, value)] of a Prometheus text exposition."""
    out = []
    for line in text.splitlines():
        m = SERIES.match(line)
        if m and not line.startswith("#"):
            out.append((m[1], dict(LABEL.findall(m[2] or "")), float(m[3])))
    return out


def sums(samples, name, by):
    """The samples of `name` summed by the labels `by`; zero sums left out."""
    c = Counter()
    for n, labels, v in samples:
        if n == name:
            c[tuple(labels.get(k, "") for k in by)] += v
    return {k: round(v, 6) for k, v in c.items() if v}


def advice(code):
    """The retry advice of an HTTP error code: Runway's table, else the SDKs' rule."""
    if code in (400, 401, 404, 405):
        return "never"
    if code in (408, 409, 429) or code >= 500:
        return "after_delay"
    return "never"


def expected(record):
    """The counts the exporter must show, from what the stand-in answered, in order."""
    requests = Counter((r["endpoint"], r["method"], str(r["code"])) for r in record)
    # Retry advice of each error code (docs/metrics.md#http-error-codes); the stand-in
    # sends no x-should-retry header, so the code alone decides.
    errors = Counter((r["endpoint"], str(r["code"]), advice(r["code"])) for r in record if r["code"] >= 400)
    latency = Counter((r["endpoint"],) for r in record)
    created, model_of, ended = Counter(), {}, {}
    for r in record:
        answer = r["answer"] if isinstance(r["answer"], dict) else {}
        ok = 200 <= r["code"] < 300
        if r["method"] == "POST" and ok and "id" in answer:
            model = r["model"] or (answer.get("routing") or {}).get("model") or "unknown"
            created[(r["endpoint"], model)] += 1
            model_of[answer["id"]] = model
        elif r["method"] == "GET" and r["code"] == 200 and answer.get("status") in TERMINAL:
            ended.setdefault(answer["id"], answer)
        elif r["method"] == "DELETE" and ok:
            tid = r["path"].rsplit("/", 1)[-1]
            ended.setdefault(tid, {"id": tid, "status": "CANCELLED", "deleted": True})
    tasks, tasks_by_model, failures, charged, lost = Counter(), Counter(), Counter(), Counter(), Counter()
    for t in ended.values():
        tasks[(t["status"],)] += 1
        tasks_by_model[(t["status"], model_of.get(t["id"], "unknown"))] += 1
        credits = (t.get("cost") or {}).get("credits", 0)
        # Credits of a deleted task are the exporter's estimate (docs/proxy.md): not
        # compared here. Every other ended task reported its cost.
        if t["status"] != "CANCELLED":
            charged[(t["status"],)] += credits
        if t["status"] == "FAILED":
            failures[(t["failureCode"],)] += 1
            lost[(t["failureCode"],)] += credits
    nonzero = lambda c: {k: round(float(v), 6) for k, v in c.items() if v}
    return {
        ("runway_api_requests_total", ("endpoint", "method", "code")): nonzero(requests),
        ("runway_api_request_duration_seconds_count", ("endpoint",)): nonzero(latency),
        ("runway_api_errors_total", ("endpoint", "code", "retry")): nonzero(errors),
        ("runway_tasks_created_total", ("endpoint", "model")): nonzero(created),
        ("runway_tasks_total", ("status",)): nonzero(tasks),
        ("runway_task_failures_total", ("failure_code",)): nonzero(failures),
        ("runway_credits_charged_total", ("status",)): {k: v for k, v in nonzero(charged).items()},
        ("runway_credits_lost_total", ("failure_code",)): nonzero(lost),
        ("runway_exporter_proxy_observations_dropped_total", ()): {},
    }, nonzero(tasks_by_model)


def compare(want, samples):
    bad = []
    for (name, by), values in want.items():
        got = sums(samples, name, by)
        if name == "runway_credits_charged_total":
            got = {k: v for k, v in got.items() if k != ("CANCELLED",)}
        if got != values:
            bad.append(f"{name} by {','.join(by) or '()'}:\n  want {sorted(values.items())}\n  got  {sorted(got.items())}")
    return bad


def scrape_until(url, done, seconds=30):
    """Scrapes until done(samples) (the exporter commits every 200 ms here), or the deadline."""
    deadline = time.monotonic() + seconds
    while True:
        samples = parse(get(url))
        if done(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.1)


def total(samples, name):
    return sum(v for n, _, v in samples if n == name)


def check_metrics(record_file, url):
    record = load(record_file)
    want, by_model = expected(record)
    n_tasks = sum(want[("runway_tasks_total", ("status",))].values())
    samples = scrape_until(url, lambda s: total(s, "runway_api_requests_total") >= len(record)
                           and total(s, "runway_tasks_total") >= n_tasks)
    bad = compare(want, samples)
    # Tasks by model: labelled with their create call's model when the exporter carries
    # it over from the create (issue 24.2), else all "unknown" (the exporter today).
    got = sums(samples, "runway_tasks_total", ("status", "model"))
    all_unknown = {(s, "unknown"): v for (s,), v in want[("runway_tasks_total", ("status",))].items()}
    if got not in (by_model, all_unknown):
        bad.append(f"runway_tasks_total by status,model:\n  want {sorted(by_model.items())}\n"
                   f"  or   {sorted(all_unknown.items())}\n  got  {sorted(got.items())}")
    for line in bad:
        print(f"check.py metrics: {line}", file=sys.stderr)
    if bad:
        sys.exit(1)
    labelled = "by create model" if got == by_model and got != all_unknown else "model=unknown"
    print(f"metrics match the stand-in: {len(record)} requests, "
          f"{sum(want[('runway_tasks_created_total', ('endpoint', 'model'))].values()):.0f} tasks created, "
          f"{n_tasks:.0f} ended ({labelled})")


def check_stream(record_file, url, *client_files):
    record = load(record_file)
    done = sorted(t for f in client_files for t in load(f)["done"])
    made = sorted({r["answer"]["id"] for r in record if r["method"] == "POST" and r["code"] == 200})
    if done != made:
        sys.exit(f"check.py stream: the clients finished {len(done)} tasks, the stand-in created {len(made)}")
    # The restart must have been felt: calls that the SDKs sent again (their retry count
    # header), else it proves nothing.
    retried = sum(1 for r in record if dict(r["headers"]).get("x-stainless-retry-count", "0") != "0")
    if not retried:
        sys.exit("check.py stream: no SDK call was retried: the restart went unnoticed, nothing was shown")
    print(f"{len(done)} tasks done by the SDKs, {retried} requests reached the stand-in as SDK retries")
    want, _ = expected(record)
    keep = ("runway_api_requests_total", "runway_tasks_created_total", "runway_tasks_total",
            "runway_exporter_proxy_observations_dropped_total")
    want = {k: v for k, v in want.items() if k[0] in keep}
    n_tasks = sum(want[("runway_tasks_total", ("status",))].values())
    samples = scrape_until(url, lambda s: total(s, "runway_api_requests_total") >= len(record)
                           and total(s, "runway_tasks_total") >= n_tasks, seconds=10)
    bad = compare(want, samples)
    for line in bad:
        print(f"check.py stream: {line}", file=sys.stderr)
    if bad:
        sys.exit(1)
    print(f"every request ({len(record)}) and task ({n_tasks:.0f}) counted once across the restart")


def normalised(record):
    return sorted(json.dumps({k: r[k] for k in ("method", "path", "headers", "body_sha256")}, sort_keys=True)
                  for r in record)


def check_requests(direct_file, proxy_file):
    direct, proxied = normalised(load(direct_file)), normalised(load(proxy_file))
    if direct == proxied:
        print(f"the stand-in got the same {len(direct)} requests straight and through the proxy")
        return
    # Which headers differ, over all requests; then the first requests that differ.
    names = lambda rs: Counter(h[0] for r in rs for h in json.loads(r)["headers"])
    a, b = names(direct), names(proxied)
    for name in sorted(set(a) | set(b)):
        if a[name] != b[name]:
            print(f"check.py requests: header {name}: in {a[name]} requests straight, {b[name]} through the proxy",
                  file=sys.stderr)
    only_a, only_b = sorted((Counter(direct) - Counter(proxied)).elements()), sorted((Counter(proxied) - Counter(direct)).elements())
    print(f"check.py requests: {len(only_a)} requests only straight, {len(only_b)} only through the proxy; the first:",
          file=sys.stderr)
    for line in only_a[:2]:
        print(f"  straight:          {line}", file=sys.stderr)
    for line in only_b[:2]:
        print(f"  through the proxy: {line}", file=sys.stderr)
    sys.exit(1)


def wait_port(port, seconds):
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            print(f"{(time.monotonic() - started) * 1000:.0f}")
            return
        except OSError:
            time.sleep(0.002)
    sys.exit(1)


def wait_count(url, n, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        count = int(get(url + "/_count"))
        if count >= n:
            print(count)
            return
        time.sleep(0.01)
    sys.exit(1)


def outage(port, seconds, ready_file):
    def accepts():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    deadline = time.monotonic() + seconds
    closed_at = None
    while time.monotonic() < deadline:
        up = accepts()
        if up and closed_at is None and ready_file:
            open(ready_file, "w").close()
            ready_file = None
        if not up and closed_at is None:
            closed_at = time.time_ns()
        if up and closed_at is not None:
            print(closed_at, time.time_ns())
            return
        time.sleep(0.002)
    sys.exit(1)


if __name__ == "__main__":
    cmd, args = sys.argv[1:2], sys.argv[2:]
    if cmd == ["requests"] and len(args) == 2:
        check_requests(*args)
    elif cmd == ["metrics"] and len(args) == 2:
        check_metrics(*args)
    elif cmd == ["stream"] and len(args) >= 2:
        check_stream(*args)
    elif cmd == ["wait-port"] and len(args) == 2:
        wait_port(int(args[0]), float(args[1]))
    elif cmd == ["get"] and len(args) == 1:
        print(get(args[0]))
    elif cmd == ["wait-count"] and len(args) == 3:
        wait_count(args[0], int(args[1]), float(args[2]))
    elif cmd == ["outage"] and len(args) == 3:
        outage(int(args[0]), float(args[1]), args[2])
    else:
        sys.exit(__doc__)
