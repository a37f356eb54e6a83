"""The model's shape: every size and switch that fixes `Recloop`'s parameters (built in `architecture.py`).

Its own module so that the model's parts (`encoder.py`, `item_tower.py`) and `model.py` read it without
importing each other.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RecloopConfig:
    """Everything that fixes the model's shape: the model params plus sizes learned from the data.

    No field has a default: whoever builds one (`components/models/architecture.py`, or a saved
    config.json) names every field, so a knob can never silently fall back to a default.
    """

    n_items: int
    text_dim: int
    # Attribute vocabulary plus the padding row, and attribute slots per item.
    n_attributes: int
    max_item_attributes: int
    n_events: int
    n_value_buckets: int
    n_domains: int
    profile_sizes: list[int]
    rating_mean: float
    rating_std: float
    dim: int
    layers: int
    heads: int
    dropout: float
    max_len: int
    use_id: bool
    use_text: bool
    use_attributes: bool
    use_context: bool
    use_profile: bool
    id_dropout: float
    text_hidden: int
    # The encoder's token mixing (`models/encoder.py`): "attention" or "bsarec", and the filter's knobs.
    encoder: str
    filter_alpha: float
    filter_c: int
    # Where an item's place comes from: "absolute" (index in the window), "relative" (distance, in attention), "both".
    positions: str
    # Item-side sources beyond ID, text and attributes (`models/item_tower.py`).
    use_kg: bool
    kg_relations: list[str]  # relation names; codes 1..R forward, R+1..2R their inverses
    n_entities: int
    kg_neighbours: int  # one-hop (relation, entity) slots per item
    kg_two_hop: int  # two-hop (relation, relation, entity) slots per item
    extra_sources: dict[str, int]  # extra vector table name -> width
    source_gates: bool  # a learned gate per source instead of the plain sum
    source_attention: bool  # per-item attention over the sources an item has, instead of the sum
    id_mapping: bool  # items without a trained ID get one mapped from their content sources (`IdMapping`)
    source_dropout: dict[str, float]  # content source name -> share of items that go without it per training step
    cosine: bool  # item and user vectors have unit length, so scores are cosines (a zero-shot catalog)
