"""A tiny but real recloop model for the serving tests: 20 MovieLens users, trained for two epochs."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from components.config import FeaturizeConfig, FinetuneConfig, ModelConfig, SplitConfig
from components.data.dataset import SplitData
from components.data.split import split
from components.features.featurize import featurize, load_item_text
from components.models.artifacts import save_trained
from components.training.finetune import finetune_model

RAW = Path(__file__).parents[2] / "data" / "raw" / "ml-latest-small"
USERS = 20
MIN_RATERS = 3


def write_canonical(folder: Path) -> Path:
    """Ratings of the first USERS users on movies at least MIN_RATERS of them rated, as canonical tables."""
    ratings = pd.read_csv(RAW / "ratings.csv")
    ratings = ratings[ratings["userId"] <= USERS]
    raters = ratings["movieId"].value_counts()
    ratings = ratings[ratings["movieId"].isin(raters.index[raters >= MIN_RATERS])]
    movies = pd.read_csv(RAW / "movies.csv")
    movies = movies[movies["movieId"].isin(ratings["movieId"])]
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"user_id": ratings["userId"].astype(str), "item_id": ratings["movieId"].astype(str),
                  "timestamp": ratings["timestamp"].astype("int64"), "event": "rate",
                  "value": ratings["rating"].astype(float), "domain": "movies"}
                 ).to_parquet(folder / "interactions.parquet", index=False)
    pd.DataFrame({"item_id": movies["movieId"].astype(str), "title": movies["title"], "text": "",
                  "categories": movies["genres"].str.split("|"), "domain": "movies"}
                 ).to_parquet(folder / "items.parquet", index=False)
    pd.DataFrame({"user_id": ratings["userId"].astype(str).unique()}).to_parquet(folder / "users.parquet", index=False)
    return folder


def train_tiny(root: Path, seed: int = 0, epochs: int = 2) -> dict[str, Path]:
    """canonical -> split -> item text vectors -> a fine-tuned model folder; returns the folders."""
    paths = {name: root / name for name in ("validated", "split", "reports", "features", "finetuned")}
    if not (paths["split"] / "train.parquet").exists():
        write_canonical(paths["validated"])
        split(SplitConfig(min_user_interactions=5, cold_item_fraction=0.05), paths["validated"], paths["split"],
              paths["reports"], seed=42)
        featurize(FeaturizeConfig(cache_dir=root / "cache"), paths["split"], paths["features"])
    torch.manual_seed(seed)
    data = SplitData.load(paths["split"])
    text = load_item_text(paths["features"], data.n_items)
    knobs = ModelConfig(dim=16, layers=1, heads=1, max_len=20, text_hidden=32, dropout=0.1)
    trained, result = finetune_model(data, text, FinetuneConfig(epochs=epochs, batch_size=32, patience=5), seed,
                                     pretrained=None, knobs=knobs)
    save_trained(trained, paths["finetuned"], {"valid_ndcg@10": result.best_metrics.get("valid_ndcg@10", 0.0),
                                               "seed": seed})
    return paths
