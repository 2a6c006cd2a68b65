#!/usr/bin/env python3
"""A stand-in for Runway's API, for scripts/sdk-proxy/run.sh (python3 stdlib only).

Deterministic whatever the order in which clients' requests interleave: what it answers
is decided by the create call's prompt (`promptText`, or `input.promptText` for the
model router), which names a scenario (`<client>-<n>-<scenario>`), and by how many
times that same request was made before (the SDKs' retries).

    standin.py serve PORT_FILE   serve on 127.0.0.1, an ephemeral port written to PORT_FILE
    standin.py plan              print the clients' plan (JSON): what they call, in order

Endpoints:
    POST /v1/image_to_video, /v1/text_to_video, /v1/text_to_image: a task,
         {"id", "estimatedCost"}; POST /v1/generate/video (the model router):
         {"id", "routing": {"model", "estimatedCost"}}. The id is a UUID of the prompt.
    GET  /v1/tasks/{id}: the task's next snapshot (each 200 answer steps through its
         scenario's timeline, and stays on the last); deleted or unknown ids: 404
    DELETE /v1/tasks/{id}: 204
    GET  /_record: every request answered so far (not under /v1/: the proxy never
         forwards it), as JSON: method, path, endpoint template, code, the request's
         end-to-end headers (not Host), its body's model and sha256, the answer's body;
         GET /_count: how many.
Scenarios that answer with HTTP errors: `throttled_once` (429 once, then the task),
`flaky` (502 once), `quota` (429 always: the daily quota), `down` (503 always),
`bad_request` (400), `poll_504` (its first GET answers 504). 429s carry
`retry-after-ms` (the SDKs wait that long); 5xx do not (the SDKs back off 0.5 s, 1 s).
"""
import hashlib
import json
import os
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_SERVE_SECONDS = 300  # the server stops by itself after this
NAMESPACE = uuid.UUID("6f1d4a53-0c2e-4c43-9d3b-5a1e0c8f2b77")
CREATED_AT = "2026-12-06T08:00:00.000Z"
# Credits Runway estimates per task, by model.
ESTIMATE = {"gen4_turbo": 50, "veo3.1": 160, "gen4_image": 8, "kling3.0_pro": 70}
ROUTED_MODEL = "kling3.0_pro"  # the model router's choice
CREATE_PATHS = ("/v1/image_to_video", "/v1/text_to_video", "/v1/text_to_image", "/v1/generate/video")
# Hop-by-hop request headers: a proxy does not forward them (RFC 9110 7.6.1).
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"}


def task_id(prompt):
    return str(uuid.uuid5(NAMESPACE, prompt))


def _snap(tid, status, **fields):
    return {"id": tid, "createdAt": CREATED_AT, "status": status, **fields}


def _failed(tid, code, credits, failure):
    return _snap(tid, "FAILED", failure=failure, failureCode=code, cost={"credits": credits})


def timeline(scenario, tid, estimate):
    """The snapshots GET /v1/tasks/{id} steps through (the last one repeats)."""
    est = {"credits": estimate}
    pending, running = _snap(tid, "PENDING", estimatedCost=est), _snap(tid, "RUNNING", progress=0.5, estimatedCost=est)
    out = {"output": [f"https://example.com/runway-output/{tid}.mp4?_jwt=fixed"]}
    ends = {
        "ok": [pending, running, _snap(tid, "SUCCEEDED", **out, cost=est)],
        # Moderated generations are charged (credits lost); the others are refunded.
        "safety_in": [pending, _failed(tid, "SAFETY.INPUT.TEXT", estimate, "Your prompt was flagged.")],
        "safety_out": [running, _failed(tid, "SAFETY.OUTPUT.VIDEO", estimate, "The output was flagged.")],
        "safety_wait": [_failed(tid, "SAFETY.INPUT.IMAGE", estimate, "Your image was flagged.")],
        "internal": [running, _failed(tid, "INTERNAL", 0, "An unexpected error occurred.")],
        "bad_output": [_failed(tid, "INTERNAL.BAD_OUTPUT.CODE01", 0, "An unexpected error occurred.")],
        # Cancelled in Runway's web app while running: still charged.
        "cancelled": [running, _snap(tid, "CANCELLED", cost={"credits": estimate // 2})],
        # Runs until the client deletes it.
        "delete": [pending, running],
    }
    return ends.get(scenario, ends["ok"])


# HTTP errors by scenario: (status, answer body, extra headers) for attempt n (from 0),
# or None for the normal answer.
def http_error(scenario, attempt):
    quota = (429, {"error": "You have exceeded your daily generation quota."}, {"retry-after-ms": "20"})
    if scenario == "throttled_once" and attempt == 0:
        return (429, {"error": "Too many concurrent requests."}, {"retry-after-ms": "20"})
    if scenario == "quota":
        return quota
    if scenario == "flaky" and attempt == 0:
        return (502, {"error": "Bad gateway."}, {})
    if scenario == "down":
        return (503, {"error": "Service unavailable."}, {})
    if scenario == "bad_request":
        return (400, {"error": "Validation of body failed", "issues": [{"path": ["ratio"]}]}, {})
    return None


# The clients' plan: (endpoint, model, scenario, then), `then` what the client does
# with the task: poll it to its end, delete it after one poll, wait with the SDK's
# helper, or nothing (the create failed). Each client prefixes its prompts.
PLAN = [
    ("image_to_video", "gen4_turbo", "ok", "poll"),
    ("image_to_video", "gen4_turbo", "safety_in", "poll"),
    ("text_to_video", "veo3.1", "ok", "poll"),
    ("text_to_video", "veo3.1", "safety_out", "poll"),
    ("text_to_image", "gen4_image", "internal", "poll"),
    ("text_to_image", "gen4_image", "bad_output", "poll"),
    ("generate_video", None, "ok", "poll"),
    ("generate_video", None, "safety_in", "poll"),
    ("image_to_video", "gen4_turbo", "cancelled", "poll"),
    ("text_to_video", "veo3.1", "delete", "delete"),
    ("image_to_video", "gen4_turbo", "throttled_once", "poll"),
    ("text_to_image", "gen4_image", "flaky", "poll"),
    ("text_to_video", "veo3.1", "quota", "none"),
    ("image_to_video", "gen4_turbo", "down", "none"),
    ("text_to_image", "gen4_image", "bad_request", "none"),
    ("image_to_video", "gen4_turbo", "poll_504", "poll"),
    ("image_to_video", "gen4_turbo", "safety_wait", "wait"),
]


def plan():
    return [{"endpoint": e, "model": m, "scenario": s, "then": t, "n": i} for i, (e, m, s, t) in enumerate(PLAN)]


def scenario_of(prompt):
    return prompt.split("-", 2)[-1]


def template(path):
    if path.startswith("/v1/tasks/") and "/" not in path[len("/v1/tasks/"):]:
        return "/v1/tasks/{id}"
    return path if path in CREATE_PATHS else "other"


class State:
    def __init__(self):
        self.lock = threading.Lock()
        self.attempts = {}  # request key -> answers so far
        self.tasks = {}  # id -> (scenario, estimate)
        self.deleted = set()
        self.served = {}  # id -> 200 answers of GET so far
        self.record = []

    def attempt(self, key):
        with self.lock:
            n = self.attempts.get(key, 0)
            self.attempts[key] = n + 1
            return n


STATE = State()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Runway's API

    # Fixed, so that answers are byte-for-byte the same run after run.
    def version_string(self):
        return "standin"

    def date_time_string(self, timestamp=None):
        return "Sun, 06 Dec 2026 08:00:00 GMT"

    def _send(self, code, body, headers=None, seen=None):
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(code)
        if body is not None:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        if code != 204:  # RFC 9110 8.6: never on a 204 (a proxy drops it, as hyper does)
            self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Request-Id", f"req-{hashlib.sha256(self.path.encode()).hexdigest()[:12]}")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)
        if seen is not None:
            seen.update(code=code, answer=body)
            with STATE.lock:
                STATE.record.append(seen)

    def _seen(self, body):
        try:
            parsed = json.loads(body) if body else {}
        except ValueError:
            parsed = {}
        headers = sorted((k.lower(), v) for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP | {"host"})
        return {
            "method": self.command,
            "path": self.path,
            "endpoint": template(self.path),
            "headers": headers,
            "body_sha256": hashlib.sha256(body).hexdigest(),
            "model": parsed.get("model") if isinstance(parsed, dict) else None,
        }

    def _body(self):
        return self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))

    def do_GET(self):
        if self.path in ("/_record", "/_count"):
            with STATE.lock:
                return self._send(200, STATE.record if self.path == "/_record" else len(STATE.record))
        seen = self._seen(b"")
        if not self.headers.get("Authorization", "").startswith("Bearer "):
            return self._send(401, {"error": "No API key was provided."}, seen=seen)
        tid = self.path[len("/v1/tasks/"):] if template(self.path) == "/v1/tasks/{id}" else None
        with STATE.lock:
            task = STATE.tasks.get(tid) if tid not in STATE.deleted else None
        if task is None:
            return self._send(404, {"error": "Task not found."}, seen=seen)
        scenario, estimate = task
        if scenario == "poll_504" and STATE.attempt(("GET", tid)) == 0:
            return self._send(504, {"error": "Gateway timeout."}, seen=seen)
        with STATE.lock:
            n = STATE.served.get(tid, 0)
            STATE.served[tid] = n + 1
        snaps = timeline(scenario, tid, estimate)
        self._send(200, snaps[min(n, len(snaps) - 1)], seen=seen)

    def do_DELETE(self):
        seen = self._seen(b"")
        tid = self.path[len("/v1/tasks/"):] if template(self.path) == "/v1/tasks/{id}" else None
        with STATE.lock:
            known = tid in STATE.tasks and tid not in STATE.deleted
            if known:
                STATE.deleted.add(tid)
        self._send(204 if known else 404, None if known else {"error": "Task not found."}, seen=seen)

    def do_POST(self):
        body = self._body()
        seen = self._seen(body)
        if not self.headers.get("Authorization", "").startswith("Bearer ") or self.path not in CREATE_PATHS:
            return self._send(404, {"error": "Not found."}, seen=seen)
        req = json.loads(body or b"{}")
        prompt = req.get("promptText") or (req.get("input") or {}).get("promptText") or ""
        scenario = scenario_of(prompt)
        error = http_error(scenario, STATE.attempt((self.path, prompt)))
        if error:
            return self._send(error[0], error[1], error[2], seen=seen)
        tid = task_id(prompt)
        routed = self.path == "/v1/generate/video"
        model = ROUTED_MODEL if routed else req.get("model")
        estimate = ESTIMATE.get(model, 1)
        with STATE.lock:
            STATE.tasks[tid] = (scenario, estimate)
        cost = {"credits": estimate}
        answer = {"id": tid, "routing": {"model": model, "estimatedCost": cost}} if routed else {"id": tid, "estimatedCost": cost}
        self._send(200, answer, seen=seen)

    def log_message(self, *args):
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A client closing a kept-alive connection as it exits is not an error.
        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)


def serve(port_file):
    server = Server(("127.0.0.1", 0), Handler)
    with open(port_file + ".tmp", "w") as f:
        f.write(f"{server.server_address[1]}\n")
    os.replace(port_file + ".tmp", port_file)
    stop = threading.Timer(MAX_SERVE_SECONDS, server.shutdown)
    stop.daemon = True
    stop.start()
    server.serve_forever()


if __name__ == "__main__":
    cmd = sys.argv[1:2]
    if cmd == ["serve"] and len(sys.argv) == 3:
        serve(sys.argv[2])
    elif cmd == ["plan"]:
        print(json.dumps(plan(), indent=2))
    else:
        sys.exit(__doc__)
