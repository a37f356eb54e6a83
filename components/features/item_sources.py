"""The item tower's optional sources for one catalog, read from where `model.sources` points.

`load_item_sources` is the one place that turns the params into per-item arrays: the knowledge
graph's neighbourhoods (when `model.use_kg`) and each extra vector table in use, aligned with the
catalog's rows. With the defaults (no KG, no tables) it reads nothing.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from components.config import ModelConfig
from components.errors import RecloopError
from components.features.kg import KGNeighbourhoods, kg_neighbourhoods, read_kg_tables
from components.features.vectors import VectorTable, read_vector_table


@dataclass
class ItemSources:
    kg: KGNeighbourhoods | None = None
    vectors: dict[str, VectorTable] = field(default_factory=dict)


def load_item_sources(knobs: ModelConfig, item_ids: Sequence[str], seed: int = 0) -> ItemSources:
    """The sources `knobs` switch on, aligned with `item_ids`; `seed` breaks ties among KG neighbours."""
    kg = None
    if knobs.use_kg:
        if knobs.sources.kg is None:
            raise RecloopError("model.use_kg is true but model.sources.kg names no graph: run `recloop kg` "
                               "(kg.path) and set model.sources.kg to its output (paths.kg)")
        kg = kg_neighbourhoods(*read_kg_tables(knobs.sources.kg), item_ids, knobs.kg_neighbours, knobs.kg_two_hop, seed)
    vectors = {v.name: read_vector_table(v.path, item_ids) for v in knobs.sources.vectors if v.use}
    return ItemSources(kg, vectors)
