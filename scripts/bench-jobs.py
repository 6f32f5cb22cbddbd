#!/usr/bin/env python3
"""One result row of bench.sh's scenario 6 (16 prefix jobs on one host):
each job's peak RSS (GNU time files in W/s6rss), the sampled total, and the
merged summary of scripts/parallel-prefixes.sh.

    bench-jobs.py VARIANT T0 T1 RC W OPTS
"""
import json
import os
import sys

variant, t0, t1, rc, w, opts = sys.argv[1:]
rss = {}
for p in sorted(os.listdir(os.path.join(w, "s6rss"))):
    try:
        rss[p] = int(open(os.path.join(w, "s6rss", p)).read().split()[-1])
    except (OSError, ValueError, IndexError):
        pass
try:
    summary = json.load(open(os.path.join(w, "s6state", "summary.json")))
    totals = summary["totals"]
except (OSError, ValueError, KeyError):
    totals = {"copied": 0, "copied_bytes": 0, "failed": -1}
try:
    sampled = int(open(os.path.join(w, "s6peak")).read().strip() or 0)
except (OSError, ValueError):
    sampled = 0
print(json.dumps({
    "scenario": 6, "tool": variant, "wall": float(t1) - float(t0), "rc": int(rc),
    "jobs": len(rss), "job_peak_kib": rss, "sum_of_peaks_kib": sum(rss.values()),
    "sampled_total_kib": sampled, "copied": totals["copied"],
    "copied_bytes": totals["copied_bytes"], "failed": totals["failed"], "opts": opts,
}))
