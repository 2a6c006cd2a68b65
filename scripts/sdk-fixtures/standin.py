#!/usr/bin/env python3
"""A stand-in for Runway's API, for scripts/sdk-fixtures/run.sh (python3 stdlib only).

It holds a fixed table of tasks in today's shape (`cost` on terminal tasks,
`estimatedCost` on PENDING/THROTTLED/RUNNING ones), the plan of what the writers log,
and the expected counts derived from both.

    standin.py serve PORT_FILE   serve on 127.0.0.1, an ephemeral port written to PORT_FILE
    standin.py plan              print the writers' plan (JSON)
    standin.py expected          print tests/fixtures/sdk/expected.json

It also holds workflow invocations and realtime sessions in the shapes of the SDKs'
types (`WorkflowInvocationRetrieveResponse`, `RealtimeSessionRetrieveResponse`): not
tasks, but logged the same ways, and counted apart.

Endpoints (all that the SDKs' retrieve and create + wait helpers call):
    GET  /v1/tasks/{id}     the task's next snapshot: each GET of an id steps through its
                            timeline (e.g. PENDING, RUNNING, SUCCEEDED) and stays on the last
    GET  /v1/workflow_invocations/{id}, GET /v1/realtime_sessions/{id}: the same, for an
                            invocation's or a session's timeline
    POST /v1/image_to_video {"id", "estimatedCost"}: the task created is the one whose id
                            is the request's promptText, so the writer picks which one
Unknown ids and paths: 404 {"error": "..."}; no bearer token: 401.
"""
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = "gen4_turbo"
MAX_SERVE_SECONDS = 120  # the server stops by itself after this


def _created(n):  # milliseconds as the API writes them; task 1's are .000
    return f"2024-11-06T12:00:{n:02d}.{(n - 1) * 71:03d}Z"


def _task(n, status, **fields):
    return {"id": f"00000000-0000-4000-8000-{n:012d}", "createdAt": _created(n), "status": status, **fields}


def _failed(n, code, credits, failure="An unexpected error occurred."):
    fields = {"failure": failure}
    if code is not _ABSENT:
        fields["failureCode"] = code
    return _task(n, "FAILED", **fields, cost={"credits": credits})


_ABSENT = object()
_OUT = "https://example.com/runway-output/task-{}.mp4?_jwt=fixed"

# id -> timeline of snapshots, the last one terminal. Keyed by number for readability.
_TIMELINES = {
    1: [_task(1, "PENDING", estimatedCost={"credits": 50}),
        _task(1, "RUNNING", progress=0.42, estimatedCost={"credits": 50}),
        _task(1, "SUCCEEDED", output=[_OUT.format(1)], cost={"credits": 50})],
    2: [_task(2, "THROTTLED", estimatedCost={"credits": 100}),
        _task(2, "RUNNING", progress=0.9, estimatedCost={"credits": 100}),
        _task(2, "SUCCEEDED", output=[_OUT.format(2)], cost={"credits": 100})],
    3: [_task(3, "SUCCEEDED", output=[_OUT.format(3)], cost={"credits": 25})],
    # SAFETY: moderated generations are charged (4); 5 reports 0, contradicting that rule.
    4: [_task(4, "PENDING", estimatedCost={"credits": 12.5}),
        _task(4, "RUNNING", progress=0, estimatedCost={"credits": 12.5}),
        _failed(4, "SAFETY.INPUT.TEXT", 50, "Your prompt was flagged by our content moderation system.")],
    5: [_failed(5, "SAFETY.OUTPUT.VIDEO", 0, "The generated video was flagged by our content moderation system.")],
    6: [_failed(6, "INTERNAL.BAD_OUTPUT.CODE01", 0)],
    7: [_failed(7, "INPUT_PREPROCESSING.INTERNAL", 0)],
    8: [_failed(8, "ASSET.INVALID", 0, "The input image has unsupported dimensions.")],
    9: [_failed(9, "INTERNAL", 0)],
    # INTERNAL failures are refunded; this one reports 20, contradicting that rule.
    10: [_failed(10, "INTERNAL", 20)],
    11: [_failed(11, None, 0)],
    12: [_failed(12, _ABSENT, 0)],
    # Cancelled while running (still charged), and cancelled before it ran (refunded).
    13: [_task(13, "RUNNING", progress=0.3, estimatedCost={"credits": 50}),
         _task(13, "CANCELLED", cost={"credits": 50})],
    14: [_task(14, "CANCELLED", cost={"credits": 0})],
}
TASKS = {tl[-1]["id"]: tl for tl in _TIMELINES.values()}


def _flow(kind, n, status, **fields):
    return {"id": f"00000000-0000-4000-{kind}-{n:012d}", "createdAt": _created(n), "status": status, **fields}


def _node(code=_ABSENT, message="The node failed."):
    # failureCode is absent for nodes that failed before generation began.
    return {"message": message, **({} if code is _ABSENT else {"failureCode": code})}


_WF_OUT = "https://example.com/runway-output/node-{}.mp4?_jwt=fixed"
# Workflow invocations: `output` is an object (node id -> URLs), `nodeErrors` an object
# (node id -> error), `cost` omitted until every node is terminal.
_INVOCATIONS = [
    [_flow("9000", 1, "PENDING"),
     _flow("9000", 1, "RUNNING", output={}, progress=0.2),
     _flow("9000", 1, "SUCCEEDED", output={"n1": [_WF_OUT.format(1)]}, cost={"credits": 60})],
    # A partial run: SUCCEEDED with failed nodes; its cost arrives on a later GET.
    [_flow("9000", 2, "PENDING"),
     _flow("9000", 2, "RUNNING", output={"n1": [_WF_OUT.format(2)]}, progress=0.5,
           nodeErrors={"n2": _node("SAFETY.INPUT.TEXT", "Your prompt was flagged.")}),
     _flow("9000", 2, "SUCCEEDED", output={"n1": [_WF_OUT.format(2)]},
           nodeErrors={"n2": _node("SAFETY.INPUT.TEXT", "Your prompt was flagged."), "n3": _node()}),
     _flow("9000", 2, "SUCCEEDED", output={"n1": [_WF_OUT.format(2)]}, cost={"credits": 30},
           nodeErrors={"n2": _node("SAFETY.INPUT.TEXT", "Your prompt was flagged."), "n3": _node()})],
    [_flow("9000", 3, "RUNNING", output={}, progress=0.1),
     _flow("9000", 3, "FAILED", failure="Every node failed.", failureCode="INTERNAL", cost={"credits": 0},
           nodeErrors={"n1": _node("THIRD_PARTY.UNAVAILABLE")})],
    # Cancelled: no field tells it from a task but its id, seen RUNNING before.
    [_flow("9000", 4, "RUNNING", output={}, progress=0.7),
     _flow("9000", 4, "CANCELLED")],
]
# Realtime sessions: NOT_READY, READY and COMPLETED are no task's statuses.
_SESSIONS = [
    [_flow("a000", 1, "NOT_READY", queued=True),
     _flow("a000", 1, "READY", expiresAt="2024-11-06T12:10:00.000Z", sessionKey="session-key-1"),
     _flow("a000", 1, "RUNNING"),
     _flow("a000", 1, "COMPLETED", duration=61)],
    [_flow("a000", 2, "NOT_READY"),
     _flow("a000", 2, "FAILED", failure="The session could not start.", failureCode="INTERNAL")],
    [_flow("a000", 3, "NOT_READY", queued=False),
     _flow("a000", 3, "CANCELLED")],
]
INVOCATIONS = {tl[-1]["id"]: tl for tl in _INVOCATIONS}
SESSIONS = {tl[-1]["id"]: tl for tl in _SESSIONS}
SESSION_TERMINAL = ("COMPLETED", "FAILED", "CANCELLED")
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")


def _ids(*numbers):
    return [_TIMELINES[n][-1]["id"] for n in numbers]


def _ids_with_status(*statuses):
    return [tid for tid, tl in TASKS.items() if tl[-1]["status"] in statuses]


# What the writers log. "poll": retrieve each id until terminal, logging every snapshot;
# "refetch": retrieve these (already terminal) ids once more, as an application does for
# fresh output URLs; "py_errors"/"node_errors": create + wait for these, logging the
# TaskFailedError (the first id is waited for twice: a duplicate). Python's synchronous
# wait_for_task_output raises TaskFailedError only for FAILED (a CANCELLED task is polled
# until the timeout); Node's waitForTaskOutput raises it for FAILED and CANCELLED.
_FAILED = _ids_with_status("FAILED")
PLAN = {
    "model": MODEL,
    "poll": list(TASKS),
    "refetch": _ids(1, 4),
    "py_errors": _FAILED + _FAILED[:1],
    "node_errors": _FAILED + _ids_with_status("CANCELLED") + _FAILED[:1],
    # Polled like tasks until terminal; the partial run fetched again for its cost.
    "workflows": list(INVOCATIONS),
    "workflow_refetch": [_INVOCATIONS[1][-1]["id"]],
    "sessions": list(SESSIONS),
}


def _first_terminal(timeline, terminal):
    return next(i for i, snap in enumerate(timeline) if snap["status"] in terminal)


def _files():
    """fixture file -> (task_pointer, model label, the snapshots it holds, in order)"""
    polled = [snap for tid in PLAN["poll"] for snap in TASKS[tid]] + [TASKS[t][-1] for t in PLAN["refetch"]]
    # Each GET of an invocation or session steps its timeline: polled to the first
    # terminal snapshot, then a refetch gets the next.
    for wid in PLAN["workflows"]:
        tl = INVOCATIONS[wid]
        polled += tl[:_first_terminal(tl, TERMINAL) + 1]
    for wid in PLAN["workflow_refetch"]:
        tl = INVOCATIONS[wid]
        polled.append(tl[min(_first_terminal(tl, TERMINAL) + 1, len(tl) - 1)])
    for sid in PLAN["sessions"]:
        tl = SESSIONS[sid]
        polled += tl[:_first_terminal(tl, SESSION_TERMINAL) + 1]
    py_err = [TASKS[t][-1] for t in PLAN["py_errors"]]
    node_err = [TASKS[t][-1] for t in PLAN["node_errors"]]
    files = {name: ("", "unknown", polled) for name in (
        "py-to-json.log", "py-to-json-compact.log", "py-model-dump-json.log",
        "py-model-dump-mode-json.log", "node-stringify.log", "node-stringify-pretty.log")}
    files["py-nested.log"] = ("/task", MODEL, polled)
    files["py-task-failed-error.log"] = ("", "unknown", py_err)
    files["node-task-failed-error.log"] = ("", "unknown", node_err)
    return files


def expected():
    """Counts per fixture file, by the exporter's rules (see docs/metrics.md, "Counting rules")."""
    out = {}
    for name, (pointer, model, snaps) in sorted(_files().items()):
        seen, dup, non_terminal = {}, 0, 0
        for s in snaps:
            if s["status"] not in TERMINAL + SESSION_TERMINAL:
                non_terminal += 1
            elif s["id"] in seen:
                dup += 1
            else:
                seen[s["id"]] = s
        tasks, failures, charged, lost, mismatches = {}, {}, {}, {}, {}
        for s in seen.values():
            if s["id"] not in TASKS:
                continue
            st, credits = s["status"], s["cost"]["credits"]
            tasks[st] = tasks.get(st, 0) + 1
            charged[st] = charged.get(st, 0) + credits
            if st == "FAILED":
                code = s["failureCode"].upper() if s.get("failureCode") else "none"
                failures[code] = failures.get(code, 0) + 1
                lost[code] = lost.get(code, 0) + credits
                # Runway's documented rule (config/failure-codes.toml): SAFETY.* credits
                # are lost, every other code here is refunded.
                rule_lost = code.startswith("SAFETY.")
                if (rule_lost and credits == 0) or (not rule_lost and credits > 0):
                    mismatches[code] = mismatches.get(code, 0) + 1
        order = lambda d: {k: d[k] for k in TERMINAL if k in d}
        out[name] = {
            "task_pointer": pointer,
            "records": {"counted": len(seen), "duplicate": dup, "non_terminal": non_terminal, "rejected": 0},
            "tasks": order(tasks),
            "failures": dict(sorted(failures.items())),
            "credits_charged": order(charged),
            "credits_lost": {k: v for k, v in sorted(lost.items()) if v > 0},
            "cost_mismatches": dict(sorted(mismatches.items())),
            "model": model,
            **_flow_counts(snaps, seen),
        }
    return out


def _flow_counts(snaps, seen):
    """Invocations and sessions, by the exporter's rules (README "Workflows and realtime
    sessions"): counted at the first terminal snapshot, the cost at the first with one."""
    add = lambda d, k, n=1: d.__setitem__(k, d.get(k, 0) + n)
    inv, partial, nodes, credits, sessions, session_failures = {}, {}, {}, {}, {}, {}
    costed = set()
    for s in snaps:
        if s["id"] in INVOCATIONS and s["status"] in TERMINAL and "cost" in s and s["id"] not in costed:
            costed.add(s["id"])
            add(credits, s["status"], s["cost"]["credits"])
    for s in seen.values():
        code = lambda e: e["failureCode"].upper() if e.get("failureCode") else "none"
        if s["id"] in INVOCATIONS:
            errors = s.get("nodeErrors") or {}
            add(inv, s["status"])
            add(partial, "true" if s["status"] == "SUCCEEDED" and errors else "false")
            for e in errors.values():
                add(nodes, code(e))
        elif s["id"] in SESSIONS:
            add(sessions, s["status"])
            if s["status"] == "FAILED":
                add(session_failures, code(s))
    return {
        "workflow_invocations": dict(sorted(inv.items())),
        "workflow_partial": dict(sorted(partial.items())),
        "workflow_node_failures": dict(sorted(nodes.items())),
        "workflow_credits": {k: v for k, v in sorted(credits.items()) if v > 0},
        "realtime_sessions": dict(sorted(sessions.items())),
        "realtime_session_failures": dict(sorted(session_failures.items())),
    }


class Handler(BaseHTTPRequestHandler):
    polls = {}  # id -> number of GETs so far
    lock = threading.Lock()

    def _send(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorised(self):
        if self.headers.get("Authorization", "").startswith("Bearer "):
            return True
        self._send(401, {"error": "No API key was provided."})
        return False

    def do_GET(self):
        if not self._authorised():
            return
        tables = {"/v1/tasks/": TASKS, "/v1/workflow_invocations/": INVOCATIONS, "/v1/realtime_sessions/": SESSIONS}
        prefix = next((p for p in tables if self.path.startswith(p)), None)
        tid = self.path[len(prefix):] if prefix else None
        if prefix is None or tid not in tables[prefix]:
            return self._send(404, {"error": "Not found."})
        with self.lock:
            n = self.polls.get(tid, 0)
            self.polls[tid] = n + 1
        timeline = tables[prefix][tid]
        self._send(200, timeline[min(n, len(timeline) - 1)])

    def do_POST(self):
        if not self._authorised():
            return
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        tid = body.get("promptText")
        if self.path != "/v1/image_to_video" or tid not in TASKS:
            return self._send(404, {"error": "Not found."})
        self._send(200, {"id": tid, "estimatedCost": {"credits": 50}})

    def log_message(self, *args):
        pass


def serve(port_file):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
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
        print(json.dumps(PLAN, indent=2))
    elif cmd == ["expected"]:
        print(json.dumps(expected(), indent=2))
    else:
        sys.exit(__doc__)
