#!/usr/bin/python3
"""stagefarm build beside docker build, on this machine, in one run.

    bench/compare_docker.py --bin build/cli/stagefarm [--cases a,b] [--out bench/results]

Runs the same Dockerfiles (FROM the same locally made busybox image) with
  - docker build (BuildKit, --network=none; a dockerd is started in a temp dir when none answers),
  - stagefarm build on the embedded farm (no daemons),
  - stagefarm build against a local farm of real processes: cache server, coordinator, 2 workers,
and times each three ways:
  - cold:  nothing cached (docker: builder cache pruned; stagefarm: a fresh store),
  - warm:  the same build again, everything cached,
  - fresh: warm on a new machine. stagefarm: the farm's workers are replaced by new ones with
           empty layer stores while the cache server keeps its contents. docker has no shared
           cache without an explicit export and import, so its "fresh" run is cold again.
Each case runs --repeat times (3) in one sitting, every tool in turn (each repetition starting
with another), and the table shows the median: this VM's timings of one build vary by a third
from run to run. Before each timed build
the disk is synced, so that no build pays for the writeback of the one before.
Then it prints a table of seconds and of ratios (stagefarm / docker; below 1 is faster), and
draws the ratios as a PNG chart (matplotlib). The worker's peak RSS while producing a 1 GiB
layer is measured on the local farm (the target is under 100 MiB).

The cases are the worker issue's targets (a 40-step chain of tiny RUNs for per-step overhead,
30,000 small files, one 512 MiB file) and two multi-stage builds (examples/hello, and four
independent stages that each work for a few seconds).
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from farm import LocalFarm, peak_rss_bytes

SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCKER = "/usr/bin/docker"  # Debian's docker.io client: BuildKit built in (DOCKER_BUILDKIT=1)
MODES = ["cold", "warm", "fresh"]


def dockerfiles():
    chain = "FROM busybox\n" + "".join(f"RUN echo {i} > /step-{i}\n" for i in range(40))
    small = ("FROM busybox\nRUN mkdir /many && cd /many && i=0; "
             "while [ $i -lt 30000 ]; do echo $i > f$i; i=$((i+1)); done\n")
    big = "FROM busybox\nRUN head -c 536870912 /dev/urandom > /big\n"
    parallel = "".join(
        f"FROM busybox AS s{i}\nRUN i=0; while [ $i -lt 150000 ]; do i=$((i+1)); done; "
        f"echo {i} > /out{i}\n" for i in range(4))
    parallel += "FROM busybox\n" + "".join(f"COPY --from=s{i} /out{i} /\n" for i in range(4))
    with open(f"{SRC}/examples/hello/Dockerfile") as f:
        hello = f.read()
    return {
        "chain40": ("40 tiny RUN steps", chain),
        "smallfiles": ("RUN writing 30,000 small files", small),
        "bigfile": ("RUN writing one 512 MiB file", big),
        "parallel4": ("4 independent busy stages", parallel),
        "hello": ("examples/hello (3 stages)", hello),
    }


def run(argv, env=None, check=True):
    t = time.monotonic()
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       env=env)
    dt = time.monotonic() - t
    if check and p.returncode != 0:
        raise SystemExit(f"failed ({p.returncode}): {' '.join(argv)}\n{p.stdout[-3000:]}")
    return dt


def timed(argv, env=None):
    """run() once the disk has written what earlier runs left dirty: no build pays for the
    writeback of another's files (a 512 MiB layer is still being written when the next starts)."""
    os.sync()
    return run(argv, env)


class Docker:
    """A reachable dockerd: the one DOCKER_HOST names or /var/run/docker.sock, else our own."""

    def __init__(self, tmp):
        self.proc = None
        self.env = dict(os.environ, DOCKER_BUILDKIT="1")
        if subprocess.run([DOCKER, "info"], capture_output=True, env=self.env).returncode == 0:
            return
        root = f"{tmp}/docker"
        os.makedirs(root)
        sock = f"unix://{root}/docker.sock"
        self.proc = subprocess.Popen(
            ["dockerd", "--iptables=false", "--bridge=none", "--data-root", f"{root}/data",
             "--exec-root", f"{root}/exec", "--pidfile", f"{root}/dockerd.pid", "-H", sock],
            stdout=subprocess.DEVNULL, stderr=open(f"{root}/dockerd.log", "w"),
            start_new_session=True)
        self.env["DOCKER_HOST"] = sock
        for _ in range(300):
            if subprocess.run([DOCKER, "info"], capture_output=True, env=self.env).returncode == 0:
                return
            time.sleep(0.1)
        raise SystemExit(f"dockerd did not start; see {root}/dockerd.log")

    def load_oci(self, layout, name):
        archive = layout + ".docker.tar"
        run(["skopeo", "copy", "--quiet", f"oci:{layout}:busybox", f"docker-archive:{archive}:{name}"])
        run([DOCKER, "load", "-i", archive], env=self.env)

    def prune(self):
        run([DOCKER, "builder", "prune", "-af"], env=self.env)

    def build(self, ctx, tag):
        return timed([DOCKER, "build", "--network=none", "-q", "-t", tag, ctx], env=self.env)

    def stop(self):
        if self.proc:
            self.proc.terminate()
            self.proc.wait(timeout=60)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--bin", default="build/cli/stagefarm")
    ap.add_argument("--cases", default=",".join(dockerfiles()))
    ap.add_argument("--out", default=f"{SRC}/bench/results")
    ap.add_argument("--no-rss", action="store_true", help="skip the 1 GiB layer RSS measurement")
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs of each case (cold, warm and fresh each time); the median is shown")
    args = ap.parse_args()
    binary = os.path.abspath(args.bin)
    cases = {k: v for k, v in dockerfiles().items() if k in args.cases.split(",")}
    tmp = tempfile.mkdtemp(prefix="stagefarm-compare-")
    os.makedirs(args.out, exist_ok=True)
    docker = None
    samples = {}  # (case, tool, mode) -> seconds of each repetition
    try:
        run([f"{SRC}/scripts/make-busybox-image", f"{tmp}/busybox"])
        docker = Docker(tmp)
        docker.load_oci(f"{tmp}/busybox", "busybox:latest")
        for case, (_, text) in cases.items():
            ctx = f"{tmp}/ctx/{case}"
            os.makedirs(ctx)
            with open(f"{ctx}/Dockerfile", "w") as f:
                f.write(text)

        for case, rep in ((case, rep) for case in cases for rep in range(args.repeat)):
            ctx = f"{tmp}/ctx/{case}"
            print(f"== {case} ({rep + 1} of {args.repeat})", flush=True)

            def record(tool, mode, seconds, case=case):
                samples.setdefault((case, tool, mode), []).append(seconds)

            def with_docker():
                # cold, warm, and "fresh" (cold again: no shared cache)
                docker.prune()
                record("docker", "cold", docker.build(ctx, f"bench-{case}"))
                record("docker", "warm", docker.build(ctx, f"bench-{case}"))
                docker.prune()
                record("docker", "fresh", docker.build(ctx, f"bench-{case}"))

            def with_embedded():
                # a fresh store; "fresh" is a new machine sharing nothing, as docker's
                home = f"{tmp}/home-{case}"
                env = dict(os.environ, STAGEFARM_HOME=home)
                sf = [binary, "build", "--progress=quiet", "-t", f"bench-{case}", ctx]
                run([binary, "image", "import", f"{tmp}/busybox", "busybox"], env=env)
                record("embedded", "cold", timed(sf, env=env))
                record("embedded", "warm", timed(sf, env=env))
                shutil.rmtree(home)
                run([binary, "image", "import", f"{tmp}/busybox", "busybox"], env=env)
                record("embedded", "fresh", timed(sf, env=env))
                shutil.rmtree(home)

            def with_farm():
                # a local farm of 2 workers: "fresh" replaces both workers, the cache server stays
                farm_dir = f"{tmp}/farm-{case}"
                os.makedirs(farm_dir)
                with LocalFarm(binary, farm_dir, workers=2) as farm:
                    run([binary, "image", "import", "--cache", farm.cache, f"{tmp}/busybox",
                         "busybox"])
                    sf = [binary, "build", "--farm", farm.coordinator, "--progress=quiet",
                          "-t", f"bench-{case}", ctx]
                    record("farm2", "cold", timed(sf))
                    record("farm2", "warm", timed(sf))
                    farm.replace_workers()
                    record("farm2", "fresh", timed(sf))
                shutil.rmtree(farm_dir)

            # Each repetition starts with another tool: a build that follows one which freed a
            # lot of memory (a store removed) runs slower on this VM, whose freed memory is slow
            # to touch again, and no tool should always be the one that follows.
            order = [with_docker, with_embedded, with_farm]
            for step in order[rep % 3:] + order[:rep % 3]:
                step()
            print("   " + "  ".join(f"{tool}/{mode} {samples[case, tool, mode][-1]:.2f}s"
                                    for tool in ("docker", "embedded", "farm2") for mode in MODES),
                  flush=True)

        times = {k: statistics.median(v) for k, v in samples.items()}
        rss = None
        if not args.no_rss:
            rss = measure_rss(binary, tmp)
        report(cases, times, samples, rss, args.out)
        return 0
    finally:
        if docker:
            docker.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def measure_rss(binary, tmp):
    """Peak RSS of a farm worker while it produces (tars, hashes, uploads) a 1 GiB layer."""
    ctx = f"{tmp}/ctx/rss"
    os.makedirs(ctx)
    with open(f"{ctx}/Dockerfile", "w") as f:
        f.write("FROM busybox\nRUN head -c 1073741824 /dev/urandom > /gig\n")
    farm_dir = f"{tmp}/farm-rss"
    os.makedirs(farm_dir)
    with LocalFarm(binary, farm_dir, workers=1) as farm:
        run([binary, "image", "import", "--cache", farm.cache, f"{tmp}/busybox", "busybox"])
        seconds = run([binary, "build", "--farm", farm.coordinator, "--progress=quiet", ctx])
        worker = farm.worker_peak_rss()
        cache = peak_rss_bytes(farm.procs[0].pid)
    shutil.rmtree(farm_dir)
    return {"seconds": seconds, "worker": worker, "cache": cache}


def report(cases, times, samples, rss, out):
    tools = ["embedded", "farm2"]
    runs = len(next(iter(samples.values())))
    lines = [f"seconds (median of {runs} runs each, this machine, one sitting):",
             f"{'case':<12}{'mode':<7}{'docker':>9}{'embedded':>10}{'farm2':>9}"
             f"{'embedded/docker':>17}{'farm2/docker':>14}"]
    for case in cases:
        for mode in MODES:
            d = times[case, "docker", mode]
            e, f = (times[case, t, mode] for t in tools)
            lines.append(f"{case:<12}{mode:<7}{d:>9.2f}{e:>10.2f}{f:>9.2f}{e / d:>16.2f}x"
                         f"{f / d:>13.2f}x")
    lines.append("")
    lines.append("cold per-step overhead (chain40): target at most 0.5x docker's; smallfiles and "
                 "bigfile cold: target at most 1.0x docker's")
    lines.append("fresh = warm on a new machine: stagefarm's workers are new, its cache server "
                 "is shared; docker has no shared cache, so its fresh run is cold")
    if rss:
        lines.append(f"1 GiB layer on the local farm: {rss['seconds']:.1f}s, worker peak RSS "
                     f"{rss['worker'] / 2**20:.0f} MiB (target under 100 MiB), cache server peak "
                     f"RSS {rss['cache'] / 2**20:.0f} MiB")
    text = "\n".join(lines)
    print()
    print(text)
    with open(f"{out}/compare-docker.txt", "w") as f:
        f.write(text + "\n")
    with open(f"{out}/compare-docker.json", "w") as f:
        json.dump({"times": {"/".join(k): v for k, v in times.items()},
                   "samples": {"/".join(k): v for k, v in samples.items()}, "rss": rss}, f,
                  indent=1)
    plot(cases, times, f"{out}/compare-docker.png")


def plot(cases, times, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is missing (apt-get install python3-matplotlib): no chart", file=sys.stderr)
        return
    fig, axes = plt.subplots(1, len(MODES), figsize=(5 * len(MODES), 4.5), sharey=True)
    names = list(cases)
    width = 0.38
    for ax, mode in zip(axes, MODES):
        for j, (tool, color) in enumerate((("embedded", "#4c72b0"), ("farm2", "#dd8452"))):
            ratios = [times[c, tool, mode] / times[c, "docker", mode] for c in names]
            xs = [i + (j - 0.5) * width for i in range(len(names))]
            bars = ax.bar(xs, ratios, width, label=f"stagefarm {tool}", color=color)
            ax.bar_label(bars, fmt="%.2f", fontsize=7)
        ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
        ax.set_title(f"{mode}")
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        ax.set_yscale("log")
    axes[0].set_ylabel("time / docker build time (log; below 1 is faster)")
    axes[0].legend(fontsize=8)
    fig.suptitle("stagefarm build vs docker build (BuildKit), same Dockerfiles, one run")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"chart: {path}")


if __name__ == "__main__":
    sys.exit(main())
