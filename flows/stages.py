"""The pipeline's stages as the flows see them: dvc.yaml says what each reads and writes, CALLS says what runs it.

dvc.yaml stays the one declaration of a stage's params, inputs and outputs (its `${...}` paths filled in
from params), so that `dvc repro` and the Prefect flow cannot drift apart: a dvc.yaml stage without a
call here, a call without a stage, or a stage whose command is not `recloop <name>` is an error.
Adding a stage to the flows is one small function below plus its line in CALLS.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from components.config import Params
from components.errors import RecloopError

DVC_FILE = Path("dvc.yaml")


# Each call passes exactly what `recloop <stage>` in components/cli.py passes: one library function per stage.
def _ingest(p: Params) -> Any:
    from components.data.ingest import ingest

    return ingest(p.ingest, p.paths.canonical, p.paths.reports)


def _validate(p: Params) -> Any:
    from components.validation.validate import validate

    return validate(p.validate_, p.paths.canonical, p.paths.validated, p.paths.reports)


def _split(p: Params) -> Any:
    from components.data.split import split

    return split(p.split, p.paths.validated, p.paths.split, p.paths.reports, p.seed)


def _featurize(p: Params) -> Any:
    from components.features.featurize import featurize

    return featurize(p.featurize, p.paths.split, p.paths.features)


def _pretrain(p: Params) -> Any:
    from components.training.pretrain import pretrain

    return pretrain(p.model, p.pretrain, p.tracking, p.paths.split, p.paths.features,
                    p.paths.models, p.paths.reports, p.seed)


def _finetune(p: Params) -> Any:
    from components.training.finetune import finetune

    return finetune(p.model, p.finetune, p.tracking, p.paths.split, p.paths.features,
                    p.paths.models, p.paths.reports, p.seed)


def _evaluate(p: Params) -> Any:
    from components.evaluation.evaluate import evaluate

    return evaluate(p.evaluate, p.paths.split, p.paths.features, p.paths.reports,
                    seed=p.seed, models_dir=p.paths.models, tracking_uri=p.tracking.uri)


def _package(p: Params) -> Any:
    from components.registry.package import package

    return package(p.registry, p.paths)


# name -> (call, transient): a transient stage can fail for passing reasons (a source on a network
# share, a model loaded from a hub or a slow disk, an MLflow tracking server), so the flow retries it.
CALLS: dict[str, tuple[Callable[[Params], Any], bool]] = {
    "ingest": (_ingest, True),
    "validate": (_validate, False),
    "split": (_split, False),
    "featurize": (_featurize, True),
    # Training resumes from its checkpoint when run again, but its failures (a bug, out of memory) repeat.
    "pretrain": (_pretrain, False),
    "finetune": (_finetune, False),
    "evaluate": (_evaluate, True),
    "package": (_package, True),
}


@dataclass(frozen=True)
class Stage:
    """One dvc.yaml stage with its paths filled in from params, and the library call that runs it."""

    name: str
    call: Callable[[Params], Any]
    transient: bool
    params: tuple[str, ...]   # dotted params keys it reads (dvc.yaml `params`)
    deps: tuple[str, ...]     # input paths, data and code alike (dvc.yaml `deps`)
    outs: tuple[str, ...]     # data outputs DVC caches (dvc.yaml `outs`)
    reports: tuple[str, ...]  # uncached outputs: reports, metrics, plots (`cache: false` outs, `metrics`, `plots`)
    metrics: tuple[str, ...]  # the JSON metrics among the reports

    @property
    def outputs(self) -> tuple[str, ...]:
        return self.outs + self.reports


_TEMPLATE = re.compile(r"\$\{\s*([\w.]+)\s*\}")


def _lookup(tree: dict[str, Any], key: str, where: str) -> Any:
    node: Any = tree
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise RecloopError(f"dvc.yaml {where} refers to {key}, which params.yaml does not have")
        node = node[part]
    return node


def _fill(text: str, tree: dict[str, Any], where: str) -> str:
    filled = _TEMPLATE.sub(lambda m: str(_lookup(tree, m.group(1), where)), text)
    return os.path.normpath(filled)


def _entries(items: list[Any] | None, tree: dict[str, Any], where: str) -> list[tuple[str, bool]]:
    """dvc.yaml path lists hold `path` or `{path: {cache: false}}`: (filled path, cached?) pairs."""
    entries = []
    for item in items or []:
        if isinstance(item, dict):
            (path, opts), = item.items()
            entries.append((_fill(path, tree, where), (opts or {}).get("cache", True)))
        else:
            entries.append((_fill(str(item), tree, where), True))
    return entries


def _params_keys(items: list[Any] | None, where: str) -> tuple[str, ...]:
    if any(not isinstance(i, str) for i in items or []):
        raise RecloopError(f"dvc.yaml {where}: params must be keys of params.yaml (e.g. `split`), "
                           "other files are not read by the flows")
    return tuple(items or [])


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def load_stages(params: Params, dvc_file: Path = DVC_FILE) -> list[Stage]:
    """All dvc.yaml stages in file order, paths filled in from `params`; checked against CALLS."""
    if not Path(dvc_file).exists():
        raise RecloopError(f"{dvc_file} is missing: run the flows from the repository root")
    declared = (yaml.safe_load(Path(dvc_file).read_text()) or {}).get("stages") or {}
    tree = params.model_dump(mode="json", by_alias=True)
    missing = [name for name in declared if name not in CALLS]
    extra = [name for name in CALLS if name not in declared]
    if missing or extra:
        raise RecloopError(
            "dvc.yaml and flows/stages.py disagree: "
            + "; ".join(filter(None, [
                missing and f"stages without a call in flows/stages.py CALLS: {', '.join(missing)}",
                extra and f"calls without a dvc.yaml stage: {', '.join(extra)}",
            ])))
    stages = []
    for name, spec in declared.items():
        where = f"stage {name}"
        if str(spec.get("cmd", "")).split() != ["recloop", name]:
            raise RecloopError(f"dvc.yaml {where} runs {spec.get('cmd')!r}; the flows run `recloop {name}`'s "
                               "function with params.yaml alone, so the command must be exactly that")
        outs = _entries(spec.get("outs"), tree, where)
        metrics = [path for path, _ in _entries(spec.get("metrics"), tree, where)]
        plots = [path for path, _ in _entries(spec.get("plots"), tree, where)]
        call, transient = CALLS[name]
        stages.append(Stage(
            name=name, call=call, transient=transient,
            params=_params_keys(spec.get("params"), where),
            deps=tuple(path for path, _ in _entries(spec.get("deps"), tree, where)),
            outs=tuple(path for path, cached in outs if cached),
            reports=tuple([path for path, cached in outs if not cached] + metrics + plots),
            metrics=tuple(metrics),
        ))
    _check_order(stages)
    return stages


def _producers(stages: list[Stage], dep: str) -> list[Stage]:
    return [s for s in stages if any(_inside(dep, out) or _inside(out, dep) for out in s.outputs)]


def _check_order(stages: list[Stage]) -> None:
    position = {s.name: i for i, s in enumerate(stages)}
    for stage in stages:
        for dep in stage.deps:
            for producer in _producers(stages, dep):
                if position[producer.name] >= position[stage.name]:
                    raise RecloopError(f"dvc.yaml lists stage {stage.name} before {producer.name}, which writes "
                                       f"its input {dep}: list stages in the order they run")


def plan(stages: list[Stage], target: str | None = None) -> list[Stage]:
    """The stages `dvc repro <target>` would consider, in order: the target and everything upstream of it."""
    if target is None:
        return list(stages)
    by_name = {s.name: s for s in stages}
    if target not in by_name:
        raise RecloopError(f"no stage {target!r} in dvc.yaml; stages: {', '.join(by_name)}")
    needed, todo = set(), [by_name[target]]
    while todo:
        stage = todo.pop()
        if stage.name in needed:
            continue
        needed.add(stage.name)
        todo.extend(p for dep in stage.deps for p in _producers(stages, dep))
    return [s for s in stages if s.name in needed]


def read_params_keys(params: Params, keys: tuple[str, ...]) -> dict[str, Any]:
    """The values of dotted params keys, as JSON-able data (the part of params a stage's cache key covers)."""
    tree = params.model_dump(mode="json", by_alias=True)
    return {key: _lookup(tree, key, "params") for key in keys}
