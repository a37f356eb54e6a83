"""Each catalog item's knowledge-graph neighbourhood as fixed-size code tensors for the item tower.

The graph is read both ways: relation r (code 1..R) from head to tail, and its inverse (R+1..2R)
from tail to head, so two items that share a director are two hops apart (item -director-> person
-director^-1-> item) even in a graph whose triples all start at items, as MKR's do. An item linked
to an entity gets
- up to `one_hop` slots (relation, entity): its entity's neighbours, the rarest first;
- up to `two_hop` slots (relation, relation, entity): the neighbours of those neighbours (not the
  item's own entity), through the rarest intermediate first — a director shared by three films says
  more than a language shared by two thousand.
Ties are broken by a seeded shuffle. Codes start at 1; 0 pads, and an unlinked item is all zeros.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from components.data.schema import KG_LINKS_FILE, KG_TRIPLES_FILE
from components.errors import RecloopError


@dataclass
class KGNeighbourhoods:
    """Neighbourhood codes aligned with a catalog's rows, and the vocabularies that decode them."""

    relations: list[str]  # relation code r (1..R) is relations[r - 1]; R + r is its inverse
    entities: list[str]  # entity code e (1..E) is entities[e - 1]
    item_entity: np.ndarray  # (N,) each item's own entity code, 0 = not linked
    one_hop: np.ndarray  # (N, K1, 2) (relation, entity)
    two_hop: np.ndarray  # (N, K2, 3) (relation, relation, entity)

    @property
    def linked(self) -> np.ndarray:
        return self.item_entity > 0


def relation_name(relations: list[str], code: int) -> str:
    """A relation code as a name; inverse codes read `name^-1`."""
    r = len(relations)
    return relations[code - 1] if code <= r else f"{relations[code - r - 1]}^-1"


def read_kg_tables(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(triples, links) of a validated graph as `recloop kg` writes it (paths.kg)."""
    folder = Path(folder)
    missing = [f for f in (KG_TRIPLES_FILE, KG_LINKS_FILE) if not (folder / f).is_file()]
    if missing:
        raise RecloopError(f"{folder} lacks {', '.join(missing)}: run `recloop kg` (kg.path) first")
    return pd.read_parquet(folder / KG_TRIPLES_FILE), pd.read_parquet(folder / KG_LINKS_FILE)


def _edges(triples: pd.DataFrame, relations: list[str], entities: pd.Index) -> tuple[np.ndarray, ...]:
    """(dst, rel) of every edge both ways, sorted by src, and each src's first edge position."""
    head = entities.get_indexer(triples["head"]) + 1
    tail = entities.get_indexer(triples["tail"]) + 1
    rel = pd.Index(relations).get_indexer(triples["relation"]) + 1
    src = np.concatenate([head, tail])
    dst = np.concatenate([tail, head])
    codes = np.concatenate([rel, rel + len(relations)])
    order = np.argsort(src, kind="stable")
    src, dst, codes = src[order], dst[order], codes[order]
    start = np.searchsorted(src, np.arange(len(entities) + 2))
    return dst, codes, start


def kg_neighbourhoods(triples: pd.DataFrame, links: pd.DataFrame, item_ids: Sequence[str], one_hop: int,
                      two_hop: int, seed: int = 0) -> KGNeighbourhoods:
    """The codes of every item in `item_ids` (catalog order) from a validated graph (see the module docstring)."""
    relations = sorted(triples["relation"].unique())
    entities = pd.Index(pd.unique(pd.concat([triples["head"], triples["tail"]])))
    dst, rel, start = _edges(triples, relations, entities)
    degree = np.diff(start)
    links = links.drop_duplicates("item_id").set_index("item_id")["entity"]
    item_entity = entities.get_indexer(links.reindex(pd.Index(item_ids).astype(str)).fillna("")) + 1
    n = len(item_ids)
    first = np.zeros((n, one_hop, 2), np.int64)
    second = np.zeros((n, two_hop, 3), np.int64)
    rng = np.random.default_rng(seed)
    for row in np.flatnonzero(item_entity > 0):
        e = item_entity[row]
        lo, hi = start[e], start[e + 1]
        order = lo + np.lexsort((rng.random(hi - lo), degree[dst[lo:hi]]))  # rarest neighbour first
        taken = order[:one_hop]
        first[row, :len(taken), 0], first[row, :len(taken), 1] = rel[taken], dst[taken]
        filled = 0
        for edge in order:
            if filled == two_hop:
                break
            m = dst[edge]
            onward = np.arange(start[m], start[m + 1])
            onward = onward[dst[onward] != e]
            onward = rng.permutation(onward)[:two_hop - filled]
            second[row, filled:filled + len(onward)] = np.stack(
                [np.full(len(onward), rel[edge]), rel[onward], dst[onward]], axis=1)
            filled += len(onward)
    return KGNeighbourhoods(relations=relations, entities=entities.astype(str).tolist(), item_entity=item_entity,
                            one_hop=first, two_hop=second)
