"""recloop's model in one file, top to bottom: the item tower, the causal sequence encoder, the heads, the losses.

An item's vector is the sum of an ID embedding, an adapter over its frozen language-model text
embedding, and the mean of its attribute embeddings (the item-attribute graph), plus, when params
name them, knowledge-graph neighbourhoods and extra vector tables: the item tower and its sources
live in `models/item_tower.py`. ID embeddings are
dropped at random while training, so text and attributes alone must place an item: that is what
serves items with no interactions yet (with `model.id_mapping`, through an ID mapped from them).
The same vectors are the encoder's input and, tied, the retrieval head's output, so a new item is
scorable the moment its text is known.

The encoder is a pre-LayerNorm causal transformer (GPT-style) over a user's history. Each position
adds the item vector, a learned position (or, with `model.positions: relative`, attention is biased by
distance instead; see `models/encoder.py`), the event and its value, time context (log time gap,
hour, weekday), and the user's profile and domain (scenario) as conditioning. Sequences are padded
on the right, so plain causal attention never lets a real position see padding. The blocks live in
`models/encoder.py`: attention, or attention beside a causal frequency filter (BSARec).

Heads, each a module that carries its own loss (`HEADS`, in the order their losses are computed):
next-item retrieval (hidden · item vector over the catalog: full softmax, or sampled softmax with
log-Q correction for very large catalogs), like probability (BCE) and rating (MSE in standard
units), both scored on the (hidden state, candidate item) pair, the ID-text alignment and the
content-to-ID mapping's alignment (with `model.id_mapping`), auxiliary objectives with no weights
of their own. `forward` computes the loss of each task asked for; adding a task means a head class
here, its labels (`Targets`, `models/sequences.py`) and its weight in params.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from components.models.dropout import Dropout
from components.models.encoder import Block
from components.models.item_tower import ItemTower
from components.models.shape import RecloopConfig
from components.models.softmax import full_softmax_cross_entropy

# (states (B, D), owner (M,) state indexes, rows (M,) catalog rows) -> (M,) a pair head's outputs
PairScores = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

# Time context vocabulary sizes; 0 is padding in each. Gap buckets: 1 = first interaction,
# 2 + floor(log2(1 + minutes)) after that, capped (2^21 minutes is about 4 years).
GAP_BUCKETS = 24
HOURS = 25
WEEKDAYS = 8


@dataclass
class SequenceBatch:
    """What the encoder reads: (B, T) integer codes, 0 = padding, real positions first (right padding)."""

    items: torch.Tensor  # item_idx + 1
    events: torch.Tensor
    values: torch.Tensor  # value buckets
    gaps: torch.Tensor
    hours: torch.Tensor
    weekdays: torch.Tensor
    domains: torch.Tensor
    profile: torch.Tensor  # (B, P) user profile codes
    lengths: torch.Tensor  # (B,) real positions per row


@dataclass
class Targets:
    """Labels for every position of a batch: the next item and its feedback."""

    items: torch.Tensor  # (B, T) next item_idx + 1; 0 = nothing to predict
    likes: torch.Tensor  # (B, T) 1.0 / 0.0; NaN = no like label
    ratings: torch.Tensor  # (B, T) explicit rating; NaN = not rated


@dataclass
class Negatives:
    """Shared negatives for sampled softmax and the log-probability of drawing each catalog item."""

    items: torch.Tensor  # (K,) item_idx
    log_q: torch.Tensor  # (n_items,)


def to_device(batch: SequenceBatch | Targets, device: torch.device) -> SequenceBatch | Targets:
    """The same batch with every tensor on `device` (batches are built on the CPU)."""
    return type(batch)(**{f.name: getattr(batch, f.name).to(device, non_blocking=True) for f in fields(batch)})


@dataclass
class Supervised:
    """What the heads learn from: every position of a batch that has a next item, and the catalog."""

    hidden: torch.Tensor  # (M, D) hidden states
    target: torch.Tensor  # (M,) next item_idx
    target_vectors: torch.Tensor  # (M, D) the next items' vectors
    negative_vectors: torch.Tensor | None  # (K, D) the shared negatives' vectors; None with the full softmax
    likes: torch.Tensor  # (M,) 1.0 / 0.0; NaN = no like label
    ratings: torch.Tensor  # (M,) explicit rating; NaN = not rated
    tower: ItemTower
    table: torch.Tensor | None  # (N, D) every item's vector; None with sampled negatives
    negatives: Negatives | None
    temperature: float
    softmax_dtype: torch.dtype | None  # the full softmax's matrix products; None: the hidden states' type


class RetrievalHead(nn.Module):
    """The next item over the catalog, scored by hidden · item vector: weights tied to the item tower."""

    def __init__(self, config: RecloopConfig):
        super().__init__()

    def loss(self, s: Supervised) -> torch.Tensor:
        """Full softmax over the catalog; with negatives, a sampled softmax whose logits are corrected
        by -log q, so that popular (often drawn) items are not over-penalised and the estimate stays
        consistent with the full softmax.
        """
        h, target, negatives = s.hidden, s.target, s.negatives
        if negatives is None:
            return full_softmax_cross_entropy(h, s.table, target, dtype=s.softmax_dtype)
        positive = (h * s.target_vectors).sum(-1, keepdim=True) - negatives.log_q[target].unsqueeze(-1)
        negative = h @ s.negative_vectors.T - negatives.log_q[negatives.items]  # (M, K)
        # A negative that is the row's own target is not a negative.
        negative = negative.masked_fill(negatives.items.unsqueeze(0) == target.unsqueeze(1), -torch.inf)
        logits = torch.cat([positive, negative], dim=1)
        return F.cross_entropy(logits, torch.zeros(len(h), dtype=torch.long, device=h.device))


class PairHead(nn.Module):
    """One number for a (history state, candidate item) pair."""

    def __init__(self, config: RecloopConfig):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3 * config.dim, config.dim), nn.GELU(), nn.Linear(config.dim, 1))

    def forward(self, hidden: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([hidden, item, hidden * item], dim=-1)).squeeze(-1)

    def over_catalog(self, table: torch.Tensor) -> PairScores:
        """`forward` for many pairs of a state and a row of `table` (N, D): `f(states, owner, rows)` gives (M,)
        outputs for row `rows[j]` after state `states[owner[j]]`.

        The first layer reads [state, item, state * item], so it is W_s state + (W_i item + b) + W_p (state *
        item): the item term depends on the catalog only and is computed here once, the state term once per
        state instead of once per pair (serving scores up to 100 candidates a state). Equal to `forward` to
        float rounding.
        """
        dim = table.shape[1]
        first, rest = self.net[0], self.net[1:]
        with torch.inference_mode():
            w_state = first.weight[:, :dim].T.contiguous()
            w_pair = first.weight[:, 2 * dim:].T.contiguous()
            items = table @ first.weight[:, dim:2 * dim].T + first.bias  # (N, D)

        def pairs(states: torch.Tensor, owner: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                hidden = (states @ w_state)[owner] + items[rows] + (states[owner] * table[rows]) @ w_pair
                return rest(hidden).squeeze(-1)
        return pairs


class LikeHead(PairHead):
    """Whether the user likes the candidate: forward gives the logit, `predict` the probability."""

    def predict(self, hidden: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self(hidden, item))

    def predict_over_catalog(self, table: torch.Tensor) -> PairScores:
        """`predict` for many (state, catalog row) pairs, as `PairHead.over_catalog`."""
        logits = self.over_catalog(table)
        return lambda states, owner, rows: torch.sigmoid(logits(states, owner, rows))

    def loss(self, s: Supervised) -> torch.Tensor:
        known = ~torch.isnan(s.likes)
        if not known.any():
            return s.hidden.new_zeros(())
        return F.binary_cross_entropy_with_logits(self(s.hidden[known], s.target_vectors[known]), s.likes[known])


class RatingHead(PairHead):
    """The user's rating of the candidate, learned in standard units (the training ratings' mean and std)."""

    def __init__(self, config: RecloopConfig):
        super().__init__(config)
        self.mean, self.std = config.rating_mean, config.rating_std

    def predict(self, hidden: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        return self.mean + self.std * self(hidden, item)

    def loss(self, s: Supervised) -> torch.Tensor:
        known = ~torch.isnan(s.ratings)
        if not known.any():
            return s.hidden.new_zeros(())
        standard = (s.ratings[known] - self.mean) / self.std
        return F.mse_loss(self(s.hidden[known], s.target_vectors[known]), standard)


class IdTextAlignment(nn.Module):
    """Auxiliary objective: symmetric InfoNCE between the ID and text vectors of the batch's target items.

    Pulls an item's ID embedding and its text representation together (and apart from other
    items'), so the two are interchangeable: what the ID learned from interactions flows into the
    text adapter, which is all a cold item has.
    """

    def __init__(self, config: RecloopConfig):
        super().__init__()

    def loss(self, s: Supervised) -> torch.Tensor:
        tower = s.tower
        if tower.id_embedding is None or tower.text_adapter is None:
            return tower.text.new_zeros(())
        items = s.target.unique()
        items = items[tower.has_text[items] & tower.has_id[items]]
        if len(items) < 2:
            return tower.text.new_zeros(())
        z_id = F.normalize(tower.id_embedding(items), dim=-1)  # (K, D)
        z_text = F.normalize(tower.text_adapter(tower.text[items]), dim=-1)  # (K, D)
        labels = torch.arange(len(items), device=items.device)
        # ID -> text and text -> ID: the (K, K) logits and their transpose, never held in memory.
        return (full_softmax_cross_entropy(z_id / s.temperature, z_text, labels)
                + full_softmax_cross_entropy(z_text / s.temperature, z_id, labels)) / 2


class IdMappingAlignment(nn.Module):
    """Auxiliary objective: the content-to-ID mapping (`IdMapping`) against the batch targets' trained ID rows.

    The squared distance to each warm target's ID row, which is held fixed (the mapping follows the
    IDs, never the reverse), relative to the rows' mean squared norm, so the loss starts near 1 at
    any embedding scale. Zero without a mapping in the tower.
    """

    def __init__(self, config: RecloopConfig):
        super().__init__()

    def loss(self, s: Supervised) -> torch.Tensor:
        tower = s.tower
        if tower.id_mapping is None:
            return tower.text.new_zeros(())
        items = s.target.unique()
        mapped, has_content = tower.mapped_ids(items)
        warm = tower.has_id[items] & has_content
        items, mapped = items[warm], mapped[warm]
        if len(items) == 0:
            return tower.text.new_zeros(())
        rows = tower.id_embedding(items).detach()  # (K, D)
        return (mapped - rows).pow(2).sum(-1).mean() / rows.pow(2).sum(-1).mean().clamp(min=1e-12)


# Task name -> head; the names are the keys of the loss weights in params (pretrain/finetune.weights).
HEADS: dict[str, type[nn.Module]] = {
    "retrieval": RetrievalHead,
    "like": LikeHead,
    "rating": RatingHead,
    "contrastive": IdTextAlignment,
    "id_mapping": IdMappingAlignment,
}
TASKS = tuple(HEADS)


class Recloop(nn.Module):
    def __init__(self, config: RecloopConfig):
        super().__init__()
        self.config = config
        d = config.dim
        self.tower = ItemTower(config)
        self.position = nn.Embedding(config.max_len, d) if config.positions in ("absolute", "both") else None
        if config.use_context:
            self.event = nn.Embedding(config.n_events, d, padding_idx=0)
            self.value = nn.Embedding(config.n_value_buckets, d, padding_idx=0)
            self.gap = nn.Embedding(GAP_BUCKETS, d, padding_idx=0)
            self.hour = nn.Embedding(HOURS, d, padding_idx=0)
            self.weekday = nn.Embedding(WEEKDAYS, d, padding_idx=0)
        if config.use_profile:
            self.domain = nn.Embedding(config.n_domains, d, padding_idx=0)
            self.profile = nn.ModuleList(nn.Embedding(size, d, padding_idx=0) for size in config.profile_sizes)
        self.input_dropout = Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.layers))
        self.ln_f = nn.LayerNorm(d)
        self.task_heads = nn.ModuleDict({name: head(config) for name, head in HEADS.items()})
        self.apply(self._init_weights)
        # GPT-2: scale the residual projections by depth so the residual stream does not grow with layers.
        for name, p in self.named_parameters():
            if name.endswith(("attn.proj.weight", "mlp.net.2.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.padding_idx is not None:
                nn.init.zeros_(module.weight[module.padding_idx])

    def catalog(self) -> torch.Tensor:
        """(N, D) vectors of every item: the retrieval head's weights and the serving index."""
        return self.unit(self.tower(torch.arange(self.config.n_items, device=self.tower.text.device)))

    def unit(self, vectors: torch.Tensor) -> torch.Tensor:
        """`vectors` (*, D) as the model compares them: unit length with `cosine`, else as they are."""
        # A zero-shot catalog's item lengths were learned on other catalogs, where they follow those
        # catalogs' popularity: only directions carry over.
        return F.normalize(vectors, dim=-1) if self.config.cosine else vectors

    def encode(self, batch: SequenceBatch, item_vectors: torch.Tensor) -> torch.Tensor:
        """Hidden states (B, T, D) from the batch's item vectors (B, T, D) and its context."""
        x = self._inputs(batch, item_vectors)
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x)

    def encode_last(self, batch: SequenceBatch, item_vectors: torch.Tensor) -> torch.Tensor:
        """(B, D): `encode`'s hidden state at each row's last real position.

        Serving reads a user's state there only, and prefix samples are supervised there only, so the
        last block runs its query, output projection, filter and MLP at that one position, its keys and
        values at every position: with 2 blocks about 40% fewer operations than `encode` (23% less time
        in serving's batches of full windows), the same states to float rounding
        (tests/models/test_encode_last.py); in training, under the same dropout.
        """
        *early, final = self.blocks
        x = self._inputs(batch, item_vectors)
        for block in early:
            x = block(x)
        return self.ln_f(final.at(x, (batch.lengths - 1).clamp(min=0)))

    def _inputs(self, batch: SequenceBatch, item_vectors: torch.Tensor) -> torch.Tensor:
        """(B, T, D): what the first block reads, the item vectors plus positions and context."""
        t = batch.items.shape[1]
        x = item_vectors
        if self.position is not None:
            x = x + self.position(torch.arange(t, device=item_vectors.device))
        if self.config.use_context:
            x = x + self.event(batch.events) + self.value(batch.values) + self.gap(batch.gaps)
            x = x + self.hour(batch.hours) + self.weekday(batch.weekdays)
        if self.config.use_profile:
            x = x + self.domain(batch.domains)
            for column, embedding in enumerate(self.profile):
                x = x + embedding(batch.profile[:, column]).unsqueeze(1)  # (B, 1, D): same for every position
        return self.input_dropout(x)

    def _input_vectors(self, batch: SequenceBatch, table: torch.Tensor | None) -> torch.Tensor:
        """(B, T, D) item vectors of the batch: rows of `table` (N, D) when given, else from the tower."""
        if table is not None:
            return F.pad(table, (0, 0, 1, 0))[batch.items]  # row 0: padding
        return self.unit(self.tower((batch.items - 1).clamp(min=0))) * (batch.items > 0).unsqueeze(-1)

    def last_states(self, batch: SequenceBatch, table: torch.Tensor | None = None) -> torch.Tensor:
        """(B, D) hidden state after each row's last real position: the user's vector."""
        hidden = self.encode(batch, self._input_vectors(batch, table))
        last = (batch.lengths - 1).clamp(min=0)
        return self.unit(hidden[torch.arange(len(last), device=last.device), last])

    def pair_predictions(self, batch: SequenceBatch, items: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each pair head's prediction (B,), like probability and rating, of item_idx `items` (B,) as next item."""
        hidden = self.last_states(batch, None)
        vectors = self.unit(self.tower(items))
        return {name: head.predict(hidden, vectors) for name, head in self.task_heads.items()
                if isinstance(head, PairHead)}

    def forward(self, batch: SequenceBatch, targets: Targets | None = None, negatives: Negatives | None = None,
                tasks: tuple[str, ...] = ("retrieval",), temperature: float = 0.07,
                softmax_dtype: torch.dtype | None = None,
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Without targets, the hidden states (B, T, D); with them, the supervised positions' (M, D) and
        the unweighted loss of each head in `tasks`.

        Without `negatives` the retrieval loss is a full softmax over the catalog; with them, a
        sampled softmax (see `RetrievalHead`). `temperature` is the ID-text alignment's; `softmax_dtype`
        the type of the full softmax's matrix products (`full_softmax_cross_entropy`; None: the model's).
        """
        if targets is None:
            return self.encode(batch, self._input_vectors(batch, self.catalog() if negatives is None else None)), {}
        mask = targets.items > 0  # (B, T): positions with a next item
        rows, last = torch.arange(len(mask), device=mask.device), (batch.lengths - 1).clamp(min=0)
        # Prefix samples are supervised at their last position only: the last block need not run elsewhere.
        last_only = bool(mask[rows, last].sum() == mask.sum())
        chosen = mask[rows, last] if last_only else mask  # (B,) or (B, T)

        def pick(labels: torch.Tensor) -> torch.Tensor:  # (M,) labels of the supervised positions
            return (labels[rows, last] if last_only else labels)[chosen]

        target = pick(targets.items) - 1  # (M,) next item_idx
        if negatives is None:
            table = self.catalog()  # (N, D)
            inputs, target_vectors, negative_vectors = self._input_vectors(batch, table), table[target], None
        else:
            # Each item the step reads goes through the tower once, however often it appears.
            table = None
            items, inverse = torch.unique(torch.cat([(batch.items.flatten() - 1).clamp(min=0), target,
                                                     negatives.items]), return_inverse=True)
            vectors = self.unit(self.tower(items))[inverse]
            n, m = batch.items.numel(), len(target)
            inputs = vectors[:n].view(*batch.items.shape, -1) * (batch.items > 0).unsqueeze(-1)  # (B, T, D)
            target_vectors, negative_vectors = vectors[n:n + m], vectors[n + m:]
        hidden = (self.encode_last(batch, inputs) if last_only else self.encode(batch, inputs))[chosen]  # (M, D)
        supervised = Supervised(
            hidden=hidden, target=target, target_vectors=target_vectors, negative_vectors=negative_vectors,
            likes=pick(targets.likes), ratings=pick(targets.ratings),
            tower=self.tower, table=table, negatives=negatives, temperature=temperature, softmax_dtype=softmax_dtype)
        return hidden, {task: self.task_heads[task].loss(supervised) for task in tasks}
