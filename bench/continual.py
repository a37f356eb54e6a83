"""Continual learning on replayed MovieLens history: stale vs continual vs full retrain, window by window.

Train on everything before `simulate.cutoff`, then for each later window (held-out targets: each
window user's last interaction, history = everything before it) measure NDCG@10 of
  (a) stale:     the initial model, never retrained (new items placed by their text alone);
  (b) continual: the champion of the continual loop after this window (fine-tuned from the previous
                 champion on the window + replay, kept only if the gate passed it);
  (c) full:      a model trained from scratch on all data up to the window (same params as (a)),
and the training seconds of (b) and (c). The loop retrains on every window here (simulate.retrain
= always), so that what retraining buys is measured everywhere, not only where the monitor fired.

    .venv/bin/python bench/continual.py [--set simulate.cutoff=2014-01-01 ...] [--out bench/results/continual.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd

from components.config import load_params
from components.continual.finetune import continual_finetune, grow_model
from components.continual.gate import compare, ndcg
from components.continual.simulate import cached_text, movielens_stream, train_initial
from components.continual.windows import grow_ids, grow_items, holdout_split, leave_last_out, on_catalog, sample_users
from components.models.scoring import RecloopScorer
from components.training.finetune import finetune_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=Path("bench/results/continual.json"))
    args = parser.parse_args()
    params = load_params(args.params, args.overrides)
    f = params.featurize
    text_of = cached_text(f.encoder, f.max_length, f.batch_size, f.cache_dir)
    stream, catalog = movielens_stream(params.ingest.path, params.simulate)
    past = stream.past
    items = grow_items(catalog.iloc[:0], catalog, grow_ids([], past["item_id"]))
    base = leave_last_out(items, past)
    start = time.perf_counter()
    stale = train_initial(base, text_of(base.items), params.model, None, params.finetune, params.seed)
    initial_seconds = time.perf_counter() - start
    champion, history, rows_out = stale, past, []
    for k, w_start, _, rows in stream.windows(params.simulate.max_windows):
        # Items of earlier windows are missing from a champion whose retrains were all refused.
        seen = pd.concat([history["item_id"], rows["item_id"]])
        items = grow_items(items.iloc[:len(champion.item_ids)], catalog, grow_ids(champion.item_ids, seen))
        data = holdout_split(items, history, rows, base.users)
        text = text_of(items)
        guard = on_catalog(base, items, data.users)
        guard_users = sample_users(guard.test["user_idx"].to_numpy(), params.continual.max_guard_users, params.seed)

        t0 = time.perf_counter()
        challenger, _ = continual_finetune(champion, data, text, params.continual, params.finetune, params.seed)
        continual_seconds = time.perf_counter() - t0
        decision = compare(RecloopScorer(grow_model(champion, data, text), "champion").fit(data),
                           RecloopScorer(challenger, "challenger").fit(data), data, guard, params.continual,
                           guard_users)
        champion = challenger if decision.promote else champion
        continual_ndcg = decision.window["challenger" if decision.promote else "champion"]

        t0 = time.perf_counter()
        full, _ = finetune_model(data, text, params.finetune, params.seed, pretrained=None, knobs=params.model)
        full_seconds = time.perf_counter() - t0
        row = {"window": k, "start": pd.Timestamp(w_start, unit="s").date().isoformat(), "interactions": len(rows),
               "targets": int(decision.window["targets"]), "new_items": len(items) - len(stale.item_ids),
               "stale": ndcg(RecloopScorer(grow_model(stale, data, text), "stale").fit(data), data)[0],
               "continual": continual_ndcg, "full": ndcg(RecloopScorer(full, "full").fit(data), data)[0],
               "promoted": decision.promote, "continual_seconds": round(continual_seconds, 1),
               "full_seconds": round(full_seconds, 1)}
        rows_out.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
        history = pd.concat([history, rows], ignore_index=True)

    table = pd.DataFrame(rows_out)
    totals = {name: float(table[name].mean()) for name in ("stale", "continual", "full")}
    totals |= {"continual_seconds": float(table["continual_seconds"].sum()),
               "full_seconds": float(table["full_seconds"].sum()), "initial_seconds": round(initial_seconds, 1),
               "targets": int(table["targets"].sum())}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"params": {"simulate": params.simulate.model_dump(mode="json"),
                                               "model": params.model.model_dump(), "finetune":
                                               params.finetune.model_dump(mode="json"),
                                               "continual": params.continual.model_dump()},
                                    "windows": rows_out, "mean": totals}, indent=2) + "\n")
    print(table.to_markdown(index=False, floatfmt=".4f"))
    print(f"\nmean NDCG@10: stale {totals['stale']:.4f}, continual {totals['continual']:.4f}, "
          f"full {totals['full']:.4f}; training seconds: continual {totals['continual_seconds']:.0f}, "
          f"full {totals['full_seconds']:.0f}")


if __name__ == "__main__":
    main()
