"""The MLflow pyfunc face of a serving bundle: `mlflow.pyfunc.load_model("models:/recloop@champion")`.

`predict` takes a DataFrame with one request per row, columns as in `RecommendRequest`
(`user_id`, `history` as a list of item ids, `k`, ...; missing columns take their defaults),
and returns one row per recommended item: the row's position in the input as `query`, then
rank, item_id, title, score, like_prob, strategy.
"""
from __future__ import annotations

import math

import mlflow.pyfunc
import pandas as pd

from components.serving.bundle import load_bundle
from components.serving.recommender import Recommender
from components.serving.schemas import RecommendRequest


class RecloopPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        bundle = load_bundle(context.artifacts["bundle"])
        # The text encoder loads on the first text query only: batch scoring rarely needs it.
        self.recommender = Recommender(bundle, version="mlflow")
        self.recommender.prepare(load_encoder=False)

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        rows = []
        for query, record in enumerate(model_input.to_dict(orient="records")):
            fields = {k: v for k, v in record.items() if not _missing(v)}
            if "history" in fields:
                fields["history"] = [str(h) for h in fields["history"]]
            answer = self.recommender.recommend(RecommendRequest(**fields))
            rows += [{"query": query, "rank": item.rank, "item_id": item.item_id, "title": item.title,
                      "score": item.score, "like_prob": item.like_prob, "strategy": answer.strategy}
                     for item in answer.items]
        return pd.DataFrame(rows, columns=["query", "rank", "item_id", "title", "score", "like_prob", "strategy"])


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
