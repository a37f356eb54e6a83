"""Explanations name the facts behind a pick: a shared director, a shared genre, with the history item."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from test_item_tower import DIE_HARD, KG_FIXTURE, PULP_FICTION, RESERVOIR_DOGS, kg_folder, model_with

from components.config import ItemSourcesConfig, KGConfig
from components.data.sources.kg import KnowledgeGraph, read_kg
from components.models.vocab import fit_vocab
from components.serving.facts import FactFinder


def director_graph() -> KnowledgeGraph:
    real = read_kg(KGConfig(path=KG_FIXTURE))
    links = real.links[real.links["item_id"].isin([RESERVOIR_DOGS, PULP_FICTION, DIE_HARD])].reset_index(drop=True)
    triples = real.triples[real.triples["head"].isin(links["entity"])
                           & (real.triples["relation"] == "film.film.director")].reset_index(drop=True)
    return KnowledgeGraph(triples, links)


def test_a_shared_director_is_named_with_the_history_item(movielens, item_text, tmp_path):
    folder = kg_folder(tmp_path, movielens, director_graph())
    model = model_with(movielens, item_text, use_kg=True, sources=ItemSourcesConfig(kg=folder))
    row = pd.Index(movielens.items["item_id"]).get_indexer
    pulp, dogs, die_hard = row([PULP_FICTION, RESERVOIR_DOGS, DIE_HARD])
    titles = movielens.items["title"].tolist()
    with torch.no_grad():
        finder = FactFinder(model, fit_vocab(movielens, 8, 2), model.catalog())
    facts = finder.facts(pulp, np.array([die_hard, dogs, dogs]))
    kg = [f for f in facts if f.kind == "kg"]
    assert [(f.relation, f.history_item) for f in kg] == [("director", dogs)]
    assert kg[0].text(titles[dogs]) == "shares a director with Reservoir Dogs (1992)"
    # Ranked by contribution; attribute facts name the value and the history item that has it.
    assert [f.contribution for f in facts] == sorted((f.contribution for f in facts), reverse=True)
    assert all(f.contribution > 0 for f in facts)
    shared = set(movielens.items["categories"][pulp]) & set(movielens.items["categories"][die_hard])
    assert all(f.value in shared for f in facts if f.kind == "attribute" and f.history_item == die_hard)
    # The item itself in the history is no fact; an empty history has none.
    assert all(f.history_item != pulp for f in finder.facts(pulp, np.array([pulp, dogs])))
    assert finder.facts(pulp, np.array([pulp])) == []


def test_without_the_graph_only_attribute_facts_remain(movielens, item_text):
    model = model_with(movielens, item_text)
    row = pd.Index(movielens.items["item_id"]).get_indexer
    pulp, dogs, die_hard = row([PULP_FICTION, RESERVOIR_DOGS, DIE_HARD])
    with torch.no_grad():
        finder = FactFinder(model, fit_vocab(movielens, 8, 2), model.catalog())
    facts = finder.facts(pulp, np.array([die_hard, dogs]), limit=50)
    assert facts and {f.kind for f in facts} == {"attribute"} and {f.relation for f in facts} == {"category"}
    assert facts[0].text("Die Hard (1988)").startswith("shares the category ")
