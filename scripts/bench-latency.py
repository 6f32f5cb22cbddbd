#!/usr/bin/env python3
"""Scenario 14 of scripts/bench.sh (--latency): small blocks over long links.

3,000 blocks of 4 KiB from 2 source services to 3 destination services
(2 replicas), keep-rsync at default flags, at 0, 20 and 100 ms of added
round trip, interleaved in each round, a fresh (empty) destination for
every copy:

- keepstore-sim: the round trip is the simulator's own delay before every
  answer (`--latency-ms`);
- real keepstores (Arvados' keepstore, Directory volumes, when
  $REAL_KEEPSTORE or /work/real-keepstore-bin/keepstore is there): the
  round trip is added by `keepstore-sim lag`, a TCP delay line in front of
  every keepstore; one more copy goes straight to the keepstores, without
  the proxy, to show that the proxy at 0 ms costs nothing.

With $KR_BEFORE (bench.sh passes keep-rsync-before from the worktree when
it is there: the binary before issue 31's admission and limiter changes),
every copy is run with it as well, in the same round, as rows with
"binary": "before", so that the gain is a ratio of the same invocation.

With BENCH_S14_GO=1 and the Go keep-rsync built (/work/real-keepstore-bin/
keep-rsync-go, or $GO_KEEP_RSYNC), a last part copies 16 blocks of 64 MiB
from 2 real source keepstores to 3 real destination keepstores, 2 replicas,
with the Go tool, keep-rsync-before and keep-rsync (wall, CPU, peak RSS;
rows "scenario": "14go").

Appends one JSON line per copy to RESULTS (bench.sh turns them into
docs/bench/last-latency.json). Usage: bench-latency.py RESULTS WORK KR SIM ROUNDS QUICK
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time

RESULTS, W, KR, SIM, ROUNDS, QUICK = sys.argv[1:7]
ROUNDS = int(ROUNDS)
QUICK = QUICK == "1"
BLOCKS = 300 if QUICK else int(os.environ.get("BENCH_S14_BLOCKS", "3000"))
RTTS = [int(x) for x in os.environ.get("BENCH_S14_RTTS", "0 20 100").split()]
SIZE = "4K"
SEED = 14
REAL = os.environ.get("REAL_KEEPSTORE", "/work/real-keepstore-bin/keepstore")
PROCS = []
KR_BEFORE = os.environ.get("KR_BEFORE", "")
BINARIES = [("after", KR)] + ([("before", KR_BEFORE)] if KR_BEFORE and os.access(KR_BEFORE, os.X_OK) else [])
GO = os.environ.get("GO_KEEP_RSYNC", "/work/real-keepstore-bin/keep-rsync-go")


def log(msg):
    print(f"bench: scenario 14: {msg}", file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def start(args, logname, env=None, stdout=subprocess.DEVNULL):
    p = subprocess.Popen(args, stdout=stdout, stderr=open(os.path.join(W, logname), "ab"),
                         env=env)
    PROCS.append(p)
    return p


def stop(p):
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    if p in PROCS:
        PROCS.remove(p)


def wait_file(path, proc, what, tries=1200):
    for _ in range(tries):
        if os.path.exists(path) and os.path.getsize(path) > 0:
            return
        if proc.poll() is not None:
            sys.exit(f"bench: scenario 14: {what} exited (see {W})")
        time.sleep(0.05)
    sys.exit(f"bench: scenario 14: {what} did not start")


def sim(name, services, prefix, rtt, seed=False):
    js, conf = os.path.join(W, f"{name}.json"), os.path.join(W, f"{name}.conf")
    for f in (js, conf):
        if os.path.exists(f):
            os.remove(f)
    args = [SIM, "--root-token", f"tok-{name}", "--services-json", js, "--settings-file", conf,
            "--services", str(services), "--uuid-prefix", prefix, "--latency-ms", str(rtt)]
    if seed:
        args += ["--seed-blocks", str(BLOCKS), "--seed-sizes", SIZE, "--seed-replicas", "1",
                 "--seed", str(SEED)]
    p = start(args, f"{name}.log")
    wait_file(js, p, f"keepstore-sim {name}")
    return p, js, conf


def measure(tag, src_conf, dst_conf, src_json, dst_json, extra=(), kr=None):
    rep = os.path.join(W, "report14.json")
    if os.path.exists(rep):
        os.remove(rep)
    timef = os.path.join(W, "time14.txt")
    kr = kr or KR
    cmd = [kr, "-src", src_conf, "-dst", dst_conf, "-src-keep-services-json", src_json,
           "-dst-keep-services-json", dst_json, "-replications", "2", "--quiet",
           "--report", rep, *extra]
    t0 = time.time()
    rc = subprocess.run(["/usr/bin/time", "-f", "%e %U %S %M", "-o", timef, *cmd],
                        stdout=subprocess.DEVNULL,
                        stderr=open(os.path.join(W, "kr14.err"), "wb")).returncode
    wall = time.time() - t0
    e, u, s, m = open(timef).read().split()[-4:]
    row = dict(tag, scenario=14, tool="keep-rsync", blocks=BLOCKS, wall=wall, user=float(u),
               sys=float(s), maxrss_kib=int(m), rc=rc,
               cmd=" ".join(cmd).replace(W, "$W"))
    try:
        r = json.load(open(rep))
        row["report"] = {k: r.get(k) for k in ("status", "elapsed_seconds", "copied",
                                                "copied_bytes", "replicas_written", "failed")}
    except Exception as ex:
        row["report_error"] = str(ex)
    with open(RESULTS, "a") as out:
        out.write(json.dumps(row) + "\n")
    copied = (row.get("report") or {}).get("copied")
    log(f"{json.dumps(tag)}: wall {wall:.2f} s, copied {copied}, rc {rc}, "
        f"rss {int(m) / 1024:.0f} MiB")
    if rc != 0:
        log(open(os.path.join(W, "kr14.err")).read()[-600:])
    return row


# ------------------------------------------------------------ keepstore-sim
def sim_part():
    srcs = {rtt: sim(f"s14src{rtt}", 2, "srcl4", rtt, seed=True) for rtt in RTTS}
    for run in range(1, ROUNDS + 1):
        for rtt in RTTS:
            for binary, kr in BINARIES:
                dst = sim("s14dst", 3, "dstl4", rtt)
                _, sjs, sconf = srcs[rtt]
                measure({"target": "sim", "via": "delay", "rtt_ms": rtt, "run": run,
                         "binary": binary}, sconf, dst[2], sjs, dst[1], kr=kr)
                stop(dst[0])
    for p, _, _ in srcs.values():
        stop(p)


# ---------------------------------------------------------- real keepstores
TOKEN = "tok14realkeepstore0123456789abcdefghijklmnopqrstu"


def services_json(path, prefix, ports):
    items = [{"uuid": f"zzzzz-bi6l4-{prefix}{i:010d}", "service_host": "127.0.0.1",
              "service_port": p, "service_ssl_flag": False, "service_type": "disk",
              "read_only": False, "kind": "arvados#keepService"} for i, p in enumerate(ports)]
    json.dump({"kind": "arvados#keepServiceList", "items": items,
               "items_available": len(items)}, open(path, "w"))


def real_cluster(name, n):
    """n keepstores, one Directory volume each; returns (procs, ports, vols)."""
    ports = [free_port() for _ in range(n)]
    urls = [f"http://127.0.0.1:{p}/" for p in ports]
    vols = [os.path.join(W, f"{name}-vol{i}") for i in range(n)]
    for v in vols:
        shutil.rmtree(v, ignore_errors=True)
        os.makedirs(v)
    cfg = {"Clusters": {"zzzzz": {
        "SystemRootToken": TOKEN,
        "ManagementToken": "mgmt14" + "x" * 30,
        "Collections": {"BlobSigning": False, "BlobSigningKey": "k" * 64},
        "Services": {"Keepstore": {"InternalURLs": {u: {} for u in urls}},
                     "Controller": {"ExternalURL": "https://127.0.0.1:1/",
                                    "InternalURLs": {"https://127.0.0.1:1/": {}}}},
        "Volumes": {f"zzzzz-nyw5e-{name[:3]}{i:012d}": {
            "Driver": "Directory", "DriverParameters": {"Root": v},
            "AccessViaHosts": {u: {}}, "Replication": 1}
            for i, (u, v) in enumerate(zip(urls, vols))},
    }}}
    path = os.path.join(W, f"{name}.yml")
    json.dump(cfg, open(path, "w"))
    procs = []
    for u in urls:
        env = dict(os.environ, ARVADOS_SERVICE_INTERNAL_URL=u)
        procs.append(start([REAL, "-config", path], f"{name}.log", env=env))
    for p, u in zip(ports, urls):
        for _ in range(400):
            try:
                socket.create_connection(("127.0.0.1", p), 0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            sys.exit(f"bench: scenario 14: keepstore {u} did not start (see {W}/{name}.log)")
    return procs, ports, vols


def lag(rtt, ports):
    out = os.path.join(W, f"lag{rtt}.ports")
    p = start([SIM, "lag", "--rtt-ms", str(rtt), *[f"127.0.0.1:{q}" for q in ports]],
              f"lag{rtt}.log", stdout=open(out, "wb"))
    for _ in range(200):
        lines = open(out).read().split("\n") if os.path.exists(out) else []
        if len([l for l in lines if l.strip()]) == len(ports):
            return p, [int(l.split()[0]) for l in lines if l.strip()]
        time.sleep(0.05)
    sys.exit("bench: scenario 14: the lag proxy did not start")


def real_part():
    if not os.access(REAL, os.X_OK):
        log(f"no real keepstore at {REAL} (build one with "
            "../shared/tools/real-keepstore/build.sh): real-keepstore rows skipped")
        return
    conf = os.path.join(W, "real14.conf")
    open(conf, "w").write(f"ARVADOS_API_HOST=none.invalid\nARVADOS_API_TOKEN={TOKEN}\n"
                          "ARVADOS_API_HOST_INSECURE=1\n")
    sprocs, sports, _ = real_cluster("src", 2)
    dprocs, dports, dvols = real_cluster("dst", 3)
    services_json(os.path.join(W, "real-src-direct.json"), "s", sports)
    services_json(os.path.join(W, "real-dst-direct.json"), "d", dports)
    seeded = subprocess.run([SIM, "seed", "--services-json", os.path.join(W, "real-src-direct.json"),
                             "--root-token", TOKEN, "--blocks", str(BLOCKS), "--sizes", SIZE,
                             "--replicas", "1", "--seed", str(SEED), "--count"],
                            capture_output=True, text=True)
    if seeded.returncode != 0:
        sys.exit(f"bench: scenario 14: seeding the real keepstores failed: {seeded.stderr}")
    log(f"real keepstores seeded: {seeded.stdout.strip()} blocks")
    lags = {}
    for rtt in RTTS:
        p, ports = lag(rtt, sports + dports)
        lags[rtt] = p
        services_json(os.path.join(W, f"real-src-{rtt}.json"), "s", ports[:len(sports)])
        services_json(os.path.join(W, f"real-dst-{rtt}.json"), "d", ports[len(sports):])
    variants = [("direct", 0)] + [("proxy", rtt) for rtt in RTTS]
    for run in range(1, ROUNDS + 1):
        for via, rtt in variants:
            for binary, kr in BINARIES:
                for v in dvols:
                    for e in os.listdir(v):
                        shutil.rmtree(os.path.join(v, e), ignore_errors=True)
                name = "direct" if via == "direct" else str(rtt)
                measure({"target": "real", "via": via, "rtt_ms": rtt, "run": run,
                         "binary": binary}, conf, conf,
                        os.path.join(W, f"real-src-{name}.json"),
                        os.path.join(W, f"real-dst-{name}.json"), kr=kr)
        # The lag proxy's own CPU so far (every copy of this round): it is
        # not the limit if it stays far below a core.
        for rtt, p in lags.items():
            try:
                f = open(f"/proc/{p.pid}/stat").read().rsplit(")", 1)[1].split()
                cpu = (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
                with open(RESULTS, "a") as out:
                    out.write(json.dumps({"scenario": 14, "lag_proxy_cpu_s": cpu, "rtt_ms": rtt,
                                          "after_run": run}) + "\n")
                log(f"lag proxy {rtt} ms: {cpu:.2f} s CPU after round {run}")
            except (OSError, IndexError, ValueError):
                pass
    for p in list(lags.values()) + sprocs + dprocs:
        stop(p)


# ------------------------------------------- 64 MiB: the Go tool, real keepstores
def go_part():
    if os.environ.get("BENCH_S14_GO") != "1":
        return
    if not (os.access(REAL, os.X_OK) and os.access(GO, os.X_OK)):
        log(f"no real keepstore at {REAL} or no Go keep-rsync at {GO}: 64 MiB rows skipped")
        return
    conf = os.path.join(W, "go14.conf")
    open(conf, "w").write(f"ARVADOS_API_HOST=none.invalid\nARVADOS_API_TOKEN={TOKEN}\n"
                          "ARVADOS_API_HOST_INSECURE=1\n")
    sprocs, sports, _ = real_cluster("gsrc", 2)
    dprocs, dports, dvols = real_cluster("gdst", 3)
    sjs, djs = os.path.join(W, "go-src.json"), os.path.join(W, "go-dst.json")
    services_json(sjs, "s", sports)
    services_json(djs, "d", dports)
    seeded = subprocess.run([SIM, "seed", "--services-json", sjs, "--root-token", TOKEN,
                             "--blocks", "16", "--sizes", "64M", "--replicas", "1",
                             "--seed", "141", "--count"], capture_output=True, text=True)
    if seeded.returncode != 0:
        sys.exit(f"bench: scenario 14: seeding the 64 MiB blocks failed: {seeded.stderr}")
    tools = [("go", GO)] + [(f"keep-rsync-{b}", k) for b, k in BINARIES]
    for run in range(1, ROUNDS + 1):
        for tool, exe in tools:
            for v in dvols:
                for e in os.listdir(v):
                    shutil.rmtree(os.path.join(v, e), ignore_errors=True)
            subprocess.run(["sync"])
            timef = os.path.join(W, "timego.txt")
            if tool == "go":
                # The Go tool takes the services lists as JSON text.
                cmd = [exe, "-src", conf, "-dst", conf,
                       "-src-keep-services-json", open(sjs).read(),
                       "-dst-keep-services-json", open(djs).read(),
                       "-replications", "2", "-src-blob-signature-ttl", "336h"]
            else:
                cmd = [exe, "-src", conf, "-dst", conf, "-src-keep-services-json", sjs,
                       "-dst-keep-services-json", djs, "-replications", "2", "--quiet"]
            t0 = time.time()
            rc = subprocess.run(["/usr/bin/time", "-f", "%e %U %S %M", "-o", timef, *cmd],
                                stdout=subprocess.DEVNULL,
                                stderr=open(os.path.join(W, f"{tool}14go.err"), "wb")).returncode
            wall = time.time() - t0
            e, u, s_, m = open(timef).read().split()[-4:]
            files = sum(len(fs) for v in dvols for _, _, fs in os.walk(v))
            row = {"scenario": "14go", "tool": tool, "run": run, "blocks": 16, "wall": wall,
                   "user": float(u), "sys": float(s_), "maxrss_kib": int(m), "rc": rc,
                   "dst_files": files}
            with open(RESULTS, "a") as out:
                out.write(json.dumps(row) + "\n")
            log(f"64 MiB {tool} run {run}: wall {wall:.2f} s, CPU {float(u) + float(s_):.2f} s, "
                f"rss {int(m) / 1024:.0f} MiB, rc {rc}, {files} files at the destination")
            if rc != 0:
                log(open(os.path.join(W, f"{tool}14go.err")).read()[-600:])
    for p in sprocs + dprocs:
        stop(p)


try:
    if os.environ.get("BENCH_S14_ONLY_GO") != "1":
        sim_part()
        real_part()
    go_part()
finally:
    for p in list(PROCS):
        stop(p)
