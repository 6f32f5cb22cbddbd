#!/usr/bin/env python3
"""Render docs/benchmarks.md from the raw results scripts/bench.sh saves.

    scripts/bench-report.py                 docs/bench/last-full.json (+ last-sweep.json)
    scripts/bench-report.py --stdout F.json one result file (bench.sh --quick,
                                            or --stores --quick)

With docs/bench/last-stores.json (bench.sh --stores), a section "Stores:
directories and S3 buckets (scenario 8)" follows scenarios 1-7's; with
docs/bench/last-concurrency.json (bench.sh --concurrency), a section
"Adaptive concurrency (scenario 9)" follows that.

    scripts/bench-report.py --s9-line       one row of scenario 9 (stdin) as
                                            lines for bench.sh's stderr

The "Where the time goes" section is docs/bench/where-time-goes.md, included
verbatim (written from profiles; see scripts/profile.sh).
"""
import json
import os
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "docs", "bench")

TARGETS = {
    "s1_ratio": 20.0,
    "s2_ratio": 0.70,
    "s2_cpu_per_gb": 3.0,
    "s3_wall": 30.0,
    "s3_rss_mib": 256.0,
    # Issue 10 (memory budget).
    "s1_ratio_before": 29.6,
    "s1_ratio_aim": 50.0,
    "s4_rss_mib": 320.0,
    "s4_throughput_vs_before": 0.95,
    "s3_huge_wall": 100.0,
    "s3_huge_rss_mib": 128.0,
}

MIB = 2 ** 20


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def f(x, nd=2):
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:,.{nd}f}"
    return f"{x:,}"


def verdict(ok):
    if ok is None:
        return "n/a"
    return "**PASS**" if ok else "**FAIL**"


def allruns(xs, nd=2):
    return ", ".join(f(x, nd) for x in xs)


def rows(run, **kw):
    return [r for r in run["rows"] if all(r.get(k) == v for k, v in kw.items())]


def kr_ok(r):
    return r["rc"] == 0 and r.get("report", {}).get("failed", 1) == 0


def s1_rate(r):
    # Blocks copied per second of wall time (whole process: start, index,
    # plan, copy, report).
    if not kr_ok(r) or r["report"]["copied"] != r["blocks"]:
        return None
    return r["report"]["copied"] / r["wall"]


def s2_bytes(r):
    if r["tool"].startswith("keep-rsync"):
        return r["report"]["copied_bytes"] if kr_ok(r) else None
    out = r.get("stdout") or {}
    return out.get("bytes") if r["rc"] == 0 and not out.get("errors") else None


def s2_mbps(r):
    b = s2_bytes(r)
    return b / r["wall"] / 1e6 if b else None


def s2_cpu_per_gb(r):
    b = s2_bytes(r)
    return (r["user"] + r["sys"]) / (b / 1e9) if b else None


def header(run, out):
    m = run["machine"]
    out.append(f"- Date: {run['date']}, commit `{run['commit']}`, mode `{run['mode']}`, "
               f"{run['seconds']:.0f} s in all.")
    out.append(f"- Machine: {m['nproc']} cores ({m['cpu']}), {m['mem_gib']} GiB, Linux {m['kernel']}; "
               f"load average before: {run.get('load_before', '?')}, when done: {run['load_after']}.")


def full_report(run, out):
    deft = run["default_transfers"]
    md5 = rows(run, scenario=2, tool="md5-speed")
    md5_mbps = md5[0]["stdout"]["mb_per_second"] if md5 and md5[0].get("stdout") else None
    md5_spgb = md5[0]["stdout"]["seconds_per_gb"] if md5 and md5[0].get("stdout") else None

    # Scenario 1
    s1_one = rows(run, scenario=1, transfers=1)
    s1_def = rows(run, scenario=1, tool="keep-rsync", transfers=deft)
    r1 = [s1_rate(r) for r in s1_one]
    rd = [s1_rate(r) for r in s1_def]
    m1, md_ = med(r1), med(rd)
    s1_ratio = md_ / m1 if m1 and md_ else None
    # Scenario 2
    kr2 = rows(run, scenario=2, tool="keep-rsync", transfers=deft)
    raw2 = rows(run, scenario=2, tool="rawcopy", transfers=deft)
    kr_mbps = med([s2_mbps(r) for r in kr2])
    raw_mbps = med([s2_mbps(r) for r in raw2])
    s2_ratio = kr_mbps / raw_mbps if kr_mbps and raw_mbps else None
    kr_cpu = med([s2_cpu_per_gb(r) for r in kr2])
    # Scenario 3
    s3 = {}
    for r in rows(run, scenario=3):
        s3.setdefault(r["blocks"], []).append(r)
    s3_10m = s3.get(10_000_000, [])
    s3_wall = med([r["wall"] for r in s3_10m if kr_ok(r)])
    s3_rss = med([r["maxrss_kib"] / 1024 for r in s3_10m if kr_ok(r)])
    rss_by_n = {n: med([r["maxrss_kib"] / 1024 for r in rs if kr_ok(r)]) for n, rs in s3.items()}

    out.append("## Summary\n")
    out.append("| target | measured (median) | target | result |")
    out.append("|---|---|---|---|")
    out.append(f"| 1. latency-bound: blocks/s, default (`--transfers {deft}`) ÷ `--transfers 1` | "
               f"{f(s1_ratio, 1)}× ({f(md_, 0)} vs {f(m1, 1)} blocks/s) | ≥ 20× | "
               f"{verdict(None if s1_ratio is None else s1_ratio >= TARGETS['s1_ratio'])} |")
    out.append(f"| 2. bandwidth-bound: MB/s keep-rsync ÷ rawcopy (same run, concurrency {deft}) | "
               f"{f(100 * s2_ratio if s2_ratio else None, 0)} % ({f(kr_mbps, 0)} vs {f(raw_mbps, 0)} MB/s) | ≥ 70 % | "
               f"{verdict(None if s2_ratio is None else s2_ratio >= TARGETS['s2_ratio'])} |")
    out.append(f"| 2. client CPU per GB copied (user+sys) | {f(kr_cpu)} s/GB (MD5 alone: {f(md5_spgb)} s/GB) | ≤ 3 s/GB | "
               f"{verdict(None if kr_cpu is None else kr_cpu <= TARGETS['s2_cpu_per_gb'])} |")
    out.append(f"| 3. index scale: `--dry-run` of 10^7 blocks, wall | {f(s3_wall, 1)} s | ≤ 30 s | "
               f"{verdict(None if s3_wall is None else s3_wall <= TARGETS['s3_wall'])} |")
    out.append(f"| 3. index scale: peak RSS of keep-rsync | {f(s3_rss, 0)} MiB | ≤ 256 MiB | "
               f"{verdict(None if s3_rss is None else s3_rss <= TARGETS['s3_rss_mib'])} |")
    ns = sorted(rss_by_n)
    if len(ns) >= 2 and all(rss_by_n[n] for n in ns):
        grow = rss_by_n[ns[-1]] / rss_by_n[ns[0]]
        out.append(f"| 3. memory does not grow with cluster size: peak RSS at {ns[-1]:,} ÷ at {ns[0]:,} blocks "
                   f"| {grow:.2f}× ({f(rss_by_n[ns[0]], 0)} → {f(rss_by_n[ns[-1]], 0)} MiB) | bounded, ≤ 256 MiB | "
                   f"{verdict(rss_by_n[ns[-1]] <= TARGETS['s3_rss_mib'])} |")
    big_summary(run, out, s1_ratio, s3)
    observed_summary(run, out)
    out.append("")

    out.append("## 1. Latency-bound copies\n")
    out.append("keepstore-sim, 10 ms added before every answer, 4 source + 4 destination services, "
               "2000 blocks of 1–16 KiB on 2 source services each, 2 replicas written. A fresh "
               "(empty) destination cluster for every run. Blocks/s = blocks copied ÷ wall time of "
               "the whole keep-rsync process (indexes, plan, copy, report).\n")
    out.append("| `--transfers` | blocks/s (median) | all runs (blocks/s) | wall s (all runs) | CPU s (median) | peak RSS MiB |")
    out.append("|---|---|---|---|---|---|")
    for t, rs in ((1, s1_one), (deft, s1_def)):
        out.append(f"| {t} | {f(med([s1_rate(r) for r in rs]), 1)} | {allruns([s1_rate(r) for r in rs], 1)} | "
                   f"{allruns([r['wall'] for r in rs])} | {f(med([r['user'] + r['sys'] for r in rs]))} | "
                   f"{f(med([r['maxrss_kib'] / 1024 for r in rs]), 0)} |")
    out.append(f"\nRatio: **{f(s1_ratio, 1)}×** (target ≥ 20×). `--transfers 1` is bound by "
               "one GET then two parallel PUTs per block, each ≥ 10 ms: ≥ 20 ms a block, ≤ 50 blocks/s.\n")

    out.append("## 2. Bandwidth-bound copies\n")
    out.append("48 blocks of 16–64 MiB (one replica each on a 4-service source, no signatures), "
               "copied to a fresh 4-service destination with 2 replicas, over loopback; the "
               "simulators (which MD5-check every PUT, as keepstore does) share the 2 cores with "
               "the client. `rawcopy` (`keepstore-sim rawcopy`) is the limit: the same GETs "
               "(from the first source holder) and PUTs (to the first 2 writable destination "
               "services in probe order) over the same HTTP stack (reqwest, HTTP/1.1, pooled) "
               "at the same concurrency, with no planning, no MD5, no retries. MB/s = block "
               "bytes copied ÷ process wall time (10^6 bytes).\n")
    out.append("| client | MB/s (median) | all runs (MB/s) | CPU s/GB (median) | CPU s/GB (all) | peak RSS MiB |")
    out.append("|---|---|---|---|---|---|")
    for name, rs in ((f"keep-rsync `--transfers {deft}`", kr2), (f"rawcopy `--concurrency {deft}`", raw2)):
        out.append(f"| {name} | {f(med([s2_mbps(r) for r in rs]), 0)} | {allruns([s2_mbps(r) for r in rs], 0)} | "
                   f"{f(med([s2_cpu_per_gb(r) for r in rs]))} | {allruns([s2_cpu_per_gb(r) for r in rs])} | "
                   f"{f(med([r['maxrss_kib'] / 1024 for r in rs]), 0)} |")
    out.append(f"\nMD5 of one core (`keepstore-sim md5-speed`, the `md-5` crate keep-rsync uses): "
               f"**{f(md5_mbps, 0)} MB/s** ({f(md5_spgb)} s/GB).\n")
    out.append(f"Ratio: **{f(100 * s2_ratio if s2_ratio else None, 0)} %** of the raw limit (target ≥ 70 %); "
               f"client CPU **{f(kr_cpu)} s/GB** (target ≤ 3 s/GB).\n")
    raw_cpu = med([s2_cpu_per_gb(r) for r in raw2])
    if kr_cpu and md5_spgb and raw_cpu:
        out.append(f"Of keep-rsync's {f(kr_cpu)} s/GB, MD5 at this run's one-core speed accounts for "
                   f"{f(md5_spgb)} s/GB ({100 * md5_spgb / kr_cpu:.0f} %); the rest, {f(kr_cpu - md5_spgb)} s/GB, "
                   f"is below rawcopy's whole cost ({f(raw_cpu)} s/GB: HTTP, socket copies, fresh "
                   "buffers). So the CPU target holds when one core hashes at ≥ "
                   f"{1 / max(3.0 - (kr_cpu - md5_spgb), 0.01):.2f} GB/s, i.e. MD5 ≤ "
                   f"{3.0 - (kr_cpu - md5_spgb):.2f} s/GB.\n")

    out.append("## 3. Index scale\n")
    out.append("`--dry-run` (fetch every index, diff, print counts and bytes, write nothing) over 4 "
               "source + 4 destination keepstore-sim services in synthetic-index mode: N distinct "
               "blocks, each on 2 source services (2N source lines), 90 % of them at the "
               "destination with 2 replicas (1.8N destination lines). Peak RSS is keep-rsync's "
               "(GNU time `%M`); index lines/s = the report's `index_lines` ÷ its `elapsed_seconds`.\n")
    out.append("| blocks N | runs | wall s (median) | wall s (all) | index lines | index lines/s | peak RSS MiB | RSS bytes per block | to copy |")
    out.append("|---|---|---|---|---|---|---|---|---|")
    for n in sorted(s3):
        rs = [r for r in s3[n] if kr_ok(r)]
        if not rs:
            out.append(f"| {n:,} | {len(s3[n])} | failed | | | | | | |")
            continue
        lines = rs[0]["report"]["index_lines"]
        lps = med([r["report"]["index_lines"] / r["report"]["elapsed_seconds"] for r in rs])
        rss = med([r["maxrss_kib"] for r in rs]) * 1024
        out.append(f"| {n:,} | {len(rs)} | {f(med([r['wall'] for r in rs]), 1)} | {allruns([r['wall'] for r in rs], 1)} | "
                   f"{lines:,} | {f(lps / 1e6, 2)} M | {f(rss / 2**20, 0)} | {f(rss / n, 1)} | "
                   f"{rs[0]['report']['plan']['to_copy']:,} |")
    out.append("\nThe design holds 20 bytes per index entry (16-byte hash + 4-byte size) for one "
               "hash sub-prefix pass at a time (`--index-budget` 4,000,000 lines per pass by "
               "default), so peak RSS is set by the budget, not by the cluster: the bytes-per-block "
               "column falls as N grows.\n")
    memory_report(run, out)
    check_report(run, out)
    observed_report(run, out)


def observed(run):
    """Issue 12: (name, unit, plain rows, observed rows, rate) of scenarios 1, 2."""
    deft = run["default_transfers"]
    return [
        ("latency-bound (1)", "blocks/s", rows(run, scenario=1, tool="keep-rsync", transfers=deft),
         rows(run, scenario=1, tool="keep-rsync-observed", transfers=deft), s1_rate),
        ("bandwidth-bound (2)", "MB/s", rows(run, scenario=2, tool="keep-rsync", transfers=deft),
         rows(run, scenario=2, tool="keep-rsync-observed", transfers=deft), s2_mbps),
    ]


def within_noise(plain, seen):
    """Observed median no lower than the plain runs' own spread (min) or 95 % of their median."""
    p = [x for x in plain if x is not None]
    m = med(seen)
    if not p or m is None:
        return None
    return m >= min(min(p), 0.95 * med(p))


def observed_summary(run, out):
    for name, unit, plain, seen, rate in observed(run):
        if not seen:
            continue
        p, o = [rate(r) for r in plain], [rate(r) for r in seen]
        mp, mo = med(p), med(o)
        out.append(f"| 12. {name}: {unit} with `-v`, JSON logs and metrics ÷ without (same run) | "
                   f"{f(100 * mo / mp if mo and mp else None, 0)} % ({f(mo, 0)} vs {f(mp, 0)} {unit}) | "
                   f"within noise | {verdict(within_noise(p, o))} |")


def observed_report(run, out):
    """Issue 12: what diagnostics and metrics cost in scenarios 1 and 2."""
    if not any(seen for _, _, _, seen, _ in observed(run)):
        return
    out.append("## Cost of diagnostics and metrics\n")
    out.append("Scenarios 1 and 2 run their default once more per round, *observed*: `-v` "
               "(retries, failovers, passes and index timings), `--log-format json`, "
               "`--metrics-textfile` rewritten every second (`--metrics-interval 1s`, 15 times "
               "the default rate) and `--metrics-addr 127.0.0.1:0` open, against the same "
               "clusters, interleaved with the plain runs. \"Within noise\": the observed "
               "median is at least the slowest plain run (or 95 % of the plain median).\n")
    out.append("| scenario | plain (median) | plain (all runs) | observed (median) | observed (all runs) | ratio | CPU s plain / observed | peak RSS MiB plain / observed |")
    out.append("|---|---|---|---|---|---|---|---|")
    for name, unit, plain, seen, rate in observed(run):
        p, o = [rate(r) for r in plain], [rate(r) for r in seen]
        mp, mo = med(p), med(o)
        cpu = lambda rs: f(med([r["user"] + r["sys"] for r in rs]))
        rss = lambda rs: f(med([r["maxrss_kib"] / 1024 for r in rs]), 0)
        out.append(f"| {name} | {f(mp, 0)} {unit} | {allruns(p, 0)} | {f(mo, 0)} {unit} | {allruns(o, 0)} | "
                   f"{f(100 * mo / mp if mo and mp else None, 0)} % | {cpu(plain)} / {cpu(seen)} | "
                   f"{rss(plain)} / {rss(seen)} |")
    out.append("")


def check_report(run, out):
    """Scenario 7: keep-block-check, index mode vs probe mode."""
    s7 = rows(run, scenario=7)
    if not s7:
        return
    n = s7[0]["blocks"]
    out.append("## 7. keep-block-check: indexes or one request per block\n")
    out.append(f"A list of {n:,} blocks checked against a 4-service keepstore-sim cluster in "
               "synthetic-index mode (each block on 2 services): the list is every service's "
               "index concatenated, so it names each block twice and every block is found. "
               "*index* (the default) reads each service's index once (plus the 1/4096 sizing "
               "probe); *probe* sends a `HEAD` per block through its probe order, "
               "`--transfers` (default) at a time; *probe, one at a time* is `--probe "
               "--transfers 1` over the `-prefix 0` sixteenth of the list, one block after "
               "another as the Go tool asks, for its blocks/s. Wall and peak RSS are the whole "
               "keep-block-check process (reading and sorting the list included).\n")
    out.append("| mode | blocks checked | errors | requests | wall s (median) | wall s (all) | blocks/s | peak RSS MiB (median) |")
    out.append("|---|---|---|---|---|---|---|---|")
    names = {"index": "index (default)", "probe": "`--probe`",
             "probe1": "`--probe --transfers 1` (`-prefix 0`)"}
    for mode in ("index", "probe", "probe1"):
        rs = [r for r in rows(run, scenario=7, tool="keep-block-check-" + mode)
              if r["rc"] == 0 and r.get("report")]
        if not rs:
            continue
        rep = rs[0]["report"]
        walls = [r["wall"] for r in rs]
        bps = med([r["report"]["attempts"] / r["wall"] for r in rs])
        out.append(f"| {names[mode]} | {rep['attempts']:,} | {rep['errors']} | {rep['requests']:,} | "
                   f"{f(med(walls), 1)} | {allruns(walls, 1)} | {f(bps, 0)} | "
                   f"{f(med([r['maxrss_kib'] / 1024 for r in rs]), 0)} |")
    out.append("\nOver a WAN each `HEAD` costs a round trip (10–100 ms), so one-at-a-time "
               "probing of 10^7 blocks takes hours to days; index mode's cost is the indexes' "
               "bytes, the same as keep-rsync's `--dry-run`.\n")


def big_rows(run, sc, tool):
    return [r for r in rows(run, scenario=sc, tool="keep-rsync-" + tool) if kr_ok(r)]


def big_mbps(r):
    return r["report"]["copied_bytes"] / r["wall"] / 1e6


def big_summary(run, out, s1_ratio, s3):
    """The summary rows of issue 10's targets (memory budget)."""
    after = big_rows(run, 4, "streamed")
    before = big_rows(run, 4, "before")
    if not after:
        return
    rss = med([r["maxrss_kib"] / 1024 for r in after])
    mb, mb0 = med([big_mbps(r) for r in after]), med([big_mbps(r) for r in before])
    out.append(f"| 4. one job, 64 MiB blocks, default flags: peak RSS | {f(rss, 0)} MiB "
               f"(before: {f(med([r['maxrss_kib'] / 1024 for r in before]), 0)} MiB) | ≤ 320 MiB | "
               f"{verdict(rss <= TARGETS['s4_rss_mib'])} |")
    if mb and mb0:
        out.append(f"| 4. one job, 64 MiB blocks: MB/s now ÷ before (same run) | {100 * mb / mb0:.0f} % "
                   f"({f(mb, 0)} vs {f(mb0, 0)} MB/s) | ≥ 95 % | "
                   f"{verdict(mb / mb0 >= TARGETS['s4_throughput_vs_before'])} |")
    if s1_ratio:
        ok = s1_ratio >= TARGETS["s1_ratio_before"]
        out.append(f"| 1. latency-bound ratio, against before's 29.6× (aim 50×) | {f(s1_ratio, 1)}× | "
                   f"≥ 29.6× | {verdict(ok)}{' (aim met)' if s1_ratio >= TARGETS['s1_ratio_aim'] else ''} |")
    huge = [r for r in s3.get(100_000_000, []) if kr_ok(r)]
    if huge:
        w, m = med([r["wall"] for r in huge]), med([r["maxrss_kib"] / 1024 for r in huge])
        out.append(f"| 3. `--dry-run` of 10^8 blocks: wall, peak RSS | {f(w, 1)} s, {f(m, 0)} MiB | "
                   f"≤ 100 s, ≤ 128 MiB | {verdict(w <= TARGETS['s3_huge_wall'] and m <= TARGETS['s3_huge_rss_mib'])} |")
    for r in rows(run, scenario=6):
        if r["tool"] == "memory4G":
            tot = r["sampled_total_kib"] / 1024
            out.append(f"| 6. 16 jobs on one host with `--memory 4G`: total RSS of all jobs (sampled) | "
                       f"{f(tot, 0)} MiB (sum of each job's peak: {f(r['sum_of_peaks_kib'] / 1024, 0)} MiB) | "
                       f"≤ 4096 MiB | {verdict(tot <= 4096 and r['rc'] == 0)} |")


def memory_report(run, out):
    """Scenarios 4-6: 64 MiB blocks, a slow link, 16 jobs on one host."""
    if not rows(run, scenario=4):
        return
    out.append("## 4. Memory: one job copying 64 MiB blocks\n")
    out.append("24 blocks of exactly 64 MiB (one replica each on a 4-service source), copied to a "
               "fresh 4-service destination with 2 replicas at default flags, over loopback. "
               "*before* is keep-rsync built from the baseline commit (main before the byte "
               "budget: `--transfers 32` blocks in memory at once); *streamed* is now (256 MiB "
               "`--buffer-memory`, replica writes following the read); *buffered* is now with "
               "`--no-streaming` (writes start once the block is verified).\n")
    big_table(run, 4, out)
    out.append("## 5. Streamed or buffered writes: a slow link\n")
    out.append("12 blocks of 64 MiB as in scenario 4, but every GET body is sent and every PUT "
               "body read at 32 MiB/s (`keepstore-sim --link-rate 32M`: one request's share of a "
               "long link, or a disk), so a block's read and its writes take time in proportion "
               "to its size. Buffered, a block costs its read then its writes (about 2 + 2 s); "
               "streamed, the writes follow the read (about 2 s). *before* holds all 12 blocks at "
               "once (its `--transfers 32`), trading memory for parallelism.\n")
    big_table(run, 5, out)
    s6 = rows(run, scenario=6)
    if s6:
        out.append("## 6. Sixteen prefix jobs on one host\n")
        out.append("`scripts/parallel-prefixes.sh -j 16` (all 16 prefix jobs at once) copying 96 "
                   "blocks of 64 MiB, 2 replicas. The source simulator shares one 64 MiB buffer "
                   "among its blocks (`--seed-shared-data`) and the destination keeps only sizes "
                   "(`--discard-data`), so the simulators stay small and the measured memory is "
                   "keep-rsync's. *Sum of peaks*: each job's own peak RSS (GNU time), added up (an "
                   "upper bound); *sampled total*: the most all keep-rsync processes held at one "
                   "moment (`ps`, 5 times a second).\n")
        out.append("| jobs run with | wall s | copied | failed | sum of peaks MiB | sampled total MiB | largest job MiB |")
        out.append("|---|---|---|---|---|---|---|")
        for r in s6:
            peaks = r.get("job_peak_kib") or {}
            name = {"before": "before (baseline binary)", "defaults": "now, default flags",
                    "memory4G": "now, `--memory 4G` (256 MiB a job)"}.get(r["tool"], r["tool"])
            out.append(f"| {name} | {f(r['wall'], 1)} | {r['copied']} | {r['failed']} | "
                       f"{f(r['sum_of_peaks_kib'] / 1024, 0)} | {f(r['sampled_total_kib'] / 1024, 0)} | "
                       f"{f(max(peaks.values()) / 1024 if peaks else None, 0)} |")
        out.append("")


def big_table(run, sc, out):
    out.append("| keep-rsync | MB/s (median) | all runs (MB/s) | wall s (all) | CPU s/GB (median) | peak RSS MiB (median) | peak RSS MiB (all) |")
    out.append("|---|---|---|---|---|---|---|")
    for tool in ("before", "streamed", "buffered"):
        rs = big_rows(run, sc, tool)
        if not rs:
            continue
        cpu = [(r["user"] + r["sys"]) / (r["report"]["copied_bytes"] / 1e9) for r in rs]
        out.append(f"| {tool} | {f(med([big_mbps(r) for r in rs]), 0)} | {allruns([big_mbps(r) for r in rs], 0)} | "
                   f"{allruns([r['wall'] for r in rs], 1)} | {f(med(cpu))} | "
                   f"{f(med([r['maxrss_kib'] / 1024 for r in rs]), 0)} | {allruns([r['maxrss_kib'] / 1024 for r in rs], 0)} |")
    out.append("")


def sweep_report(run, out):
    out.append("One run per value (scenario 1: 2000 × 1–16 KiB, 10 ms latency; scenario 2: "
               "48 × 16–64 MiB; rawcopy at the same concurrency).\n")
    out.append("| `--transfers` | S1 blocks/s | S2 keep-rsync MB/s | S2 rawcopy MB/s | S2 ratio | S2 CPU s/GB | S2 peak RSS MiB |")
    out.append("|---|---|---|---|---|---|---|")
    ts = sorted({r["transfers"] for r in run["rows"] if "transfers" in r})
    for t in ts:
        s1 = med([s1_rate(r) for r in rows(run, scenario=1, transfers=t)])
        k = rows(run, scenario=2, tool="keep-rsync", transfers=t)
        w = rows(run, scenario=2, tool="rawcopy", transfers=t)
        km, wm = med([s2_mbps(r) for r in k]), med([s2_mbps(r) for r in w])
        out.append(f"| {t} | {f(s1, 0)} | {f(km, 0)} | {f(wm, 0)} | "
                   f"{f(100 * km / wm if km and wm else None, 0)} % | {f(med([s2_cpu_per_gb(r) for r in k]))} | "
                   f"{f(med([r['maxrss_kib'] / 1024 for r in k]), 0)} |")
    out.append("")


def commands(run, out):
    seen = []
    for r in run["rows"]:
        c = r.get("cmd")
        key = (r.get("scenario"), r.get("tool"))
        if c and key not in [k for k, _ in seen]:
            seen.append((key, c))
    out.append("```")
    for (_, c) in seen:
        out.append(c)
    out.append("```\n")


# ------------------------------------------------------------ scenario 8
STORES_TARGETS = {
    "vs_rclone": 1.0,       # keep-rsync MB/s ÷ rclone's, same run
    "rss_fixed_mib": 64.0,  # peak RSS ≤ --buffer-memory + this
}

S8_COPIES = [
    # (direction, tool, label)
    ("dir-s3", "keep-rsync", "keep-rsync, PrefixLength 0"),
    ("dir-s3", "keep-rsync-p3", "keep-rsync, PrefixLength 3"),
    ("dir-s3", "keep-rsync-before", "keep-rsync before (`BENCH_S8_BEFORE`), PrefixLength 3"),
    ("dir-s3", "rclone", "rclone, best flags"),
    ("dir-s3", "rclone-defaults", "rclone, defaults (round 1 only)"),
    ("s3-dir", "keep-rsync", "keep-rsync, from PrefixLength 0"),
    ("s3-dir", "keep-rsync-p3", "keep-rsync, from PrefixLength 3"),
    ("s3-dir", "keep-rsync-before", "keep-rsync before (`BENCH_S8_BEFORE`), from PrefixLength 3"),
    ("s3-dir", "rclone", "rclone, best flags (its own bucket: PrefixLength 3 keys)"),
    ("sim-sim", "keep-rsync-sim", "keep-rsync, keepstore-sim → keepstore-sim"),
]
S8_DIRS = {"dir-s3": "directory → bucket", "s3-dir": "bucket → directory",
           "sim-sim": "through keepstore (baseline)"}


def s8_rows(run, data, d, tool):
    return [r for r in rows(run, scenario=8, data=data, dir=d, tool=tool)
            if r["rc"] == 0 and r.get("bytes")]


def s8_mbps(r):
    return r["bytes"] / r["wall"] / 1e6


def s8_cpu_gb(r):
    return (r["user"] + r["sys"]) / (r["bytes"] / 1e9)


def s8_srv_gb(r):
    return r["server_cpu"] / (r["bytes"] / 1e9)


def s8_durable(r):
    """MB/s until the copy is on disk: its wall time plus the `sync` after it."""
    return r["bytes"] / (r["wall"] + r["sync_after"]) / 1e6


def s8_ratio(run, data, d, tool, base="rclone", rate=s8_mbps):
    a = med([rate(r) for r in s8_rows(run, data, d, tool)])
    b = med([rate(r) for r in s8_rows(run, data, d, base)])
    return (a / b if a and b else None), a, b


def ms(seconds):
    x = 1000 * seconds
    return f(x, 2 if x < 10 else 0)


def s8_budget_mib(run):
    for r in rows(run, scenario=8):
        bm = (r.get("report") or {}).get("buffer_memory")
        if bm:
            return bm / MIB
    return 256.0


def s8_limit(run, r):
    """What held a copy back, from where the host's CPU time went while it ran."""
    nproc = run["machine"]["nproc"]
    w = r["wall"]
    client = (r["user"] + r["sys"]) / w
    server = r["server_cpu"] / w
    busy = r["host"]["busy"] / w
    iowait = r["host"]["iowait"] / w
    other = max(busy - client - server, 0.0)
    names = {"client": "the client", "server": "the server", "other": "other work (kernel writeback, other processes)"}
    top = max((("client", client), ("server", server), ("other", other)), key=lambda kv: kv[1])[0]
    if busy >= 0.85 * nproc:
        why = f"CPU: {busy:.1f} of {nproc} cores busy, most by {names[top]}"
    elif iowait >= 0.5:
        why = f"disk: {iowait:.1f} cores' worth of iowait"
    else:
        why = f"waiting: {nproc - busy:.1f} of {nproc} cores idle (requests in flight, fsync latency, serial steps)"
    return client, server, other, iowait, why


def stores_report(run, out):
    st = run.get("stores", {})
    nproc = run["machine"]["nproc"]
    budget = s8_budget_mib(run)
    rss_target = budget + STORES_TARGETS["rss_fixed_mib"]
    disk = rows(run, scenario=8, tool="disk-fsync")
    disk_mbps = disk[0]["bytes"] / disk[0]["wall"] / 1e6 if disk and disk[0]["rc"] == 0 else None
    datas = [d for d in ("big", "small") if rows(run, scenario=8, data=d)]

    out.append("## Stores: directories and S3 buckets (scenario 8)\n")
    if run["mode"] == "stores":
        out.append("Run apart from scenarios 1–7, by `scripts/bench.sh --stores` "
                   "(raw results: `docs/bench/last-stores.json`):\n")
    else:
        out.append(f"`scripts/bench.sh --stores --quick`: a smoke test of tiny data sets "
                   f"(mode `{run['mode']}`); the numbers mean little.\n")
    header(run, out)
    loads = [float(run.get(k, "0").split()[0]) for k in ("load_before", "load_after")]
    if max(loads) > nproc * 0.5:
        out.append(f"- **Load average {max(loads):.1f}** on {nproc} cores at the start or end of the run: "
                   "absolute numbers may be low; the ratios compare runs interleaved in the same invocation.")
    out.append(f"- versitygw {st.get('versitygw', '?')} (posix backend), {st.get('rclone', '?')}; "
               f"data on {st.get('filesystem', '?')} (the work directory's disk, page cache warm); "
               f"that disk wrote {f(disk_mbps, 0)} MB/s with fsync "
               f"(`dd conv=fsync` of {f(disk[0]['bytes'] // MIB if disk else None)} MiB, same run).\n")
    sets = []
    for d in datas:
        rs = rows(run, scenario=8, data=d)
        n = rs[0]["blocks"]
        size = next((r["bytes"] for r in rs if r.get("bytes")), None)
        kind = {"big": "of 64 MiB", "small": "of 4–64 KiB"}[d]
        sets.append(f"*{d}*: {n:,} blocks {kind} ({f(size / MIB if size else None, 0)} MiB)")
    out.append("One S3 server, versitygw on 127.0.0.1 (posix backend: a bucket is a directory, an "
               "object a file written to a temp file and renamed, with its checksums in xattrs; it "
               "checks `Content-MD5`), on the same disk as the source directory. Data sets, random "
               "bytes named by MD5 in keepstore's Directory layout `SRC/xyz/HASH` (written by "
               "keepstore-sim's seeding): " + "; ".join(sets) + ". "
               f"Each of {st.get('runs', '?')} round{'' if st.get('runs') == 1 else 's'} copies each set "
               "with every tool in turn, "
               "into a fresh empty bucket or directory (deleted afterwards): "
               "keep-rsync at default flags (`--src-volume-dir SRC --dst-volumes VOLS.yml -q`, one S3 "
               "volume, `PrefixLength` 0, keepstore's default, or 3, the `xyz/HASH` keys rclone makes "
               "of the same files; each block is one PUT with `Content-MD5` plus an empty "
               "`recent/` marker PUT), and `rclone copy` with its best flags "
               f"(`{st.get('rclone_best', '--transfers 32 --checkers 16 --no-check-dest')}`, plus "
               "`--s3-no-check-bucket --s3-no-head` to a bucket), once with its defaults. "
               "Back from the bucket, keep-rsync reads each of its two buckets "
               "(`--src-volumes VOLS.yml --dst-volume-dir DST`), rclone its own. The baseline: "
               "keep-rsync between two 1-service keepstore-sim clusters whose directory stores are on "
               "the same disk (the source's is the data set), `-replications 1`. After each copy "
               "every block is counted (names, sizes, keep-rsync's markers; MD5 of two), or the "
               "scenario stops.\n")
    out.append("Not the same durability: keep-rsync's directory writes (and keepstore-sim's) fsync "
               "each block and its directory before the rename; rclone's local writes and versitygw's "
               "object writes do not fsync (checked with strace). *Sync after* is how long `sync -f` "
               "then took to put what the copy left in the page cache on disk: wall + sync after is "
               "the time until the copy is durable, and the targets compare MB/s until durable "
               "(keep-rsync's fsyncs are inside its wall time, rclone's `sync` is added to its). "
               "MB/s = the data set's bytes ÷ process wall "
               "time (10^6 bytes); CPU = user+sys of the client (GNU time), *server CPU* = versitygw's "
               "(both simulators' in the baseline) from `/proc/PID/stat` before and after.\n")

    # Summary
    out.append("| target | measured (median) | target | result |")
    out.append("|---|---|---|---|")
    for d in datas:
        for dd in ("dir-s3", "s3-dir"):
            r3, a3, b = s8_ratio(run, d, dd, "keep-rsync-p3", rate=s8_durable)
            r0, a0, _ = s8_ratio(run, d, dd, "keep-rsync", rate=s8_durable)
            rb, ab, _ = s8_ratio(run, d, dd, "keep-rsync-before", rate=s8_durable)
            before = "" if rb is None else f"; before: {f(rb)}× ({f(ab, 0)} MB/s), now {f(a3 / ab if a3 and ab else None)}× before"
            out.append(f"| {d}, {S8_DIRS[dd]}: MB/s until durable, keep-rsync ÷ rclone (PrefixLength 3, rclone's layout) | "
                       f"{f(r3)}× ({f(a3, 0)} vs {f(b, 0)} MB/s); PrefixLength 0: {f(r0)}× ({f(a0, 0)} MB/s){before} | "
                       f"≥ {STORES_TARGETS['vs_rclone']:.1f}× | "
                       f"{verdict(None if r3 is None else r3 >= STORES_TARGETS['vs_rclone'])} |")
    krs = [r for r in rows(run, scenario=8) if r.get("tool", "").startswith("keep-rsync")
           and r.get("dir") in ("dir-s3", "s3-dir") and r["rc"] == 0]
    if krs:
        peak = max(krs, key=lambda r: r["maxrss_kib"])
        out.append(f"| keep-rsync peak RSS, largest of every directory/bucket copy | "
                   f"{f(peak['maxrss_kib'] / 1024, 0)} MiB ({peak['data']}, {S8_DIRS[peak['dir']]}) | "
                   f"≤ {f(budget, 0)} MiB `--buffer-memory` + {f(STORES_TARGETS['rss_fixed_mib'], 0)} = "
                   f"{f(rss_target, 0)} MiB | {verdict(peak['maxrss_kib'] / 1024 <= rss_target)} |")
    out.append("")

    for d in datas:
        n = rows(run, scenario=8, data=d)[0]["blocks"]
        out.append(f"### {d}: {n:,} blocks\n")
        out.append("| copy | tool | MB/s (median) | all runs (MB/s) | blocks/s | CPU s/GB | server CPU s/GB "
                   "| peak RSS MiB | sync after s | MB/s until durable | until durable ÷ rclone |")
        out.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for dd, tool, label in S8_COPIES:
            rs = s8_rows(run, d, dd, tool)
            if not rs:
                continue
            ratio = "–"
            if tool.startswith("keep-rsync") and dd != "sim-sim":
                ratio = f(s8_ratio(run, d, dd, tool, rate=s8_durable)[0]) + "×"
            out.append(f"| {S8_DIRS[dd]} | {label} | {f(med([s8_mbps(r) for r in rs]), 0)} | "
                       f"{allruns([s8_mbps(r) for r in rs], 0)} | {f(med([r['blocks'] / r['wall'] for r in rs]), 0)} | "
                       f"{f(med([s8_cpu_gb(r) for r in rs]))} | {f(med([s8_srv_gb(r) for r in rs]))} | "
                       f"{f(med([r['maxrss_kib'] / 1024 for r in rs]), 0)} | "
                       f"{f(med([r['sync_after'] for r in rs]))} | "
                       f"{f(med([r['bytes'] / (r['wall'] + r['sync_after']) / 1e6 for r in rs]), 0)} | {ratio} |")
        out.append("")

    out.append("### What limits each\n")
    out.append("Where the host's CPU time went while each copy ran (medians; cores = CPU seconds ÷ "
               "wall seconds): the client, the server(s), everything else (`/proc/stat` busy time "
               "minus both: the kernel's writeback, other processes), and iowait. The last column "
               f"is read off them: *CPU* when at least 85 % of the {nproc} cores were busy, *disk* when "
               "iowait reached half a core, else *waiting*.\n")
    out.append("| data | copy | tool | wall s | client cores | server cores | other cores | iowait cores | limit |")
    out.append("|---|---|---|---|---|---|---|---|---|")
    for d in datas:
        for dd, tool, label in S8_COPIES:
            rs = s8_rows(run, d, dd, tool)
            if not rs:
                continue
            # the median run by wall time
            r = sorted(rs, key=lambda r: r["wall"])[len(rs) // 2]
            client, server, other, iow, why = s8_limit(run, r)
            out.append(f"| {d} | {S8_DIRS[dd]} | {label} | {f(r['wall'])} | {f(client)} | {f(server)} | "
                       f"{f(other)} | {f(iow)} | {why} |")
    out.append("")
    for d in datas:
        kr = s8_rows(run, d, "dir-s3", "keep-rsync")
        rc = s8_rows(run, d, "dir-s3", "rclone")
        if kr and rc:
            out.append(f"- {d}, directory → bucket: versitygw spent {f(med([s8_srv_gb(r) for r in kr]))} CPU s per GB "
                       f"written by keep-rsync and {f(med([s8_srv_gb(r) for r in rc]))} for rclone; the clients "
                       f"{f(med([s8_cpu_gb(r) for r in kr]))} and {f(med([s8_cpu_gb(r) for r in rc]))} s/GB. "
                       f"At {nproc} cores, server and client together allow at most "
                       f"{f(nproc / (med([s8_srv_gb(r) + s8_cpu_gb(r) for r in kr]) or 1e9), 2)} GB/s for "
                       f"keep-rsync's copy (measured: {f(med([s8_mbps(r) for r in kr]) / 1000, 2)} GB/s). "
                       f"Per block, versitygw spent {ms(med([r['server_cpu'] / r['blocks'] for r in kr]))} ms "
                       f"of CPU for keep-rsync (a data PUT and a `recent/` marker PUT) and "
                       f"{ms(med([r['server_cpu'] / r['blocks'] for r in rc]))} ms for rclone (one PUT).")
        kb = s8_rows(run, d, "s3-dir", "keep-rsync")
        rb = s8_rows(run, d, "s3-dir", "rclone")
        if kb and rb:
            out.append(f"- {d}, bucket → directory: keep-rsync {f(med([s8_mbps(r) for r in kb]), 0)} MB/s "
                       f"fsyncing every block, rclone {f(med([s8_mbps(r) for r in rb]), 0)} MB/s then "
                       f"{f(med([r['sync_after'] for r in rb]))} s of `sync`: until durable, "
                       f"{f(med([r['wall'] + r['sync_after'] for r in kb]))} s vs "
                       f"{f(med([r['wall'] + r['sync_after'] for r in rb]))} s.")
        sim = s8_rows(run, d, "sim-sim", "keep-rsync-sim")
        if sim and kr and kb:
            msim = med([s8_mbps(r) for r in sim])
            out.append(f"- {d}, through keepstore-sim: {f(msim, 0)} MB/s, the simulators spending "
                       f"{f(med([s8_srv_gb(r) for r in sim]))} CPU s/GB (MD5 of every PUT, fsyncs); keep-rsync "
                       f"straight to a bucket ran at {f(med([s8_mbps(r) for r in kr]) / msim)}×, from a bucket "
                       f"to a directory at {f(med([s8_mbps(r) for r in kb]) / msim)}× that.")
    notes = os.path.join(BENCH, "stores-notes.md")
    if os.path.exists(notes) and run["mode"] == "stores":
        out.append("")
        out.append(open(notes).read().strip())
    out.append("")
    out.append("Commands (`$W` the script's work directory; versitygw runs as `versitygw --access A "
               "--secret S --region us-east-1 --port 127.0.0.1:PORT --health /health --keep-alive "
               "--quiet posix $W/s8/gw`; `$W/s8/p0.yml` names one `Driver: S3` volume "
               "`zzzzz-nyw5e-000000000000000`, `Replication: 1`, with `Bucket`, `Endpoint`, `Region`, "
               "`AccessKeyID`, `SecretAccessKey` and `PrefixLength: 0`, `p3.yml` the same with 3; "
               "`rclone.conf` is `type = s3`, `provider = Other`, `force_path_style = true` and the same "
               "endpoint and keys; the baseline's clusters are `keepstore-sim --services 1 --data-dir "
               "DIR`):\n")
    seen = {}
    for r in rows(run, scenario=8):
        seen.setdefault((r.get("dir"), r["tool"]), r["cmd"])
    out.append("```")
    out.extend(seen.values())
    out.append("```\n")


# ------------------------------------------------------------ scenario 9
CONC_TARGETS = {
    "a_ratio": 50.0,          # blocks/s, default flags ÷ --transfers 1
    "b_late_refused": 0.01,   # adaptive: refused ÷ PUTs after the first seconds
    "b_vs_best": 0.90,        # adaptive blocks/s ÷ the best fixed K's
    "c_late_refused": 0.01,   # 16 jobs, adaptive: refused ÷ PUTs after the first seconds
    "c_fairness": 0.90,       # 16 jobs, adaptive: Jain's index of the per-job blocks/s
}
S9_LATE_AFTER = 2.0  # seconds: "after the first seconds" of a copy


def s9_rate(r):
    """Blocks copied per second of the process's wall time (None unless complete)."""
    rep = r.get("report") or {}
    plan = rep.get("plan") or {}
    if not kr_ok(r) or not rep.get("copied") or rep["copied"] != plan.get("to_copy"):
        return None
    return rep["copied"] / r["wall"]


def s9_counts(sample):
    """A sample's counters, summed over its services (max_in_flight: the largest)."""
    tot = {"puts": 0, "refused": 0, "gets": 0, "heads": 0, "index_requests": 0, "max_in_flight": 0}
    for c in (sample.get("counters") or {}).values():
        if "error" in c:
            continue
        for k in tot:
            v = c.get(k) or 0
            tot[k] = max(tot[k], v) if k == "max_in_flight" else tot[k] + v
    return tot


def s9_final(r):
    s = r.get("series") or []
    return s9_counts(s[-1]) if s else None


def s9_refused(r):
    c = s9_final(r)
    return c["refused"] / c["puts"] if c and c["puts"] else None


def s9_late(r, after=S9_LATE_AFTER):
    """Refused ÷ PUTs from the first sample at or past AFTER s to the end."""
    s = r.get("series") or []
    if len(s) < 2:
        return None
    at = next((x for x in s[:-1] if x["t"] >= after), None)
    if at is None:
        return None
    a, b = s9_counts(at), s9_counts(s[-1])
    dp = b["puts"] - a["puts"]
    return (b["refused"] - a["refused"]) / dp if dp > 0 else None


def s9_t_stored(r, frac=0.95):
    """Seconds until FRAC of the blocks the destination stored were stored
    (its puts_stored, interpolated between samples): the copy without its
    tail of blocks waiting to be retried."""
    s = [(x["t"], s9_stored(x)) for x in r.get("series") or []]
    if len(s) < 2 or not s[-1][1]:
        return None
    want = frac * s[-1][1]
    for (t0, n0), (t1, n1) in zip(s, s[1:]):
        if n1 >= want:
            t = t0 + (t1 - t0) * (want - n0) / (n1 - n0) if n1 > n0 else t1
            return min(t, r["wall"])  # all was stored when the copy ended
    return None


def s9_stored(sample):
    return sum((c.get("puts_stored") or 0) for c in (sample.get("counters") or {}).values() if "error" not in c)


def s9_limits(sample, side):
    """Every limit of SIDE's services in a sample (one per job and service)."""
    return [v for k, jobs in (sample.get("limits") or {}).items() if k.split(" ")[0] == side
            for v in jobs.values()]


def s9_dst_limit(sample, many):
    """The destination's limit in a sample: the largest over services (one
    job), or the sum over the running jobs (16 jobs, one service)."""
    ls = s9_limits(sample, "destination")
    if not ls:
        return None
    return sum(ls) if many else max(ls)


def s9_peak(r, side):
    ls = [v for x in (r.get("series") or []) for v in s9_limits(x, side)]
    return max(ls) if ls else None


def s9_label(r):
    v = r.get("variant", "")
    if v == "adaptive":
        return "default flags (adaptive)"
    if v == "transfers1":
        return "`--transfers 1` (`-prefix 0`)"
    if v.startswith("fixed"):
        return f"`--fixed-concurrency --max-per-service {v[5:]}`"
    return v


def s9_jobs_rates(r):
    """Per-job blocks/s of a 16-job row (report copied ÷ elapsed_seconds)."""
    return [j["copied"] / j["elapsed_seconds"] for j in r.get("jobs", [])
            if j.get("copied") and j.get("elapsed_seconds")]


def s9_jain(xs):
    """Jain's fairness index of XS: 1 when all are equal, 1/n when one has all."""
    xs = [x for x in xs if x is not None]
    if not xs or not any(xs):
        return None
    return sum(xs) ** 2 / (len(xs) * sum(x * x for x in xs))


def s9_c_ok(r):
    return all(j.get("rc") == 0 and j.get("failed") == 0 and j.get("copied") == j.get("to_copy")
               for j in r.get("jobs", [])) and len(r.get("jobs", [])) == 16


def s9_c_copied(r):
    return sum(j.get("copied") or 0 for j in r.get("jobs", []))


def s9_pct(x, nd=1):
    return "–" if x is None else f"{100 * x:.{nd}f} %"


def s9_sizes(x):
    """1K-16K -> 1–16 KiB"""
    lo, _, hi = x.partition("-")
    if hi and lo[-1:] == hi[-1:] and hi[-1:] in "KMG":
        return f"{lo[:-1]}–{hi[:-1]} {hi[-1]}iB"
    return x


def s9_line(r):
    """One line on stderr per scenario 9 copy (bench.sh, as it goes)."""
    many = r.get("sub") == "c"
    fin = s9_final(r) or {}
    seq = [s9_dst_limit(x, many) for x in r.get("series") or []]
    seq = " ".join("-" if v is None else str(v) for v in seq)
    refused = s9_refused(r)
    late = s9_late(r)
    if many:
        rates = sorted(s9_jobs_rates(r))
        head = (f"bench: scenario 9c {r['variant']:<10} wall {r['wall']:6.2f}s  copied {s9_c_copied(r)}/{r['blocks']}"
                f"  failed {sum(j.get('failed') or 0 for j in r['jobs'])}  rc {r['rc']}"
                f"  job blocks/s min/med/max {f(min(rates) if rates else None, 0)}/"
                f"{f(med(rates), 0)}/{f(max(rates) if rates else None, 0)}")
        lim = "sum of running jobs' destination limits"
    else:
        rep = r.get("report") or {}
        lat = f" {r['latency_ms']} ms" if "latency_ms" in r else ""
        head = (f"bench: scenario 9{r['sub']}{lat} {r['variant']:<10} {f(s9_rate(r), 0)} blocks/s"
                f"  (copied {rep.get('copied')}/{(rep.get('plan') or {}).get('to_copy')}, wall {r['wall']:.2f}s, rc {r['rc']})"
                f"  peak limits src {s9_peak(r, 'source')} dst {s9_peak(r, 'destination')}")
        lim = "destination limit"
    t95 = s9_t_stored(r)
    return (f"{head}\nbench:   destination: PUTs {fin.get('puts')}  refused {fin.get('refused')} ({s9_pct(refused, 2)}; "
            f"after {S9_LATE_AFTER:.0f} s: {s9_pct(late, 2)})  max in flight {fin.get('max_in_flight')}"
            f"  95 % stored at {f(t95)} s\n"
            f"bench:   {lim} every 0.5 s: {seq}")


def s9_series_table(r, out, many):
    out.append("| t s | PUTs | refused | refused ÷ PUTs in the interval | in flight at the destination | "
               + ("running jobs | sum of their destination limits | smallest / largest job limit |"
                  if many else "destination limit | source limits |"))
    out.append("|---|---|---|---|---|" + ("---|---|---|" if many else "---|---|"))
    prev = None
    for x in r.get("series") or []:
        c = s9_counts(x)
        infl = sum((v.get("in_flight") or 0) for v in (x.get("counters") or {}).values() if "error" not in v)
        if prev is not None and c["puts"] > prev["puts"]:
            iv = s9_pct((c["refused"] - prev["refused"]) / (c["puts"] - prev["puts"]))
        else:
            iv = "–"
        d = s9_limits(x, "destination")
        if many:
            tail = (f"{len(d)} | {sum(d) if d else '–'} | "
                    f"{(str(min(d)) + ' / ' + str(max(d))) if d else '–'} |")
        else:
            s = s9_limits(x, "source")
            tail = f"{max(d) if d else '–'} | {', '.join(map(str, s)) if s else '–'} |"
        t = "start" if x["t"] <= 0 else f"{x['t']:.1f}"
        out.append(f"| {t} | {c['puts']:,} | {c['refused']:,} | {iv} | {infl} | {tail}")
        prev = c
    out.append("")


def s9_late_row(out, what, rs, target):
    """A summary row: WHAT after the first seconds of the runs RS, against CONC_TARGETS[TARGET]."""
    late = [s9_late(r) for r in rs]
    ml = med(late)
    out.append(f"| {what} after the first {S9_LATE_AFTER:.0f} s | {s9_pct(ml, 2)} "
               f"(all runs: {', '.join(s9_pct(x, 2) for x in late)}) | "
               f"≤ {100 * CONC_TARGETS[target]:.0f} % | "
               f"{verdict(None if ml is None else ml <= CONC_TARGETS[target])} |")


def s9_median_row(rs, key):
    ok = [r for r in rs if key(r) is not None]
    if not ok:
        return None
    return sorted(ok, key=key)[len(ok) // 2]


def concurrency_report(run, out):
    meta = run.get("concurrency", {})
    nproc = run["machine"]["nproc"]
    a, b, c = meta.get("a", {}), meta.get("b", {}), meta.get("c", {})
    out.append("## Adaptive concurrency (scenario 9)\n")
    if run["mode"] == "concurrency":
        out.append("Run apart from scenarios 1–8, by `scripts/bench.sh --concurrency` "
                   "(raw results: `docs/bench/last-concurrency.json`):\n")
    else:
        out.append(f"`scripts/bench.sh --concurrency --quick`: a smoke test of tiny data sets "
                   f"(mode `{run['mode']}`); the numbers mean little.\n")
    header(run, out)
    loads = [float(run.get(k, "0").split()[0]) for k in ("load_before", "load_after")]
    if max(loads) > nproc * 0.5:
        out.append(f"- **Load average {max(loads):.1f}** on {nproc} cores at the start or end of the run: "
                   "absolute numbers may be low; the ratios compare runs interleaved in the same invocation.")
    out.append("")
    small = meta.get("small_keepstore", "--max-concurrent-requests 32 --max-queued-requests 0 --queue-latency-us 500")
    out.append("keep-rsync's per-service limits (each service's requests in flight: slow start from 8, "
               "cut to 70 % by the first 503 or 429 of a round trip and to 90 % by each further one, growth "
               "stopped by GET headers or small PUTs slower than twice the idle round trip and held for a "
               "round trip after a cut, growth per round trip halved by each refusal and regrown by "
               "successes (steering to 0.5 % refused: N jobs sharing a store each grow about 1/N as "
               "fast), floor 1, up to "
               "`--max-per-service`, default 128; a refused request is retried after an eighth of "
               "`--retry-backoff`) against fixed "
               "ones (`--fixed-concurrency`: the limit is `--max-per-service`; the default before was "
               "`--fixed-concurrency --max-per-service 16`). keepstore-sim clusters on 127.0.0.1 sharing "
               f"the {nproc} cores with keep-rsync; a fresh, empty destination for every copy. The *small "
               f"keepstore* is one keepstore-sim service with `{small}`: at most 32 requests at once, "
               "the rest answered 503 at once (keepstore's `MaxConcurrentRequests` with no queue), each "
               "answer 0.5 ms later per request in flight. Every copy rewrites its metrics textfile every "
               "250 ms; a sampler reads the destination's `/_sim/counters` and the "
               "`keep_rsync_service_concurrency_limit` of every running job every 0.5 s, and once when "
               "the copy is done. Blocks/s = blocks copied ÷ the process's wall time (start, indexes, "
               f"plan, copy, report). Each of {meta.get('runs', '?')} round"
               f"{'' if meta.get('runs') == 1 else 's'} runs every variant of a part in turn.\n")

    a_rows = rows(run, scenario=9, sub="a")
    b_rows = rows(run, scenario=9, sub="b")
    c_rows = rows(run, scenario=9, sub="c")

    # Summary
    out.append("| target | measured (median) | target | result |")
    out.append("|---|---|---|---|")
    lats = sorted({r["latency_ms"] for r in a_rows})
    for lat in lats:
        d = med([s9_rate(r) for r in a_rows if r["latency_ms"] == lat and r["variant"] == "adaptive"])
        o = med([s9_rate(r) for r in a_rows if r["latency_ms"] == lat and r["variant"] == "transfers1"])
        ratio = d / o if d and o else None
        out.append(f"| a. latency-bound, {lat} ms: blocks/s, default flags ÷ `--transfers 1` | "
                   f"{f(ratio, 1)}× ({f(d, 0)} vs {f(o, 1)} blocks/s) | ≥ {CONC_TARGETS['a_ratio']:.0f}× | "
                   f"{verdict(None if ratio is None else ratio >= CONC_TARGETS['a_ratio'])} |")
    best = None
    if b_rows:
        ad = [r for r in b_rows if r["variant"] == "adaptive"]
        s9_late_row(out, "b. small keepstore, one job: 503s ÷ PUTs of the adaptive run", ad, "b_late_refused")
        fixed = {}
        for r in b_rows:
            if r["variant"].startswith("fixed"):
                fixed.setdefault(int(r["variant"][5:]), []).append(s9_rate(r))
        fmed = {k: med(v) for k, v in fixed.items() if med(v)}
        mad = med([s9_rate(r) for r in ad])
        if fmed:
            best = max(fmed, key=fmed.get)
        ratio = mad / fmed[best] if mad and best else None
        out.append(f"| b. small keepstore, one job: blocks/s adaptive ÷ the best fixed K | "
                   f"{s9_pct(ratio, 0)} ({f(mad, 0)} vs {f(fmed.get(best), 0)} blocks/s at K = {best}) | "
                   f"≥ {100 * CONC_TARGETS['b_vs_best']:.0f} % | "
                   f"{verdict(None if ratio is None else ratio >= CONC_TARGETS['b_vs_best'])} |")
    if c_rows:
        ad = [r for r in c_rows if r["variant"] == "adaptive"]
        s9_late_row(out, "c. 16 prefix jobs sharing the small keepstore: 503s ÷ PUTs", ad, "c_late_refused")
        jain = [s9_jain(s9_jobs_rates(r)) for r in ad]
        mj = med(jain)
        out.append(f"| c. 16 prefix jobs: fairness, Jain's index of the per-job blocks/s (1 = equal shares) | "
                   f"{f(mj, 3)} (all runs: {', '.join(f(x, 3) for x in jain)}) | "
                   f"≥ {CONC_TARGETS['c_fairness']:.2f} | "
                   f"{verdict(None if mj is None else mj >= CONC_TARGETS['c_fairness'])} |")
    out.append("")

    if a_rows:
        out.append(f"### a) latency-bound\n")
        out.append(f"{a.get('blocks', '?'):,} blocks of {s9_sizes(a.get('sizes', '1K-16K'))}, each on both "
                   f"of 2 source services, copied to 4 destination services with 2 replicas; every "
                   "service (source and destination) adds the latency before each answer. `--transfers 1` "
                   "copies the `-prefix 0` sixteenth of the blocks (one block at a time, at least a GET "
                   "and then two parallel PUTs each: ≥ 2 latencies a block), the others all of them. "
                   "*Old default*: `--fixed-concurrency --max-per-service 16`. *Peak limits*: the "
                   "largest per-service limit sampled.\n")
        out.append("| latency | keep-rsync | blocks copied | blocks/s (median) | all runs (blocks/s) | ÷ `--transfers 1` "
                   "| ÷ old default | wall s (all runs) | CPU s (median) | peak limits source / destination | max in flight at a destination service |")
        out.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for lat in lats:
            o = med([s9_rate(r) for r in a_rows if r["latency_ms"] == lat and r["variant"] == "transfers1"])
            old = med([s9_rate(r) for r in a_rows if r["latency_ms"] == lat and r["variant"] == "fixed16"])
            for v in ("adaptive", "fixed16", "transfers1"):
                rs = [r for r in a_rows if r["latency_ms"] == lat and r["variant"] == v]
                if not rs:
                    continue
                m = med([s9_rate(r) for r in rs])
                copied = (rs[0].get("report") or {}).get("copied")
                out.append(f"| {lat} ms | {s9_label(rs[0])} | {f(copied)} | {f(m, 1 if v == 'transfers1' else 0)} | "
                           f"{allruns([s9_rate(r) for r in rs], 1 if v == 'transfers1' else 0)} | "
                           f"{(f(m / o, 1) + '×') if m and o and v != 'transfers1' else '–'} | "
                           f"{(f(m / old, 2) + '×') if m and old and v == 'adaptive' else '–'} | "
                           f"{allruns([r['wall'] for r in rs])} | {f(med([r['user'] + r['sys'] for r in rs]))} | "
                           f"{f(med([s9_peak(r, 'source') for r in rs]), 0)} / "
                           f"{f(med([s9_peak(r, 'destination') for r in rs]), 0)} | "
                           f"{f(med([(s9_final(r) or {}).get('max_in_flight') for r in rs]), 0)} |")
        out.append("")

    if b_rows:
        out.append("### b) one job into a small keepstore\n")
        out.append(f"{b.get('blocks', '?'):,} blocks of {s9_sizes(b.get('sizes', '4K-64K'))}, one replica each "
                   "on 2 source services (no added latency), copied with 1 replica to the small keepstore "
                   f"with `--latency-ms {b.get('dst_latency_ms', 2)}` as well (a PUT takes 2 ms + 0.5 ms × "
                   "the requests in flight: 18 ms at the limit of 32). *Refused*: the destination's 503s ÷ "
                   f"its PUTs (a refused PUT is retried after `--retry-backoff`, 1 s, doubling); *after "
                   f"{S9_LATE_AFTER:.0f} s*: the same from the first sample past {S9_LATE_AFTER:.0f} s to the end; "
                   "*s to 95 % stored*: when the destination had stored 95 % of the blocks (its "
                   "`puts_stored`, interpolated between samples), i.e. the copy without the tail of "
                   "blocks waiting for their retry.\n")
        out.append("| keep-rsync | blocks/s (median) | all runs (blocks/s) | ÷ best fixed | wall s (all runs) | "
                   "s to 95 % stored (median) | "
                   f"refused ÷ PUTs (median) | after {S9_LATE_AFTER:.0f} s (median) | max in flight (median) | "
                   "peak destination limit | CPU s (median) | complete runs |")
        out.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
        variants = ["adaptive"] + sorted({r["variant"] for r in b_rows if r["variant"].startswith("fixed")},
                                         key=lambda v: int(v[5:]))
        bm = med([s9_rate(r) for r in b_rows if best is not None and r["variant"] == f"fixed{best}"])
        for v in variants:
            rs = [r for r in b_rows if r["variant"] == v]
            m = med([s9_rate(r) for r in rs])
            out.append(f"| {s9_label(rs[0])} | {f(m, 0)} | {allruns([s9_rate(r) for r in rs], 0)} | "
                       f"{s9_pct(m / bm if m and bm else None, 0)} | {allruns([r['wall'] for r in rs])} | "
                       f"{f(med([s9_t_stored(r) for r in rs]))} | "
                       f"{s9_pct(med([s9_refused(r) for r in rs]), 2)} | {s9_pct(med([s9_late(r) for r in rs]), 2)} | "
                       f"{f(med([(s9_final(r) or {}).get('max_in_flight') for r in rs]), 0)} | "
                       f"{f(med([s9_peak(r, 'destination') for r in rs]), 0)} | "
                       f"{f(med([r['user'] + r['sys'] for r in rs]))} | "
                       f"{sum(s9_rate(r) is not None for r in rs)} of {len(rs)} |")
        out.append("")
        mr = s9_median_row([r for r in b_rows if r["variant"] == "adaptive"], s9_rate)
        if mr:
            out.append(f"The adaptive run of median throughput (round {mr['run']}), sampled (counters "
                       "since the start; the interval's ratio since the sample before):\n")
            s9_series_table(mr, out, False)

    if c_rows:
        out.append("### c) sixteen prefix jobs sharing the small keepstore\n")
        out.append(f"{c.get('blocks', '?'):,} blocks of {s9_sizes(c.get('sizes', '4K-64K'))}, one replica "
                   "each on 2 source services; 16 keep-rsync jobs started at once, `-prefix 0` … `-prefix f` "
                   "(each with its own `--report` and metrics textfile), copying with 1 replica to the small "
                   "keepstore (no added latency). *Wall*: from the first job's start to the last job's "
                   "end; *per-job blocks/s*: each report's `copied` ÷ its `elapsed_seconds` (min / median / "
                   "max over the 16 jobs, then the median over the runs); *sum of limits*: the most the "
                   "running jobs' destination limits added up to in one sample.\n")
        out.append("| jobs run with | wall s (median) | wall s (all runs) | s to 95 % stored | blocks/s in all | copied | failed blocks | "
                   "refused ÷ PUTs (median) | after 2 s | per-job blocks/s min / median / max | Jain's index | max in flight | "
                   "sum of limits (peak) | CPU s, all jobs |")
        out.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for v in ("adaptive", "fixed128", "fixed16"):
            rs = [r for r in c_rows if r["variant"] == v]
            if not rs:
                continue
            mins = [min(s9_jobs_rates(r), default=None) for r in rs]
            meds = [med(s9_jobs_rates(r)) for r in rs]
            maxs = [max(s9_jobs_rates(r), default=None) for r in rs]
            peaks = [max([s9_dst_limit(x, True) or 0 for x in r.get("series") or []], default=None) for r in rs]
            out.append(f"| {s9_label(rs[0])} | {f(med([r['wall'] for r in rs]))} | {allruns([r['wall'] for r in rs])} | "
                       f"{f(med([s9_t_stored(r) for r in rs]))} | "
                       f"{f(med([s9_c_copied(r) / r['wall'] for r in rs]), 0)} | "
                       f"{allruns([s9_c_copied(r) for r in rs], 0)} | "
                       f"{allruns([sum(j.get('failed') or 0 for j in r['jobs']) for r in rs], 0)} | "
                       f"{s9_pct(med([s9_refused(r) for r in rs]), 2)} | {s9_pct(med([s9_late(r) for r in rs]), 2)} | "
                       f"{f(med(mins), 0)} / {f(med(meds), 0)} / {f(med(maxs), 0)} | "
                       f"{f(med([s9_jain(s9_jobs_rates(r)) for r in rs]), 3)} | "
                       f"{f(med([(s9_final(r) or {}).get('max_in_flight') for r in rs]), 0)} | "
                       f"{f(med(peaks), 0)} | {f(med([r['user'] + r['sys'] for r in rs]))} |")
        out.append("")
        mr = s9_median_row([r for r in c_rows if r["variant"] == "adaptive"], lambda r: r["wall"])
        if mr:
            out.append(f"The adaptive run of median wall time (round {mr['run']}), sampled:\n")
            s9_series_table(mr, out, True)

    out.append("Commands (`$W` the script's work directory; every cluster is `keepstore-sim --root-token "
               "tok-NAME --services-json $W/NAME.json --settings-file $W/NAME.conf` plus: a) "
               f"`--services 2 --latency-ms L --seed-blocks {a.get('blocks', 'N')} --seed-sizes 1K-16K "
               "--seed-replicas 2` and `--services 4 --latency-ms L`; b) `--services 2 --seed-blocks "
               f"{b.get('blocks', 'N')} --seed-sizes 4K-64K --seed-replicas 1` and `--services 1 --latency-ms 2 "
               f"{small}`; c) `--services 2 --seed-blocks {c.get('blocks', 'N')} --seed-sizes 4K-64K "
               f"--seed-replicas 1` and `--services 1 {small}`; c's jobs: P = 0 … f, all at once):\n")
    seen = {}
    for r in rows(run, scenario=9):
        seen.setdefault((r["sub"], r["variant"]), r["cmd"])
    out.append("```")
    out.extend(seen.values())
    out.append("```\n")


S10_FORMS = [("list", "plain list: one `HASH+SIZE` per block"),
             ("manifests", "manifests (`psql -At` of `manifest_text`)"),
             ("collections", "collection records (psql CSV)")]


def collections_report(run, out):
    """Scenario 10: --dry-run from each list form of the same blocks."""
    out.append("## Collection records: a 10^7-block dry run (scenario 10)\n")
    out.append(f"`scripts/bench.sh --collections`, {run['date']}, commit `{run['commit']}`, "
               f"load average before {run.get('load_before', '?')}, when done {run['load_after']} "
               "(raw results: `docs/bench/last-collections.json`):\n")
    rs = rows(run, scenario=10)
    if not rs:
        out.append("No rows.\n")
        return
    n = rs[0]["blocks"]
    out.append(f"A `--dry-run` over 4+4 synthetic services ({n:,} blocks, each on 2 source "
               "services, 90 % at the destination), configured from the clusters' config.yml "
               "files, with `--blocks-from` naming every source block in one of three forms "
               "(`scripts/bench-collections.py`): collections of 100 blocks, a tenth of them "
               "repeated as second collections over random blocks; the records cycle "
               "`replication_desired` null, 1, 2, 3 and classes `[default]`, `[default]`, "
               "`[archive]`, `[default, archive]`. Default flags otherwise (`--index-budget` "
               "4,000,000). Medians; ratios against the plain list in the same invocation.\n")
    base = {}
    for form, _ in S10_FORMS:
        fr = [r for r in rs if r.get("form") == form]
        base[form] = (med([r["wall"] for r in fr]), med([r["maxrss_kib"] for r in fr]),
                      med([r["user"] + r["sys"] for r in fr]), fr)
    w0, m0, c0, _ = base["list"]
    out.append("| list form | file | wall s | CPU s | peak RSS MiB | wall vs list | CPU vs list | RSS vs list | runs (wall) | exit |")
    out.append("|---|---|---|---|---|---|---|---|---|---|")
    for form, label in S10_FORMS:
        w, m, c, fr = base[form]
        if not fr:
            continue
        size = fr[0].get("bytes", 0) / MIB
        ratio = lambda a, b: f"{a / b:.2f}×" if a and b else "–"
        out.append(f"| {label} | {size:,.0f} MiB | {f(w)} | {f(c)} | {f(m / 1024 if m else None, 0)} | "
                   f"{ratio(w, w0)} | {ratio(c, c0)} | {ratio(m, m0)} | {allruns([r['wall'] for r in fr])} | "
                   f"{', '.join(str(r['rc']) for r in fr)} |")
    out.append("")
    fr = base["collections"][3]
    plan = (fr[0].get("report") or {}).get("plan") if fr else None
    if plan:
        out.append(f"What the records' dry run planned: {f(plan.get('listed'))} listed, "
                   f"{f(plan.get('to_copy'))} to copy, {f(plan.get('to_top_up'))} to top up "
                   f"(copies short in some class: the destination's keepstores are all `default`, "
                   f"so every block wanting `archive` is short), {f(plan.get('present'))} present.\n")
        pr = plan.get("per_replication") or {}
        pc = plan.get("per_class") or {}
        if pr or pc:
            out.append("| to write, by | blocks | bytes |")
            out.append("|---|---|---|")
            for k, b in sorted(pr.items(), key=lambda kv: int(kv[0])):
                out.append(f"| wanted replication {k} | {f(b['blocks'])} | {b['bytes'] / 2**30:,.1f} GiB |")
            for k, b in sorted(pc.items()):
                out.append(f"| class `{k}` | {f(b['blocks'])} | {b['bytes'] / 2**30:,.1f} GiB |")
            out.append("")
    loads = [float(run.get(k, "0").split()[0]) for k in ("load_before", "load_after")]
    if max(loads) > run["machine"]["nproc"] * 0.5:
        out.append(f"Load average up to {max(loads):.1f} on {run['machine']['nproc']} cores during "
                   "this run: wall times are inflated and noisy; CPU seconds compare better.\n")
    out.append("What the difference is made of: the CSV is parsed record by record (the `csv` "
               "crate, one record's manifest held at a time) and each manifest is checked line by "
               "line, where the plain forms are cut into words; the sort carries a 2-byte want per "
               "block (22-byte records instead of 20) and combines the wants of a block's records; "
               "the plan resolves each block's want against the stores' classes. Peak RSS is set by "
               "`--index-budget` in all three forms (the sort buffer and one pass's listed blocks).\n")


S11_DATA = (
    ("big", "64 MiB blocks, 2 replicas"),
    ("small", "1–4 KiB blocks, 2 replicas"),
    ("dry", "`--dry-run`, synthetic blocks"),
)


def mounts_report(run, out):
    """Scenario 12: per-mount indexes against one whole index per keepstore."""
    out.append("## Per-mount indexes (scenario 12)\n")
    out.append(f"`scripts/bench.sh --mounts`, {run['date']}, commit `{run['commit']}`, "
               f"load average before {run.get('load_before', '?')}, when done {run['load_after']} "
               "(raw results: `docs/bench/last-mounts.json`):\n")
    rs = rows(run, scenario=12)
    if not rs:
        out.append("No rows.\n")
        return
    n = rs[0]["blocks"]
    out.append(f"A `--dry-run` of {n:,} blocks (2 replicas each side) from 4 keepstores to 4 "
               "keepstores that each mount two volumes. `mounts`: the destination asked "
               "`GET /mounts`, then each mount's index (`/mounts/UUID/blocks`, 8 listings), as "
               "keep-balance reads it, so that each copy counts in its own mount's classes and "
               "`Replication`; `index`: keepstores answering 404 to `/mounts`, one `/index` each "
               "(4 listings). The same lines and the same plan; the runs alternate, against "
               "destinations that run side by side. The time is mostly the simulators' listing; "
               "keep-rsync's own CPU and memory are the columns to compare.\n")
    out.append("| index | wall s (median) | all runs | CPU s (median) | peak RSS MiB (median) | "
               "index lines | present | exit |")
    out.append("|---|---|---|---|---|---|---|---|")
    stats = {}
    for how in ("mounts", "index"):
        fr = rows(run, scenario=12, index=how)
        if not fr:
            continue
        wall = med([r["wall"] for r in fr])
        cpu = med([r["user"] + r["sys"] for r in fr])
        rss = med([r["maxrss_kib"] / 1024 for r in fr])
        stats[how] = (wall, cpu, rss)
        rep = fr[0].get("report") or {}
        out.append(f"| {how} | {f(wall)} | {allruns([r['wall'] for r in fr])} | {f(cpu)} | "
                   f"{f(rss, 1)} | {rep.get('index_lines', '?'):,} | "
                   f"{(rep.get('plan') or {}).get('present', '?'):,} | "
                   f"{', '.join(str(r['rc']) for r in fr)} |")
    out.append("")
    if len(stats) == 2:
        (wm, cm, rm), (wi, ci, ri) = stats["mounts"], stats["index"]
        out.append(f"Per-mount ÷ whole index: wall **{wm / wi:.2f}×**, CPU **{cm / ci:.2f}×**, "
                   f"peak RSS **{rm / ri:.2f}×**.\n")


def dist_report(run, out):
    """Scenario 11: the dist profile's binaries against the release profile's."""
    out.append("## Release builds: `--profile dist` against `--release` (scenario 11)\n")
    out.append(f"`scripts/bench.sh --dist`, {run['date']}, commit `{run['commit']}`, "
               f"load average before {run.get('load_before', '?')}, when done {run['load_after']} "
               "(raw results: `docs/bench/last-dist.json`):\n")
    meta = run.get("s11") or {}
    rs = rows(run, scenario=11)
    if not rs or not meta:
        out.append("No rows.\n")
        return
    out.append("`--profile dist` is what `scripts/package.sh` builds and the packages and the "
               "container image ship: the release profile with fat LTO, one codegen unit, no "
               "debug info and stripped symbols. Both builds of the same commit, run in turn in "
               f"each of {meta['runs']} rounds against the same keepstore-sim clusters (4 + 4 "
               "services, a fresh destination for every copy), default flags.\n")
    b = meta["binaries"]
    out.append("| binary | release | dist | dist ÷ release |")
    out.append("|---|---|---|---|")
    for name in ("keep-rsync", "keep-block-check"):
        r, d = b["release"][name], b["dist"][name]
        out.append(f"| `{name}` | {r / MIB:,.2f} MiB | {d / MIB:,.2f} MiB | {d / r:.2f}× |")
    out.append("")
    if meta["dist_build_seconds"] >= 10:
        out.append(f"The dist build took {meta['dist_build_seconds']:.0f} s in this run (from "
                   "scratch, or after a change, sharing the 2 cores with nothing else).\n")
    out.append("| run | build | wall s (median) | all runs (wall s) | rate (median) | CPU s (median) | "
               "peak RSS MiB (median) | wall dist ÷ release | CPU dist ÷ release | exit |")
    out.append("|---|---|---|---|---|---|---|---|---|---|")
    for data, label in S11_DATA:
        stats = {}
        for build in ("release", "dist"):
            fr = rows(run, scenario=11, data=data, build=build)
            if not fr:
                continue
            n = fr[0]["blocks"]
            if data == "big":
                rate = med([r["report"]["copied_bytes"] / r["wall"] / 1e6 for r in fr if kr_ok(r)])
                rate_s = f"{f(rate, 0)} MB/s"
            elif data == "small":
                rate = med([r["report"]["copied"] / r["wall"] for r in fr if kr_ok(r)])
                rate_s = f"{f(rate, 0)} blocks/s"
            else:
                rate = med([n / r["wall"] for r in fr if r["rc"] == 0])
                rate_s = f"{f(rate / 1e6 if rate else None, 2)} M blocks/s"
            stats[build] = (med([r["wall"] for r in fr]), med([r["user"] + r["sys"] for r in fr]),
                            med([r["maxrss_kib"] for r in fr]), fr, rate_s, n)
        for build in ("release", "dist"):
            if build not in stats:
                continue
            w, c, m, fr, rate_s, n = stats[build]
            ratio = lambda i: (f"{stats['dist'][i] / stats['release'][i]:.2f}×"
                               if build == "dist" and "release" in stats and stats["release"][i] else "")
            out.append(f"| {label} ({n:,}) | {build} | {f(w)} | {allruns([r['wall'] for r in fr])} | "
                       f"{rate_s} | {f(c)} | {f(m / 1024 if m else None, 0)} | {ratio(0)} | {ratio(1)} | "
                       f"{', '.join(str(r['rc']) for r in fr)} |")
    out.append("")
    loads = [float(run.get(k, "0").split()[0]) for k in ("load_before", "load_after")]
    if max(loads) > run["machine"]["nproc"] * 0.5:
        out.append(f"Load average up to {max(loads):.1f} on {run['machine']['nproc']} cores during "
                   "this run: wall times are noisy; the ratios compare runs interleaved in the same "
                   "rounds.\n")


def latency_report(run, out):
    """Scenario 14: small blocks over long links, against the same copy with no added latency."""
    out.append("## Small blocks over long links (scenario 14)\n")
    out.append(f"`scripts/bench.sh --latency`, {run['date']}, commit `{run['commit']}`, "
               f"load average before {run.get('load_before', '?')}, when done {run['load_after']} "
               "(raw results: `docs/bench/last-latency.json`):\n")
    rs = [r for r in rows(run, scenario=14) if "target" in r]
    if not rs:
        out.append("No rows.\n")
        return
    for r in rs:
        r.setdefault("binary", "after")
    binaries = [b for b in ("after", "before") if any(r["binary"] == b for r in rs)]
    n = rs[0]["blocks"]
    out.append(f"{n:,} blocks of 4 KiB from 2 source services (1 copy each) to 3 destination "
               "services, 2 replicas, keep-rsync at default flags, a fresh (empty) destination "
               "for every copy. The added round trips of a round run one after the other, so "
               "each ratio compares copies run within seconds of each other. *keepstore-sim*: "
               "the simulator's own delay before every answer (`--latency-ms`). *real "
               "keepstores*: Arvados' keepstore (Directory volumes), each behind `keepstore-sim "
               "lag`, a TCP delay line adding half the round trip each way without limiting the "
               "bytes' rate; *direct* is the same copy with no proxy, so that *proxy, 0 ms* ÷ "
               "*direct* is what the proxy itself costs. Blocks/s = blocks copied ÷ wall time "
               "of the whole keep-rsync process (indexes, plan, copy, report); *of LAN speed* = "
               "blocks/s ÷ the same binary's blocks/s at 0 ms (real keepstores: through the proxy "
               "at 0 ms). *before*: the binary before issue 31's admission and limiter changes "
               "(`keep-rsync-before`), run in the same rounds; *÷ before*: blocks/s ÷ its.\n")
    out.append("| target | round trip | via | keep-rsync | blocks/s (median) | all runs (wall s) | CPU s (median) | "
               "peak RSS MiB | of LAN speed | ÷ before | goal | result |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    goals = {20: 0.9, 100: 0.8}
    for target, label in (("sim", "keepstore-sim"), ("real", "real keepstores")):
        trs = rows(run, scenario=14, target=target)
        if not trs:
            if target == "real":
                out.append("| real keepstores | – | – | – | skipped: no keepstore binary | | | | | | | |")
            continue
        rate = lambda rs: med([r["report"]["copied"] / r["wall"] for r in rs if kr_ok(r)])
        base_via = "delay" if target == "sim" else "proxy"
        variants = sorted({(r["via"] != "direct", r["rtt_ms"], r["via"]) for r in trs})
        for _, rtt, via in variants:
            for binary in binaries:
                base = rate(rows(run, scenario=14, target=target, via=base_via, rtt_ms=0, binary=binary))
                fr = rows(run, scenario=14, target=target, via=via, rtt_ms=rtt, binary=binary)
                b = rate(fr)
                old = rate(rows(run, scenario=14, target=target, via=via, rtt_ms=rtt, binary="before"))
                gain = f(b / old) + "×" if binary == "after" and b and old else ""
                ratio = b / base if b and base else None
                goal = goals.get(rtt) if via != "direct" and binary == "after" else None
                if via == "direct" and ratio:
                    res = f"proxy at 0 ms: wall {(ratio - 1) * 100:+.0f} % vs direct"
                elif goal and ratio is not None:
                    res = verdict(ratio >= goal)
                else:
                    res = ""
                out.append(f"| {label} | {rtt} ms | {via} | {binary} | {f(b, 0)} | {allruns([r['wall'] for r in fr])} | "
                           f"{f(med([r['user'] + r['sys'] for r in fr]))} | "
                           f"{f(med([r['maxrss_kib'] / 1024 for r in fr]), 0)} | "
                           f"{f(ratio) if ratio else ''} | {gain} | {('≥ ' + str(goal)) if goal else ''} | {res} |")
    out.append("")
    cpu = [r for r in rows(run, scenario=14) if "lag_proxy_cpu_s" in r]
    if cpu:
        last = {}
        for r in cpu:
            last[r["rtt_ms"]] = r
        out.append("The lag proxy's CPU over all its copies (every round, both binaries): " +
                   ", ".join(f"{rtt} ms: {last[rtt]['lag_proxy_cpu_s']:.2f} s after {last[rtt]['after_run']} rounds"
                             for rtt in sorted(last)) + ".\n")
    go = rows(run, scenario="14go")
    if go:
        out.append("### 64 MiB blocks: the Go keep-rsync on real keepstores\n")
        out.append("16 blocks of 64 MiB on 2 real source keepstores (Directory volumes) copied to 3 "
                   "real destination keepstores, 2 replicas (2 GiB written), no added latency, a "
                   "fresh destination and `sync` before each copy: the Go keep-rsync "
                   "(`/work/real-keepstore-bin/keep-rsync-go`, one block at a time), keep-rsync "
                   "before issue 31 and now, each at default flags, in turn in each round.\n")
        out.append("| tool | wall s (median) | all runs (wall s) | CPU s (median) | peak RSS MiB (median) | "
                   "÷ Go (wall) | blocks at the destination (files) | exit codes |")
        out.append("|---|---|---|---|---|---|---|---|")
        gw = med([r["wall"] for r in go if r["tool"] == "go" and r["rc"] == 0])
        for tool in ("go", "keep-rsync-before", "keep-rsync-after"):
            fr = [r for r in go if r["tool"] == tool]
            if not fr:
                continue
            w = med([r["wall"] for r in fr if r["rc"] == 0])
            out.append(f"| {tool} | {f(w)} | {allruns([r['wall'] for r in fr])} | "
                       f"{f(med([r['user'] + r['sys'] for r in fr]))} | "
                       f"{f(med([r['maxrss_kib'] / 1024 for r in fr]), 0)} | "
                       f"{f(w / gw) + '×' if w and gw else '–'} | "
                       f"{', '.join(str(r['dst_files']) for r in fr)} | {', '.join(str(r['rc']) for r in fr)} |")
    out.append("")
    notes = os.path.join(BENCH, "latency-notes.md")
    if os.path.exists(notes):
        out.append(open(notes).read().strip() + "\n")


def s3_listing_report(run, out):
    """Scenario 13: indexing a bucket through a delay line, against a real keepstore's /index and rclone lsf."""
    out.append("## Bucket listings at cloud latency (scenario 13)\n")
    out.append(f"`scripts/bench.sh --s3-listing`, {run['date']}, commit `{run['commit']}`, "
               f"{run['seconds'] / 60:.0f} min in all, {run['machine']['nproc']} cores, "
               f"load average before {run.get('load_before', '?')}, when done {' '.join(run['load_after'])} "
               "(raw results: `docs/bench/last-s3-listing.json`).\n")
    legacy = not any("server" in r for r in run["rows"])
    runs = run.get("runs") or "?"
    out.append(f"Buckets in keepstore's layout (each data object with its `recent/` marker), PrefixLength 0 "
               f"(flat) and 3 (`xyz/HASH`), on versitygw (posix backend) and MinIO, each behind a delay line "
               f"adding {run['rtt_ms']:g} ms round trip (`keepstore-sim lag`). *keep-rsync*: the index stage "
               "of `--dry-run` with the bucket as the destination volume (fan-out by next hex digit, "
               "`--checkers` chains at once: 8 by default, and 16); *keepstore*: a real Arvados keepstore "
               "mounting the bucket, `GET /index` (one chain of ListObjectsV2 pages over the data keys, "
               "merged with a second chain over `recent/`); *rclone*: `rclone lsf --files-only` of the data "
               f"keys (`-R --max-depth 2` for PrefixLength 3). Seconds are medians of {runs} runs; "
               "*server CPU* is the S3 server's user+sys seconds during one listing (median); "
               "*keepstore ÷ keep-rsync* is the speed-up (target ≥ 4 at ≥ 10^5 objects).\n")
    if legacy:
        for r in run["rows"]:
            r.setdefault("server", "versitygw")
            r.setdefault("prefix_length", 0)
    groups = {}
    for r in run["rows"]:
        groups.setdefault((r["server"], r["prefix_length"]), {}).setdefault(r["objects"], {}).setdefault(r["tool"], []).append(r)

    def secs(t, tool):
        return med([r["seconds"] for r in t.get(tool, []) if r.get("exit", 0) == 0])

    def scpu(t, tool):
        return med([r.get("server_cpu") for r in t.get(tool, []) if r.get("exit", 0) == 0])

    def complete(t, tool, n):
        rs = t.get(tool, [])
        return all(r.get("exit", 0) == 0 and r.get("lines", n) == n for r in rs) if rs else None

    largest = max(r["objects"] for r in run["rows"])
    targets = []
    out.append("| server | PrefixLength | objects | keep-rsync s | keep-rsync --checkers 16 s | rclone lsf s | "
               "keepstore /index s | keepstore ÷ keep-rsync | keepstore ÷ keep-rsync 16 | rclone ÷ keep-rsync 16 | "
               "server CPU s: keep-rsync 16 / keepstore | keep-rsync peak RSS MiB | all listed |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (server, pl) in sorted(groups):
        by = groups[(server, pl)]
        for n in sorted(by):
            t = by[n]
            kr, k16, rc, ks = (secs(t, x) for x in ("keep-rsync", "keep-rsync-c16", "rclone", "keepstore"))
            ratio = lambda x, y: f(x / y) if x and y else "–"
            ok = [complete(t, x, n) for x in ("keep-rsync", "keep-rsync-c16", "rclone", "keepstore")]
            allok = "yes" if all(o is not False for o in ok) else "**no**"
            rss = med([r["rss_kib"] / 1024 for r in t.get("keep-rsync", []) + t.get("keep-rsync-c16", [])])
            out.append(f"| {server} | {pl} | {n:,} | {f(kr)} | {f(k16)} | {f(rc)} | {f(ks) if ks else 'skipped'} | "
                       f"{ratio(ks, kr)} | {ratio(ks, k16)} | {ratio(rc, k16)} | "
                       f"{f(scpu(t, 'keep-rsync-c16'))} / {f(scpu(t, 'keepstore'))} | {f(rss, 0)} | {allok} |")
            if n == largest and ks:
                targets.append((server, pl, n, ks, kr, k16))
    out.append("")
    # Growth with the object count, largest ÷ smallest.
    grow = []
    for (server, pl) in sorted(groups):
        by = groups[(server, pl)]
        ns = sorted(by)
        if len(ns) < 2:
            continue
        lo, hi = ns[0], ns[-1]
        cells = []
        for tool in ("keep-rsync", "keep-rsync-c16", "rclone", "keepstore"):
            a, b = secs(by[lo], tool), secs(by[hi], tool)
            cells.append(f(b / a, 1) + "×" if a and b else "–")
        grow.append(f"| {server} | {pl} | {hi / lo:g}× | " + " | ".join(cells) + " |")
    if grow:
        out.append("How each time grows with the object count (largest count's median ÷ smallest's):\n")
        out.append("| server | PrefixLength | objects | keep-rsync | keep-rsync --checkers 16 | rclone lsf | keepstore /index |")
        out.append("|---|---|---|---|---|---|---|")
        out.extend(grow)
        out.append("")
    cost = []
    for (server, pl) in sorted(groups):
        for n, t in sorted(groups[(server, pl)].items()):
            z, d = secs(t, "keep-rsync-0ms"), secs(t, "keep-rsync-direct")
            if z and d:
                cost.append(f"{server} (PrefixLength {pl}, {n:,} objects): {f(z)} s through the delay line at 0 ms, "
                            f"{f(d)} s straight to the server")
    if cost:
        out.append("What the delay line itself costs (keep-rsync, default flags): " + "; ".join(cost) + ".\n")
    if targets:
        out.append("| target | measured (median) | target | result |")
        out.append("|---|---|---|---|")
        for server, pl, n, ks, kr, k16 in targets:
            for label, x in (("default flags", kr), ("--checkers 16", k16)):
                if x:
                    out.append(f"| {server}, PrefixLength {pl}, {n:,} objects: keepstore /index ÷ keep-rsync ({label}) | "
                               f"{ks / x:.2f}× ({f(ks)} vs {f(x)} s) | ≥ 4× | {verdict(ks / x >= 4)} |")
        out.append("")
    notes = os.path.join(BENCH, "s3-listing-notes.md")
    if os.path.exists(notes):
        out.append(open(notes).read().strip() + "\n")

# ------------------------------------------------------------ scenario 15
S15_COPIES = [
    ("dir-az", "keep-rsync", "keep-rsync (Azure volume)"),
    ("dir-az", "rclone", "rclone, best flags"),
    ("dir-az", "rclone-defaults", "rclone, defaults (round 1)"),
    ("az-dir", "keep-rsync", "keep-rsync (Azure volume)"),
    ("az-dir", "rclone", "rclone, best flags"),
    ("az-dir", "rclone-defaults", "rclone, defaults (round 1)"),
]
S15_DIRS = {"dir-az": "directory → container", "az-dir": "container → directory"}


def s15_rows(run, data, d, tool):
    return [r for r in rows(run, scenario=15, data=data, dir=d, tool=tool) if r["rc"] == 0 and r.get("bytes")]


def s15_limit(run, r):
    """What held a copy back: Azurite's single Node.js thread, the client, or waiting."""
    nproc = run["machine"]["nproc"]
    w = r["wall"]
    client = (r["user"] + r["sys"]) / w
    server = r["server_cpu"] / w
    busy = r["host"]["busy"] / w
    if server >= 0.85:
        why = f"Azurite: {server:.2f} cores, its one JavaScript thread saturated"
    elif busy >= 0.85 * nproc:
        why = f"CPU: {busy:.1f} of {nproc} cores busy"
    elif client >= 0.85:
        why = f"the client: {client:.2f} cores"
    else:
        why = f"waiting: {nproc - busy:.1f} of {nproc} cores idle (round trips, serial steps)"
    return client, server, why


def azure_report(run, out):
    """Scenario 15: Azure Blob volumes on Azurite against rclone's azureblob backend."""
    az = run.get("azure", {})
    budget = s8_budget_mib(dict(run, rows=[dict(r, scenario=8) for r in run["rows"]]))
    rss_target = budget + STORES_TARGETS["rss_fixed_mib"]
    datas = [d for d in ("big", "small") if rows(run, scenario=15, data=d)]
    out.append("## Azure Blob volumes (scenario 15)\n")
    if run["mode"] == "azure":
        out.append("Run apart from the others, by `scripts/bench.sh --azure` (`scripts/bench-azure.sh`; "
                   "raw results: `docs/bench/last-azure.json`):\n")
    else:
        out.append(f"`scripts/bench.sh --azure --quick`: a smoke test (mode `{run['mode']}`); the numbers mean little.\n")
    header(run, out)
    loads = [float(str(run.get(k, "0")).split()[0]) for k in ("load_before", "load_after")]
    loads += [r.get("load1", 0) for r in run["rows"]]
    out.append(f"- Load average (1 min) before, during (highest at any copy's end) and after: "
               f"{f(loads[0])}, {f(max(loads[2:] or [0]))}, {f(loads[1])} on {run['machine']['nproc']} cores.")
    out.append(f"- Azurite {az.get('azurite', '?')} on Node.js {az.get('node', '?')} (disk persistence in the "
               f"work directory, {az.get('filesystem', '?')}), {az.get('rclone', '?')}.\n")
    sets = []
    for d in datas:
        rs = rows(run, scenario=15, data=d)
        size = next((r["bytes"] for r in rs if r.get("bytes")), None)
        kind = {"big": "of 64 MiB", "small": "of 4 KiB"}[d]
        sets.append(f"*{d}*: {rs[0]['blocks']:,} blocks {kind} ({f(size / MIB if size else None, 0)} MiB)")
    out.append("One Azurite on 127.0.0.1 over HTTPS (a self-signed certificate in `SSL_CERT_FILE`), its "
               "account reached by both tools as keepstore reaches a real one, "
               "`https://ACCOUNT.blob.azurite.test:PORT/CONTAINER`, the name mapped to 127.0.0.1 in a "
               "private mount namespace's `/etc/hosts` (`unshare -m`). Data sets, random bytes named by "
               "MD5 in keepstore's Directory layout `SRC/xyz/HASH`: " + "; ".join(sets) + ". "
               f"Each of {az.get('runs', '?')} round{'' if az.get('runs') == 1 else 's'} copies each set "
               "with each tool, alternating (keep-rsync first in odd rounds, rclone first in even ones), "
               "into a fresh empty container or directory: keep-rsync at default flags "
               "(`--src-volume-dir SRC --dst-volumes AZ.yml -q`, one `Driver: Azure` volume; each block "
               "one Put Blob with `Content-MD5`; back with `--src-volumes AZ.yml --dst-volume-dir DST`), "
               f"`rclone copy` with its best flags (`{az.get('rclone_best', '?')}`) and, in round 1, its "
               "defaults (64 MiB files go up as 4 MiB Put Block chunks, 16 at once, and a Put Block List). "
               "After each copy every blob or file is counted by name and size (and two MD5s of a "
               "directory), or the scenario stops. MB/s = the set's bytes ÷ process wall time; CPU = "
               "user+sys of the client (GNU time), *Azurite CPU* from `/proc/PID/stat` of its node "
               "process before and after; keep-rsync's directory writes fsync each block, rclone's do not.\n")
    out.append("| target | measured (median) | target | result |")
    out.append("|---|---|---|---|")
    for d in datas:
        for dd in ("dir-az", "az-dir"):
            a = med([r["bytes"] / r["wall"] / 1e6 for r in s15_rows(run, d, dd, "keep-rsync")])
            b = med([r["bytes"] / r["wall"] / 1e6 for r in s15_rows(run, d, dd, "rclone")])
            ratio = a / b if a and b else None
            out.append(f"| {d}, {S15_DIRS[dd]}: MB/s keep-rsync ÷ rclone (best flags) | {f(ratio)}× "
                       f"({f(a, 1)} vs {f(b, 1)} MB/s) | ≥ {STORES_TARGETS['vs_rclone']:.1f}× | "
                       f"{verdict(None if ratio is None else ratio >= STORES_TARGETS['vs_rclone'])} |")
    krs = [r for r in rows(run, scenario=15, tool="keep-rsync") if r["rc"] == 0]
    if krs:
        peak = max(krs, key=lambda r: r["maxrss_kib"])
        out.append(f"| keep-rsync peak RSS, largest of every copy | {f(peak['maxrss_kib'] / 1024, 0)} MiB "
                   f"({peak['data']}, {S15_DIRS[peak['dir']]}) | ≤ {f(budget, 0)} MiB `--buffer-memory` + "
                   f"{f(STORES_TARGETS['rss_fixed_mib'], 0)} = {f(rss_target, 0)} MiB | "
                   f"{verdict(peak['maxrss_kib'] / 1024 <= rss_target)} |")
    out.append("")
    for d in datas:
        n = rows(run, scenario=15, data=d)[0]["blocks"]
        out.append(f"### {d}: {n:,} blocks\n")
        out.append("| copy | tool | MB/s (median) | all runs (MB/s) | blocks/s | CPU s/GB | Azurite CPU s/GB "
                   "| Azurite cores | peak RSS MiB | MB/s ÷ rclone | limit |")
        out.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for dd, tool, label in S15_COPIES:
            rs = s15_rows(run, d, dd, tool)
            if not rs:
                continue
            mb = med([r["bytes"] / r["wall"] / 1e6 for r in rs])
            ratio = "–"
            if tool != "rclone":
                base = med([r["bytes"] / r["wall"] / 1e6 for r in s15_rows(run, d, dd, "rclone")])
                ratio = f(mb / base) + "×" if base else "–"
            mid = sorted(rs, key=lambda r: r["wall"])[len(rs) // 2]
            _, server, why = s15_limit(run, mid)
            nd = 0 if d == "big" else 2
            out.append(f"| {S15_DIRS[dd]} | {label} | {f(mb, nd)} | {allruns([r['bytes'] / r['wall'] / 1e6 for r in rs], nd)} | "
                       f"{f(med([r['blocks'] / r['wall'] for r in rs]), 0)} | "
                       f"{f(med([(r['user'] + r['sys']) / (r['bytes'] / 1e9) for r in rs]))} | "
                       f"{f(med([r['server_cpu'] / (r['bytes'] / 1e9) for r in rs]))} | {f(server)} | "
                       f"{f(med([r['maxrss_kib'] / 1024 for r in rs]), 0)} | {ratio} | {why} |")
        out.append("")
    notes = os.path.join(BENCH, "azure-notes.md")
    if os.path.exists(notes) and run["mode"] == "azure":
        out.append(open(notes).read().strip())
        out.append("")
    out.append("Commands (`$W` the script's work directory; Azurite runs as `AZURITE_ACCOUNTS=ACCOUNT:KEY "
               "azurite-blob --blobHost 127.0.0.1 --blobPort PORT --location $W/az --cert --key "
               "--skipApiVersionCheck --loose --silent --disableTelemetry`; `$W/keep-rsync.yml` names one "
               "`Driver: Azure` volume with `StorageAccountName`, `StorageAccountKey`, `StorageBaseURL: "
               "azurite.test:PORT`, `ContainerName`; rclone is configured by `RCLONE_CONFIG_AZ_TYPE=azureblob`, "
               "`_ACCOUNT`, `_KEY`, `_ENDPOINT=blob.azurite.test:PORT`; every command runs under "
               "`unshare -m sh -c 'mount --bind \"$0\" /etc/hosts && exec \"$@\"' $W/hosts`):\n")
    seen = {}
    for r in rows(run, scenario=15):
        seen.setdefault((r.get("dir"), r["tool"]), r["cmd"].split("/etc/hosts && exec \"$@\" $W/hosts ", 1)[-1])
    out.append("```")
    out.extend(seen.values())
    out.append("```\n")


def main():
    out = []
    if len(sys.argv) == 2 and sys.argv[1] == "--s9-line":
        print(s9_line(json.loads(sys.stdin.read())))
        return
    if len(sys.argv) == 3 and sys.argv[1] == "--stdout":
        run = json.load(open(sys.argv[2]))
        if run["mode"].startswith("concurrency"):
            concurrency_report(run, out)
            print("\n".join(out))
            return
        if run["mode"].startswith("stores"):
            stores_report(run, out)
            print("\n".join(out))
            return
        if run["mode"].startswith("collections"):
            collections_report(run, out)
            print("\n".join(out))
            return
        if run["mode"].startswith("dist"):
            dist_report(run, out)
            print("\n".join(out))
            return
        if run["mode"].startswith("latency"):
            latency_report(run, out)
            print("\n".join(out))
            return
        if run["mode"].startswith("s3-listing"):
            s3_listing_report(run, out)
            print("\n".join(out))
            return
        if run["mode"].startswith("azure"):
            azure_report(run, out)
            print("\n".join(out))
            return
        header(run, out)
        out.append("")
        full_report(run, out)
        commands(run, out)
        print("\n".join(out))
        return
    full = os.path.join(BENCH, "last-full.json")
    sweep = os.path.join(BENCH, "last-sweep.json")
    out.append("# Benchmarks\n")
    out.append("Written by `scripts/bench.sh` (do not edit by hand: rerun it). The targets of issues 4, 10 and 12, "
               "each measured as a ratio within one run of the script, on a 2-core machine where "
               "the keepstore-sim clusters and keep-rsync share the cores. Medians of "
               "`BENCH_RUNS` (3) runs; every run is listed. Raw results: `docs/bench/*.json`.\n")
    out.append("```\nscripts/bench.sh            # scenarios 1-7, about 16 min on 2 cores\n"
               "BENCH_SCENARIOS=\"1 2\" scripts/bench.sh   # only those scenarios\n"
               "scripts/bench.sh --sweep    # --transfers 16 32 64 128 256, scenarios 1 and 2, once each\n"
               "scripts/bench.sh --quick    # smoke test, prints to stdout\n"
               "scripts/profile.sh          # perf profiles behind \"Where the time goes\"\n```\n")
    if os.path.exists(full):
        run = json.load(open(full))
        header(run, out)
        loads = [float(run.get(k, "0").split()[0]) for k in ("load_before", "load_after")]
        if max(loads) > run["machine"]["nproc"] * 0.5:
            out.append(f"- **Load average {max(loads):.1f}** on {run['machine']['nproc']} cores at the "
                       "start or end of the run (this includes the script's own release build and "
                       "simulators; check for other work on the machine): absolute numbers may be low "
                       "and CPU seconds inflated (compare with the MD5 speed measured in the same run); "
                       "the ratios compare runs interleaved in the same invocation.")
        out.append("")
        full_report(run, out)
    stores = os.path.join(BENCH, "last-stores.json")
    if os.path.exists(stores):
        stores_report(json.load(open(stores)), out)
    conc = os.path.join(BENCH, "last-concurrency.json")
    if os.path.exists(conc):
        concurrency_report(json.load(open(conc)), out)
    coll = os.path.join(BENCH, "last-collections.json")
    if os.path.exists(coll):
        collections_report(json.load(open(coll)), out)
    dist = os.path.join(BENCH, "last-dist.json")
    if os.path.exists(dist):
        dist_report(json.load(open(dist)), out)
    mounts = os.path.join(BENCH, "last-mounts.json")
    if os.path.exists(mounts):
        mounts_report(json.load(open(mounts)), out)
    latency = os.path.join(BENCH, "last-latency.json")
    if os.path.exists(latency):
        latency_report(json.load(open(latency)), out)
    listing = os.path.join(BENCH, "last-s3-listing.json")
    if os.path.exists(listing):
        s3_listing_report(json.load(open(listing)), out)
    azure = os.path.join(BENCH, "last-azure.json")
    if os.path.exists(azure):
        azure_report(json.load(open(azure)), out)
    out.append("## Choosing `--transfers`\n")
    if os.path.exists(sweep):
        srun = json.load(open(sweep))
        out.append(f"Sweep of {srun['date']} (`scripts/bench.sh --sweep`, commit `{srun['commit']}`, "
                   f"load when done {srun['load_after']}):\n")
        sweep_report(srun, out)
    notes = os.path.join(BENCH, "transfers.md")
    if os.path.exists(notes):
        out.append(open(notes).read().strip() + "\n")
    wt = os.path.join(BENCH, "where-time-goes.md")
    if os.path.exists(wt):
        out.append(open(wt).read().strip() + "\n")
    if os.path.exists(full):
        out.append("## Command lines\n")
        out.append("As run by the script (`$W` is its temporary work directory; each cluster is "
                   "`keepstore-sim --root-token tok-NAME --services-json $W/NAME.json "
                   "--settings-file $W/NAME.conf` plus the flags below).\n")
        out.append("```")
        for line in (
            "# scenario 1 (a fresh s1dst for each run)",
            "keepstore-sim --services 4 --uuid-prefix srca1 --latency-ms 10 --seed-blocks 2000 --seed-sizes 1K-16K --seed-replicas 2 --seed 1",
            "keepstore-sim --services 4 --uuid-prefix dsta1 --latency-ms 10",
            "# scenario 2 (a fresh s2dst for each run)",
            "keepstore-sim --services 4 --uuid-prefix srcb2 --seed-blocks 48 --seed-sizes 16M-64M --seed-replicas 1 --seed 2",
            "keepstore-sim --services 4 --uuid-prefix dstb2",
            "# scenario 3",
            "keepstore-sim --services 4 --uuid-prefix srcc3 --synthetic-blocks N --synthetic-seed 3 --synthetic-replicas 2 --synthetic-fraction 1.0",
            "keepstore-sim --services 4 --uuid-prefix dstc3 --synthetic-blocks N --synthetic-seed 3 --synthetic-replicas 2 --synthetic-fraction 0.9",
            "# scenario 7 (the list: curl of each service's /index/, first column)",
            "keepstore-sim --services 4 --uuid-prefix chk07 --synthetic-blocks 1000000 --synthetic-seed 7 --synthetic-replicas 2 --synthetic-fraction 1.0",
        ):
            out.append(line)
        out.append("```\n")
        out.append("Measured commands (under `/usr/bin/time -f '%e %U %S %M'`, wall from `date +%s.%N`):\n")
        commands(run, out)
    print("\n".join(out))


if __name__ == "__main__":
    main()
