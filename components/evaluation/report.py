"""Evaluation outputs: the DVC metrics file, DVC plot tables, PNG charts and a Markdown report.

Layout under the reports directory:
  metrics.json                  {model: {metric: value}} (test unprefixed, valid as "valid/..."), slice sizes
  plots/metric_vs_k.csv         model, k, series, hr, ndcg (headline stage, K from 1 to 100)
  plots/by_popularity.csv       model, bucket, series, targets, items, k, hr, ndcg (headline stage)
  evaluation.md                 the report a person reads
  evaluation/*.png              its charts; evaluation/topk/<model>-<stage>.parquet when asked for
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from components.atomic import replaced, staged_dir, write_json, write_text
from components.evaluation import metrics as M
from components.evaluation.evaluator import RankingResult

METRICS_FILE = "metrics.json"
PLOTS_DIR = "plots"
REPORT_FILE = "evaluation.md"
ASSETS_DIR = "evaluation"
CURVE_KS = (1, 2, 3, 5, 10, 15, 20, 30, 50, 75, 100)
# Per-model results: {model: {stage: RankingResult}}.
Results = dict[str, dict[str, RankingResult]]


def headline_stage(results: Results) -> str:
    """The stage whose numbers lead the report: test when evaluated, else valid."""
    stages = {s for per_stage in results.values() for s in per_stage}
    return "test" if "test" in stages else "valid"


def metrics_tree(results: Results) -> dict:
    """Flat per-model metrics for `dvc metrics`: headline stage unprefixed, the other as "valid/..."."""
    lead = headline_stage(results)
    tree: dict = {}
    sizes: dict = {}
    for model, per_stage in results.items():
        flat: dict[str, float] = {}
        # The headline stage first, so `dvc metrics show` leads with it.
        for stage, result in sorted(per_stage.items(), key=lambda kv: kv[0] != lead):
            prefix = "" if stage == lead else f"{stage}/"
            flat.update({f"{prefix}{k}": round(v, 6) for k, v in result.metrics.items()})
            for name, values in result.slices.items():
                if name == "all":
                    continue
                flat.update({f"{prefix}{name}/{k}": round(v, 6) for k, v in values.items()
                             if k.startswith(("hr@", "ndcg@"))})
            sizes[stage] = {name: values["size"] for name, values in result.slices.items()}
            sizes[stage]["targets_in_history"] = int(result.metrics["targets_in_history"])
        tree[model] = flat
    tree["slice_sizes"] = sizes
    return tree


def curve_frame(results: Results, n_items: int) -> pd.DataFrame:
    """HR and NDCG at K = 1..100 from each target's rank, for the headline stage."""
    lead = headline_stage(results)
    rows = []
    for model, per_stage in results.items():
        if lead not in per_stage:
            continue
        t = per_stage[lead].per_target
        hit = ~t["in_history"].to_numpy()
        for k in sorted(set(CURVE_KS) | set(per_stage[lead].ks)):
            if k > n_items:
                continue
            rows.append({"model": model, "k": k, "series": f"{model} @{k}",
                         "hr": float((M.hit_rate(t["greater"], t["ties"], k) * hit).mean()),
                         "ndcg": float((M.ndcg(t["greater"], t["ties"], k) * hit).mean())})
    return pd.DataFrame(rows, columns=["model", "k", "series", "hr", "ndcg"])


def popularity_frame(results: Results) -> pd.DataFrame:
    """Accuracy at the smallest K by the target's training popularity bucket, for the headline stage."""
    lead = headline_stage(results)
    frames = []
    for model, per_stage in results.items():
        if lead not in per_stage:
            continue
        r = per_stage[lead]
        k = r.ks[0]
        b = r.by_popularity
        frames.append(pd.DataFrame({"model": model, "bucket": b["bucket"], "series": model + " | " + b["bucket"],
                                    "targets": b["targets"], "items": b["items"], "k": k,
                                    "hr": b[f"hr@{k}"], "ndcg": b[f"ndcg@{k}"]}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _charts(results: Results, curves: pd.DataFrame, by_pop: pd.DataFrame, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lead = headline_stage(results)
    models = [m for m in results if lead in results[m]]
    k = results[models[0]][lead].ks[0]
    colors = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(models)}
    written = []

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric in zip(axes, ("hr", "ndcg"), strict=True):
        for model in models:
            c = curves[curves["model"] == model]
            ax.plot(c["k"], c[metric], marker="o", ms=3, label=model, color=colors[model])
        ax.set_xscale("log")
        ax.set_xticks(CURVE_KS, [str(x) for x in CURVE_KS])
        ax.minorticks_off()
        ax.set_xlabel("K (list length)")
        ax.set_ylabel(f"{metric.upper()}@K")
        ax.set_title(f"{metric.upper()}@K on {lead}, full ranking")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(out / "metric_vs_k.png", dpi=110)
    plt.close(fig)
    written.append("metric_vs_k.png")

    def grouped_bars(labels: list[str], values: dict[str, list[float]], title: str, ylabel: str, name: str) -> None:
        fig, ax = plt.subplots(figsize=(max(7, 1.3 * len(labels)), 4))
        width = 0.8 / max(len(values), 1)
        x = np.arange(len(labels))
        for i, (model, ys) in enumerate(values.items()):
            ax.bar(x + i * width - 0.4 + width / 2, ys, width, label=model, color=colors[model])
        ax.set_xticks(x, labels)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend()
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        written.append(name)

    first = by_pop[by_pop["model"] == models[0]]
    labels = [f"{b}\n{n:,} targets" for b, n in zip(first["bucket"], first["targets"], strict=True)]
    grouped_bars(labels, {m: by_pop.loc[by_pop["model"] == m, "ndcg"].fillna(0).tolist() for m in models},
                 f"NDCG@{k} by the target's training popularity (interactions)", f"NDCG@{k}", "by_popularity.png")

    slices = results[models[0]][lead].slices
    names = [n for n in slices if slices[n]["size"] > 0]
    labels = [f"{n}\n{slices[n]['size']:,}" for n in names]
    grouped_bars(labels, {m: [results[m][lead].slices[n].get(f"ndcg@{k}", 0.0) for n in names] for m in models},
                 f"NDCG@{k} by slice (targets under each name)", f"NDCG@{k}", "slices.png")

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for model in models:
        m = results[model][lead].metrics
        ax.scatter(m[f"long_tail_share@{k}"], m[f"ndcg@{k}"], s=60, color=colors[model])
        ax.annotate(model, (m[f"long_tail_share@{k}"], m[f"ndcg@{k}"]), textcoords="offset points", xytext=(6, 4))
    ax.set_xlabel(f"long-tail share of top-{k} slots")
    ax.set_ylabel(f"NDCG@{k}")
    ax.set_title("Accuracy against popularity bias")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "accuracy_vs_tail.png", dpi=110)
    plt.close(fig)
    written.append("accuracy_vs_tail.png")
    return written


def _fmt(value: float | None, digits: int = 4) -> str:
    return "—" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.{digits}f}"


def _markdown(results: Results, fit_seconds: dict[str, float], context: dict, charts: list[str]) -> str:
    lead = headline_stage(results)
    models = [m for m in results if lead in results[m]]
    ks = results[models[0]][lead].ks
    k = ks[0]
    lines = [f"# Evaluation on {lead}", "",
             f"{context['users']:,} users, {context['items']:,} items, {context['train']:,} training interactions. "
             "Protocol: leave-one-out by time, every target ranked against the **whole catalog** (no sampled "
             "negatives), items already in the user's history removed from the candidates; a target that is "
             "itself in the history counts as a miss. Tied scores count at their expected value under a "
             "random order. Head items: the most popular items making "
             f"{context['head_share']:.0%} of training interactions; tail: the rest.", ""]
    for chart in charts:
        lines += [f"![{chart[:-4]}]({ASSETS_DIR}/{chart})", ""]

    accuracy = [f"{n}@{kk}" for kk in ks for n in ("hr", "ndcg")] + ["mrr"]
    beyond = [f"coverage@{k}", f"long_tail_share@{k}", f"novelty@{k}", f"arp_ratio@{k}"]
    if any(f"ild@{k}" in results[m][lead].metrics for m in models):
        beyond.append(f"ild@{k}")
    header = ["model", *accuracy, *beyond, "fit s", "eval s"]
    lines += [f"## Accuracy and beyond ({lead})", "",
              "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for m in models:
        r = results[m][lead]
        cells = [_fmt(r.metrics.get(c)) for c in accuracy + beyond]
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {fit_seconds.get(m, 0):.1f} | {r.seconds:.1f} |")
    lines += ["", "HR@K equals Recall@K with one target. Coverage: share of the catalog in any list; long-tail "
              "share: share of list slots outside the head; novelty: mean -log2 of the share of training users "
              "who had the item; ARP ratio: mean training popularity of recommended items over the catalog mean"
              + ("; ILD: mean pairwise cosine distance of item text vectors within a list." if f"ild@{k}" in beyond
                 else "."), ""]

    for other in sorted({s for m in models for s in results[m]} - {lead}):
        lines += [f"## {other}", "", "| model | " + " | ".join(accuracy) + " |", "|" + "---|" * (len(accuracy) + 1)]
        for m in models:
            if other in results[m]:
                lines.append(f"| {m} | " + " | ".join(_fmt(results[m][other].metrics.get(c)) for c in accuracy) + " |")
        lines.append("")

    slices = results[models[0]][lead].slices
    lines += [f"## Slices: NDCG@{k} ({lead})", "", "| slice | targets | " + " | ".join(models) + " |",
              "|" + "---|" * (len(models) + 2)]
    for name, values in slices.items():
        cells = [_fmt(results[m][lead].slices[name].get(f"ndcg@{k}")) for m in models]
        lines.append(f"| {name} | {values['size']:,} | " + " | ".join(cells) + " |")
    in_history = int(results[models[0]][lead].metrics["targets_in_history"])
    lines += ["", f"Cold users: at most {context['cold_user_max_history']} history interactions. "
              "Cold items: no training interaction (held out by the split, or first seen after training). "
              f"Targets already in the history (counted as misses): {in_history:,}.",
              ""]

    by_pop = results[models[0]][lead].by_popularity
    lines += [f"## NDCG@{k} by the target's training popularity ({lead})", "",
              "| interactions | catalog items | targets | " + " | ".join(models) + " |",
              "|" + "---|" * (len(models) + 3)]
    for i, row in by_pop.iterrows():
        cells = [_fmt(results[m][lead].by_popularity.loc[i, f"ndcg@{k}"]) for m in models]
        lines.append(f"| {row['bucket']} | {row['items']:,} | {row['targets']:,} | " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines)


def write_report(results: Results, fit_seconds: dict[str, float], context: dict, report_dir: Path,
                 topk_frames: dict[str, pd.DataFrame] | None = None) -> dict[str, Path]:
    """Write metrics, plot tables, charts, the Markdown report (and top-K lists); returns their paths.

    `context` holds users, items, train, head_share, cold_user_max_history for the report's text.
    Every file is written beside its final name and renamed, and the chart folder is swapped whole.
    """
    report_dir = Path(report_dir)
    paths = {"metrics": report_dir / METRICS_FILE, "metric_vs_k": report_dir / PLOTS_DIR / "metric_vs_k.csv",
             "by_popularity": report_dir / PLOTS_DIR / "by_popularity.csv", "report": report_dir / REPORT_FILE,
             "assets": report_dir / ASSETS_DIR}
    curves = curve_frame(results, context["items"])
    by_pop = popularity_frame(results)

    write_json(paths["metrics"], metrics_tree(results))
    for key, frame in (("metric_vs_k", curves), ("by_popularity", by_pop)):
        with replaced(paths[key]) as tmp:
            frame.to_csv(tmp, index=False, float_format="%.6f")

    with staged_dir(paths["assets"]) as staging:
        charts = _charts(results, curves, by_pop, staging)
        for name, frame in (topk_frames or {}).items():
            (staging / "topk").mkdir(exist_ok=True)
            frame.to_parquet(staging / "topk" / f"{name}.parquet", index=False)
    write_text(paths["report"], _markdown(results, fit_seconds, context, charts))
    return paths
