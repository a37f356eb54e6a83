"""The default pipeline as a new user meets it: `make run` in a fresh clone, timed (issue 12, item 3).

Clones this repository's HEAD into a temporary folder, runs `make run` there (the install into a new .venv,
then `dvc repro` on the embedded MovieLens data) and writes one JSON to bench/results/pipeline/: the wall
time of the whole command and of its two parts (the install, up to the .venv's stamp; the stages after it),
how each training stage ended (epochs, best epoch, early stopping or the epoch cap or the time budget) and
the test metrics, beside the commit that ran.

    flock /tmp/cpu.lock .venv/bin/python bench/pipeline.py
    flock /tmp/cpu.lock .venv/bin/python bench/pipeline.py --keep /tmp/clone   # keep the clone to look at
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import REPO, provenance  # noqa: E402
from quality import machine  # noqa: E402

STAGES = ("pretrain", "finetune")


def ending(report: dict) -> str:
    if report.get("stopped_early"):
        return "early stopping"
    return "time budget" if report.get("out_of_time") else "epoch cap"


def summary(clone: Path) -> dict:
    """How the clone's training stages ended and what its evaluation measured, from its reports/."""
    reports = clone / "reports"
    stages = {}
    for stage in STAGES:
        report = json.loads((reports / f"{stage}.json").read_text())
        stages[stage] = {"epochs": report["epochs"], "best_epoch": report["best_epoch"], "ended_by": ending(report),
                         "train_seconds": report["train_seconds"], "valid_ndcg@10": round(report["valid_ndcg@10"], 5)}
    metrics = json.loads((reports / "metrics.json").read_text())
    test = {model: {k: round(v, 5) for k, v in values.items() if k in ("ndcg@10", "hr@10")}
            for model, values in metrics.items() if isinstance(values, dict) and "ndcg@10" in values}
    return {"stages": stages, "test": test}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", type=Path, help="clone here and keep it (default: a temporary folder, removed)")
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "results" / "pipeline")
    args = parser.parse_args()

    ran = provenance()
    if ran["git_dirty"]:
        print(f"note: the clone runs the commit {ran['git_commit'][:8]}, not the uncommitted changes "
              f"({', '.join(ran['git_changed'][:5])})", file=sys.stderr)
    where = args.keep or Path(tempfile.mkdtemp(prefix="recloop-clone-"))
    clone = where / "recloop"
    if clone.exists():
        raise SystemExit(f"{clone} exists: give --keep a new folder")
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    # The clone's own environment: nothing of this process's venv leaks into its install.
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if not p.startswith(str(REPO / ".venv")))
    began = time.time()
    done = subprocess.run(["make", "run"], cwd=clone, env=env)
    wall = time.time() - began
    stamp = clone / ".venv" / ".installed"
    install = stamp.stat().st_mtime - began if stamp.exists() else None
    row = {
        "command": " ".join(["bench/pipeline.py", *sys.argv[1:]]), "make_run_exit": done.returncode,
        "wall_seconds": round(wall, 1), "install_seconds": install and round(install, 1),
        "stages_seconds": install and round(wall - install, 1),
        **(summary(clone) if done.returncode == 0 else {}),
        **ran, "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    args.results.mkdir(parents=True, exist_ok=True)
    out = args.results / f"make-run-{row['date'].replace(':', '').replace('+0000', 'Z')}.json"
    out.write_text(json.dumps(row, indent=1) + "\n")
    if not args.keep:
        shutil.rmtree(where)
    print(f"wrote {out}", file=sys.stderr)
    print(f"make run: {wall / 60:.1f} min ({row['install_seconds']} s install), exit {done.returncode}")
    for stage, s in row.get("stages", {}).items():
        print(f"  {stage}: {s['epochs']} epochs, best {s['best_epoch']}, ended by {s['ended_by']}, "
              f"{s['train_seconds']:.0f} s")
    if done.returncode:
        raise SystemExit(done.returncode)


if __name__ == "__main__":
    main()
