"""Soak, reload and faults under load (issue 15, item 6): the service for minutes at 64 connections, a
promotion switched in under that load, and the faults of tests/serving/test_faults.py timed. Localhost only.

    .venv/bin/python bench/serve_faults.py [--soak-seconds 600] [--connections 64] [--no-reload] [--no-faults]
                                           [--source bench/work/serving] [--work bench/work/serve-faults]

The served model is bench/serve_load.py's (prepared once in --source, whose registry and BentoML store
are copied into --work on the first run, so promotions here never touch them). One server, params.yaml's
serve settings, a new SQLite feedback log per run:
1. (with faults) the server starts on a read-only feedback log (the immutable attribute under root,
   0444 otherwise): how long /feedback answers 503, and how soon it answers 200 once the file is writable.
2. Soak: wrk for --soak-seconds at --connections, a mix per user of a known-user recommend, a feedback
   click and an ad-hoc history recommend (every known user has new events: fresh state is recomputed);
   the worker's resident memory every --sample-seconds; growth = the last sample against the one at
   minute 1 (at half the soak when it is shorter than two minutes).
3. Reload under load: promote the registry version that is not the champion (a second version of the
   same bundle is logged once) and POST /reload while wrk runs the mix: failed requests = non-2xx and
   socket errors and timeouts over the whole wrk run, which spans the switch.
4. Faults, each while wrk loads recommend (known users and ad-hoc) and a prober posts one feedback
   click at a time: a full disk (the worker's RLIMIT_FSIZE at 64 KiB: see FULL_DISK_BYTES), the registry
   unreadable (its SQLite file overwritten in place, then restored) during a /reload, PostgreSQL down
   (a second server on a PostgreSQL store, tests/serving/postgres_server.py, stopped and restarted).
   Each says when the first 503 came, how many, how soon the first 200 after the fault cleared, and
   whether the log holds exactly what was acknowledged.
Writes --results/serve_faults-<UTC time>.json (one per run) and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "serving"))  # postgres_server: a PostgreSQL from the test extra

from provenance import provenance
from serve_load import Served, bench_params, machine, prepare, run_wrk

SERVICE = "components.serving.service:RecloopService"
TOKEN = "bench-reload-token"
FAULT_SECONDS = 10  # how long each fault lasts
AFTER_SECONDS = 5  # probing after a fault cleared
# The full disk: no file of the worker may be written past this offset. Not the log's present size (as
# in tests/serving/test_faults.py): after a long run the WAL is large and SQLite reuses it from its start,
# so commits go on fitting for minutes (as they would on a real full disk). At 64 KiB the WAL fills within
# a commit or two and checkpoints cannot write the database file, so every commit fails.
FULL_DISK_BYTES = 64 * 1024


def set_read_only(path: Path, read_only: bool) -> None:
    """Root writes a 0444 file anyway: under root the immutable attribute (chattr) instead."""
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i" if read_only else "-i", str(path)], check=True)
    else:
        path.chmod(0o444 if read_only else 0o644)


class Prober:
    """Posts one feedback click at a time (a new request id each) and keeps every answer:
    (sent, answered, status, request id), times from the prober's start (monotonic seconds)."""

    def __init__(self, url: str, tag: str):
        self.url, self.tag = url, tag
        self.records: list[tuple[float, float, int, str]] = []
        self.errors: list[str] = []  # the first answers of each non-200 kind, for the record
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.t0 = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self.t0

    def start(self) -> Prober:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            n = 0
            while not self._stop.is_set():
                n += 1
                rid = f"{self.tag}-{n}"
                sent = self.now()
                try:
                    response = client.post("/feedback", json={"events": [
                        {"user_id": "u-prober", "item_id": "1", "event": "click", "request_id": rid}]})
                    status = response.status_code
                    if status != 200 and len(self.errors) < 3:
                        self.errors.append(f"{status}: {response.text[:300]}")
                except httpx.HTTPError as e:
                    status = -1
                    if len(self.errors) < 3:
                        self.errors.append(repr(e))
                self.records.append((sent, self.now(), status, rid))
                time.sleep(0.02)

    def summary(self, fault_at: float, cleared_at: float, logged: set[str]) -> dict:
        """When the fault showed and went, and whether the log holds exactly what was acknowledged."""
        refused = [r for r in self.records if r[2] == 503]
        acked = [r for r in self.records if r[2] == 200]
        last_refused = max((r[1] for r in refused), default=cleared_at)
        recovered = next((r for r in acked if r[1] > max(cleared_at, last_refused)), None)
        latency = sorted(r[1] - r[0] for r in refused)
        return {
            "requests": len(self.records), "acknowledged": len(acked), "refused_503": len(refused),
            "other_status": sorted({r[2] for r in self.records} - {200, 503}),
            "refused_before_fault": sum(r[1] < fault_at for r in refused),
            "first_503_after_s": round(min(r[1] for r in refused) - fault_at, 3) if refused else None,
            "refused_for_s": round(last_refused - min((r[1] for r in refused), default=last_refused), 3),
            "recovered_after_s": round(recovered[1] - cleared_at, 3) if recovered else None,
            "answer_503_ms_p50": round(1000 * latency[len(latency) // 2], 1) if latency else None,
            "answer_503_ms_max": round(1000 * latency[-1], 1) if latency else None,
            "acknowledged_missing_from_log": sum(r[3] not in logged for r in acked),
            "refused_found_in_log": sum(r[3] in logged for r in refused),
            "first_errors": self.errors,
        }


def logged_ids(location: Path | str) -> set[str]:
    from components.serving.feedback import read_feedback

    return set(read_feedback(location)["request_id"].dropna())


def in_background(target, *args) -> tuple[threading.Thread, dict]:
    """Run `target(*args)` in a thread; its result lands in the returned dict under "result"."""
    out: dict = {}
    thread = threading.Thread(target=lambda: out.update(result=target(*args)), daemon=True)
    thread.start()
    return thread, out


def wrk_summary(result: dict) -> dict:
    keys = ("rps", "requests", "errors", "status_errors", "connect_errors", "read_errors", "write_errors",
            "timeouts", "p50_ms", "p99_ms", "max_ms")
    return {k: round(result[k], 2) if isinstance(result[k], float) else result[k] for k in keys}


def worker_rss(server: Served) -> tuple[int, int]:
    """(the largest child's resident bytes: the worker; the whole tree's)."""
    sizes = []
    for p in server.tree():
        try:
            sizes.append(p.memory_info().rss)
        except psutil.NoSuchProcess:
            sizes.append(0)
    return max(sizes[1:], default=0), sum(sizes)


def address(server: Served) -> str:
    return f"http://127.0.0.1:{server.port}"


def worker_pid(url: str) -> int:
    return httpx.post(f"{url}/info", json={}, timeout=30).json()["worker"]


def reload(url: str) -> tuple[int, dict, float]:
    start = time.perf_counter()
    response = httpx.post(f"{url}/reload", json={}, timeout=600, headers={"Authorization": f"Bearer {TOKEN}"})
    return response.status_code, response.json(), time.perf_counter() - start


def copy_stores(source: Path, work: Path) -> None:
    """The prepared registry and BentoML store, copied once: promotions and imports here stay here."""
    if not (work / "mlflow.db").exists():
        shutil.copytree(source / "bentoml", work / "bentoml", dirs_exist_ok=True)
        shutil.copy(source / "mlflow.db", work / "mlflow.db")


def write_params(source_params: Path, work: Path, name: str, **serve) -> Path:
    tree = yaml.safe_load(source_params.read_text())
    tree["registry"] = {**tree["registry"], "uri": f"sqlite:///{work / 'mlflow.db'}", "experiment": "serve-faults"}
    tree["serve"] = {**tree["serve"], "feedback_log": str(work / f"{name}-feedback.db"), **serve}
    path = work / f"{name}-params.yaml"
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


def bodies(params) -> tuple[list[str], list[str], list[str], list[str]]:
    """(mix paths, mix bodies, recommend paths, recommend bodies) from the split's users."""
    import pandas as pd

    train = pd.read_parquet(Path(params.paths.split) / "train.parquet", columns=["user_id", "item_id", "timestamp"])
    recent = train.sort_values("timestamp").groupby("user_id")["item_id"].apply(lambda s: s.astype(str).tolist()[-20:])
    mix_paths, mix, rec_paths, rec = [], [], [], []
    for user, items in recent.items():
        known = json.dumps({"user_id": str(user), "k": 10})
        adhoc = json.dumps({"history": items, "k": 10})
        click = json.dumps({"events": [{"user_id": str(user), "item_id": items[-1], "event": "click"}]})
        mix_paths += ["/recommend", "/feedback", "/recommend"]
        mix += [known, click, adhoc]
        rec_paths += ["/recommend", "/recommend"]
        rec += [known, adhoc]
    return mix_paths, mix, rec_paths, rec


def soak(server: Served, paths, mix, args, work: Path) -> dict:
    samples: list[tuple[float, float, float]] = []  # (seconds into the soak, worker MB, tree MB)
    stop = threading.Event()
    start = time.monotonic()

    def sample() -> None:
        while True:
            worker, tree = worker_rss(server)
            samples.append((round(time.monotonic() - start, 1), worker / 2**20, tree / 2**20))
            if stop.wait(args.sample_seconds):
                return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    result = run_wrk(server.port, paths, mix, args.soak_seconds, args.connections, work)
    stop.set()
    sampler.join()
    base_at = 60 if args.soak_seconds >= 120 else args.soak_seconds / 2
    base = next(s for s in samples if s[0] >= base_at)
    end = samples[-1]
    return {"seconds": args.soak_seconds, "connections": args.connections, "wrk": wrk_summary(result),
            "rss_baseline_at_s": base[0], "worker_rss_mb_baseline": round(base[1], 1),
            "worker_rss_mb_end": round(end[1], 1), "worker_rss_growth": round(end[1] / base[1] - 1, 4),
            "worker_rss_mb_first": round(samples[0][1], 1), "worker_rss_mb_max": round(max(s[1] for s in samples), 1),
            "tree_rss_mb_end": round(end[2], 1),
            "samples": [[t, round(w, 1), round(a, 1)] for t, w, a in samples]}


def reload_under_load(server: Served, cfg, paths, mix, args, work: Path) -> dict:
    import bentoml

    from components.registry.registry import CHAMPION, alias_version, list_versions, promote
    from components.serving.bundle import find_bundle
    from components.serving.package import log_bundle

    current = alias_version(cfg, CHAMPION)
    versions = sorted(int(v["version"]) for v in list_versions(cfg))
    if len(versions) < 2:  # a second version of the same bundle, logged once
        model = bentoml.models.get(f"{cfg.bento_model}:latest")
        versions.append(log_bundle(cfg, find_bundle(Path(model.path_of("mlflow_model")))))
    target = next(v for v in versions if v != current)
    seconds = args.reload_seconds
    thread, out = in_background(run_wrk, server.port, paths, mix, seconds, args.connections, work)
    started = time.monotonic()
    time.sleep(seconds / 4)
    promote(cfg, target)
    at = time.monotonic() - started
    status, answer, took = reload(address(server))
    thread.join()
    served = httpx.post(f"{address(server)}/info", json={}, timeout=30).json()["model_version"]
    return {"connections": args.connections, "wrk_seconds": seconds, "promoted": target, "previous": current,
            "reload_at_s": round(at, 2), "reload_status": status, "reload_seconds": round(took, 2),
            "reload_answer": answer, "served_after": served, "wrk": wrk_summary(out["result"]),
            "failed_requests": out["result"]["errors"]}


def fault_window(server_url: str, location, tag: str, apply, clear, port: int, rec_paths, rec, args,
                 work: Path, lead: float = 2.0) -> dict:
    """wrk on recommend and the feedback prober; the fault from `lead` s for FAULT_SECONDS, then
    AFTER_SECONDS more."""
    seconds = int(lead + FAULT_SECONDS + AFTER_SECONDS)
    thread, out = in_background(run_wrk, port, rec_paths, rec, seconds, args.connections, work)
    prober = Prober(server_url, tag).start()
    time.sleep(lead)
    fault_at = prober.now()
    apply()
    try:
        time.sleep(FAULT_SECONDS)
    finally:
        clear()
    cleared_at = prober.now()
    thread.join()
    prober.stop()
    return {**prober.summary(fault_at, cleared_at, logged_ids(location)), "fault_seconds": FAULT_SECONDS,
            "recommend_under_fault": wrk_summary(out["result"])}


def read_only_start(server: Served, log: Path, rec_paths, rec, args, work: Path) -> dict:
    """The server came up on a read-only log: the fault is on from the start, cleared after FAULT_SECONDS."""
    return fault_window(address(server), log, "ro", lambda: None, lambda: set_read_only(log, False), server.port,
                        rec_paths, rec, args, work, lead=0.0)


def full_disk(server: Served, log: Path, rec_paths, rec, args, work: Path) -> dict:
    pid = worker_pid(address(server))
    soft, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    return fault_window(address(server), log, "full",
                        lambda: resource.prlimit(pid, resource.RLIMIT_FSIZE, (FULL_DISK_BYTES, hard)),
                        lambda: resource.prlimit(pid, resource.RLIMIT_FSIZE, (soft, hard)),
                        server.port, rec_paths, rec, args, work)


def registry_down(server: Served, db: Path, rec_paths, rec, args, work: Path) -> dict:
    """The registry's SQLite file overwritten in place (the server's pooled connection reads it too)."""
    status, _, _ = reload(address(server))  # the server's registry client is open before the fault
    seconds = int(FAULT_SECONDS)
    thread, out = in_background(run_wrk, server.port, rec_paths, rec, seconds, args.connections, work)
    time.sleep(2)
    good = db.read_bytes()
    with open(db, "r+b") as f:
        f.write(b"this registry store is unreadable\n" * 120)
    try:
        failed_status, failed, failed_took = reload(address(server))
    finally:
        with open(db, "r+b") as f:
            f.write(good)
    mended_status, mended, mended_took = reload(address(server))
    thread.join()
    return {"reload_before": status, "reload_status": failed_status, "reload_answer": failed,
            "reload_seconds": round(failed_took, 3), "reload_after_restore_status": mended_status,
            "reload_after_restore_seconds": round(mended_took, 3), "served_after": mended.get("version"),
            "recommend_under_fault": wrk_summary(out["result"])}


def postgres_down(env: dict, source_params: Path, work: Path, rec_paths, rec, args) -> dict:
    from postgres_server import PostgresServer

    pg = PostgresServer().start()
    server = None
    try:
        url = pg.create_database()
        params = write_params(source_params, work, "pg", feedback_store=url)
        server = Served(SERVICE, {**env, "RECLOOP_PARAMS": str(params)}, work / "pg.log")
        server.wait_ready()
        run_wrk(server.port, rec_paths, rec, 3, args.connections, work)  # warm-up
        result = fault_window(address(server), url, "pg", lambda: pg.stop(immediate=True), pg.start, server.port,
                              rec_paths, rec, args, work)
    finally:
        if server is not None:
            server.stop()
        pg.remove()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--soak-seconds", type=int, default=600, help="0: no soak")
    parser.add_argument("--reload-seconds", type=int, default=40)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--sample-seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--no-reload", dest="reload", action="store_false")
    parser.add_argument("--no-faults", dest="faults", action="store_false")
    parser.add_argument("--epochs", type=int, default=2, help="for preparing --source (bench/serve_load.py's)")
    parser.add_argument("--source", type=Path, default=REPO / "bench" / "work" / "serving")
    parser.add_argument("--work", type=Path, default=REPO / "bench" / "work" / "serve-faults")
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "results" / "serving")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get update && apt-get install -y wrk")
    source, work = args.source.resolve(), args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.environ["BENTOML_HOME"] = str(source / "bentoml")
    source_params, source_path = bench_params(source)
    prepare(source_params, args.epochs)
    copy_stores(source, work)
    os.environ["BENTOML_HOME"] = str(work / "bentoml")  # the servers' store (this process only reads the model)
    params_path = write_params(source_path, work, "main")
    from components.config import load_params

    params = load_params(params_path)
    log = Path(params.serve.feedback_log)
    if log.exists():
        set_read_only(log, False)  # a run stopped mid-fault leaves it read-only
    for stale in (log, Path(f"{log}-wal"), Path(f"{log}-shm")):
        stale.unlink(missing_ok=True)
    if args.faults:  # the server must come up on a read-only log
        from components.serving.feedback import FeedbackLog

        FeedbackLog(log).open().close()
        set_read_only(log, True)
    env = {**os.environ, "RECLOOP_PARAMS": str(params_path), "BENTOML_DO_NOT_TRACK": "true", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(REPO), "RECLOOP_RELOAD_TOKEN": TOKEN}
    mix_paths, mix, rec_paths, rec = bodies(params)
    started = time.gmtime()
    load_start = os.getloadavg()
    report: dict = {}
    server = Served(SERVICE, env, work / "main.log")
    try:
        server.wait_ready()
        if args.faults:
            report["read_only_log"] = read_only_start(server, log, rec_paths, rec, args, work)
        run_wrk(server.port, mix_paths, mix, args.warmup, args.connections, work)
        if args.soak_seconds:
            report["soak"] = soak(server, mix_paths, mix, args, work)
            print(f"soak: {report['soak']['wrk']}, worker RSS {report['soak']['worker_rss_mb_baseline']} -> "
                  f"{report['soak']['worker_rss_mb_end']} MB", flush=True)
        if args.reload:
            report["reload_under_load"] = reload_under_load(server, params.registry, mix_paths, mix, args, work)
            print(f"reload: {report['reload_under_load']}", flush=True)
        if args.faults:
            report["full_disk"] = full_disk(server, log, rec_paths, rec, args, work)
            report["registry_unreadable"] = registry_down(server, work / "mlflow.db", rec_paths, rec, args, work)
    finally:
        server.stop()
        if log.exists():
            set_read_only(log, False)
    if args.faults:
        report["postgres_down"] = postgres_down(env, source_path, work, rec_paths, rec, args)
    summary = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", started), "command": " ".join(sys.argv), **provenance(),
               "machine": machine(), "load_average_start": load_start, "load_average_end": os.getloadavg(),
               "serve": {k: getattr(params.serve, k) for k in ("workers", "watch_seconds", "candidates")},
               "fault_seconds": FAULT_SECONDS, **report}
    args.results.mkdir(parents=True, exist_ok=True)
    out = args.results / f"serve_faults-{time.strftime('%Y-%m-%dT%H%M%SZ', started)}.json"
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nwrote {out}\n")
    print_table(summary)


def print_table(s: dict) -> None:
    if "soak" in s:
        k = s["soak"]
        print(f"soak {k['seconds']} s at {k['connections']} connections: {k['wrk']['rps']:.0f} req/s, "
              f"{k['wrk']['errors']} errors, p99 {k['wrk']['p99_ms']:.0f} ms; worker RSS "
              f"{k['worker_rss_mb_baseline']:.0f} MB at {k['rss_baseline_at_s']:.0f} s -> {k['worker_rss_mb_end']:.0f} "
              f"MB at the end ({100 * k['worker_rss_growth']:+.1f}%)")
    if "reload_under_load" in s:
        r = s["reload_under_load"]
        print(f"reload under {r['connections']} connections: {r['previous']} -> {r['promoted']} in "
              f"{r['reload_seconds']} s (status {r['reload_status']}), failed requests {r['failed_requests']} of "
              f"{r['wrk']['requests']}, p99 {r['wrk']['p99_ms']:.0f} ms, max {r['wrk']['max_ms']:.0f} ms")
    print("\n| fault | first 503 after s | 503s | 503 answer ms p50 (max) | recovered after s | acked missing "
          "| refused in log | recommend req/s (errors) |")
    print("|---|---|---|---|---|---|---|---|")
    for name in ("read_only_log", "full_disk", "postgres_down"):
        if name in s:
            f = s[name]
            print(f"| {name} | {f['first_503_after_s']} | {f['refused_503']} | {f['answer_503_ms_p50']} "
                  f"({f['answer_503_ms_max']}) | {f['recovered_after_s']} | {f['acknowledged_missing_from_log']} | "
                  f"{f['refused_found_in_log']} | {f['recommend_under_fault']['rps']:.0f} "
                  f"({f['recommend_under_fault']['errors']}) |")
    if "registry_unreadable" in s:
        g = s["registry_unreadable"]
        print(f"\nregistry unreadable: /reload {g['reload_status']} in {g['reload_seconds']} s "
              f"({g['reload_answer']}); after restore {g['reload_after_restore_status']} in "
              f"{g['reload_after_restore_seconds']} s; recommend {g['recommend_under_fault']['rps']:.0f} req/s, "
              f"{g['recommend_under_fault']['errors']} errors")


if __name__ == "__main__":
    main()
