"""Serving load benchmark: `recommend` against a trivial BentoML endpoint, same settings, same run, localhost only.

    .venv/bin/python bench/serve_load.py [--seconds 60] [--connections 32] [--work bench/work]
                                         [--results bench/results/serving]

1. Prepares (once; cached in --work) a served model the way the pipeline makes one: ingest,
   validate, split and featurize the embedded MovieLens data with params.yaml, fine-tune from
   scratch for --epochs, package into a registry under --work, promote, import into a BentoML
   store under --work.
2. Serves bench/serve_load_trivial.py:Trivial and RecloopService side by side, warms each with
   --warmup seconds of load, then loads them with wrk one at a time, --seconds each, in the order
   trivial, recommend, recommend, trivial (known users, cycling through every user). With
   --adhoc-seconds, also `recommend` for ad-hoc histories (each user's last 20 training items, no
   user_id), where the encoder runs in every request, and fresh state: `feedback` (a click) and
   `recommend` for the same user, alternating, cycling through every user, so that every
   recommend finds a new acknowledged event and recomputes the user's state (the run's requests/s
   count both kinds). With --adaptive-seconds, also the ad-hoc histories through BentoML's own
   adaptive batching (bench/serve_load_adaptive.py: the same recommend path behind a batchable
   endpoint) instead of the service's event-loop batching. Each run starts from an empty feedback log
   in --work (--keep-log keeps the earlier runs' log; the results state its size at the start).
3. Prints a Markdown table and writes --results/serve_load-<UTC time>.json (one file per run):
   requests/s, latency percentiles (the worst run's), errors (non-2xx, socket errors, timeouts),
   the server's CPU time per request (steadier than requests/s when other work shares the
   machine), the encoder calls and requests per call during each run (from the service's
   `recloop_encoder_batch_size` histogram on /metrics), the peak resident memory of the serving
   processes (BentoML's arbiter and the worker together, and the worker alone), and the machine's
   load average around each run.

Needs wrk (`apt-get install -y wrk`). Every request goes to 127.0.0.1; each run stops after --seconds.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from components.config import Params, apply_overrides, load_params
from provenance import provenance

BENTOML = REPO / ".venv" / "bin" / "bentoml"
LUA = """
local paths = {%s}
local bodies = {%s}
local n = 0
request = function()
  n = n + 1
  local i = (n %% #bodies) + 1
  return wrk.format("POST", paths[i], {["Content-Type"] = "application/json"}, bodies[i])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('RESULT {"requests": %%d, "seconds": %%.3f, "status_errors": %%d, "connect_errors": %%d, '
    .. '"read_errors": %%d, "write_errors": %%d, "timeouts": %%d, "p50_ms": %%.2f, "p90_ms": %%.2f, '
    .. '"p95_ms": %%.2f, "p99_ms": %%.2f, "max_ms": %%.2f, "mean_ms": %%.2f}\\n',
    summary.requests, summary.duration / 1e6, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(95) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000, latency.mean / 1000))
end
"""


def bench_params(work: Path, workers: int | None = None, changes: Sequence[str] = ()) -> tuple[Params, Path]:
    """params.yaml with every output, the registry and the feedback log redirected into `work`
    (and serve.workers set, when given: both servers use it; `changes`, KEY=VALUE with a dotted key, applied)."""
    tree = yaml.safe_load((REPO / "params.yaml").read_text())
    apply_overrides(tree, changes)
    tree["paths"] = {**tree.get("paths", {}), **{k: str(work / k) for k in
                                                 ("canonical", "validated", "split", "features", "reports", "models")}}
    tree["registry"] = {**tree.get("registry", {}), "uri": f"sqlite:///{work / 'mlflow.db'}"}
    tree["serve"] = {**tree.get("serve", {}), "feedback_log": str(work / "feedback.db"),
                     **({} if workers is None else {"workers": workers})}
    tree["tracking"] = {**tree.get("tracking", {}), "uri": None}
    path = work / "params.yaml"
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return load_params(path), path


def prepare(params: Params, epochs: int) -> None:
    """The pipeline's stages on the embedded data, then package -> promote -> BentoML import (skipped when done)."""
    from components.registry.registry import CHAMPION, alias_version
    from components.serving.bento import import_champion, latest_import

    if alias_version(params.registry, CHAMPION) is not None and latest_import(params.registry) is not None:
        return
    from components.data.ingest import ingest
    from components.data.split import split
    from components.features.featurize import featurize
    from components.registry.registry import promote
    from components.serving.package import package
    from components.training.finetune import finetune
    from components.validation.validate import validate

    p = params.paths
    print(ingest(params.ingest, p.canonical, p.reports).describe(), flush=True)
    print(validate(params.validate_, p.canonical, p.validated, p.reports).describe(), flush=True)
    print(split(params.split, p.validated, p.split, p.reports, params.seed).describe(), flush=True)
    print(featurize(params.featurize, p.split, p.features).describe(), flush=True)
    cfg = params.finetune.model_copy(update={"init": "scratch", "epochs": epochs})
    print(finetune(params.model, cfg, params.tracking, p.split, p.features, p.models, p.reports,
                   params.seed, labels=params.labels).describe(), flush=True)
    print(package(params.registry, p).describe(), flush=True)
    print(promote(params.registry).describe(), flush=True)
    print(import_champion(params.registry).describe(), flush=True)


def served_prior(model_dir: Path) -> dict | None:
    """The served model's content prior (weight, normalisation), or None when it is scored alone."""
    from components.models.content_prior import load_prior

    prior = load_prior(model_dir)
    return None if prior is None else prior.describe()


def reset_log(path: Path, keep: bool) -> dict:
    """The feedback log's size before the run (its file and write-ahead log), after deleting them unless `keep`.

    Every run appends its clicks and impressions, and the service reads every client event logged since
    its bundle was built: kept across runs, the log grew to 3 GB and every user had hundreds of earlier
    clicks, a state no deployment reaches between two retrainings. So a run starts from an empty log
    unless --keep-log says otherwise.
    """
    files = [path.with_name(path.name + suffix) for suffix in ("", "-wal", "-shm")]
    if not keep:
        for file in files:
            file.unlink(missing_ok=True)
    return {"path": path.name, "kept": keep, "bytes": sum(f.stat().st_size for f in files[:2] if f.exists())}


def machine() -> dict:
    """What the numbers were measured on."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown")
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """`bentoml serve TARGET` on a free localhost port, its process tree watched for peak memory."""

    def __init__(self, target: str, env: dict[str, str], log: Path):
        self.port = free_port()
        self.log = log
        with open(log, "wb") as out:
            self.process = subprocess.Popen([str(BENTOML), "serve", target, "--host", "127.0.0.1",
                                             "--port", str(self.port)], cwd=REPO, env=env, stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        self.peak_rss = 0  # the whole tree: BentoML's arbiter and the worker
        self.peak_worker_rss = 0  # the largest child: the worker process that serves
        self._stop = threading.Event()

    def wait_ready(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"server exited:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise SystemExit(f"server not ready after {timeout}s:\n{self.log.read_text()[-3000:]}")

    def tree(self) -> list[psutil.Process]:
        root = psutil.Process(self.process.pid)
        return [root, *root.children(recursive=True)]

    def watch_memory(self) -> threading.Thread:
        def sample() -> None:
            while not self._stop.wait(0.5):
                sizes = []
                for p in self.tree():
                    try:
                        sizes.append(p.memory_info().rss)
                    except psutil.NoSuchProcess:
                        sizes.append(0)
                self.peak_rss = max(self.peak_rss, sum(sizes))
                self.peak_worker_rss = max(self.peak_worker_rss, max(sizes[1:], default=0))

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()
        processes = self.tree()
        for p in processes:
            try:
                p.send_signal(signal.SIGTERM)
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(processes, timeout=30)
        for p in alive:
            p.kill()


def run_wrk(port: int, path: str | list[str], bodies: list[str], seconds: int, connections: int,
            work: Path) -> dict:
    """wrk posting `bodies` in turn, to `path` (or to the path beside each body)."""
    paths = path if isinstance(path, list) else [path] * len(bodies)
    script = work / f"wrk{paths[0].replace('/', '-')}-{len(set(paths))}.lua"
    script.write_text(LUA % (", ".join(json.dumps(p) for p in paths), ", ".join(json.dumps(b) for b in bodies)))
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s", str(script),
           f"http://127.0.0.1:{port}{paths[0]}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
    line = next((line for line in out.splitlines() if line.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"wrk printed no result:\n{out}")
    result = json.loads(line.removeprefix("RESULT "))
    result["rps"] = result["requests"] / result["seconds"]
    result["errors"] = sum(result[k] for k in ("status_errors", "connect_errors", "read_errors", "write_errors",
                                               "timeouts"))
    return result


def server_cpu_seconds(server: Served) -> float:
    total = 0.0
    for p in server.tree():
        try:
            times = p.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def encoder_batches(port: int) -> tuple[float, float]:
    """(encoder calls, requests they answered) so far: the service's batch-size histogram on /metrics
    (zeros for a server without it)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    found = {"count": 0.0, "sum": 0.0}
    for line in text.splitlines():
        for part in found:
            if line.startswith(f"recloop_encoder_batch_size_{part}"):
                found[part] += float(line.rsplit(" ", 1)[1])
    return found["count"], found["sum"]


def measure(name: str, server: Served, path: str | list[str], bodies: list[str], seconds: int, args,
            work: Path) -> dict:
    """One wrk run against a ready server, with the server's CPU time per request and the load average."""
    calls_before, batched_before = encoder_batches(server.port)
    load_before, cpu_before = os.getloadavg()[0], server_cpu_seconds(server)
    result = run_wrk(server.port, path, bodies, seconds, args.connections, work)
    cpu = server_cpu_seconds(server) - cpu_before
    calls, batched = (now - before for now, before in zip(encoder_batches(server.port), (calls_before, batched_before)))
    result.update(name=name, server_cpu_ms_per_request=1000 * cpu / max(result["requests"], 1),
                  load_before=load_before, load_after=os.getloadavg()[0],
                  encoder_calls=calls, encoder_requests_per_call=batched / calls if calls else None)
    print(f"{name}: {result['rps']:.0f} req/s, p99 {result['p99_ms']:.0f} ms, errors {result['errors']}, "
          f"server CPU {result['server_cpu_ms_per_request']:.2f} ms/request, "
          + (f"{calls:.0f} encoder calls of {batched / calls:.1f} requests, " if calls else "")
          + f"load {result['load_before']:.1f} -> {result['load_after']:.1f}", flush=True)
    return result


def start(target: str, path: str, body: str, env: dict[str, str], args, work: Path, name: str) -> Served:
    server = Served(target, env, work / f"{name}.log")
    server.wait_ready()
    httpx.post(f"http://127.0.0.1:{server.port}{path}", content=body, headers={"content-type": "application/json"},
               timeout=30).raise_for_status()
    run_wrk(server.port, path, [body], args.warmup, args.connections, work)  # caches and lazy imports
    server.watch_memory()
    return server


def combine(name: str, runs: list[dict], server: Served) -> dict:
    """Runs of one endpoint together: summed requests and seconds, the worst percentiles, all errors."""
    requests, seconds = sum(r["requests"] for r in runs), sum(r["seconds"] for r in runs)
    return {"name": name, "rps": requests / seconds, "requests": requests, "seconds": seconds,
            "errors": sum(r["errors"] for r in runs), "runs": len(runs),
            **{k: max(r[k] for r in runs) for k in ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms")},
            "server_cpu_ms_per_request": sum(r["server_cpu_ms_per_request"] * r["requests"] for r in runs) / requests,
            "peak_rss_mb": server.peak_rss / 2**20, "peak_worker_rss_mb": server.peak_worker_rss / 2**20,
            "load": [round(r["load_before"], 1) for r in runs] + [round(runs[-1]["load_after"], 1)],
            "encoder_calls": sum(r["encoder_calls"] for r in runs),
            "encoder_requests_per_call": (sum(r["encoder_calls"] * (r["encoder_requests_per_call"] or 0) for r in runs)
                                          / max(sum(r["encoder_calls"] for r in runs), 1))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=5, help="seconds of unmeasured load before each run")
    parser.add_argument("--adhoc-seconds", type=int, default=20,
                        help="also measure ad-hoc histories (the encoder runs per request); 0: skip")
    parser.add_argument("--adaptive-seconds", type=int, default=0,
                        help="also measure ad-hoc histories through BentoML's adaptive batching; 0: skip")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workers", type=int, default=None, help="serve.workers for both servers (default: params)")
    parser.add_argument("--keep-log", action="store_true",
                        help="keep --work's feedback log from earlier runs (default: start from an empty one)")
    parser.add_argument("--work", type=Path, default=REPO / "bench" / "work")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a params.yaml change for the served model and the service, e.g. "
                             "finetune.content_prior=false (use a --work of its own: a prepared one is reused)")
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "results" / "serving")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get update && apt-get install -y wrk")
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.environ["BENTOML_HOME"] = str(work / "bentoml")
    params, params_path = bench_params(work, args.workers, args.set)
    prepare(params, args.epochs)
    log_at_start = reset_log(Path(params.serve.feedback_log), args.keep_log)
    print(f"feedback log at start: {log_at_start['bytes'] / 2**20:.1f} MiB"
          + (" (kept from earlier runs)" if args.keep_log else " (emptied)"), flush=True)

    env = {**os.environ, "RECLOOP_PARAMS": str(params_path), "BENTOML_DO_NOT_TRACK": "true",
           "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    import pandas as pd

    users = pd.read_parquet(Path(params.paths.split) / "users.parquet")["user_id"].astype(str).tolist()
    recommend_bodies = [json.dumps({"user_id": u, "k": 10}) for u in users]
    train = pd.read_parquet(Path(params.paths.split) / "train.parquet", columns=["user_id", "item_id", "timestamp"])
    recent = train.sort_values("timestamp").groupby("user_id")["item_id"].apply(lambda s: s.astype(str).tolist()[-20:])
    adhoc_bodies = [json.dumps({"history": items, "k": 10}) for items in recent]
    # Each user clicks their own most recent item again: a known item, a new acknowledged event.
    fresh_paths = ["/feedback", "/recommend"] * len(recent)
    fresh_bodies = [body for user, items in recent.items() for body in (
        json.dumps({"events": [{"user_id": str(user), "item_id": items[-1], "event": "click"}]}),
        json.dumps({"user_id": str(user), "k": 10}))]
    service = "components.serving.service:RecloopService"
    adaptive_name = "recommend (ad-hoc history, BentoML adaptive batching)"
    started = time.gmtime()
    load_start = os.getloadavg()
    servers: list[Served] = []
    try:
        trivial = start("bench.serve_load_trivial:Trivial", "/ping", '{"user_id": "1"}', env, args, work, "trivial")
        servers.append(trivial)
        recloop = start(service, "/recommend", recommend_bodies[0], env, args, work, "recommend")
        servers.append(recloop)
        # A B B A: whatever else the machine runs drifts over minutes; this order cancels a steady drift.
        runs: dict[str, list[dict]] = {"trivial": [], "recommend": []}
        for name in ("trivial", "recommend", "recommend", "trivial"):
            server, path, bodies = ((trivial, "/ping", ['{"user_id": "1"}']) if name == "trivial"
                                    else (recloop, "/recommend", recommend_bodies))
            runs[name].append(measure(name, server, path, bodies, args.seconds, args, work))
        if args.adhoc_seconds:
            runs["recommend (ad-hoc history)"] = [measure("recommend (ad-hoc history)", recloop, "/recommend",
                                                          adhoc_bodies, args.adhoc_seconds, args, work)]
            runs["feedback + fresh recommend"] = [measure("feedback + fresh recommend", recloop, fresh_paths,
                                                          fresh_bodies, args.adhoc_seconds, args, work)]
        if args.adaptive_seconds:
            batched = [f'{{"requests": [{body}]}}' for body in adhoc_bodies]
            adaptive = start("bench.serve_load_adaptive:Adaptive", "/recommend", batched[0], env, args, work,
                             "adaptive")
            servers.append(adaptive)
            runs[adaptive_name] = [measure(adaptive_name, adaptive, "/recommend", batched, args.adaptive_seconds,
                                           args, work)]
    finally:
        for server in servers:
            server.stop()
    served_by = {"trivial": trivial, adaptive_name: servers[-1]}
    results = [combine(name, found, served_by.get(name, recloop)) for name, found in runs.items()]
    ratio = results[1]["rps"] / results[0]["rps"]
    summary = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", started), "command": " ".join(sys.argv), **provenance(),
               "machine": machine(), "load_average_start": load_start, "load_average_end": os.getloadavg(),
               "seconds": args.seconds, "connections": args.connections, "warmup": args.warmup,
               "feedback_log_at_start": log_at_start,
               "ratio_recommend_to_trivial": ratio,
               "ratios_to_trivial": {r["name"]: r["rps"] / results[0]["rps"] for r in results[1:]},
               "serve": {k: getattr(params.serve, k) for k in ("workers", "watch_seconds", "candidates")},
               "changes": args.set, "content_prior": served_prior(Path(params.paths.models) / "finetuned"),
               "endpoints": results, "runs": runs}
    args.results.mkdir(parents=True, exist_ok=True)
    out = args.results / f"serve_load-{time.strftime('%Y-%m-%dT%H%M%SZ', started)}.json"
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nwrote {out}")
    print("\n| endpoint | runs x s | req/s | p50 ms | p95 ms | p99 ms | max ms | errors | server CPU ms/req "
          "| peak RSS MB (worker) | load avg |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['name']} | {r['runs']} x {r['seconds'] / r['runs']:.0f} | {r['rps']:.0f} | {r['p50_ms']:.1f} | "
              f"{r['p95_ms']:.1f} | {r['p99_ms']:.1f} | {r['max_ms']:.0f} | {r['errors']} | "
              f"{r['server_cpu_ms_per_request']:.2f} | {r['peak_rss_mb']:.0f} ({r['peak_worker_rss_mb']:.0f}) | "
              f"{' / '.join(map(str, r['load']))} |")
    cpu_ratio = results[0]["server_cpu_ms_per_request"] / results[1]["server_cpu_ms_per_request"]
    print(f"\nrecommend / trivial: throughput {ratio:.2f}, server CPU per request (inverse) {cpu_ratio:.2f}")
    for name, value in summary["ratios_to_trivial"].items():
        print(f"{name} / trivial: throughput {value:.2f}")


if __name__ == "__main__":
    main()
