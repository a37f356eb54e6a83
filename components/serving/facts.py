"""Facts behind a pick: the knowledge-graph relations and attribute values a recommended item shares with
the user's history, each named with the history item it connects to ("shares a director with Alien").

A fact is a neighbour of the recommended item in the item tower's sources that a history item also
has: a knowledge-graph entity reached by the same relation, or an attribute value (genre, category,
brand). The tower sums such neighbours (`KnowledgeGraphAdapter.neighbour_vectors`: each one-hop
neighbour's share of the KG vector; the attribute source: each value's embedding over the item's
count), so each fact has an exact share of the recommended item's vector; its contribution is that
share (times the source's weight in the item's fusion: its gate or attention weight) dotted with the
history item's vector: how much the fact adds to the similarity between the two that the
explanation's history items already report. Facts are ranked by
contribution, only those that add to it are kept, and each shared value or entity is named once,
with the history item it connects to most. Entities of graphs such as MKR's are anonymous numbers, so
a fact names the relation and the history item, never the entity.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from components.models.model import Recloop
from components.models.vocab import Vocab

MAX_FACTS = 3


@dataclass(frozen=True)
class Fact:
    """One relation or attribute value the recommended item shares with one history item."""

    kind: str  # "kg" or "attribute"
    relation: str  # the KG relation ("director") or the attribute's column ("category")
    value: str | None  # the attribute value ("Drama"); None for KG facts (anonymous entities)
    history_item: int  # item_idx
    contribution: float
    entity: int = 0  # the shared entity's code (KG facts): two shared writers are two facts

    def text(self, title: str) -> str:
        if self.kind == "kg":
            article = "an" if self.relation[:1].lower() in "aeiou" else "a"
            return f"shares {article} {self.relation} with {title}"
        return f"shares the {self.relation} {_value(self.value)} with {title}"


def _value(value: str | None) -> str:
    """Attribute values as people write them: a year read as a float (`2002.0`) is `2002`."""
    text = str(value)
    return text[:-2] if text.endswith(".0") and text[:-2].lstrip("-").isdigit() else text


def _short(relation: str) -> str:
    """`film.film.director` -> `director`: the last part of a dotted (Freebase-style) relation name."""
    return relation.rsplit(".", 1)[-1].replace("_", " ")


class FactFinder:
    """Facts for recommended items, from a trained model's item tower; build once, then ask per item."""

    def __init__(self, model: Recloop, vocab: Vocab, table: torch.Tensor):
        tower = model.tower
        self.table = table.detach()  # (N, D) the catalog's item vectors
        with torch.no_grad():
            weights = tower.source_weights(torch.arange(len(self.table)))  # (N, S): gate, attention weight or 1
        gate = {n: weights[:, k] for k, n in enumerate(tower.source_names())}
        self.kg, self.attributes = None, None
        if tower.kg is not None:
            self.kg = tower.kg
            self.kg_gate = gate["kg"]
            self.one_hop = tower.kg_one_hop.numpy()
            self.two_hop = tower.kg_two_hop
            self.relations = [_short(r) for r in model.config.kg_relations]
        if tower.attribute_embedding is not None:
            self.attributes = tower.attributes.numpy()
            self.attribute_weight = tower.attribute_embedding.weight.detach()
            self.attribute_gate = gate["attributes"]
            self.tokens = [t.split(":", 1) if ":" in t else ("attribute", t) for t in vocab.attributes]

    def facts(self, item: int, history: np.ndarray, limit: int | None = MAX_FACTS) -> list[Fact]:
        """The best `limit` facts (None: all) connecting `item` to the items of `history`, best first."""
        history = np.unique(history[history != item])
        if len(history) == 0:
            return []
        found = self._kg_facts(item, history) + self._attribute_facts(item, history)
        best: dict[tuple, Fact] = {}  # each shared value or entity once, with its best history item
        for fact in sorted((f for f in found if f.contribution > 0), key=lambda f: -f.contribution):
            best.setdefault((fact.kind, fact.relation, fact.value, fact.entity), fact)
        return list(best.values())[:limit]

    def _kg_facts(self, item: int, history: np.ndarray) -> list[Fact]:
        if self.kg is None or not self.one_hop[item, :, 1].any():
            return []
        with torch.inference_mode():
            shares = self.kg.neighbour_vectors(torch.from_numpy(self.one_hop[item:item + 1]),
                                               self.two_hop[item:item + 1])[0] * self.kg_gate[item]  # (K1 + K2, D)
        mine = self.one_hop[item]  # (K1, 2)
        theirs = self.one_hop[history]  # (H, K1, 2)
        facts = []
        for slot in np.flatnonzero(mine[:, 1] > 0):
            relation, entity = mine[slot]
            share = (theirs[:, :, 0] == relation) & (theirs[:, :, 1] == entity)  # (H, K1)
            for h in history[share.any(1)]:
                if relation <= len(self.relations):  # forward relations only: "its director", not "the film of"
                    contribution = float(shares[slot] @ self.table[h])
                    facts.append(Fact("kg", self.relations[relation - 1], None, int(h), contribution, int(entity)))
        return facts

    def _attribute_facts(self, item: int, history: np.ndarray) -> list[Fact]:
        if self.attributes is None:
            return []
        mine = self.attributes[item]
        mine = mine[mine > 0]
        if len(mine) == 0:
            return []
        facts = []
        theirs = self.attributes[history]  # (H, A)
        for code in np.unique(mine):
            share = self.attribute_weight[code] * self.attribute_gate[item] / len(mine)  # (D,)
            for h in history[(theirs == code).any(1)]:
                column, value = self.tokens[code - 1]
                facts.append(Fact("attribute", column, value, int(h), float(share @ self.table[h])))
        return facts
