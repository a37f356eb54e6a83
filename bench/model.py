"""recloop's model on public benchmarks: quality, time to quality, memory, cold-start and long-tail slices.

Prepares the dataset like bench/quality.py (ingest -> validate -> split -> featurize, cached in the
bench's work folder), then trains each named variant (pretrain, then multi-task fine-tuning; see
components/training/variants.py VARIANTS) through the library functions, and evaluates it on the
test targets with the full-ranking evaluator. After every epoch of both stages the test NDCG@10 is
recorded next to the elapsed training seconds (only recorded: epochs are chosen on valid), which
gives the time-to-quality curve. One JSON per variant goes to bench/results/model/.

    .venv/bin/python bench/model.py --dataset unisrec:Scientific --variants recloop
    .venv/bin/python bench/model.py --dataset s3rec:Beauty --variants recloop --set model.use_text=false
    .venv/bin/python bench/model.py --dataset unisrec:Scientific --variants recloop,recloop-id-only \
        --set split.cold_item_fraction=0.1

Run one variant per process when peak memory matters: the peak is the process's.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import provenance  # noqa: E402
from quality import (REPO, dataset_arguments, dataset_overrides, machine, peak_gpu_mb, peak_rss_mb,  # noqa: E402
                     prepare)

from components.config import load_params  # noqa: E402

# Evaluator slices worth a column: long tail and cold start.
SLICES = ("head_items", "tail_items", "cold_items", "cold_users")


def work_dir(dataset: str, overrides: list[str]) -> Path:
    """Where the prepared data lives: one folder per dataset and per set of data-shaping overrides.

    The encoder and its token budget shape the item-text vectors kept there, so they count too."""
    shaping = sorted(o for o in overrides if o.split("=", 1)[0].split(".")[0] in {"ingest", "validate", "split"}
                     or o.split("=", 1)[0] in {"featurize.encoder", "featurize.max_length"})
    name = dataset.replace(":", "-").replace("/", "_")
    if shaping:
        name += "-" + hashlib.sha1("\n".join(shaping).encode()).hexdigest()[:8]
    return REPO / "bench" / "work" / name


def run_params(dataset: str, root: Path, base: Path, overrides: list[str]):
    """(short name, Params) of a run on `dataset`: the dataset's overrides, tracking off, then the caller's."""
    name, shaping = dataset_overrides(dataset, root)
    return name, load_params(base, [*shaping, "tracking.uri=null", *overrides])


def recorded_params(params) -> dict:
    """What a result file records of the parameters that shape training."""
    return {"model": params.model.model_dump(mode="json"),
            "pretrain": params.pretrain.model_dump(mode="json", exclude={"extra"}),
            "finetune": params.finetune.model_dump(mode="json"),
            "labels": params.labels.model_dump(mode="json")}


def curve(fitted) -> list[dict[str, float]]:
    """Per epoch of pretraining then fine-tuning: stage, epoch, cumulative seconds, valid (and test) NDCG@10.

    The seconds include each epoch's validation, and its test evaluation when the curve is on."""
    points, elapsed = [], 0.0
    for stage, result in (("pretrain", fitted.pretrain_result_), ("finetune", fitted.result_)):
        for h in (result.history if result else []):
            elapsed += h["epoch_seconds"]
            points.append({"stage": stage, "epoch": h["epoch"], "seconds": round(elapsed, 1),
                           **{k: round(h[k], 5) for k in ("valid_ndcg@10", "test_ndcg@10", "test_hr@10") if k in h}})
    return points


def main() -> None:
    parser = dataset_arguments(__doc__)
    parser.add_argument("--variants", default="recloop", help="comma-separated names from VARIANTS")
    parser.add_argument("--no-curve", action="store_true",
                        help="skip the per-epoch test evaluation (big catalogs: it costs as much as validation)")
    parser.add_argument("--tag", default="", help="a label stored with the results (e.g. the purpose of the run)")
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "results" / "model")
    args = parser.parse_args()

    from components.data.dataset import SplitData
    from components.evaluation.evaluator import evaluate_ranking
    from components.features.featurize import load_item_text
    from components.training.variants import variant
    from components.training.stage import head_metrics

    name, params = run_params(args.dataset, args.root, args.params, args.overrides)
    work = work_dir(args.dataset, args.overrides)
    prep = {}
    if not ((work / "split" / "test.parquet").exists() and (work / "features" / "item_text.npy").exists()):
        prep = prepare(params, work, need_text=True)
    data = SplitData.load(work / "split")
    text = load_item_text(work / "features", data.n_items)

    args.results.mkdir(parents=True, exist_ok=True)
    # The code that runs is the tree as it is now: others may edit it while a long run trains.
    ran = provenance()
    rows = []
    for name_ in [v for v in args.variants.split(",") if v]:
        model = variant(name_, params.model, params.pretrain, params.finetune, params.labels, text, params.seed,
                        curve_stage=None if args.no_curve else "test")
        began = time.perf_counter()
        model.fit(data)
        train_seconds = time.perf_counter() - began
        result = evaluate_ranking(model, data, "test", ks=(10, 20), progress=False)
        m = result.metrics
        alone = None
        if model.trained_.prior is not None:  # the ablation: the same model without its content prior
            prior, model.trained_.prior = model.trained_.prior, None
            alone = evaluate_ranking(model, data, "test", ks=(10,), progress=False).metrics
            model.trained_.prior = prior
        cold = data.items["cold"].to_numpy(bool) | (data.item_popularity() == 0)
        warm = result.per_target[~cold[result.per_target["item_idx"].to_numpy()]]
        slices = {s: {k: round(v, 5) for k, v in result.slices[s].items() if k in ("size", "hr@10", "ndcg@10")}
                  for s in SLICES if s in result.slices}
        slices["warm_items"] = {"size": len(warm), "hr@10": round(float(warm["hr@10"].mean()), 5),
                                "ndcg@10": round(float(warm["ndcg@10"].mean()), 5)}
        row = {
            "dataset": args.dataset, "variant": name_, "tag": args.tag, "overrides": args.overrides,
            "users": data.n_users, "items": data.n_items,
            "metrics": {k: round(m[k], 5) for k in ("hr@10", "ndcg@10", "hr@20", "ndcg@20", "mrr", "coverage@10")},
            "slices": slices,
            "heads": {k: round(v, 5) for k, v in head_metrics(model.scorer_, data, "test", params.labels).items()},
            "train_seconds": round(train_seconds, 1),
            "epochs": {"pretrain": model.pretrain_result_.epochs if model.pretrain_result_ else 0,
                       "finetune": model.result_.epochs},
            "curve": curve(model),
            # finetune.content_prior: the weight validation chose, and each tried weight's validation NDCG@10.
            "content_prior": model.result_.after.get("content_prior"),
            "model_only_metrics": alone and {k: round(alone[k], 5) for k in ("hr@10", "ndcg@10", "coverage@10")},
            "prepare_seconds": {k: round(v, 1) for k, v in prep.items()},
            "peak_rss_mb": round(peak_rss_mb(), 1), "peak_gpu_mb": peak_gpu_mb(), **ran,
            "tree_changed_during_run": provenance()["git_diff_sha256"] != ran["git_diff_sha256"],
            "command": " ".join(["bench/model.py", *sys.argv[1:]]),
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "params": recorded_params(params),
        }
        rows.append(row)
        stamp = row["date"].replace(":", "").replace("+0000", "Z")
        out = args.results / f"{name}-{name_}{'-' + args.tag if args.tag else ''}-{stamp}.json"
        out.write_text(json.dumps(row, indent=1) + "\n")
        print(f"wrote {out}", file=sys.stderr)

    print(f"\n{args.dataset}: {data.n_users:,} users, {data.n_items:,} items; {rows[0]['machine']}")
    print("| variant | R@10 | N@10 | tail N@10 | cold R@10 | warm R@10 | train s | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        s = r["slices"]
        print(f"| {r['variant']} | {r['metrics']['hr@10']:.4f} | {r['metrics']['ndcg@10']:.4f} "
              f"| {s.get('tail_items', {}).get('ndcg@10', float('nan')):.4f} "
              f"| {s.get('cold_items', {}).get('hr@10', float('nan')):.4f} "
              f"| {s['warm_items'].get('hr@10', float('nan')):.4f} | {r['train_seconds']:.0f} "
              f"| {r['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
