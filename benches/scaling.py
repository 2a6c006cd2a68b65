#!/usr/bin/env python3
"""Cost per line and peak memory as the log grows: is `scan` linear, and is its memory flat?

usage: benches/scaling.py [--sizes 100000,1000000,10000000] [--repeat 7] [--seed 1]
                          [--bin PATH] [--dir DIR]

Generates one deterministic corpus of the largest size (benches/gen-corpus.py; the smaller
sizes are its first lines), runs `runway-exporter scan` --repeat times on each size (the
sizes take turns in each round, so that a slow spell of the machine hits them alike),
checks that every line was counted (the sum of runway_exporter_records_total is the line
count), and prints, per size, the median run's CPU seconds (user + sys, from wait4),
nanoseconds and lines per CPU-second, peak RSS and page faults.

A base run of the first 10,000 lines shows what every run pays once (process start-up);
the marginal cost per line of a size, (its CPU - the base's) / (its lines - 10,000), is
printed beside the whole-run cost.

Checks (issue 6): the cost per line (whole run) of every size within 10 % of the others,
and peak RSS from 1M to the largest size within 10 %. The cost check uses each size's
fastest run: on a shared VM other work only ever adds time, in bursts as long as a round,
so the fastest run is the closest to what the scan itself costs; the medians' spread is
printed too. Exits 1 when a check fails. --dir keeps the corpora between runs (3.5 GB at
10M).
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile

here = os.path.dirname(os.path.abspath(__file__))
ap = argparse.ArgumentParser()
ap.add_argument("--sizes", default="100000,1000000,10000000")
ap.add_argument("--repeat", type=int, default=7)
ap.add_argument("--seed", type=int, default=1)
ap.add_argument("--bin", default=os.path.join(here, "..", "target", "release", "runway-exporter"))
ap.add_argument("--dir", default=None)
a = ap.parse_args()
sizes = sorted(int(s) for s in a.sizes.split(","))
work = a.dir or tempfile.mkdtemp()
os.makedirs(work, exist_ok=True)


def corpus(n):
    path = os.path.join(work, f"corpus-{a.seed}-{n}.log")
    if os.path.exists(path):
        return path
    biggest = os.path.join(work, f"corpus-{a.seed}-{sizes[-1]}.log")
    if not os.path.exists(biggest):
        with open(biggest + ".tmp", "wb") as out:
            subprocess.run([sys.executable, os.path.join(here, "gen-corpus.py"), str(sizes[-1]),
                            "--seed", str(a.seed)], stdout=out, check=True)
        os.rename(biggest + ".tmp", biggest)
    if n != sizes[-1]:
        with open(path + ".tmp", "wb") as out:
            subprocess.run(["head", "-n", str(n), biggest], stdout=out, check=True)
        os.rename(path + ".tmp", path)
    return path


def warm(path):
    with open(path, "rb") as f:
        while f.read(1 << 24):
            pass


def run(path, lines):
    """One scan: (CPU seconds, peak RSS in KiB, page faults); fails unless every line was
    counted. Peak RSS comes from /usr/bin/time: a child forked from this Python process
    would count Python's pages in its own high-water mark."""
    rss_file = os.path.join(work, "rss")
    p = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", rss_file, a.bin, "scan", path],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out = p.stdout.read().decode()
    _, status, usage = os.wait4(p.pid, 0)
    if status != 0:
        sys.exit(f"scaling: scan of {path} failed ({status})")
    counted = sum(float(v) for v in re.findall(r"^runway_exporter_records_total\{[^}]*\} (\S+)$", out, re.M))
    if counted != lines:
        sys.exit(f"scaling: {lines} lines, but records_total says {counted:.0f}")
    rss = int(open(rss_file).read().split()[-1])
    return usage.ru_utime + usage.ru_stime, rss, usage.ru_minflt


BASE = 10_000
paths = {n: corpus(n) for n in sizes}
paths[BASE] = os.path.join(work, f"corpus-{a.seed}-{BASE}.log")
with open(paths[BASE], "wb") as out:
    subprocess.run(["head", "-n", str(BASE), paths[sizes[0]]], stdout=out, check=True)
for path in paths.values():
    warm(path)
runs = {n: [] for n in [BASE] + sizes}
for _ in range(a.repeat):
    for n in runs:
        runs[n].append(run(paths[n], n))
rows = []
for n in runs:
    got = sorted(runs[n])
    cpu, rss, faults = got[len(got) // 2]
    rows.append((n, cpu, rss, max(r for _, r, _ in got), faults, got[0][0]))
(_, base, _, _, base_faults, _), rows = rows[0], rows[1:]

print(f"corpus seed {a.seed}, median of {a.repeat} runs per size, {os.uname().machine}, "
      f"{os.cpu_count()} cores")
print(f"{'lines':>11} {'CPU-s':>8} {'ns/line':>8} {'lines/CPU-s':>12} {'peak MiB':>9} {'max MiB':>8} "
      f"{'faults':>7} {'marginal ns/line':>17} {'fastest ns/line':>16}")
for n, cpu, rss, top, faults, best in rows:
    print(f"{n:>11,} {cpu:>8.3f} {cpu / n * 1e9:>8.1f} {n / cpu:>12,.0f} {rss / 1024:>9.1f} {top / 1024:>8.1f} "
          f"{faults:>7,} {(cpu - base) / (n - BASE) * 1e9:>17.1f} {best / n * 1e9:>16.1f}")
print(f"base run, {BASE:,} lines: {base * 1000:.1f} ms of CPU, {base_faults:,} page faults")

ok = True
for label, costs in (("median", [cpu / n for n, cpu, *_ in rows]), ("fastest", [r[5] / r[0] for r in rows])):
    spread = max(costs) / min(costs) - 1
    print(f"{'' if label == 'fastest' else chr(10)}cost per line ({label} runs): the dearest size costs "
          f"{spread:.1%} more than the cheapest (<= 10 %: {'ok' if spread <= 0.10 else 'FAILS'})")
    if label == "fastest":
        ok &= spread <= 0.10
big = [r for r in rows if r[0] >= 1_000_000]
if len(big) >= 2:
    growth = big[-1][2] / big[0][2] - 1
    verdict = "ok" if abs(growth) <= 0.10 else "FAILS"
    ok &= abs(growth) <= 0.10
    print(f"peak RSS from {big[0][0]:,} to {big[-1][0]:,} lines: {growth:+.1%} (within 10 %: {verdict})")
sys.exit(0 if ok else 1)
