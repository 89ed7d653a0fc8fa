#!/usr/bin/env python3
"""Checks manifests rendered by `helm template` for the essentials of a stagefarm deployment:
images, ports, probes running `stagefarm health`, volumes, securityContext, CURVE keys.

Usage: check_manifests.py default|full RENDERED.yaml DASHBOARD.json
Exits 1 with one line per problem."""
import json
import sys

import yaml

problems = []


def check(cond, what):
    if not cond:
        problems.append(what)


def by_kind(docs, kind):
    return [d for d in docs if d and d.get("kind") == kind]


def one(docs, kind, component):
    found = [d for d in by_kind(docs, kind)
             if d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component]
    check(len(found) == 1, f"expected one {kind} for {component}, found {len(found)}")
    return found[0] if found else None


def container(workload):
    return workload["spec"]["template"]["spec"]["containers"][0]


def probe_args(c, name):
    p = c.get(name)
    check(p is not None, f"{c['name']}: no {name}")
    if p is None:
        return []
    cmd = p.get("exec", {}).get("command", [])
    check(cmd[:2] == ["stagefarm", "health"], f"{c['name']} {name}: not `stagefarm health`: {cmd}")
    return cmd


def check_dashboard(path):
    with open(path) as f:
        dash = json.load(f)
    titles = {p["title"]: p for p in dash.get("panels", [])}
    for want, metric in [("Builds per minute", "stagefarm_builds_total"),
                         ("Build duration percentiles", "stagefarm_build_duration_seconds_bucket"),
                         ("Queue depth", "stagefarm_queue_depth"),
                         ("Cache hit ratio", "stagefarm_cache_ac_lookups_total"),
                         ("Cache size", "stagefarm_cache_bytes"),
                         ("Cache evictions", "stagefarm_cache_evictions_total"),
                         ("Worker slots busy", "stagefarm_worker_slots_busy"),
                         ("Step failures", "stagefarm_worker_steps_total")]:
        p = titles.get(want)
        check(p is not None, f"dashboard: no panel {want!r}")
        if p:
            exprs = " ".join(t["expr"] for t in p.get("targets", []))
            check(metric in exprs, f"dashboard panel {want!r} does not query {metric}")
    return dash


def main():
    mode, rendered, dashboard_path = sys.argv[1:4]
    with open(rendered) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    dash = check_dashboard(dashboard_path)
    full = mode == "full"

    coord = one(docs, "Deployment", "coordinator")
    cache = one(docs, "StatefulSet", "cache")
    worker = one(docs, "Deployment", "worker")
    if not (coord and cache and worker):
        return
    image = "registry.example.com/stagefarm:1.2.3" if full else "stagefarm/stagefarm:0.1.0"
    for w in (coord, cache, worker):
        c = container(w)
        check(c["image"] == image, f"{c['name']}: image {c['image']}, want {image}")
        check("resources" in c and "requests" in c["resources"], f"{c['name']}: no resource requests")
        check(any(p["name"] == "metrics" and p["containerPort"] == 9102 for p in c.get("ports", [])),
              f"{c['name']}: no metrics port 9102")
        for probe in ("readinessProbe", "livenessProbe"):
            args = probe_args(c, probe)
            if full and c["name"] != "worker":
                check("--curve-keys" in args, f"{c['name']} {probe}: no --curve-keys")
        args = c["args"]
        check(args[0] == c["name"], f"{c['name']}: runs {args[0]}")
        check("--metrics-listen" in args, f"{c['name']}: no --metrics-listen")
        if full:
            check("--curve-keys" in args and "--insecure" not in args, f"{c['name']}: not CURVE")
            check(any(m["mountPath"] == "/etc/stagefarm/keys" for m in c.get("volumeMounts", [])),
                  f"{c['name']}: keys not mounted")
        else:
            check("--curve-keys" in args, f"{c['name']}: CURVE is the default")

    # Ports and Services.
    cc, kc = container(coord), container(cache)
    check(any(p["containerPort"] == 7700 for p in cc["ports"]), "coordinator: no port 7700")
    check(any(p["containerPort"] == 7701 for p in kc["ports"]), "cache: no port 7701")
    check("tcp://0.0.0.0:7700" in cc["args"], "coordinator: does not listen on the pod network")
    services = {s["metadata"]["name"]: s for s in by_kind(docs, "Service")}
    check(any(p["port"] == 7700 for s in services.values() for p in s["spec"]["ports"]),
          "no Service for the coordinator port")
    check(any(p["port"] == 7701 for s in services.values() for p in s["spec"]["ports"]),
          "no Service for the cache port")

    # Security contexts.
    for w, c in ((coord, cc), (cache, kc)):
        pod = w["spec"]["template"]["spec"].get("securityContext", {})
        check(pod.get("runAsNonRoot") is True, f"{c['name']}: runs as root")
        sc = c.get("securityContext", {})
        check(sc.get("allowPrivilegeEscalation") is False, f"{c['name']}: privilege escalation")
        check(sc.get("readOnlyRootFilesystem") is True, f"{c['name']}: writable root")
        check(sc.get("capabilities", {}).get("drop") == ["ALL"], f"{c['name']}: capabilities kept")
    wc = container(worker)
    check(wc.get("securityContext", {}).get("privileged") is True, "worker: not privileged")
    check(wc.get("securityContext", {}).get("runAsUser") == 0, "worker: not root")
    # SIGTERM drains: the pod must live longer than the drain it asks for.
    args = wc.get("args", [])
    drain = int(args[args.index("--drain-timeout") + 1]) if "--drain-timeout" in args else None
    grace = worker["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
    check(drain is not None and grace > drain, "worker: grace period not above --drain-timeout")

    # Volumes: the cache's PVC, the worker's layer store.
    claims = cache["spec"].get("volumeClaimTemplates", [])
    check(len(claims) == 1 and claims[0]["metadata"]["name"] == "data", "cache: no PVC template")
    check(any(m["name"] == "data" and m["mountPath"] == "/var/lib/stagefarm/cache"
              for m in kc["volumeMounts"]), "cache: data not mounted")
    check("/var/lib/stagefarm/cache" in kc["args"], "cache: --data not on the volume")
    wvols = {v["name"]: v for v in worker["spec"]["template"]["spec"]["volumes"]}
    check("layer-store" in wvols, "worker: no layer-store volume")
    check(any(m["name"] == "layer-store" and m["mountPath"] == "/var/lib/stagefarm/worker"
              for m in wc["volumeMounts"]), "worker: layer store not mounted")
    if full:
        check("ephemeral" in wvols.get("layer-store", {}), "worker: layer store not ephemeral PVC")
        check(claims and claims[0]["spec"]["resources"]["requests"]["storage"] == "1Ti",
              "cache: PVC size not from values")
        keys = wvols.get("curve-keys", {}).get("secret", {})
        paths = sorted(i["path"] for i in keys.get("items", []))
        check(paths == ["server.farm.pub", "worker.pool.secret"],
              f"worker: gets keys {paths}, want only server.farm.pub and worker.pool.secret")

    # Switchable parts.
    secrets = by_kind(docs, "Secret")
    monitors = by_kind(docs, "ServiceMonitor")
    hpas = by_kind(docs, "HorizontalPodAutoscaler")
    dashboards = [c for c in by_kind(docs, "ConfigMap") if "stagefarm.json" in c.get("data", {})]
    if full:
        check(len(secrets) == 1, "full: no CURVE Secret")
        if secrets:
            data = secrets[0].get("stringData", {})
            for k in ("server.farm.pub", "server.farm.secret", "worker.pool.pub",
                      "worker.pool.secret", "client.ci.pub", "client.dev.pub"):
                check(k in data, f"Secret: no {k}")
        check(len(monitors) == 1, "full: no ServiceMonitor")
        check(len(hpas) == 1, "full: no HPA")
        if hpas:
            m = hpas[0]["spec"]["metrics"][0]
            check(m["external"]["metric"]["name"] == "stagefarm_queue_depth",
                  "HPA: not on stagefarm_queue_depth")
        check("replicas" not in worker["spec"], "full: HPA and fixed replicas at once")
        check(len(dashboards) == 1, "full: no dashboard ConfigMap")
        if dashboards:
            check(json.loads(dashboards[0]["data"]["stagefarm.json"]) == dash,
                  "dashboard ConfigMap differs from dashboards/stagefarm.json")
    else:
        check(not secrets and not monitors and not hpas and not dashboards,
              "default: optional parts rendered")
        check(worker["spec"].get("replicas") == 2, "default: worker replicas")


if __name__ == "__main__":
    main()
    for p in problems:
        print("check_manifests:", p)
    sys.exit(1 if problems else 0)
