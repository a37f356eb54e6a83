"""The model's architecture from the params and the data: `RecloopConfig` built field by field.

`params.model` (`ModelConfig`) holds the knobs a user sets; the fitted vocabulary and the catalog
give the sizes. Every field of `RecloopConfig` is named here, and `RecloopConfig` has no defaults,
so a knob renamed on either side fails loudly instead of falling back to a default.
"""
from __future__ import annotations

from components.config import ModelConfig
from components.features.item_sources import ItemSources
from components.models.shape import RecloopConfig
from components.models.vocab import Vocab

# ModelConfig knobs that shape the vocabulary (fit_vocab), not the network: they reach the model as sizes.
VOCAB_KNOBS = ("value_buckets", "min_attribute_count")
# ModelConfig knobs that say where the item tower's optional sources live: they reach the model as
# the sources' sizes (`ItemSources`), not by name.
DATA_KNOBS = ("sources",)


def recloop_config(knobs: ModelConfig, vocab: Vocab, n_items: int, text_dim: int,
                   sources: ItemSources | None = None) -> RecloopConfig:
    """The params' model section plus the sizes the data dictates (`sources`: the optional item sources)."""
    sources = sources or ItemSources()
    return RecloopConfig(
        # From the data.
        n_items=n_items,
        text_dim=text_dim,
        n_attributes=len(vocab.attributes) + 1,
        n_events=len(vocab.events) + 1,
        n_value_buckets=len(vocab.value_edges) + 2,
        n_domains=len(vocab.domains) + 1,
        profile_sizes=vocab.profile_sizes(),
        rating_mean=vocab.rating_mean,
        rating_std=vocab.rating_std,
        # From params.model.
        max_item_attributes=knobs.max_item_attributes,
        dim=knobs.dim,
        layers=knobs.layers,
        heads=knobs.heads,
        dropout=knobs.dropout,
        max_len=knobs.max_len,
        use_id=knobs.use_id,
        use_text=knobs.use_text,
        use_attributes=knobs.use_attributes,
        use_context=knobs.use_context,
        use_profile=knobs.use_profile,
        id_dropout=knobs.id_dropout,
        text_hidden=knobs.text_hidden,
        use_kg=knobs.use_kg,
        kg_relations=sources.kg.relations if sources.kg is not None else [],
        n_entities=len(sources.kg.entities) if sources.kg is not None else 0,
        kg_neighbours=knobs.kg_neighbours,
        kg_two_hop=knobs.kg_two_hop,
        extra_sources={name: table.width for name, table in sources.vectors.items()},
        source_gates=knobs.source_gates,
        source_attention=knobs.source_attention,
        id_mapping=knobs.id_mapping,
        source_dropout=dict(knobs.source_dropout),
        cosine=False,  # trained models score by dot product; `foundation.adopt` sets it for zero-shot
        encoder=knobs.encoder,
        filter_alpha=knobs.filter_alpha,
        filter_c=knobs.filter_c,
        positions=knobs.positions,
    )
