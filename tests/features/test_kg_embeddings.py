"""PyKEEN entity embeddings of a validated graph as an extra vector source: written for linked items only,
fixed by the seed, placing films that share a director together, and read by the item tower as it trains."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from recloop_data import TINY_MODEL, TINY_PRETRAIN

from components.cli import cli
from components.config import ItemSourcesConfig, KGConfig, KGEmbedConfig, VectorSourceConfig
from components.data.sources.kg import read_kg
from components.features.kg import read_kg_tables
from components.features.kg_embeddings import kg_embed
from components.features.vectors import read_vector_table
from components.validation.kg import validate_kg, write_kg

KG_FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "kg" / "movie"
RESERVOIR_DOGS, PULP_FICTION, DIE_HARD = "1089", "296", "1036"
# About 6 s on two cores for the fixture's 1,450 triples (PyKEEN's cost is mostly per epoch here).
QUICK = KGEmbedConfig(dim=16, epochs=20, batch_size=512, lr=0.02)


@pytest.fixture(scope="module")
def kg_dir(movielens, tmp_path_factory) -> Path:
    """The fixture graph validated against the MovieLens slice, as `recloop kg` writes it."""
    folder = tmp_path_factory.mktemp("graph") / "kg"
    write_kg(validate_kg(read_kg(KGConfig(path=KG_FIXTURE)), movielens.items["item_id"]), folder)
    return folder


def fixture_links_in(movielens) -> int:
    """How many of the fixture's 150 links name a film of the slice: all 150 where the slice was cut, one fewer
    where the CPU's sort kernels break the 300th film's tie in another order (recloop_data.rated_interactions)."""
    return int(read_kg(KGConfig(path=KG_FIXTURE)).links["item_id"].astype(str).isin(movielens.items["item_id"]).sum())


@pytest.fixture(scope="module")
def transe(kg_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("vectors") / "kg_transe.parquet"
    kg_embed(QUICK, kg_dir, out, seed=3, progress=False)
    return out


def test_vectors_are_written_for_linked_items_only_and_the_seed_fixes_them(movielens, kg_dir, transe, tmp_path):
    _, links = read_kg_tables(kg_dir)
    written = pd.read_parquet(transe)
    assert list(written.columns) == ["item_id", "vector"]
    assert written["item_id"].tolist() == links["item_id"].tolist() and len(written) == fixture_links_in(movielens)
    # Through the extra-vector door: exactly the linked items of the catalog have the source.
    table = read_vector_table(transe, movielens.items["item_id"].astype(str).tolist())
    linked = movielens.items["item_id"].astype(str).isin(links["item_id"]).to_numpy()
    assert table.width == QUICK.dim and table.unknown_ids == 0
    assert np.array_equal(table.present, linked) and 0 < linked.sum() < movielens.n_items
    assert np.isfinite(table.vectors).all() and (table.vectors[~linked] == 0).all()
    # The seed fixes the vectors (two epochs are enough to tell).
    short = QUICK.model_copy(update={"epochs": 2})
    first, again, other = (np.stack(pd.read_parquet(kg_embed(short, kg_dir, tmp_path / f"{name}.parquet", seed=seed,
                                                              progress=False).out)["vector"])
                           for name, seed in (("first", 3), ("again", 3), ("other", 4)))
    assert np.array_equal(first, again) and not np.allclose(first, other)


def test_films_sharing_a_director_land_nearer_than_one_that_does_not(transe):
    vectors = pd.read_parquet(transe).set_index("item_id")["vector"]
    unit = {i: (v := np.asarray(vectors[i])) / np.linalg.norm(v) for i in (RESERVOIR_DOGS, PULP_FICTION, DIE_HARD)}
    assert unit[RESERVOIR_DOGS] @ unit[PULP_FICTION] > unit[RESERVOIR_DOGS] @ unit[DIE_HARD] + 0.1


def test_rotate_writes_real_and_imaginary_parts(movielens, kg_dir, tmp_path):
    summary = kg_embed(QUICK.model_copy(update={"model": "RotatE", "epochs": 2}), kg_dir, tmp_path / "r.parquet",
                       seed=0, progress=False)
    vectors = np.stack(pd.read_parquet(summary.out)["vector"])
    assert summary.width == 2 * QUICK.dim and vectors.shape == (fixture_links_in(movielens), 2 * QUICK.dim) and np.isfinite(vectors).all()


def test_the_model_trains_with_the_embeddings_as_a_source(movielens, transe):
    from components.training.pretrain import pretrain_model

    source = VectorSourceConfig(name="kg_transe", path=transe)
    knobs = TINY_MODEL.model_copy(update={"use_text": False, "sources": ItemSourcesConfig(vectors=[source])})
    text = np.zeros((movielens.n_items, 8), np.float32)  # no text: ID, attributes and the graph's vectors
    trained, result = pretrain_model(movielens, text, knobs, TINY_PRETRAIN.model_copy(update={"epochs": 1}), seed=0)
    tower = trained.model.tower
    assert tower.source_names() == ["id", "attributes", "kg_transe"]
    assert int(tower.has_vectors_kg_transe.sum()) == fixture_links_in(movielens) and np.isfinite(result.history[-1]["train_loss"])
    with torch.no_grad():
        extra = tower.extra_vectors("kg_transe", torch.arange(movielens.n_items))
    assert extra[~tower.has_vectors_kg_transe].abs().sum() == 0 and extra[tower.has_vectors_kg_transe].abs().sum() > 0


def test_cli_embeds_paths_kg_into_paths_kg_embeddings(movielens, kg_dir, tmp_path):
    linked = fixture_links_in(movielens)
    out = tmp_path / "item_sources" / "kg_embeddings.parquet"
    result = CliRunner().invoke(cli, ["kg-embed", "--set", f"paths.kg={kg_dir}", "--set", f"paths.kg_embeddings={out}",
                                      "--set", "kg_embed.epochs=1", "--set", "kg_embed.dim=8"])
    assert result.exit_code == 0, result.output
    assert "TransE" in result.output and f"{linked} linked items' 8-d vectors" in result.output
    assert len(pd.read_parquet(out)) == linked
    missing = CliRunner().invoke(cli, ["kg-embed", "--set", f"paths.kg={tmp_path / 'none'}"])
    assert missing.exit_code == 2 and "run `recloop kg`" in missing.output
