#!/usr/bin/env python3
"""Writes a deterministic Runway task log for benchmarks.

usage: gen-corpus.py LINES [--seed N] [--hostile PERCENT] [--codes N --models M]
                     [--expect FILE] > corpus.log

About 330 bytes a line: 85 % SUCCEEDED, 10 % FAILED across every failure code,
5 % other statuses (PENDING, THROTTLED, RUNNING, CANCELLED). With --hostile, that
percentage of lines is replaced by invalid JSON, invalid UTF-8 or NUL bytes. With --codes
and --models, FAILED lines use N distinct failure codes (INTERNAL.BAD_OUTPUT.CODEnn) and
every line one of M models (modelnn), for N x M failure series. With --expect, the counts
an exact counter must find are written to FILE as JSON: terminal tasks by status, FAILED
tasks by failure code (those that have one), and the hostile lines.
"""
import argparse
import json
import random
import sys

CODES = [
    "SAFETY.INPUT.TEXT", "SAFETY.INPUT.IMAGE", "SAFETY.INPUT.VIDEO", "SAFETY.OUTPUT.VIDEO",
    "SAFETY.OUTPUT.IMAGE", "INTERNAL.BAD_OUTPUT.CODE01", "INPUT_PREPROCESSING.SAFETY.TEXT",
    "INPUT_PREPROCESSING.INTERNAL", "ASSET.INVALID", "THIRD_PARTY.UNAVAILABLE", "INTERNAL", None,
]
MODELS = ["gen4_turbo", "gen4.5", "gen4_aleph", "veo3", "act_two", "gen4_image"]
OTHER = ["PENDING", "THROTTLED", "RUNNING", "CANCELLED"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("lines", type=int)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--hostile", type=float, default=0.0)
    ap.add_argument("--codes", type=int, default=0)
    ap.add_argument("--models", type=int, default=0)
    ap.add_argument("--expect", default=None)
    a = ap.parse_args()
    expect = {"status": {}, "codes": {}, "hostile": 0}
    codes = ["INTERNAL.BAD_OUTPUT.CODE%02d" % i for i in range(a.codes)] or CODES
    models = ["model%02d" % i for i in range(a.models)] or MODELS
    rnd = random.Random(a.seed)
    out = sys.stdout.buffer
    for i in range(a.lines):
        if a.hostile and rnd.random() * 100 < a.hostile:
            out.write(rnd.choice([b'{"id":"x","status":"FAILED"\n', b'\xff\xfe{"status":"FAILED"}\n',
                                  b'{"id":"n",\x00"status":"FAILED"}\n']))
            expect["hostile"] += 1
            continue
        tid = "%08x-%04x-4%03x-8%03x-%012x" % (rnd.getrandbits(32), rnd.getrandbits(16), rnd.getrandbits(12),
                                               rnd.getrandbits(12), rnd.getrandbits(48))
        r = rnd.random()
        rec = {"ts": "2024-11-06T12:%02d:%02d.%03dZ" % (i // 60000 % 60, i // 1000 % 60, i % 1000),
               "level": "info", "event": "runway_task_result", "id": tid,
               "createdAt": "2024-11-06T12:00:00.000Z"}
        model = rnd.choice(models)
        if r < 0.85:
            rec["status"] = "SUCCEEDED"
            rec["output"] = ["https://dnznrvs05pmza.cloudfront.net/%s.mp4?_jwt=eyJhbGciOiJIUzI1NiJ9" % tid]
        elif r < 0.95:
            rec["status"] = "FAILED"
            rec["failure"] = "The generation failed."
            rec["failureCode"] = rnd.choice(codes)
        else:
            rec["status"] = rnd.choice(OTHER)
            rec["progress"] = round(rnd.random(), 2)
        rec["model"] = model
        rec["duration"] = rnd.choice([5, 10])
        rec["app"] = "video-service"
        if rec["status"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
            expect["status"][rec["status"]] = expect["status"].get(rec["status"], 0) + 1
        if rec.get("failureCode"):
            expect["codes"][rec["failureCode"]] = expect["codes"].get(rec["failureCode"], 0) + 1
        line = json.dumps(rec, separators=(",", ":"))
        pad = 330 - len(line) - 12
        if pad > 0:
            rec["request"] = "r" * pad
            line = json.dumps(rec, separators=(",", ":"))
        out.write(line.encode() + b"\n")
    if a.expect:
        with open(a.expect, "w") as f:
            json.dump(expect, f)


if __name__ == "__main__":
    main()
