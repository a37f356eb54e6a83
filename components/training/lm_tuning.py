"""The language model learns inside the recommendation objective: LoRA on the text encoder, next-item loss.

Each step takes a batch of training sequences, runs the text of every item in it (inputs and next
items) through the tunable encoder with gradients, puts those vectors into the item tower's text
table (centred as the catalog was, see `ItemTower.load_catalog`) and backpropagates the retrieval
loss into both the recommendation model and the encoder's adapters. The loss is a softmax over the
batch's own items (in-batch negatives, corrected by -log q as the sampled softmax is), never over
the whole catalog: the other items hold the vectors of the last refresh, and a softmax that puts
fresh positives among stale negatives teaches the model to tell fresh from stale instead of the next
item (on Scientific the loss fell while validation NDCG@10 fell from 0.0876 to 0.001,
docs/benchmarks.md, Transfer, session 12). Every `refresh_every` steps, and at the end, the whole
catalog is re-encoded with the adapters as they are, so the text vectors follow the encoder as it
learns. Meant for a GPU; on a CPU it runs, slowly, on tiny data.
"""
from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from components.config import LMTuningConfig
from components.data.dataset import SplitData
from components.features.lm_tuning import TunableTextEncoder
from components.features.text import compose_item_text
from components.models.artifacts import TrainedModel
from components.models.model import Negatives, Recloop
from components.models.sequences import training_rows
from components.training.loop import configure_torch


@dataclass
class LMTuningResult:
    steps: int  # taken: fewer than `cfg.steps` when `cfg.max_minutes` ran out
    losses: list[float]
    seconds: float
    encoder_trainable: int  # LoRA parameters
    encoder_parameters: int


def _centred(vectors: np.ndarray, has_text: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    v = torch.from_numpy(vectors)
    return torch.where(has_text[:, None], v - mean, torch.zeros_like(v))


def _inclusion_log_q(rows, n_items: int) -> torch.Tensor:
    """Log of each item's share of the rows' positions (inputs and next items), +1 smoothed: how likely a step's
    batch holds it, the -log q that keeps in-batch negatives consistent with the full softmax."""
    counts = torch.ones(n_items)
    for chunk in torch.arange(len(rows)).split(4096):
        batch, targets = rows.batch(chunk)
        seen = torch.cat([batch.items.flatten(), targets.items.flatten()])
        counts += torch.bincount(seen[seen > 0] - 1, minlength=n_items)
    return torch.log(counts / counts.sum())


def step_loss(model: Recloop, encoder: TunableTextEncoder, tokens: dict[str, torch.Tensor], batch, targets,
              has_text: torch.Tensor, mean: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """The retrieval loss of one step, which reads only vectors the encoder computes now: the batch's items' text
    runs through it with gradients, and the softmax is over those items alone."""
    tower = model.tower
    seen = torch.cat([batch.items.flatten(), targets.items.flatten()])
    items = (seen[seen > 0] - 1).unique()
    texted = items[has_text[items]]
    fresh = encoder(tokens["input_ids"][texted], tokens["attention_mask"][texted]) - mean  # (K, D) with gradients
    table = tower.text.detach().index_put((texted,), fresh)
    tower.text = table  # the buffer, for this step, is a tensor the loss can reach the encoder through
    try:
        _, loss = model(batch, targets, Negatives(items, log_q), tasks=("retrieval",))
    finally:
        tower.text = table.detach()
    return loss["retrieval"]


def tune_text_encoder(trained: TrainedModel, data: SplitData, cfg: LMTuningConfig, seed: int,
                      encoder: TunableTextEncoder | None = None, threads: int | None = None) -> LMTuningResult:
    """Train `encoder` (a fresh LoRA-wrapped packaged MiniLM by default) on the next-item loss over `data.train`,
    with `trained`'s model learning beside it unless `cfg.train_model` is false; leave the model's text table
    re-encoded by the tuned encoder."""
    configure_torch(threads, seed)
    encoder = encoder or TunableTextEncoder(cfg)
    model, tower = trained.model, trained.model.tower
    texts = compose_item_text(data.items).tolist()
    has_text = tower.has_text.clone()
    vectors = encoder.encode(texts)
    # The catalog's centre stays fixed: the adapter over the text learned vectors around it.
    mean = torch.from_numpy(vectors)[has_text].mean(0) if has_text.any() else torch.zeros(vectors.shape[1])
    with torch.no_grad():
        tower.text.copy_(_centred(vectors, has_text, mean))
    tokens = encoder.tokenize(texts)
    rows = training_rows(data, trained.vocab, model.config.max_len, "last")
    log_q = _inclusion_log_q(rows, model.config.n_items)
    learning = [p for p in model.parameters() if p.requires_grad]
    params = (learning if cfg.train_model else []) + encoder.trainable_parameters()
    optimizer = torch.optim.AdamW(params, lr=cfg.lr)
    generator = torch.Generator().manual_seed(seed)
    losses, began = [], time.perf_counter()
    # A frozen model is tuned for as it serves: without dropout, and computing no gradients of its own.
    model.train(cfg.train_model)
    encoder.train()
    for p in learning:
        p.requires_grad_(cfg.train_model)
    try:
        for step in range(cfg.steps):
            if cfg.max_minutes is not None and time.perf_counter() - began > cfg.max_minutes * 60:
                break
            index = torch.randperm(len(rows), generator=generator)[:cfg.batch_size]
            batch, targets = rows.batch(index)
            loss = step_loss(model, encoder, tokens, batch, targets, has_text, mean, log_q)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            losses.append(float(loss.detach()))
            if (step + 1) % cfg.refresh_every == 0 and step + 1 < cfg.steps:
                tower.text = _centred(encoder.encode(texts), has_text, mean)
    finally:
        for p in learning:
            p.requires_grad_(True)
    tower.text = _centred(encoder.encode(texts), has_text, mean)
    model.eval()
    return LMTuningResult(len(losses), losses, time.perf_counter() - began,
                          sum(p.numel() for p in encoder.trainable_parameters()),
                          sum(p.numel() for p in encoder.model.parameters()))


def tune_if_better(trained: TrainedModel, data: SplitData, cfg: LMTuningConfig, seed: int,
                   validate: Callable[[Recloop], dict[str, float]], threads: int | None = None) -> dict:
    """`tune_text_encoder`, kept only when it raises the validation NDCG@10; otherwise the model goes back to
    its weights and text vectors from before, as fine-tuning never returns a model worse than its start.
    What to record: the steps, the cost, both validations and whether the tuning was kept."""
    start, before = copy.deepcopy(trained.model.state_dict()), validate(trained.model)
    tuned = tune_text_encoder(trained, data, cfg, seed, threads=threads)
    after = validate(trained.model)
    kept = after["valid_ndcg@10"] > before["valid_ndcg@10"]
    if not kept:
        trained.model.load_state_dict(start)
    return {"lm_tuning_kept": kept, "lm_tuning_steps": tuned.steps, "lm_tuning_seconds": round(tuned.seconds, 1),
            "lm_trainable_parameters": tuned.encoder_trainable,
            **{f"{k}_before_lm_tuning": v for k, v in before.items()},
            **{f"{k}_after_lm_tuning": v for k, v in after.items()}}
