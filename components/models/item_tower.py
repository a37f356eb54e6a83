"""The item tower: an item's vector fused from named item-side sources, each through its own adapter.

Sources, in this order (`ItemTower.source_names`):
- `id`: a learned embedding per item, used only by items with training interactions (an untrained
  row is noise) and dropped at random while training, so the other sources must place an item alone;
- `text`: an adapter over the item's frozen language-model embedding;
- `attributes`: the mean embedding of its attribute values (genres, categories, brand): the one-hop
  item-attribute graph;
- `kg`: its entity's relation-typed one- and two-hop neighbourhood in a knowledge graph
  (`KnowledgeGraphAdapter`), learned jointly with the rest;
- one per extra vector table (`config.extra_sources`, name -> width): image, audio or pretrained
  knowledge-graph embeddings, each through an adapter shaped like the text's.

Every source gives (*, D) vectors and is zero for the items that lack it (never the adapter's bias),
so an item without a source simply goes without; `source_dropout` drops a source from a share of the
items at each training step, so the model learns to score those without it beside those with it. With
`id_mapping` an item without a trained ID (cold, or its ID dropped in training) gets a generated one
instead of zero: `IdMapping` maps its other sources into the ID space (DropoutNet / Heater), so it is
scored like the trained items around it. The fusion is the sum; with `source_gates` each
source's vector is scaled by a learned gate 2·sigmoid(g), which starts at 1 (the plain sum); with
`source_attention` each item weighs the sources it has by attention (`SourceAttention`), which also
starts as the plain sum. The catalog's own data (text vectors, attribute codes, KG neighbourhoods,
extra vectors) live in buffers, saved with the weights, so a loaded model scores without the feature
files.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from components.models.shape import RecloopConfig


def vector_adapter(width: int, config: RecloopConfig) -> nn.Sequential:
    """The adapter from a frozen per-item vector (text, image, audio...) into the item space."""
    return nn.Sequential(nn.Linear(width, config.text_hidden), nn.GELU(), nn.Linear(config.text_hidden, config.dim))


def _pool(messages: torch.Tensor, logits: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Softmax-weighted sum over the slot axis; padded slots weigh nothing. (M, K, D) -> (M, K, D) weighted."""
    weights = torch.softmax(logits.masked_fill(~present, -1e9), dim=-1) * present  # (M, K)
    return weights.unsqueeze(-1) * messages


class KnowledgeGraphAdapter(nn.Module):
    """An item's entity from its neighbourhood: one hop (relation, entity) and two hops (relation, relation, entity).

    Each neighbour sends its entity embedding plus the embeddings of the relations on its path
    (relations are typed by direction: r and its inverse are different rows); a learned weight per
    relation decides how much each neighbour counts in the softmax pooling, so a shared director
    can outweigh a shared language. The item's vector is the sum of the two pooled hops, in the
    item space directly (entity embeddings start at the ID embeddings' scale). Entities are the
    graph's, shared by every item that reaches them: a new item's neighbours have been trained by
    the older items around them.
    """

    def __init__(self, config: RecloopConfig):
        super().__init__()
        d = config.dim
        relations = 2 * len(config.kg_relations) + 1  # forward and inverse of each; 0 pads
        self.entity = nn.Embedding(config.n_entities + 1, d, padding_idx=0)
        self.relation = nn.Embedding(relations, d, padding_idx=0)
        self.relation_weight = nn.Embedding(relations, 1, padding_idx=0)

    def neighbour_vectors(self, one_hop: torch.Tensor, two_hop: torch.Tensor) -> torch.Tensor:
        """(M, K1 + K2, D): each neighbour's share of `forward` (they sum to it).

        one_hop (M, K1, 2) holds (relation, entity) codes, two_hop (M, K2, 3) (relation, relation,
        entity) codes; 0 pads. The shares let explanations rank the facts behind a score.
        """
        r1, e1 = one_hop.unbind(-1)
        first = _pool(self.entity(e1) + self.relation(r1), self.relation_weight(r1).squeeze(-1), e1 > 0)
        a, b, e2 = two_hop.unbind(-1)
        logits = (self.relation_weight(a) + self.relation_weight(b)).squeeze(-1)
        second = _pool(self.entity(e2) + self.relation(a) + self.relation(b), logits, e2 > 0)
        return torch.cat([first, second], dim=-2)

    def forward(self, one_hop: torch.Tensor, two_hop: torch.Tensor) -> torch.Tensor:
        return self.neighbour_vectors(one_hop, two_hop).sum(-2)  # (M, D)


class SourceAttention(nn.Module):
    """Per-item attention over the sources an item has: how much its text, graph, ID... count for this item.

    Each present source scores itself (additive attention: a query against tanh of a projection of
    its vector, plus a learned prior per source); absent sources are masked out. The weights are
    scaled by the number of present sources, so with the query and priors at zero (their start) the
    fusion is the plain sum, and an item's vector keeps the sum's scale whatever it learns.
    """

    def __init__(self, config: RecloopConfig, n_sources: int):
        super().__init__()
        self.key = nn.Linear(config.dim, config.dim)
        self.query = nn.Parameter(torch.zeros(config.dim))
        self.prior = nn.Parameter(torch.zeros(n_sources))

    def weights(self, vectors: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """(*, S) each source's weight for each item, from vectors (*, S, D) and present (*, S); absent: 0."""
        logits = torch.tanh(self.key(vectors)) @ self.query + self.prior  # (*, S)
        # An item with no source at all (padding) gets all-zero weights, not NaN.
        weights = torch.softmax(logits.masked_fill(~present, -1e9), dim=-1) * present
        return weights * present.sum(-1, keepdim=True)

    def forward(self, vectors: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        return (self.weights(vectors, present).unsqueeze(-1) * vectors).sum(-2)  # (*, D)


class IdMapping(nn.Module):
    """An ID vector from an item's content sources: what its trained ID row would be (DropoutNet, Heater).

    Reads the content sources side by side, (*, S, D) -> (*, S·D), through a small MLP into the ID
    space. It learns in place of the dropped IDs inside the recommendation loss (so the model learns
    to score items with a generated ID, not a zero one), and from the `id_mapping` head, which pulls
    it towards the trained rows of warm items.
    """

    def __init__(self, config: RecloopConfig, n_content: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_content * config.dim, config.text_hidden), nn.GELU(),
                                 nn.Linear(config.text_hidden, config.dim))

    def forward(self, content: torch.Tensor) -> torch.Tensor:
        return self.net(content.flatten(-2))  # (*, S, D) -> (*, D)


class ItemTower(nn.Module):
    """Named item-side sources, each with an adapter and a missing mask, fused by a (gated) sum or attention."""

    def __init__(self, config: RecloopConfig):
        super().__init__()
        self.config = config
        n, d = config.n_items, config.dim
        # Parameter order (and names) of the ID/text/attribute sources predate the other sources:
        # kept, so a default model initialises and loads exactly as before.
        self.id_embedding = nn.Embedding(n, d) if config.use_id else None
        self.text_adapter = vector_adapter(config.text_dim, config) if config.use_text else None
        self.attribute_embedding = (nn.Embedding(config.n_attributes, d, padding_idx=0)
                                    if config.use_attributes else None)
        self.kg = KnowledgeGraphAdapter(config) if config.use_kg else None
        self.vector_adapters = nn.ModuleDict({name: vector_adapter(width, config)
                                              for name, width in config.extra_sources.items()})
        self.gates = nn.Parameter(torch.zeros(len(self.source_names()))) if config.source_gates else None
        self.attention = SourceAttention(config, len(self.source_names())) if config.source_attention else None
        unknown = set(config.source_dropout) - set(self.source_names()[1 if config.use_id else 0:])
        if unknown:
            raise ValueError(f"model.source_dropout names {sorted(unknown)}, which this tower does not have: "
                             f"{self.source_names()}")
        # Last, so that the other parameters initialise as they did before it existed.
        content = len(self.source_names()) - 1
        self.id_mapping = IdMapping(config, content) if config.id_mapping and config.use_id and content else None
        # Catalog data, saved with the weights so a loaded model scores without the feature files.
        self.register_buffer("text", torch.zeros(n, config.text_dim))
        self.register_buffer("has_text", torch.zeros(n, dtype=torch.bool))
        self.register_buffer("attributes", torch.zeros(n, config.max_item_attributes, dtype=torch.long))
        # Items with training interactions: an untrained ID row is noise, so others go without it.
        self.register_buffer("has_id", torch.zeros(n, dtype=torch.bool))
        if config.use_kg:
            self.register_buffer("kg_one_hop", torch.zeros(n, config.kg_neighbours, 2, dtype=torch.long))
            self.register_buffer("kg_two_hop", torch.zeros(n, config.kg_two_hop, 3, dtype=torch.long))
            self.register_buffer("has_kg", torch.zeros(n, dtype=torch.bool))
        for name, width in config.extra_sources.items():
            self.register_buffer(f"vectors_{name}", torch.zeros(n, width))
            self.register_buffer(f"has_vectors_{name}", torch.zeros(n, dtype=torch.bool))

    def source_names(self) -> list[str]:
        """The sources this tower fuses, in the order of `source_vectors`, the gates and the attention."""
        built = [("id", self.config.use_id), ("text", self.config.use_text),
                 ("attributes", self.config.use_attributes), ("kg", self.config.use_kg)]
        return [name for name, on in built if on] + list(self.config.extra_sources)

    @torch.no_grad()
    def load_catalog(self, text: torch.Tensor, has_text: torch.Tensor, attributes: torch.Tensor,
                     has_id: torch.Tensor) -> None:
        """Copy the catalog in: text (N, text_dim), has_text (N,), attributes (N, A) codes, has_id (N,)."""
        self.text.copy_(_centred(text, has_text))
        self.has_text.copy_(has_text)
        self.attributes.copy_(attributes)
        self.has_id.copy_(has_id)

    @torch.no_grad()
    def load_kg(self, one_hop: torch.Tensor, two_hop: torch.Tensor) -> None:
        """Each item's neighbourhood codes: one_hop (N, K1, 2), two_hop (N, K2, 3); all zero = no entity."""
        self.kg_one_hop.copy_(one_hop)
        self.kg_two_hop.copy_(two_hop)
        self.has_kg.copy_((one_hop[..., 1] > 0).any(-1) | (two_hop[..., 2] > 0).any(-1))

    @torch.no_grad()
    def load_vectors(self, name: str, vectors: torch.Tensor, present: torch.Tensor) -> None:
        """The extra source `name`'s vectors (N, width) and which items have one (N,)."""
        getattr(self, f"vectors_{name}").copy_(_centred(vectors, present))
        getattr(self, f"has_vectors_{name}").copy_(present)

    def id_vectors(self, items: torch.Tensor) -> torch.Tensor:
        return self.id_embedding(items) * self.has_id[items].unsqueeze(-1)

    def text_vectors(self, items: torch.Tensor) -> torch.Tensor:
        # The adapter's bias would give text-less items a vector of their own: zero them instead.
        return self.text_adapter(self.text[items]) * self.has_text[items].unsqueeze(-1)

    def attribute_vectors(self, items: torch.Tensor) -> torch.Tensor:
        codes = self.attributes[items]  # (*, A)
        flat = codes.reshape(-1, codes.shape[-1])
        summed = F.embedding_bag(flat, self.attribute_embedding.weight, mode="sum", padding_idx=0)
        count = (flat > 0).sum(-1, keepdim=True).clamp(min=1)
        return (summed / count).reshape(*codes.shape[:-1], -1)

    def kg_vectors(self, items: torch.Tensor) -> torch.Tensor:
        flat = items.reshape(-1)
        linked = self.has_kg[flat]
        rows = flat[linked]
        # Only linked items run the adapter: most of a catalog may have no entity.
        out = torch.zeros(len(flat), self.config.dim, device=items.device)
        out[linked] = self.kg(self.kg_one_hop[rows], self.kg_two_hop[rows])
        return out.reshape(*items.shape, -1)

    def extra_vectors(self, name: str, items: torch.Tensor) -> torch.Tensor:
        vectors = self.vector_adapters[name](getattr(self, f"vectors_{name}")[items])
        return vectors * getattr(self, f"has_vectors_{name}")[items].unsqueeze(-1)

    def mapped_ids(self, items: torch.Tensor, content: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """`IdMapping`'s (*, D) ID vectors for item indices (*), and (*,) which items have content to map.

        Zero for items with no content source (the mapping's bias is no information about them)."""
        content = self.content_vectors(items) if content is None else content
        has_content = torch.stack([p for _, p in content.values()], -1).any(-1)
        # Detached: the mapping learns to read the content sources, it does not reshape them (their own
        # use in every item's vector does), so warm items keep the vectors they would have without it.
        mapped = self.id_mapping(torch.stack([v.detach() for v, _ in content.values()], -2))
        return mapped * has_content.unsqueeze(-1), has_content

    def source_vectors(self, items: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Each source's (*, D) vectors and (*,) presence for item indices (*); vectors are zero where absent."""
        content = self.content_vectors(items)
        if self.id_embedding is None:
            return content
        ids, has_id = self.id_vectors(items), self.has_id[items]
        if self.training and self.config.id_dropout > 0:
            keep = torch.rand(items.shape, device=items.device) >= self.config.id_dropout
            ids, has_id = ids * keep.unsqueeze(-1), has_id & keep
        if self.id_mapping is not None:
            # An item without a (kept) trained ID is placed by the ID its content maps to, not by zero.
            mapped, has_content = self.mapped_ids(items, content)
            ids, has_id = torch.where(has_id.unsqueeze(-1), ids, mapped), has_id | has_content
        return {"id": (ids, has_id), **content}

    def content_vectors(self, items: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Every source but the ID: (*, D) vectors and (*,) presence, in `source_names` order."""
        out = {}
        if self.text_adapter is not None:
            out["text"] = (self.text_vectors(items), self.has_text[items])
        if self.attribute_embedding is not None:
            out["attributes"] = (self.attribute_vectors(items), (self.attributes[items] > 0).any(-1))
        if self.kg is not None:
            out["kg"] = (self.kg_vectors(items), self.has_kg[items])
        for name in self.vector_adapters:
            out[name] = (self.extra_vectors(name, items), getattr(self, f"has_vectors_{name}")[items])
        if self.training:
            for name, share in self.config.source_dropout.items():
                if share > 0:
                    keep = torch.rand(items.shape, device=items.device) >= share
                    vectors, present = out[name]
                    out[name] = (vectors * keep.unsqueeze(-1), present & keep)
        return out

    def gate_values(self) -> torch.Tensor | None:
        """(S,) each source's gate in the fusion, or None without gates."""
        return None if self.gates is None else 2 * torch.sigmoid(self.gates)

    def source_weights(self, items: torch.Tensor) -> torch.Tensor:
        """(*, S) each source's weight in item vectors (*): its gate, its attention weight, or 1 (the sum)."""
        if self.attention is not None:
            sources = self.source_vectors(items).values()
            return self.attention.weights(torch.stack([v for v, _ in sources], -2),
                                          torch.stack([p for _, p in sources], -1))
        gates = self.gate_values()
        ones = torch.ones(*items.shape, len(self.source_names()), device=items.device)
        return ones if gates is None else ones * gates

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        """Vectors (*, D) for item indices (*)."""
        sources = self.source_vectors(items)
        if self.attention is not None:
            return self.attention(torch.stack([v for v, _ in sources.values()], -2),  # (*, S, D)
                                  torch.stack([p for _, p in sources.values()], -1))  # (*, S)
        x = torch.zeros(*items.shape, self.config.dim, device=items.device)
        gates = self.gate_values()
        for k, (vectors, _) in enumerate(sources.values()):
            x = x + (vectors if gates is None else gates[k] * vectors)
        return x


def _centred(vectors: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Rows minus the present rows' mean, absent rows zero.

    Embeddings from one encoder share a large common direction; centring leaves the adapter the differences.
    """
    mean = vectors[present].mean(0) if present.any() else torch.zeros(vectors.shape[1])
    return torch.where(present[:, None], vectors - mean, torch.zeros_like(vectors))
