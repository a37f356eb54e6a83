"""Continual learning on replayed MovieLens history: stale vs continual vs full retrain, window by window.

Train on everything before `simulate.cutoff`; then the later interactions arrive in windows of
`simulate.window_days`. Window w is scored *before* anything learns from it, by three models that
have seen only what came before it:
  (a) stale:     the initial model, never retrained (new items placed by their text alone);
  (b) continual: the continual loop's champion after windows < w (fine-tuned from the previous
                 champion on each window + replay, kept only where the gate passed it);
  (c) full:      a model trained from scratch on everything before w, as (a) was (same params,
                 leave-last-out validation for early stopping).
On window 0 all three are the initial model. Scoring is prequential: every interaction of the
window (a seeded sample of --max-targets) is a target, ranked over the whole catalog known by then
from its user's history strictly before it, items already seen removed (the library's evaluator
and scorer, see components/evaluation/prequential.py). Standard errors are bootstrapped over users;
the differences (b) - (c) and (b) - (a) are paired (same targets). Then (b) and (c) learn window w
for window w + 1 from the same interactions: all of window w but its latest
`continual.holdout_share`, which the gate holds out to compare challenger and champion. The
challenger learns every interaction the champion has not (since the held-out part of the window
of its last promotion: after a refusal, two windows). Their seconds are recorded. The loop retrains on every window here, so that what retraining buys is
measured everywhere, not only where the monitor fired.

    .venv/bin/python bench/continual.py [--set simulate.cutoff=2015-01-01 ...] [--out bench/results/continual.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from components.config import load_params
from components.continual.finetune import grow_model
from components.continual.simulate import train_initial
from components.continual.window_split import grow_ids, grow_items, holdout_split, leave_last_out
from components.continual.window_step import challenge, open_window
from components.data.sources.movielens import movielens_stream
from components.evaluation.prequential import bootstrap_se, prequential_split, score
from components.features.text import cached_text
from components.models.scoring import RecloopScorer
from provenance import provenance

MODELS = ("stale", "continual", "full")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--max-targets", type=int, default=3000, help="prequential targets per window (seeded sample)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/continual.json"))
    args = parser.parse_args()
    params = load_params(args.params, args.overrides)
    seed, cfg = params.seed, params.continual
    started, load_before = datetime.now(UTC), os.getloadavg()
    f = params.featurize
    text_of = cached_text(f.encoder, f.max_length, f.batch_size, f.cache_dir)
    stream, catalog = movielens_stream(params.ingest.path, params.simulate)
    history = stream.past
    items = grow_items(catalog.iloc[:0], catalog, grow_ids([], history["item_id"]))
    base = leave_last_out(items, history)
    t0 = time.perf_counter()
    stale = train_initial(base, text_of(base.items), params.model, None, params.finetune, seed, params.labels)
    initial_seconds = time.perf_counter() - t0
    models = dict.fromkeys(MODELS, stale)
    made = {"continual_seconds": 0.0, "gate_seconds": 0.0, "full_seconds": 0.0, "gate": None}
    windows = list(stream.windows(params.simulate.max_windows))
    rows_out, since = [], stream.cutoff  # the champion has learned everything before `since`
    for n, (k, w_start, _, rows) in enumerate(windows):
        # Items of earlier windows are missing from a champion whose retrains were all refused.
        seen = pd.concat([history["item_id"], rows["item_id"]])
        champion = models["continual"]
        items = grow_items(items.iloc[:len(champion.item_ids)], catalog, grow_ids(champion.item_ids, seen))
        text = text_of(items)
        unseen = holdout_split(items, history, rows, base.users, holdout_share=1.0)
        targets = prequential_split(unseen, args.max_targets, seed)
        scores = {name: score(RecloopScorer(grow_model(model, unseen, text), name).fit(unseen), targets, seed=seed)
                  for name, model in models.items()}
        per = {name: s.per_target for name, s in scores.items()}
        row = {"window": k, "start": pd.Timestamp(w_start, unit="s").date().isoformat(), "interactions": len(rows),
               "users": int(rows["user_id"].nunique()), "targets": scores["stale"].targets,
               "target_users": scores["stale"].users, "new_items": len(items) - len(stale.item_ids),
               **{name: s.ndcg for name, s in scores.items()}, **{f"{name}_se": s.se for name, s in scores.items()},
               "continual_minus_full": float((per["continual"] - per["full"]).mean()),
               "continual_minus_full_se": bootstrap_se(per["continual"] - per["full"], targets.user_of, seed=seed),
               "continual_minus_stale": float((per["continual"] - per["stale"]).mean()),
               "continual_minus_stale_se": bootstrap_se(per["continual"] - per["stale"], targets.user_of, seed=seed),
               **{key: round(v, 1) if key.endswith("_seconds") else v for key, v in made.items()}}
        rows_out.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
        if n + 1 < len(windows):  # what learns window w is scored on window w + 1
            models, made, since = learn(models, items, catalog, history, rows, since, base, text_of, params)
        history = pd.concat([history, rows], ignore_index=True)

    table = pd.DataFrame(rows_out)
    scored = table.iloc[1:] if len(table) > 1 else table  # window 0: all three are the initial model
    totals = {name: float(scored[name].mean()) for name in MODELS}
    totals |= {f"{d}_se": float(np.sqrt((scored[f"{d}_se"] ** 2).sum()) / len(scored))
               for d in ("continual_minus_full", "continual_minus_stale")}
    totals |= {d: float(scored[d].mean()) for d in ("continual_minus_full", "continual_minus_stale")}
    totals |= {"continual_vs_full": totals["continual"] / totals["full"] - 1 if totals["full"] else float("nan"),
               "continual_seconds": float(scored["continual_seconds"].sum()),
               "gate_seconds": float(scored["gate_seconds"].sum()), "full_seconds": float(scored["full_seconds"].sum()),
               "initial_seconds": round(initial_seconds, 1), "windows_scored": len(scored),
               "targets": int(scored["targets"].sum())}
    totals["compute_share"] = ((totals["continual_seconds"] + totals["gate_seconds"]) / totals["full_seconds"]
                               if totals["full_seconds"] else float("nan"))
    run = {"date": started.isoformat(timespec="seconds"), "command": " ".join(sys.argv), **provenance(),
           "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPU cores",
           "load_average_start": load_before, "load_average_end": os.getloadavg(),
           "wall_seconds": round((datetime.now(UTC) - started).total_seconds(), 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"run": run, "max_targets": args.max_targets,
                                    "params": {"simulate": params.simulate.model_dump(mode="json"),
                                               "model": params.model.model_dump(),
                                               "finetune": params.finetune.model_dump(mode="json"),
                                               "continual": cfg.model_dump()},
                                    "windows": rows_out, "mean_after_window_0": totals}, indent=2) + "\n")
    print(table.to_markdown(index=False, floatfmt=".4f"))
    print(f"\nwindows 1+: NDCG@10 stale {totals['stale']:.4f}, continual {totals['continual']:.4f}, full "
          f"{totals['full']:.4f} (continual vs full {100 * totals['continual_vs_full']:+.1f}%); seconds: continual "
          f"{totals['continual_seconds']:.0f} + gate {totals['gate_seconds']:.0f}, full {totals['full_seconds']:.0f} "
          f"({100 * totals['compute_share']:.0f}%)")


def learn(models: dict, items: pd.DataFrame, catalog: pd.DataFrame, history: pd.DataFrame, rows: pd.DataFrame,
          since: int, base, text_of, params) -> tuple[dict, dict, int]:
    """(b) and (c) after window `rows`: the continual window step of `recloop retrain` / `simulate`
    (learning what came from `since` on, then the gate), and a full retrain, timed; and what the
    champion has learned up to now. The gate's seconds are the step's other than training."""
    seed, cfg = params.seed, params.continual
    champion = models["continual"]
    t0 = time.perf_counter()
    window = open_window(champion, items, catalog, history, rows, base.users, text_of, cfg.holdout_share)
    challenged = challenge(champion, window, base, cfg, params.finetune, seed, since=since, labels=params.labels)
    challenger, decision, data = challenged.challenger, challenged.decision, window.data
    t1 = time.perf_counter()
    known = pd.concat([data.train, data.valid], ignore_index=True).drop(columns=["user_idx", "item_idx"])
    full = train_initial(leave_last_out(data.items, known), window.text, params.model, None, params.finetune, seed,
                         params.labels)
    t2 = time.perf_counter()
    print(decision.describe(), file=sys.stderr, flush=True)
    training = challenged.training.seconds
    made = {"continual_seconds": training, "gate_seconds": t1 - t0 - training, "full_seconds": t2 - t1,
            "gate": "promoted" if decision.promote else "refused", "gate_gain": decision.gain,
            "gate_gain_se": decision.window["gain_se"], "gate_targets": int(decision.window["targets"])}
    if decision.promote:  # the window's held-out part is still to learn
        champion, since = challenger, int(data.test["timestamp"].min())
    return {"stale": models["stale"], "continual": champion, "full": full}, made, since


if __name__ == "__main__":
    main()
