"""The item tower's sources: defaults unchanged, a source switched off is gone, KG neighbourhoods place items,
an extra vector table with missing rows trains, saves and serves."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from recloop_data import TINY_MODEL, TINY_PRETRAIN

from components.config import ItemSourcesConfig, KGConfig, ModelConfig, VectorSourceConfig
from components.data.sources.kg import KnowledgeGraph, read_kg
from components.models.artifacts import CONFIG_FILE, TrainedModel, load_trained, save_trained
from components.models.catalog import build_model
from components.models.vocab import fit_vocab
from components.validation.kg import validate_kg, write_kg

KG_FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "kg" / "movie"
RESERVOIR_DOGS, PULP_FICTION, DIE_HARD = "1089", "296", "1036"
# Tower state of the model before the sources became a list: names and order unchanged by default.
DEFAULT_TOWER = ["tower.id_embedding.weight", "tower.text_adapter.0.weight", "tower.text_adapter.0.bias",
                 "tower.text_adapter.2.weight", "tower.text_adapter.2.bias", "tower.attribute_embedding.weight",
                 "tower.text", "tower.has_text", "tower.attributes", "tower.has_id"]


def model_with(movielens, item_text, seed: int = 0, **changes):
    torch.manual_seed(seed)
    return build_model(TINY_MODEL.model_copy(update=changes), movielens, item_text, fit_vocab(movielens, 8, 2)).eval()


def kg_folder(tmp_path: Path, movielens, graph: KnowledgeGraph | None = None) -> Path:
    graph = graph or read_kg(KGConfig(path=KG_FIXTURE))
    write_kg(validate_kg(graph, movielens.items["item_id"]), tmp_path / "kg")
    return tmp_path / "kg"


def rows(movielens, *ids: str) -> torch.Tensor:
    return torch.as_tensor(pd.Index(movielens.items["item_id"]).get_indexer(list(ids)))


def test_default_tower_keeps_its_state_names_and_reads_no_source(movielens, item_text):
    model = model_with(movielens, item_text)
    assert sorted(k for k in model.state_dict() if k.startswith("tower.")) == sorted(DEFAULT_TOWER)
    assert model.tower.source_names() == ["id", "text", "attributes"] and model.tower.gates is None
    # A graph named but switched off is not read: the same model, weight for weight.
    off = model_with(movielens, item_text, sources=ItemSourcesConfig(kg=Path("no/such/folder")))
    assert all(torch.equal(v, off.state_dict()[k]) for k, v in model.state_dict().items())


def test_a_source_without_rows_or_switched_off_reproduces_the_model_without_it(movielens, item_text, tmp_path):
    folder = kg_folder(tmp_path, movielens)
    with_kg = model_with(movielens, item_text, use_kg=True, sources=ItemSourcesConfig(kg=folder))
    plain = model_with(movielens, item_text)
    linked = read_kg(KGConfig(path=KG_FIXTURE)).links["item_id"].astype(str).isin(movielens.items["item_id"]).sum()
    assert with_kg.tower.has_kg.sum() == linked > 140 and with_kg.tower.source_names()[-1] == "kg"
    # The model without the source, given the shared weights: equal wherever an item lacks the graph.
    plain.load_state_dict({k: v for k, v in with_kg.state_dict().items() if k in plain.state_dict()})
    items = torch.arange(movielens.n_items)
    with torch.no_grad():
        unlinked = ~with_kg.tower.has_kg
        assert torch.equal(with_kg.tower(items)[unlinked], plain.tower(items)[unlinked])
        assert not torch.allclose(with_kg.tower(items)[~unlinked], plain.tower(items)[~unlinked])
        with_kg.tower.has_kg.zero_()
        assert torch.equal(with_kg.catalog(), plain.catalog())
    # Gates start at 1: the gated sum is the plain sum until training moves them.
    gated = model_with(movielens, item_text, source_gates=True)
    plain = model_with(movielens, item_text)
    plain.load_state_dict({k: v for k, v in gated.state_dict().items() if k != "tower.gates"})
    with torch.no_grad():
        assert torch.allclose(gated.catalog(), plain.catalog(), atol=1e-7)


def test_two_items_sharing_a_director_move_closer(movielens, item_text, tmp_path):
    real = read_kg(KGConfig(path=KG_FIXTURE))
    links = real.links[real.links["item_id"].isin([RESERVOIR_DOGS, PULP_FICTION, DIE_HARD])]
    triples = real.triples[real.triples["head"].isin(links["entity"])
                           & (real.triples["relation"] == "film.film.director")]
    assert triples["tail"].nunique() == 2  # Tarantino directed two of them
    graph = KnowledgeGraph(triples.reset_index(drop=True), links.reset_index(drop=True))
    folder = kg_folder(tmp_path, movielens, graph)
    with_kg = model_with(movielens, item_text, use_kg=True, sources=ItemSourcesConfig(kg=folder))
    plain = model_with(movielens, item_text)
    plain.load_state_dict({k: v for k, v in with_kg.state_dict().items() if k in plain.state_dict()})
    items = rows(movielens, RESERVOIR_DOGS, PULP_FICTION, DIE_HARD)
    with torch.no_grad():
        before, after = (F.normalize(m.tower(items), dim=-1) for m in (plain, with_kg))
    gain_shared = (after[0] @ after[1]) - (before[0] @ before[1])
    gain_other = (after[0] @ after[2]) - (before[0] @ before[2])
    assert gain_shared > 0.05 and gain_shared > gain_other + 0.05


def test_extra_vectors_with_missing_rows_train_save_and_serve(movielens, item_text, tmp_path):
    from components.training.pretrain import pretrain_model

    ids = movielens.items["item_id"].to_numpy(dtype=str)
    rng = np.random.default_rng(0)
    given = np.flatnonzero(rng.random(len(ids)) < 0.6)  # 40% of the catalog has no vector
    path = tmp_path / "image.npz"
    np.savez(path, item_ids=np.append(ids[given], "not-in-catalog"),
             vectors=rng.normal(size=(len(given) + 1, 12)).astype(np.float32))
    knobs = TINY_MODEL.model_copy(update={"sources": ItemSourcesConfig(vectors=[VectorSourceConfig(name="image",
                                                                                                    path=path)])})
    trained, result = pretrain_model(movielens, item_text, knobs, TINY_PRETRAIN.model_copy(update={"epochs": 1}),
                                     seed=0)
    model = trained.model
    assert model.tower.source_names() == ["id", "text", "attributes", "image"]
    present = model.tower.has_vectors_image
    assert present.sum() == len(given) and not present[torch.from_numpy(np.setdiff1d(np.arange(len(ids)), given))].any()
    assert result.history[-1]["epoch"] == 1 and np.isfinite(result.history[-1]["train_loss"])
    items = torch.arange(movielens.n_items)
    with torch.no_grad():
        extra = model.tower.extra_vectors("image", items)
        assert extra[~present].abs().sum() == 0 and extra[present].abs().sum() > 0
    save_trained(trained, tmp_path / "model", {})
    loaded = load_trained(tmp_path / "model").model
    assert loaded.config.extra_sources == {"image": 12}
    with torch.no_grad():
        assert torch.equal(loaded.catalog(), model.catalog())


def test_model_folders_saved_before_the_sources_still_load(movielens, item_text, tmp_path):
    model = model_with(movielens, item_text)
    save_trained(TrainedModel(model, fit_vocab(movielens, 8, 2), movielens.items["item_id"].tolist()), tmp_path, {})
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    old = {k: v for k, v in config.items() if k not in ("use_kg", "kg_relations", "n_entities", "kg_neighbours",
                                                          "kg_two_hop", "extra_sources", "source_gates",
                                                          "source_attention")}
    (tmp_path / CONFIG_FILE).write_text(json.dumps(old))
    loaded = load_trained(tmp_path).model
    with torch.no_grad():
        assert torch.equal(loaded.catalog(), model.catalog())


def test_source_attention_starts_as_the_sum_and_masks_the_sources_an_item_lacks(movielens, item_text, tmp_path):
    folder = kg_folder(tmp_path, movielens)
    attended = model_with(movielens, item_text, use_kg=True, source_attention=True,
                          sources=ItemSourcesConfig(kg=folder))
    summed = model_with(movielens, item_text, use_kg=True, sources=ItemSourcesConfig(kg=folder))
    summed.load_state_dict({k: v for k, v in attended.state_dict().items() if k in summed.state_dict()})
    items = torch.arange(movielens.n_items)
    with torch.no_grad():
        assert torch.allclose(attended.catalog(), summed.catalog(), atol=1e-6)
        # Learned query and priors: each item weighs its own sources; those it lacks weigh nothing.
        attention = attended.tower.attention
        torch.manual_seed(1)
        attention.query.normal_()
        attention.prior.normal_()
        weights = attended.tower.source_weights(items)  # (N, S) over id, text, attributes, kg
        linked = attended.tower.has_kg
        assert torch.equal(weights[:, 3] > 0, linked)
        assert torch.allclose(weights.sum(-1), (weights > 0).sum(-1).float(), atol=1e-5)
        assert weights[linked, 3].std() > 0  # per item, not one weight per source
        # Without the graph, an unlinked item's vector is what a tower without the KG source makes of it.
        plain = model_with(movielens, item_text, source_attention=True)
        plain.load_state_dict({k: v for k, v in attended.state_dict().items()
                               if k in plain.state_dict() and k != "tower.attention.prior"}, strict=False)
        plain.tower.attention.prior.copy_(attention.prior[:3])
        assert torch.allclose(attended.tower(items)[~linked], plain.tower(items)[~linked], atol=1e-6)
        # Padding (no source at all) stays zero rather than NaN.
        attended.tower.has_id.zero_(), attended.tower.has_text.zero_(), attended.tower.has_kg.zero_()
        attended.tower.attributes.zero_()
        assert torch.equal(attended.tower(items), torch.zeros(movielens.n_items, attended.config.dim))


def test_source_attention_trains_saves_and_loads(movielens, item_text, tmp_path):
    from components.training.pretrain import pretrain_model

    knobs = TINY_MODEL.model_copy(update={"source_attention": True})
    trained, result = pretrain_model(movielens, item_text, knobs, TINY_PRETRAIN.model_copy(update={"epochs": 1}),
                                     seed=0)
    assert np.isfinite(result.history[-1]["train_loss"])
    assert trained.model.tower.attention.query.abs().sum() > 0  # it learned something
    save_trained(trained, tmp_path / "model", {})
    loaded = load_trained(tmp_path / "model").model
    assert loaded.config.source_attention
    with torch.no_grad():
        assert torch.equal(loaded.catalog(), trained.model.catalog())


def test_gates_and_attention_are_two_fusions_not_one():
    with pytest.raises(ValueError, match="choose one"):
        ModelConfig(**TINY_MODEL.model_dump() | {"source_gates": True, "source_attention": True})


@pytest.mark.parametrize("bad", [[VectorSourceConfig(name="kg", path=Path("x.npz"))],
                                 [VectorSourceConfig(name="a", path=Path("x.npz"))] * 2])
def test_vector_source_names_are_unique_and_not_built_in(bad):
    with pytest.raises(ValueError, match="unique"):
        ItemSourcesConfig(vectors=bad)
