"""The one training loop: epochs over whole sequences, several weighted objectives, early stopping, resumption.

Pretraining and fine-tuning differ only in their `Objective` (which losses, with which weights)
and their starting weights. Under `torchrun` (see `components.training.distributed`) every rank
draws the same epoch permutation and takes its own stride of it (what DistributedSampler does) in
batches of batch_size / world size, the model is wrapped in DistributedDataParallel, and only the
main process reads and writes checkpoints, validates, and logs; it hands the checkpoint and the
validation metrics to the other ranks, so that all resume from the same epoch and take the same
early-stopping decision.
"""
from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from components.config import TrainingConfig
from components.models.model import TASKS, Negatives, Recloop, SequenceBatch, Targets, to_device
from components.models.sequences import PrefixRows, TrainingRows
from components.tracking import Tracker
from components.training.checkpoint import load_checkpoint, save_checkpoint
from components.training.distributed import from_every_rank, from_main, world

EARLY_STOP_METRIC = "valid_ndcg@10"
# Rows are sorted by length within pools of this many batches, so a batch is cut to a width near its
# rows' own (short Amazon histories are not padded to the longest of the whole dataset).
POOL_BATCHES = 50
# Negatives are drawn in proportion to popularity ** this (word2vec's smoothing): frequent items
# make harder negatives, and the log-Q correction removes the bias that sampling adds.
NEGATIVE_POWER = 0.75


# TrainingConfig.softmax_precision -> the type of the full softmax's products; None: the model's own.
SOFTMAX_DTYPES = {"float32": None, "bfloat16": torch.bfloat16}


@dataclass
class Objective:
    """Which losses a stage trains on and how much each counts; tasks with weight 0 are not computed."""

    weights: dict[str, float]
    temperature: float = 0.07
    softmax_precision: str = "float32"  # the full softmax's products (TrainingConfig.softmax_precision)

    def __post_init__(self) -> None:
        unknown = set(self.weights) - set(TASKS)
        if unknown:
            raise ValueError(f"unknown tasks {sorted(unknown)}; known: {TASKS}")

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(t for t in TASKS if self.weights.get(t, 0.0) > 0)


@dataclass
class LoopResult:
    rows: int  # training sequences per epoch
    epochs: int  # epochs completed, counting those before a resume
    best_epoch: int
    best_score: float
    history: list[dict[str, float]] = field(default_factory=list)
    interrupted: bool = False
    stopped_early: bool = False
    out_of_time: bool = False
    resumed_from: int = 0
    seconds: float = 0.0
    run_id: str | None = None
    # What a stage measured after the loop on the model it returns (e.g. validation with a content
    # prior chosen after training): the stage's metrics report these over the best epoch's.
    after: dict = field(default_factory=dict)

    @property
    def best_metrics(self) -> dict[str, float]:
        return next((h for h in self.history if h["epoch"] == self.best_epoch), {})


def configure_torch(threads: int | None, seed: int) -> None:
    """Threads (one per available core unless set), seed, deterministic kernels where torch has them.

    Without deterministic mode some multi-threaded CPU kernels (e.g. embedding backward) sum in
    varying order, and two runs with the same seed drift apart in the last bits.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    # torchrun's ranks on one machine share its cores.
    cores = max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    torch.set_num_threads(threads or cores)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    # Deterministic mode also NaN-fills every fresh tensor: a debugging aid that costs ~10% a step here.
    torch.utils.deterministic.fill_uninitialized_memory = False


class NegativeSampler:
    """Draws shared sampled-softmax negatives; log_q is each item's log probability of being drawn."""

    def __init__(self, popularity: torch.Tensor, count: int):
        weights = (popularity.double() + 1.0) ** NEGATIVE_POWER
        self.q = (weights / weights.sum()).float()
        self.log_q = torch.log(self.q)
        self.count = count

    def draw(self, device: torch.device) -> Negatives:
        if self.log_q.device != device:  # once, not every step
            self.log_q = self.log_q.to(device)
        items = torch.multinomial(self.q, self.count, replacement=True)
        return Negatives(items.to(device), self.log_q)


class WeightAverage:
    """An exponential moving average of a model's parameters (Polyak averaging).

    The decay warms up as min(decay, (1 + t) / (10 + t)) after t updates, so that the average does not
    carry the initial weights for thousands of steps. `applied()` swaps the average into the model
    (to validate or keep it) and the trained weights back afterwards.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.params = list(model.parameters())
        self.average = [p.detach().clone() for p in self.params]
        self.updates = 0

    @torch.no_grad()
    def update(self) -> None:
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(self.average, [p.detach() for p in self.params], 1.0 - decay)
        self.updates += 1

    @contextmanager
    def applied(self) -> Iterator[None]:
        with torch.no_grad():
            trained = [p.detach().clone() for p in self.params]
            torch._foreach_copy_([p.data for p in self.params], self.average)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_([p.data for p in self.params], trained)

    def state(self) -> dict:
        return {"average": self.average, "updates": self.updates}

    def load(self, state: dict) -> None:
        # A checkpoint is read onto the CPU: each average goes where its parameter trains.
        self.average = [a.to(p.device, copy=True) for a, p in zip(state["average"], self.params)]
        self.updates = state["updates"]


def length_batches(order: torch.Tensor, lengths: torch.Tensor, size: int, generator: torch.Generator
                   ) -> list[torch.Tensor]:
    """Batches of rows of similar length, in random order: `order` is cut into pools of POOL_BATCHES
    batches, each pool is sorted by length and split, and the batches of all pools are shuffled.
    """
    batches: list[torch.Tensor] = []
    for pool in order.split(size * POOL_BATCHES):
        batches.extend(pool[torch.argsort(lengths[pool], stable=True)].split(size))
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def lr_factor(schedule: str, progress: float) -> float:
    """The learning rate's multiple of its peak at `progress` (0 to 1) through the run's horizon."""
    progress = min(max(progress, 0.0), 1.0)
    if schedule == "linear":
        return 1.0 - progress
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0


def budget_horizon(epochs_done: int, epochs_this_run: int, elapsed: float, budget: float, cap: int) -> int:
    """How many epochs the run will have in all: those done, plus as many more as fit in what is left of
    the budget at the mean cost of this run's epochs so far, at most `cap`; when no other epoch fits it
    is the epochs done, and the loop stops."""
    per_epoch = elapsed / max(epochs_this_run, 1)
    return min(cap, epochs_done + max(int((budget - elapsed) / per_epoch), 0))


def training_step(net: torch.nn.Module, batch: SequenceBatch, targets: Targets, negatives: Negatives | None,
                  objective: Objective, optimizer: torch.optim.Optimizer, grad_clip: float | None,
                  extra_loss: Callable[[], torch.Tensor] | None = None
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One optimiser step on one batch: the objective's weighted loss (plus `extra_loss()`, already
    weighted, e.g. the policy term of components/policy/reinforce.py), its gradients clipped to
    `grad_clip`. Returns the weighted loss and each task's own."""
    _, losses = net(batch, targets, negatives, objective.tasks, objective.temperature,
                    SOFTMAX_DTYPES[objective.softmax_precision])
    loss = sum(objective.weights[t] * losses[t] for t in objective.tasks)
    if extra_loss is not None:
        losses["extra"] = extra_loss()
        loss = loss + losses["extra"]
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
    optimizer.step()
    return loss, losses


def epoch_line(desc: str, epoch: int, epochs: int, metrics: dict[str, float], result: LoopResult) -> str:
    """The epoch's console line: train loss, validation metrics, the best epoch so far, seconds.

    e.g. `finetune epoch 3/30  loss 7.812  valid ndcg@10 0.0712 (best 0.0712 @3)  hr@10 0.131  41s`
    """
    parts = [f"{desc} epoch {epoch}/{epochs}"]
    if "train_loss" in metrics:
        parts.append(f"loss {metrics['train_loss']:.3f}")
    parts.append(f"valid ndcg@10 {metrics[EARLY_STOP_METRIC]:.4f} (best {result.best_score:.4f} @{result.best_epoch})")
    parts += [f"{name.removeprefix('valid_')} {value:.3f}" for name, value in metrics.items()
              if name.startswith("valid_") and name != EARLY_STOP_METRIC]
    parts.append(f"{metrics['epoch_seconds']:.0f}s")
    return "  ".join(parts)


def train(model: Recloop, rows: TrainingRows | PrefixRows, objective: Objective, cfg: TrainingConfig, *, seed: int,
          validate: Callable[[Recloop], dict[str, float]], tracker: Tracker, params: dict,
          checkpoint: os.PathLike | None = None, fingerprint: str = "", sampler: NegativeSampler | None = None,
          desc: str = "train", start_is_candidate: bool = False,
          extra_loss: Callable[[], torch.Tensor] | None = None) -> LoopResult:
    """Train `model` in place; on return it holds the best epoch's weights (unless interrupted).

    `validate(model)` returns metrics including `valid_ndcg@10`, which early stopping watches.
    With a `checkpoint` path, state is saved after every epoch and a matching one is resumed.
    `start_is_candidate`: the starting weights are validated first (as epoch 0) and kept if no
    epoch beats them, so that fine-tuning never returns a model worse than the one it was given.
    """
    start_time = time.perf_counter()
    device = next(model.parameters()).device
    rank, world_size = world()
    main = rank == 0
    torch.manual_seed(seed)
    order_rng = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    average = WeightAverage(model, cfg.weight_average) if cfg.weight_average else None
    result = LoopResult(rows=len(rows), epochs=0, best_epoch=0, best_score=-math.inf)
    best_state: dict[str, torch.Tensor] | None = None
    bad_epochs, run_id = 0, None
    horizon = cfg.epochs  # the epochs the learning-rate schedule spans; a time budget may shorten it

    # Only the main process reads the checkpoint: no rank can resume from another epoch than the rest,
    # and the ranks need no shared disk for it.
    state = from_main(load_checkpoint(checkpoint, fingerprint) if main and checkpoint is not None else None)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if average is not None:
            average.load(state["average"])
        # Each rank resumes its own random stream (dropout, negatives); under another world size than
        # the run that saved them, rank r takes stream r mod the saved count.
        torch.set_rng_state(state["torch_rng"][rank % len(state["torch_rng"])])
        order_rng.set_state(state["order_rng"])
        best_state, bad_epochs, run_id = state["best_state"], state["bad_epochs"], state["run_id"]
        result.epochs = result.resumed_from = state["epoch"]
        result.best_epoch, result.best_score = state["best_epoch"], state["best_score"]
        result.history, result.stopped_early = state["history"], state["stopped_early"]
        horizon = state.get("horizon", cfg.epochs)
    if main:
        result.run_id = tracker.start(run_id)
        if state is None:
            tracker.log_params(params)
    net = (torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True,
                                                     device_ids=[device.index] if device.type == "cuda" else None)
           if world_size > 1 else model)
    # batch_size is the global batch, so one or N processes take as many optimiser steps of the same size.
    rank_batch = -(-cfg.batch_size // world_size)

    def validated() -> dict[str, float]:
        model.eval()
        with torch.no_grad():
            # Ranks sharing a machine's cores would only slow each other down validating N times over.
            return from_main(validate(model) if main else None)

    if start_is_candidate and state is None:
        valid = validated()
        result.history.append({"epoch": 0, **valid, "epoch_seconds": time.perf_counter() - start_time})
        result.best_score = valid[EARLY_STOP_METRIC]
        best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if main:
            tracker.log_metrics(valid, step=0)
            tqdm.write(epoch_line(desc, 0, cfg.epochs, result.history[0], result), file=sys.stderr)
        # The start is a result to keep, so a budget its validation already spent starts no epoch.
        elapsed = from_main(time.perf_counter() - start_time)
        result.out_of_time = cfg.max_minutes is not None and elapsed >= 60 * cfg.max_minutes

    for epoch in range(result.epochs, cfg.epochs):
        if result.stopped_early or result.out_of_time:
            break
        epoch_start = time.perf_counter()
        model.train()
        order = torch.randperm(len(rows), generator=order_rng)
        # Wrap around to a multiple of the world size, so every rank takes as many steps as the others.
        order = torch.cat([order, order[:(-len(order)) % world_size]])[rank::world_size]
        totals: dict[str, float] = {}
        steps = 0
        batches = length_batches(order, rows.lengths, rank_batch, order_rng)
        bar = tqdm(batches, desc=f"{desc} epoch {epoch + 1}/{horizon}",
                   unit="batch", disable=not main, leave=False, file=sys.stderr)
        for step, index in enumerate(bar):
            if cfg.lr_schedule != "constant":
                factor = lr_factor(cfg.lr_schedule, (epoch + step / len(batches)) / horizon)
                for group in optimizer.param_groups:
                    group["lr"] = cfg.lr * factor
            batch, targets = rows.batch(index)
            if device.type != "cpu":
                batch, targets = to_device(batch, device), to_device(targets, device)
            negatives = sampler.draw(device) if sampler is not None else None
            loss, losses = training_step(net, batch, targets, negatives, objective, optimizer, cfg.grad_clip,
                                         extra_loss)
            if average is not None:
                average.update()
            steps += 1
            for name, value in (("loss", loss), *losses.items()):
                totals[name] = totals.get(name, 0.0) + float(value.detach())
            bar.set_postfix(loss=f"{totals['loss'] / steps:.4f}")

        totals = {k: sum(t[k] for t in from_every_rank(totals)) / world_size for k in totals}
        # With weight averaging the average is what is validated and kept, the trained weights what goes on.
        with average.applied() if average is not None else nullcontext():
            metrics = {f"train_{k}": v / max(steps, 1) for k, v in totals.items()} | validated()
            if cfg.lr_schedule != "constant":
                metrics["lr"] = optimizer.param_groups[0]["lr"]  # its last step's, what MLflow plots
            metrics["epoch_seconds"] = time.perf_counter() - epoch_start
            result.epochs = epoch + 1
            result.history.append({"epoch": epoch + 1, **metrics})
            score = metrics[EARLY_STOP_METRIC]
            if score > result.best_score:
                result.best_score, result.best_epoch, bad_epochs = score, epoch + 1, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                bad_epochs += 1
        result.stopped_early = bad_epochs >= cfg.patience
        # The main process's clock decides, so that all ranks stop after the same epoch.
        elapsed = from_main(time.perf_counter() - start_time)
        if cfg.max_minutes is not None and cfg.lr_schedule != "constant":
            horizon = budget_horizon(epoch + 1, epoch + 1 - result.resumed_from, elapsed,
                                     60 * cfg.max_minutes, cfg.epochs)
        rng_states = from_every_rank(torch.get_rng_state()) if checkpoint is not None else None
        if main:
            tracker.log_metrics(metrics, step=epoch + 1)
            tqdm.write(epoch_line(desc, epoch + 1, horizon, metrics, result), file=sys.stderr)
            if checkpoint is not None:
                save_checkpoint({"fingerprint": fingerprint, "epoch": epoch + 1, "model": model.state_dict(),
                                 "optimizer": optimizer.state_dict(), "torch_rng": rng_states,
                                 "average": average.state() if average is not None else None,
                                 "order_rng": order_rng.get_state(), "best_state": best_state,
                                 "best_epoch": result.best_epoch, "best_score": result.best_score,
                                 "bad_epochs": bad_epochs, "history": result.history,
                                 "stopped_early": result.stopped_early, "run_id": result.run_id,
                                 "horizon": horizon}, checkpoint)
        if not result.stopped_early and cfg.stop_after_epoch == epoch + 1 and epoch + 1 < cfg.epochs:
            result.interrupted = True
            break
        if cfg.max_minutes is not None and (epoch + 1 >= horizon or elapsed >= 60 * cfg.max_minutes):
            result.out_of_time = epoch + 1 < cfg.epochs
            break

    if not result.interrupted and best_state is not None:
        model.load_state_dict(best_state)
    result.seconds = time.perf_counter() - start_time
    return result
