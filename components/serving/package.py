"""The package stage: the fine-tuned model and what serving needs, as a new registry version aliased `challenger`.

It sits in serving, above the registry: what is registered is serving's model (a bundle and its
pyfunc face), and the registry only keeps versions and aliases.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from components.atomic import write_json
from components.config import Paths, RegistryConfig
from components.models.artifacts import FINETUNED_DIR
from components.registry.registry import CHALLENGER, register
from components.serving.bundle import build_bundle, bundle_mode
from components.serving.pyfunc import log_pyfunc

REPORT_FILE = "package.json"
# Reports whose numbers become the version's metrics, so versions compare in the MLflow UI.
METRIC_REPORTS = ("finetune.json", "metrics.json")


@dataclass
class PackageSummary:
    model_name: str
    version: int
    uri: str
    items: int
    users: int
    bundle_mb: float
    seconds: float
    report: Path

    mode: str
    domain: str | None

    def describe(self) -> str:
        promote = "recloop promote" + (f" --set registry.domain={self.domain}" if self.domain else "")
        return (f"package: {self.model_name} version {self.version} ({CHALLENGER}, {self.mode}) in {self.uri}\n"
                f"  {self.items:,} items, {self.users:,} users, bundle {self.bundle_mb:.1f} MB, {self.seconds:.1f}s; "
                f"`{promote}` makes it the champion\n  wrote {self.report}")


def report_metrics(reports_dir: Path) -> dict[str, float]:
    """Flat numeric metrics from the training and evaluation reports that exist, keyed `<report>.<name>`."""
    out: dict[str, float] = {}
    for name in METRIC_REPORTS:
        path = Path(reports_dir) / name
        if path.exists():
            _flatten_numbers(json.loads(path.read_text()), path.stem, out)
    return out


def _flatten_numbers(tree, prefix: str, out: dict[str, float]) -> None:
    if isinstance(tree, dict):
        for key, value in tree.items():
            _flatten_numbers(value, f"{prefix}.{key}", out)
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        out[prefix] = float(tree)


def log_bundle(cfg: RegistryConfig, bundle_dir: Path, metrics: dict[str, float] | None = None,
               tags: dict[str, str] | None = None) -> int:
    """Log `bundle_dir` as recloop's pyfunc model, register it as a new version, alias it `challenger`.

    Returns the new version number. `mlflow.pyfunc.load_model(f"models:/{name}@challenger")`
    then gives a model whose `predict` recommends.
    """
    return register(cfg, lambda: log_pyfunc(bundle_dir), metrics=metrics, tags=tags)


def package(cfg: RegistryConfig, paths: Paths) -> PackageSummary:
    """Bundle models/finetuned with the catalog, histories and text vectors; log, register, alias challenger.

    With `cfg.domain` the version goes to that domain's registered model (`<model_name>-<domain>`),
    which the service serves to requests of that domain once it is promoted. The version's tags say
    how the model was made (`mode`: trained, or the transfer mode) and for which domain.
    Writes reports/package.json (the version number and bundle sizes) for DVC.
    """
    start = time.perf_counter()
    bundle = build_bundle(Path(paths.models) / FINETUNED_DIR, paths.split, paths.features, paths.models)
    try:
        meta = json.loads((bundle / "bundle.json").read_text())
        mode = bundle_mode(meta)
        size = sum(f.stat().st_size for f in bundle.rglob("*") if f.is_file())
        tags = {"items": meta["items"], "users": meta["users"], "encoder": meta["encoder"], "mode": mode}
        if cfg.domain is not None:
            tags["domain"] = cfg.domain
        version = log_bundle(cfg, bundle, metrics=report_metrics(paths.reports), tags=tags)
    finally:
        shutil.rmtree(bundle.parent, ignore_errors=True)
    report = Path(paths.reports) / REPORT_FILE
    write_json(report, {"version": version, "items": meta["items"], "users": meta["users"], "bundle_bytes": size})
    return PackageSummary(cfg.registered_model, version, cfg.uri, meta["items"], meta["users"], size / 2**20,
                          time.perf_counter() - start, report, mode, cfg.domain)
