"""Recommendation quality on public benchmarks, next to published numbers.

Runs ingest -> validate -> split (-> featurize when a model needs text) -> fit -> evaluate through
the library functions, one model at a time, prints one table and appends one JSON line per model
to bench/results/quality.jsonl.

    .venv/bin/python bench/quality.py --dataset s3rec:Beauty --models popular,itemknn,als
    .venv/bin/python bench/quality.py --dataset unisrec:Scientific --models popular,itemknn,als,content
    .venv/bin/python bench/quality.py --dataset movielens:data/raw/ml-latest-small --models popular,als

Dataset specs: `s3rec:<Beauty|Sports_and_Outdoors|Toys_and_Games|Yelp|LastFM>` and
`unisrec:Scientific` are read from --root (default ../shared/datasets, beside the repository);
`movielens:<path>` from the path given. Work files go to bench/work/<dataset>/ (git-ignored).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from components.config import Params, load_params  # noqa: E402
from provenance import provenance  # noqa: E402

PROTOCOL = ("full ranking over the whole catalog (no sampled negatives), leave-one-out (last item test, "
            "second-last valid), items in the user's history removed from the candidates, ties at their "
            "expected value; baselines fit on train, test history = train + valid")


@dataclass(frozen=True)
class Anchor:
    model: str
    recall10: float
    ndcg10: float
    source: str


# Published full-ranking, leave-one-out, seen-filtered numbers on the same files.
ANCHORS: dict[str, list[Anchor]] = {
    "s3rec:Beauty": [
        Anchor("SASRec (original)", 0.0605, 0.0318, "published"),
        Anchor("SASRec + sampled softmax", 0.0921, 0.0531, "published"),
        Anchor("eSASRec", 0.0928, 0.0523, "published"),
    ],
    "s3rec:Sports_and_Outdoors": [Anchor("SASRec + sampled softmax", 0.0569, 0.0314, "published")],
    "s3rec:Toys_and_Games": [Anchor("SASRec + sampled softmax", 0.0970, 0.0580, "published")],
    "unisrec:Scientific": [Anchor("VQ-Rec", 0.1211, 0.0643, "published, UniSRec's split")],
}


# The benchmark datasets, beside the repository.
DATASETS = REPO.parent / "shared" / "datasets"


def dataset_overrides(spec: str, root: Path) -> tuple[str, list[str]]:
    """(short name, params overrides) for a dataset spec such as s3rec:Beauty."""
    source, _, name = spec.partition(":")
    if not name:
        raise SystemExit(f"--dataset {spec!r} should look like s3rec:Beauty, unisrec:Scientific or movielens:/path")
    # Sources without real timestamps (s3rec, unisrec) carry their order as seconds from 1970; no rating range.
    common = ["validate.min_timestamp=0", "validate.min_value=null", "validate.max_value=null",
              "split.min_user_interactions=3", "split.max_history=100000", "split.cold_item_fraction=0.0",
              "split.time.cutoff=null"]
    if source == "s3rec":
        path = root / "s3rec-sequences"
        return name, ["ingest.source=s3rec", f"ingest.path={path}", f"ingest.dataset={name}",
                      f"ingest.domain={name.lower()}", "split.mode=loo", *common]
    if source == "unisrec":
        path = root / "amazon2018-scientific-unisrec"
        return name, ["ingest.source=unisrec", f"ingest.path={path}", f"ingest.dataset={name}",
                      f"ingest.domain={name.lower()}", "split.mode=given", *common]
    if source == "movielens":
        path = Path(name)
        return path.name, ["ingest.source=movielens", f"ingest.path={path}", "ingest.domain=movies",
                           "split.mode=loo", *common]
    raise SystemExit(f"unknown dataset source {source!r}: use s3rec, unisrec or movielens")


def peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux: the whole process's peak so far.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_gpu_mb() -> float | None:
    """The CUDA memory torch allocated at its peak so far; None without a GPU (RSS does not count it)."""
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None


def machine() -> str:
    import psutil
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()}-core {platform.machine()} CPU, {psutil.virtual_memory().total / 2**30:.0f} GiB, {gpu}"


def prepare(params: Params, work: Path, need_text: bool) -> dict[str, float]:
    """Ingest, validate, split (and featurize) into `work`; seconds per stage."""
    from components.data.ingest import ingest
    from components.data.split import split
    from components.validation.validate import validate

    seconds: dict[str, float] = {}
    reports = work / "reports"
    steps = [("ingest", lambda: ingest(params.ingest, work / "canonical", reports)),
             ("validate", lambda: validate(params.validate_, work / "canonical", work / "validated", reports)),
             ("split", lambda: split(params.split, work / "validated", work / "split", reports, params.seed))]
    if need_text:
        from components.features.featurize import featurize

        steps.append(("featurize", lambda: featurize(params.featurize, work / "split", work / "features")))
    for name, step in steps:
        began = time.perf_counter()
        print(step().describe(), file=sys.stderr)
        seconds[name] = time.perf_counter() - began
    return seconds


def dataset_arguments(description: str) -> argparse.ArgumentParser:
    """The arguments every benchmark on public datasets takes: which dataset, where, with which params."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="s3rec:Beauty, unisrec:Scientific, movielens:/path")
    parser.add_argument("--root", type=Path, default=DATASETS,
                        help="where the datasets live (default: ../shared/datasets beside the repository)")
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml", help="base parameters")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="parameter overrides, e.g. evaluate.als.factors=128 or model.dim=128")
    return parser


def main() -> None:
    parser = dataset_arguments(__doc__)
    parser.add_argument("--models", default="popular,itemknn,als", help="comma-separated names from MODELS")
    parser.add_argument("--reuse", action="store_true", help="reuse an existing split in bench/work")
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "results" / "quality.jsonl")
    args = parser.parse_args()

    from components.evaluation.evaluate import evaluate

    name, overrides = dataset_overrides(args.dataset, args.root)
    models = [m for m in args.models.split(",") if m]
    params = load_params(args.params, [*overrides, "evaluate.stages=[test]", "evaluate.ks=[10,20]", *args.overrides])
    work = REPO / "bench" / "work" / args.dataset.replace(":", "-").replace("/", "_")
    need_text = "content" in models
    prep = {}
    if not (args.reuse and (work / "split" / "test.parquet").exists()
            and (not need_text or (work / "features" / "item_text.npy").exists())):
        prep = prepare(params, work, need_text)

    rows = []
    for model in models:
        cfg = params.evaluate.model_copy(update={"models": [model]})
        began = time.perf_counter()
        summary = evaluate(cfg, work / "split", work / "features" if need_text else None,
                           work / "reports" / model, seed=params.seed)
        wall = time.perf_counter() - began
        m = summary.headline[model]
        row = {"dataset": args.dataset, "model": model, "protocol": PROTOCOL,
               "users": summary.users, "items": summary.items,
               "metrics": {k: round(v, 6) for k, v in m.items()},
               "fit_seconds": round(summary.fit_seconds[model], 2), "wall_seconds": round(wall, 2),
               "prepare_seconds": {k: round(v, 1) for k, v in prep.items()},
               "peak_rss_mb": round(peak_rss_mb(), 1), **provenance(),
               "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
               "params": cfg.model_dump(mode="json")}
        rows.append(row)
        args.results.parent.mkdir(parents=True, exist_ok=True)
        with args.results.open("a") as f:
            f.write(json.dumps(row) + "\n")

    print(f"\n{args.dataset} ({rows[0]['users']:,} users, {rows[0]['items']:,} items). Protocol: {PROTOCOL}.")
    print(f"Machine: {rows[0]['machine']}; commit {rows[0]['git_commit']}. Peak RSS is the process's peak so far.\n")
    print(f"| {'model':<28} | R@10   | N@10   | R@20   | N@20   | wall s | peak RSS MB |")
    print(f"|{'-' * 30}|--------|--------|--------|--------|--------|-------------|")
    for r in rows:
        m = r["metrics"]
        print(f"| {r['model']:<28} | {m['hr@10']:.4f} | {m['ndcg@10']:.4f} | {m['hr@20']:.4f} | {m['ndcg@20']:.4f} "
              f"| {r['wall_seconds']:>6.1f} | {r['peak_rss_mb']:>11.0f} |")
    for a in ANCHORS.get(args.dataset, []):
        print(f"| {a.model + ' (' + a.source + ')':<28} | {a.recall10:.4f} | {a.ndcg10:.4f} |    —   |    —   "
              f"|    —   |      —      |")


if __name__ == "__main__":
    main()
