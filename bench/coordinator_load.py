#!/usr/bin/python3
"""Load test of the coordinator: many builds from many tenants against a few real workers.

    bench/coordinator_load.py --bin build/stagefarm [--builds 200] [--tenants 10] [--workers 4]
                              [--slots 4] [--sleep 0.5] [--concurrency 200]

Starts a cache server, a coordinator (with metrics) and N workers on 127.0.0.1 in a temp dir,
imports the busybox image, then runs `stagefarm build` for every build at once (up to
--concurrency clients at a time). Each build is its own Dockerfile: two independent stages whose
RUN sleeps, joined by a final stage that copies from both, so 3 worker tasks per build. Reports:

- throughput (builds per second over the wall time),
- queue latency percentiles: for each build, the time from submission to its first step start,
  as the coordinator stamps it (the "+T s" of the first "(on W at +T s)" line),
- scheduling overhead per task: stagefarm_schedule_seconds (choosing the task and its worker,
  encoding and sending it), and the coordinator's CPU time divided by the tasks it ran,
- lost builds: clients that did not exit 0, and builds_total{outcome="success"} from /metrics.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

from farm import LocalFarm, cpu_seconds, metric, percentile


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--bin", default="build/stagefarm")
    ap.add_argument("--builds", type=int, default=200)
    ap.add_argument("--tenants", type=int, default=10)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--slots", type=int, default=4)
    ap.add_argument("--sleep", type=float, default=0.5)
    ap.add_argument("--concurrency", type=int, default=200)
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = ap.parse_args()
    binary = os.path.abspath(args.bin)
    src = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    tmp = tempfile.mkdtemp(prefix="stagefarm-load-")
    farm = None
    try:
        farm = LocalFarm(binary, tmp, workers=args.workers, slots=args.slots)
        coord, cache, coord_proc = farm.coordinator, farm.cache, farm.coordinator_proc
        mport = farm.metrics_port
        subprocess.run([f"{src}/scripts/make-busybox-image", f"{tmp}/busybox"], check=True,
                       stdout=subprocess.DEVNULL)
        imp = subprocess.run([binary, "image", "import", "--cache", cache, f"{tmp}/busybox",
                              "busybox"], capture_output=True, text=True)
        if imp.returncode != 0:
            raise SystemExit("image import failed: " + imp.stderr)

        contexts = []
        for b in range(args.builds):
            ctx = f"{tmp}/ctx/{b}"
            os.makedirs(ctx)
            with open(f"{ctx}/Dockerfile", "w") as f:
                f.write(f"FROM busybox AS one\nRUN sleep {args.sleep}; echo {b}-one >/one\n"
                        f"FROM busybox AS two\nRUN sleep {args.sleep}; echo {b}-two >/two\n"
                        "FROM busybox\nCOPY --from=one /one /\nCOPY --from=two /two /\n")
            contexts.append(ctx)

        cpu_before = cpu_seconds(coord_proc.pid)
        start = time.time()
        pending = list(range(args.builds))
        running = {}
        results = {}
        while pending or running:
            while pending and len(running) < args.concurrency:
                b = pending.pop(0)
                log = f"{tmp}/client-{b}.log"
                running[b] = (subprocess.Popen(
                    [binary, "build", "--farm", coord, "--progress=plain", "--tenant",
                     f"tenant-{b % args.tenants}", contexts[b]],
                    stdout=subprocess.DEVNULL, stderr=open(log, "w")), log)
            for b, (p, log) in list(running.items()):
                if p.poll() is not None:
                    results[b] = (p.returncode, open(log).read())
                    del running[b]
            time.sleep(0.05)
        wall = time.time() - start
        cpu = cpu_seconds(coord_proc.pid) - cpu_before
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics").read().decode()

        failed = [b for b, (rc, _) in results.items() if rc != 0]
        latencies = []
        for rc, out in results.values():
            m = re.search(r"\(on \S+ at \+([0-9.]+)s\)", out)
            if m:
                latencies.append(float(m.group(1)))
        sched_sum = metric(metrics, "stagefarm_schedule_seconds_sum")
        sched_count = metric(metrics, "stagefarm_schedule_seconds_count")
        executed = metric(metrics, "stagefarm_stages_total", '{outcome="executed"}')
        succeeded = metric(metrics, "stagefarm_builds_total", '{outcome="success"}')
        print(f"builds: {args.builds} from {args.tenants} tenants, {args.workers} workers x "
              f"{args.slots} slots, RUN sleep {args.sleep}s, 3 tasks per build")
        print(f"wall time: {wall:.1f}s, throughput {args.builds / wall:.2f} builds/s, "
              f"{executed / wall:.2f} tasks/s")
        print("queue latency (submission to first step start): "
              f"p50 {percentile(latencies, 50):.2f}s p90 {percentile(latencies, 90):.2f}s "
              f"p99 {percentile(latencies, 99):.2f}s max {max(latencies, default=0):.2f}s")
        if sched_count:
            print(f"scheduling overhead: {1e6 * sched_sum / sched_count:.1f} us per task placed "
                  f"({int(sched_count)} placements)")
        if executed:
            print(f"coordinator CPU: {cpu:.2f}s in all, {1e3 * cpu / executed:.2f} ms per task run "
                  "(planning, cache lookups, events, scheduling)")
        print(f"lost builds: {len(failed)} (clients failed), coordinator counted "
              f"{int(succeeded)} successes of {args.builds}")
        for b in failed[:5]:
            print(f"--- build {b} failed:\n{results[b][1][-2000:]}")
        return 0 if not failed and int(succeeded) == args.builds else 1
    finally:
        if farm:
            farm.stop()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
