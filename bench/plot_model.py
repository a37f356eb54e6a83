"""Time-to-quality chart from bench/model.py results: test NDCG@10 against training seconds.

    .venv/bin/python bench/plot_model.py bench/results/model/Scientific-recloop-*.json \
        --peer "RecBole SASRec,1885,0.0561" --out docs/img/time_to_quality_scientific.png

A peer is "label,seconds,ndcg" (a point measured on the same machine, e.g. ../shared/notes/peer-recbole.md).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", type=Path, help="bench/model.py JSON files (with a curve)")
    parser.add_argument("--peer", action="append", default=[], help='"label,seconds,ndcg"')
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    fig, ax = plt.subplots(figsize=(7, 4))
    for path in args.results:
        run = json.loads(path.read_text())
        points = [p for p in run["curve"] if "test_ndcg@10" in p]
        if not points:
            continue
        label = f"{run['variant']} ({run['tag'] or path.stem})"
        ax.plot([p["seconds"] / 60 for p in points], [p["test_ndcg@10"] for p in points], marker=".", label=label)
        pretrain_end = [p["seconds"] / 60 for p in points if p["stage"] == "pretrain"]
        if pretrain_end:
            ax.axvline(pretrain_end[-1], color="grey", lw=0.5, ls=":")
    for peer in args.peer:
        label, seconds, ndcg = peer.split(",")
        ax.scatter([float(seconds) / 60], [float(ndcg)], marker="*", s=120, color="black", zorder=3)
        ax.axhline(float(ndcg), color="black", lw=0.6, ls="--")
        ax.annotate(f"{label}: {float(ndcg):.4f} at {float(seconds) / 60:.0f} min", (float(seconds) / 60, float(ndcg)),
                    textcoords="offset points", xytext=(-10, 8), ha="right", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("training minutes (log scale; validation included)")
    ax.set_ylabel("test NDCG@10 (full ranking)")
    ax.set_title(f"Time to quality: {json.loads(args.results[0].read_text())['dataset']}")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
