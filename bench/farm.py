"""A stagefarm farm of real processes on 127.0.0.1 for the benchmark scripts, and small helpers.

    with LocalFarm(binary, tmp, workers=2) as farm:
        farm.build(["--farm", farm.coordinator, ctx])
"""
import os
import re
import signal
import socket
import subprocess
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_for(path, pattern, timeout=30):
    """Waits until the file at `path` matches `pattern`; returns group 1 (or the whole match)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with open(path) as f:
                m = re.search(pattern, f.read())
            if m:
                return m.group(1) if m.groups() else m.group(0)
        except FileNotFoundError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {pattern!r} in {path}")


def percentile(values, p):
    v = sorted(values)
    if not v:
        return float("nan")
    k = (len(v) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def metric(text, name, labels=""):
    m = re.search(rf"^{re.escape(name)}{re.escape(labels)} ([0-9.eE+-]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_bytes(pid):
    """The process's resident-set high-water mark (VmHWM)."""
    with open(f"/proc/{pid}/status") as f:
        m = re.search(r"^VmHWM:\s+(\d+) kB", f.read(), re.M)
    return int(m.group(1)) * 1024 if m else 0


class LocalFarm:
    """A cache server, a coordinator (with metrics) and N workers, each its own process group.

    Workers can be replaced by fresh ones (empty layer stores) while the cache server keeps
    everything: `replace_workers()`.
    """

    def __init__(self, binary, tmp, workers=2, slots=None, worker_args=()):
        self.binary, self.tmp, self.slots, self.worker_args = binary, tmp, slots, list(worker_args)
        self.procs, self.workers, self.generation = [], [], 0
        self._spawn([binary, "cache", "--listen", "tcp://127.0.0.1:0", "--data", f"{tmp}/cache"],
                    f"{tmp}/cache.log")
        self.cache = wait_for(f"{tmp}/cache.log", r"listening on (tcp://[0-9.]+:[0-9]+)")
        self.metrics_port = free_port()
        self.coordinator_proc = self._spawn(
            [binary, "coordinator", "--listen", "tcp://127.0.0.1:0", "--cache", self.cache,
             "--metrics-listen", f"127.0.0.1:{self.metrics_port}"], f"{tmp}/coord.log")
        self.coordinator = wait_for(f"{tmp}/coord.log", r"listening on (tcp://[0-9.]+:[0-9]+)")
        self._start_workers(workers)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def _spawn(self, argv, log):
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=open(log, "w"),
                             start_new_session=True)
        self.procs.append(p)
        return p

    def _start_workers(self, n):
        self.generation += 1
        names = [f"w{self.generation}-{i}" for i in range(n)]
        for name in names:
            argv = [self.binary, "worker", "--coordinator", self.coordinator, "--cache", self.cache,
                    "--root", f"{self.tmp}/{name}", "--name", name] + self.worker_args
            if self.slots:
                argv += ["--slots", str(self.slots)]
            self.workers.append(self._spawn(argv, f"{self.tmp}/{name}.log"))
        for name in names:
            wait_for(f"{self.tmp}/coord.log", rf"(worker {name} registered)")

    def replace_workers(self):
        """Stops every worker and starts as many new ones with empty layer stores."""
        n = len(self.workers)
        for p in self.workers:
            self._terminate(p)
        self.workers = []
        self._start_workers(n)

    def worker_peak_rss(self):
        return max((peak_rss_bytes(p.pid) for p in self.workers), default=0)

    @staticmethod
    def _terminate(p):
        try:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(timeout=20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()

    def stop(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                self._terminate(p)
