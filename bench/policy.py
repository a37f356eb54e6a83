"""Exploration, off-policy evaluation and policy learning on the replay simulator
(components/continual/policy_replay.py).

A champion is trained on MovieLens latest-small before `simulate.cutoff` (cached in the
bench's work folder by params), then `policy.replay.windows` windows are replayed: each request's
candidates and really-liked items come from the data, clicks from the documented position bias.
  ope:     for each logging -> target pair and seed, serve the logging policy, estimate the target's
           position-weighted value (DCG weights) with IPS / SNIPS / DR from the log, and compare with
           the target's true value in the simulator: relative error and 95% interval coverage.
  explore: for each exploration setting and seed: clicks, catalog coverage@k (distinct items shown /
           items in the catalog), and the share of the windows' new items that got a first click;
           against no exploration (same requests, same look draws).
  learn:   serve each window with epsilon-greedy (0.1), learn it (supervised continual fine-tune, the
           off-policy REINFORCE objective on the served lists, or both: --learners), serve the next
           window with the result;
           cumulative clicks after window 0, per seed, with standard errors over seeds.

    .venv/bin/python bench/policy.py [--parts ope,explore,learn] [--seeds 5] [--set policy.replay.max_users=200 ...]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from components.config import ExplorationConfig, load_params
from components.continual.simulate import train_initial
from components.continual.window_split import grow_ids, grow_items, leave_last_out
from components.data.sources.movielens import movielens_stream
from components.features.text import cached_text
from components.models.artifacts import WEIGHTS_FILE, load_trained, save_trained
from components.policy.exploration import describe_policy
from components.policy.ope import RewardModel, evaluate, position_weights
from components.continual.finetune import continual_finetune
from components.continual.policy_replay import open_windows, serve, target_probabilities, window_requests
from components.continual.window_step import open_window
from components.errors import RecloopError
from provenance import provenance

E = ExplorationConfig


def pairs(t: float) -> list[tuple[ExplorationConfig, ExplorationConfig]]:
    """Logging -> target pairs; `t` scales the Boltzmann temperatures to the model's scores."""
    return [(E(kind="boltzmann", temperature=t / 2), E(kind="none")),
            (E(kind="boltzmann", temperature=t / 2), E(kind="boltzmann", temperature=t / 4)),
            (E(kind="boltzmann", temperature=t), E(kind="boltzmann", temperature=t / 2)),
            (E(kind="epsilon", epsilon=0.2), E(kind="none")),
            (E(kind="epsilon", epsilon=0.2), E(kind="epsilon", epsilon=0.05)),
            (E(kind="epsilon", epsilon=0.2, fresh_share=0.2), E(kind="none", fresh_share=0.2))]


def settings(t: float) -> list[ExplorationConfig]:
    return [E(kind="none"), E(kind="epsilon", epsilon=0.05), E(kind="epsilon", epsilon=0.1),
            E(kind="epsilon", epsilon=0.2), E(kind="boltzmann", temperature=t / 2), E(kind="boltzmann", temperature=t),
            E(kind="none", fresh_share=0.1), E(kind="none", fresh_share=0.2),
            E(kind="epsilon", epsilon=0.1, fresh_share=0.1)]


def champion_for(params, base, text_of):
    """The champion trained before the cutoff, cached by the params that shape it."""
    key = hashlib.sha256(json.dumps([params.model.model_dump(mode="json"), params.finetune.model_dump(mode="json"),
                                     params.simulate.model_dump(mode="json"), params.seed]).encode()).hexdigest()[:12]
    folder = Path("bench", "work", "policy", f"champion-{key}")
    if (folder / WEIGHTS_FILE).exists():
        return load_trained(folder), 0.0
    t0 = time.perf_counter()
    trained = train_initial(base, text_of(base.items), params.model, None, params.finetune, params.seed, params.labels)
    seconds = time.perf_counter() - t0
    save_trained(trained, folder, {"seconds": seconds})
    return trained, seconds


def ope_part(requests, cfg, seeds, t, reps) -> list[dict]:
    weights = position_weights(cfg.k, "dcg")
    rows = []
    for logging, target in pairs(t):
        for seed in seeds:
            logged = serve(requests, logging, cfg, weights, seed)
            truth = float(serve(requests, target, cfg, weights, seed).value.mean())
            log = logged.log
            model = RewardModel.fit(log["position"].to_numpy(), log["score"].to_numpy(), log["reward"].to_numpy(),
                                    cfg.k)
            log = target_probabilities(requests, log, target, cfg, seed, model)
            result = evaluate(log, weights, "dcg", reps, seed)
            row = {"logging": describe_policy(logging), "target": describe_policy(target), "seed": seed,
                   "truth": truth, "logging_truth": float(logged.value.mean()), "logged": result.logged,
                   "ess": result.ess, "support": result.support, "requests": result.requests}
            for name, e in result.estimates.items():
                row |= {name: e.value, f"{name}_low": e.low, f"{name}_high": e.high,
                        f"{name}_rel_error": e.value / truth - 1, f"{name}_covers": bool(e.low <= truth <= e.high)}
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def explore_part(windows, cfg, seeds, t) -> list[dict]:
    weights = position_weights(cfg.k, "dcg")
    requests = [r for w in windows for r in w.requests]
    new = {int(i) for w in windows for i in w.new_items}
    catalog = windows[-1].opened.data.n_items
    rows = []
    for policy in settings(t):
        for seed in seeds:
            served = serve(requests, policy, cfg, weights, seed)
            log = served.log
            clicked = set(log.loc[log["reward"] > 0, "item_idx"].astype(int))
            rows.append({"policy": describe_policy(policy), "seed": seed, "clicks": float(served.clicks.sum()),
                         "value": float(served.value.mean()),
                         "coverage": log["item_idx"].nunique() / catalog,
                         "new_items": len(new), "new_items_clicked": len(clicked & new),
                         "new_items_shown": len(set(log["item_idx"].astype(int)) & new)})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def learner(spec: str, continual):
    """`objective[:key=value...]` (continual.* overrides, e.g. mixed:policy_weight=0.3) -> its config."""
    objective, *pairs = spec.split(":")
    update = {"objective": objective} | {k: yaml.safe_load(v) for k, v in (p.split("=", 1) for p in pairs)}
    return type(continual).model_validate(continual.model_dump() | update)


def learn_part(params, stream, catalog, text_of, champion, base, seeds, logging: ExplorationConfig,
               learners: list[str]) -> list[dict]:
    """Serve each window with `logging`, then learn it for the next: the supervised continual fine-tune
    (all of the window's interactions but its held-out tail), the policy objective (the served lists'
    clicks) or both (mixed), per `learners`; the learned model always serves the next window (no
    gate). Reward: clicks per window."""
    cfg, continual, finetune = params.policy.replay, params.continual, params.finetune
    weights = position_weights(cfg.k, "dcg")
    windows = list(stream.windows(cfg.windows))
    rows_out = []
    for objective in learners:
        arm = learner(objective, continual)
        for seed in seeds:
            model, history, items, since = champion, stream.past, base.items, stream.cutoff
            for n, (k, _, _, rows) in enumerate(windows):
                w = window_requests(model, items, catalog, history, rows, base.users, text_of, cfg, seed, k)
                served = serve(w.requests, logging, cfg, weights, seed)
                row = {"objective": objective, "seed": seed, "window": k, "requests": len(w.requests),
                       "clicks": float(served.clicks.sum()), "value": float(served.value.mean()), "train_seconds": 0.0}
                if n + 1 < len(windows):
                    opened = open_window(model, items, catalog, history, rows, base.users, text_of, arm.holdout_share)
                    ids = opened.data.items["item_id"].to_numpy()
                    logged = served.log.assign(item_id=ids[served.log["item_idx"].to_numpy()])
                    t0 = time.perf_counter()
                    try:
                        model, _ = continual_finetune(model, opened.data, opened.text, arm, finetune, seed,
                                                      since=since, labels=params.labels, logged=logged)
                    except RecloopError as e:  # e.g. no click to learn from: the model serves on unchanged
                        row["skipped"] = str(e)
                        model = opened.champion
                    row["train_seconds"] = time.perf_counter() - t0
                    # The window's held-out tail is still to learn (as in the continual loop).
                    items, since = opened.data.items, int(opened.data.test["timestamp"].min())
                history = pd.concat([history, rows], ignore_index=True)
                rows_out.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    return rows_out


def summarise_learn(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    frame = frame[frame["window"] > frame["window"].min()]  # window 0: both serve the initial champion
    per_seed = frame.groupby(["objective", "seed"]).agg(clicks=("clicks", "sum"), value=("value", "mean"),
                                                        train_seconds=("train_seconds", "sum")).reset_index()
    se = lambda x: float(np.std(x, ddof=1) / np.sqrt(len(x))) if len(x) > 1 else 0.0  # noqa: E731
    return per_seed.groupby("objective").agg(cumulative_clicks=("clicks", "mean"), clicks_se=("clicks", se),
                                             value=("value", "mean"), value_se=("value", se),
                                             train_seconds=("train_seconds", "mean")).reset_index()


def summarise_ope(rows: list[dict]) -> pd.DataFrame:
    """Per pair: the mean estimate's relative error (bias), the mean absolute relative error of one run,
    the share of runs within +-10%, and the 95% intervals' coverage of the truth."""
    frame = pd.DataFrame(rows)
    names = ("ips", "snips", "dr")
    out = frame.groupby(["logging", "target"], sort=False).agg(
        truth=("truth", "mean"),
        **{f"{n}_bias": (f"{n}_rel_error", "mean") for n in names},
        **{f"{n}_abs_error": (f"{n}_rel_error", lambda x: float(np.mean(np.abs(x)))) for n in names},
        **{f"{n}_within_10": (f"{n}_rel_error", lambda x: float(np.mean(np.abs(x) <= 0.1))) for n in names},
        **{f"{n}_coverage": (f"{n}_covers", "mean") for n in names},
        ess=("ess", "mean"), support=("support", "mean"))
    return out.reset_index()


def summarise_explore(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    base = frame[frame["policy"] == "none"].set_index("seed")
    frame = frame.assign(click_change=frame["clicks"] / frame["seed"].map(base["clicks"]) - 1,
                         coverage_change=frame["coverage"] / frame["seed"].map(base["coverage"]) - 1,
                         first_click_ratio=frame["new_items_clicked"] / frame["seed"].map(base["new_items_clicked"]))
    agg = {c: (c, "mean") for c in ("clicks", "coverage", "new_items_clicked", "click_change", "coverage_change",
                                    "first_click_ratio")}
    agg |= {f"{c}_se": (c, lambda x: float(np.std(x, ddof=1) / np.sqrt(len(x))) if len(x) > 1 else 0.0)
            for c in ("click_change", "new_items_clicked")}
    return frame.groupby("policy", sort=False).agg(**agg).reset_index()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--parts", default="ope,explore")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--learners", default="supervised,policy,mixed",
                        help="learn part: objective[:key=value...] with continual.* overrides, comma-separated")
    parser.add_argument("--temperature", type=float, default=None,
                        help="Boltzmann temperature [default: the mean per-request std of candidate scores]")
    parser.add_argument("--out", type=Path, default=None, help="[default: bench/results/policy/<date>.json]")
    args = parser.parse_args()
    params = load_params(args.params, args.overrides)
    cfg = params.policy.replay
    started, load_before = datetime.now(UTC), os.getloadavg()
    f = params.featurize
    text_of = cached_text(f.encoder, f.max_length, f.batch_size, f.cache_dir)
    stream, catalog = movielens_stream(params.ingest.path, params.simulate)
    past = stream.past
    base = leave_last_out(grow_items(catalog.iloc[:0], catalog, grow_ids([], past["item_id"])), past)
    champion, train_seconds = champion_for(params, base, text_of)
    t0 = time.perf_counter()
    windows = list(open_windows(stream, catalog, text_of, champion, base, cfg, params.seed))
    requests = [r for w in windows for r in w.requests]  # served by the initial champion (ope, explore)
    request_seconds = time.perf_counter() - t0
    t = args.temperature or float(np.mean([r.scores[:r.candidates].std() for r in requests]))
    print(f"{len(requests)} requests in {len(windows)} windows ({request_seconds:.0f}s); temperature {t:.3f}",
          file=sys.stderr)
    seeds = list(range(args.seeds))
    parts = args.parts.split(",")
    out: dict = {}
    if "ope" in parts:
        rows = ope_part(requests, cfg, seeds, t, params.policy.bootstrap)
        table = summarise_ope(rows)
        out["ope"] = {"rows": rows, "summary": table.to_dict("records")}
        print(table.to_markdown(index=False, floatfmt=".3f"))
    if "learn" in parts:
        rows = learn_part(params, stream, catalog, text_of, champion, base, seeds, E(kind="epsilon", epsilon=0.1),
                          args.learners.split(","))
        table = summarise_learn(rows)
        out["learn"] = {"rows": rows, "summary": table.to_dict("records"), "logging": "epsilon=0.1"}
        print(table.to_markdown(index=False, floatfmt=".3f"))
    if "explore" in parts:
        rows = explore_part(windows, cfg, seeds, t)
        table = summarise_explore(rows)
        out["explore"] = {"rows": rows, "summary": table.to_dict("records")}
        print(table.to_markdown(index=False, floatfmt=".3f"))
    run = {"date": started.isoformat(timespec="seconds"), "command": " ".join(sys.argv), **provenance(),
           "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPU cores",
           "load_average_start": load_before, "load_average_end": os.getloadavg(),
           "wall_seconds": round((datetime.now(UTC) - started).total_seconds(), 1),
           "champion_train_seconds": round(train_seconds, 1)}
    path = args.out or Path("bench/results/policy") / f"{started.strftime('%Y%m%dT%H%M%S')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"run": run, "requests": len(requests), "windows": [w.index for w in windows],
                                "temperature": t, "seeds": seeds,
                                "params": {"replay": cfg.model_dump(),
                                           "simulate": params.simulate.model_dump(mode="json"),
                                           "model": params.model.model_dump(),
                                           "finetune": params.finetune.model_dump(mode="json")},
                                **out}, indent=2, default=str) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
