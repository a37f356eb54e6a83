"""A replay of real history through the continual loop: train up to a cutoff, then let the later
interactions arrive window by window, each going monitor -> decide -> retrain -> gate -> promote.

Everything runs in memory on the library functions the stages use: each window is the continual
step of `retrain` (`components.continual.window_step`) with the monitor's verdict between its halves (the
monitor writes its reports under a work folder); `recloop simulate` prints one block per window and
writes the steps as JSON. The stream comes from `components.data.live_windows.Stream` (for MovieLens,
`components.data.sources.movielens.movielens_stream`); text vectors from a `TextOf`, such as
`components.features.text.cached_text`.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from components.atomic import write_text
from components.config import (
    ContinualConfig,
    FinetuneConfig,
    LabelsConfig,
    ModelConfig,
    MonitorConfig,
    PretrainConfig,
    SimulateConfig,
)
from components.continual.window_step import challenge, open_window
from components.continual.window_split import grow_ids, grow_items, leave_last_out
from components.data.dataset import SplitData
from components.data.live_windows import Stream
from components.errors import RecloopError
from components.evaluation.prequential import prequential_split, score
from components.features.text import TextOf
from components.models.artifacts import TrainedModel
from components.models.scoring import RecloopScorer


@dataclass
class WindowStep:
    """What the loop did with one window."""

    index: int
    start: str
    end: str
    interactions: int
    users: int
    new_items: int
    drift: bool
    drift_reasons: list[str]
    retrained: bool
    champion_ndcg: float
    challenger_ndcg: float | None = None
    promoted: bool = False
    gate_reasons: list[str] = field(default_factory=list)
    train_seconds: float = 0.0
    targets: int = 0  # held-out interactions the NDCG@10 values are measured on

    def describe(self) -> str:
        head = (f"window {self.index} {self.start[:10]}..{self.end[:10]}: {self.interactions:,} interactions, "
                f"{self.users} users, {self.new_items} new items")
        lines = [head, f"  monitor: {'DRIFT' if self.drift else 'no drift'}"
                 + "".join(f"\n    - {r}" for r in self.drift_reasons)]
        if not self.retrained:
            lines.append(f"  not retrained; champion NDCG@10 {self.champion_ndcg:.4f} "
                         f"on {self.targets} held-out targets")
            return "\n".join(lines)
        verdict = "PROMOTED" if self.promoted else "REFUSED"
        lines.append(f"  retrained in {self.train_seconds:.1f}s: champion NDCG@10 {self.champion_ndcg:.4f} vs "
                     f"challenger {self.challenger_ndcg:.4f} on {self.targets} held-out targets -> {verdict}")
        lines += [f"    - {r}" for r in self.gate_reasons]
        return "\n".join(lines)


@dataclass
class SimulationSummary:
    steps: list[WindowStep]
    initial_seconds: float
    report: Path

    def describe(self) -> str:
        promoted = sum(s.promoted for s in self.steps)
        retrained = sum(s.retrained for s in self.steps)
        return "\n".join([f"simulate: initial model trained in {self.initial_seconds:.1f}s",
                          *(s.describe() for s in self.steps),
                          f"{len(self.steps)} windows, {retrained} retrained, {promoted} promoted; wrote {self.report}"])


def train_initial(data: SplitData, text: np.ndarray, model: ModelConfig, pretrain: PretrainConfig | None,
                  finetune: FinetuneConfig, seed: int, labels: LabelsConfig = LabelsConfig()) -> TrainedModel:
    """The first champion: pretraining (when `pretrain` is given), then fine-tuning, on `data`."""
    from components.training.finetune import finetune_model
    from components.training.pretrain import pretrain_model

    pretrained = pretrain_model(data, text, model, pretrain, seed)[0] if pretrain is not None else None
    return finetune_model(data, text, finetune, seed, pretrained=pretrained, knobs=model, labels=labels)[0]


def _iso(seconds: int) -> str:
    return pd.Timestamp(seconds, unit="s", tz="UTC").isoformat()


def _drift(monitor_cfg: MonitorConfig, reference: pd.DataFrame, current: pd.DataFrame, items: pd.DataFrame,
           text: np.ndarray, work: Path, k: int, seed: int) -> tuple[bool, list[str]]:
    """The monitor's verdict on window `k`, with the catalog's text vectors for text-embedding drift."""
    from components.monitoring.monitor import monitor

    folder = work / "windows"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, frame in (("reference", reference), (f"window_{k:03d}", current)):
        path = folder / f"{name}.parquet"
        frame.drop(columns=["user_idx", "item_idx"], errors="ignore").to_parquet(path, index=False)
        paths.append(path)
    items_path, vectors_path = folder / "items.parquet", folder / "item_text.npy"
    items[["item_id"]].to_parquet(items_path, index=False)
    np.save(vectors_path, text)
    verdict = monitor(monitor_cfg, paths[0], paths[1], work / "monitoring", item_vectors=vectors_path,
                      items=items_path, seed=seed).verdict
    return verdict.drift, list(verdict.reasons)


def simulate(stream: Stream, catalog: pd.DataFrame, text_of: TextOf, *, model: ModelConfig,
             pretrain: PretrainConfig | None, finetune: FinetuneConfig, continual: ContinualConfig,
             monitor_cfg: MonitorConfig, cfg: SimulateConfig, work_dir: Path, seed: int = 42,
             on_window: Callable[[WindowStep], None] | None = None,
             champion: TrainedModel | None = None, labels: LabelsConfig = LabelsConfig()) -> SimulationSummary:
    """Replay `stream` through the loop; `catalog` describes items (title, categories) as they appear.

    `text_of(items)` gives the text vectors of an items table (the featurize cache encodes only
    new texts). `on_window` is called with each finished step (the CLI prints it at once).
    `champion`: a model already trained on the history before the cutoff (else one is trained).
    """
    work_dir = Path(work_dir)
    past = stream.past
    if past.empty:
        raise RecloopError(f"no interactions before simulate.cutoff {_iso(stream.cutoff)[:10]}: move it later")
    items = grow_items(catalog.iloc[:0], catalog, grow_ids([], past["item_id"]))
    base = leave_last_out(items, past)
    start = time.perf_counter()
    if champion is None:
        champion = train_initial(base, text_of(base.items), model, pretrain, finetune, seed, labels)
    elif champion.item_ids != base.items["item_id"].tolist():
        raise RecloopError("the given champion was trained on another catalog than the history before the cutoff")
    initial_seconds = time.perf_counter() - start
    monitor_cfg = monitor_cfg.model_copy(update={"workspace": work_dir / "evidently_workspace"})

    steps: list[WindowStep] = []
    history = past
    learned = stream.cutoff  # the champion has learned every interaction before this
    for k, w_start, w_end, rows in stream.windows(cfg.max_windows):
        window = open_window(champion, items, catalog, history, rows, base.users, text_of, continual.holdout_share)
        data, items = window.data, window.data.items
        drift, reasons = _drift(monitor_cfg, history, rows, items, window.text, work_dir, k, seed)
        step = WindowStep(k, _iso(w_start), _iso(w_end), len(rows), rows["user_id"].nunique(),
                          window.new_items, drift, reasons, retrained=drift or cfg.retrain == "always",
                          champion_ndcg=0.0)
        if step.retrained:
            # After refusals (or windows without drift) the challenger catches up on all of them.
            challenged = challenge(champion, window, base, continual, finetune, seed, since=learned,
                                   labels=labels)
            decision = challenged.decision
            step.train_seconds = challenged.training.seconds
            step.champion_ndcg, step.challenger_ndcg = decision.window["champion"], decision.window["challenger"]
            step.targets = int(decision.window["targets"])
            step.promoted, step.gate_reasons = decision.promote, decision.reasons
            if decision.promote:  # the window's held-out part is still to learn
                champion, learned = challenged.challenger, int(data.test["timestamp"].min())
        else:
            held_out = prequential_split(data, continual.max_window_targets, seed)
            step.champion_ndcg = score(RecloopScorer(window.champion, "champion").fit(data), held_out, seed=seed).ndcg
            step.targets = len(held_out.user_of)
        steps.append(step)
        if on_window is not None:
            on_window(step)
        history = pd.concat([history, rows], ignore_index=True)

    work_dir.mkdir(parents=True, exist_ok=True)
    report = work_dir / "simulation.json"
    write_text(report, json.dumps({"initial_seconds": initial_seconds, "steps": [asdict(s) for s in steps]},
                                  indent=2) + "\n")
    return SimulationSummary(steps, initial_seconds, report)
