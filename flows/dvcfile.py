"""dvc.yaml as the flows read it: each stage's params, inputs and outputs, paths filled in from params.

dvc.yaml stays the one declaration of what a stage reads and writes; components/stages.py the one
composition of what it runs. A dvc.yaml stage missing from that table, a table stage missing here, or
a stage whose command is not `recloop <name>` is an error, so that `dvc repro`, the flows and the CLI
cannot drift apart. The flows use this to plan (`--target`), to find the metrics and reports they
publish, and, for the fan-out's datasets, to know each stage's folders under that dataset's params.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from components.config import Params
from components.errors import RecloopError
from components.stages import STAGES

DVC_FILE = Path("dvc.yaml")


@dataclass(frozen=True)
class DvcStage:
    """One dvc.yaml stage with its paths filled in from params."""

    name: str
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


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def load_stages(params: Params, dvc_file: Path = DVC_FILE) -> list[DvcStage]:
    """All dvc.yaml stages in file order, paths filled in from `params`; checked against the stage table."""
    if not Path(dvc_file).exists():
        raise RecloopError(f"{dvc_file} is missing: run the flows from the repository root")
    declared = (yaml.safe_load(Path(dvc_file).read_text()) or {}).get("stages") or {}
    tree = params.model_dump(mode="json", by_alias=True)
    missing = [name for name in declared if name not in STAGES]
    extra = [name for name in STAGES if name not in declared]
    if missing or extra:
        raise RecloopError(
            "dvc.yaml and components/stages.py disagree: "
            + "; ".join(filter(None, [
                missing and f"stages missing from components/stages.py STAGES: {', '.join(missing)}",
                extra and f"STAGES without a dvc.yaml stage: {', '.join(extra)}",
            ])))
    stages = []
    for name, spec in declared.items():
        where = f"stage {name}"
        if str(spec.get("cmd", "")).split() != ["recloop", name]:
            raise RecloopError(f"dvc.yaml {where} runs {spec.get('cmd')!r}; every door runs the stage table's "
                               f"`{name}` with params.yaml alone, so the command must be exactly `recloop {name}`")
        outs = _entries(spec.get("outs"), tree, where)
        metrics = [path for path, _ in _entries(spec.get("metrics"), tree, where)]
        plots = [path for path, _ in _entries(spec.get("plots"), tree, where)]
        stages.append(DvcStage(
            name=name,
            deps=tuple(path for path, _ in _entries(spec.get("deps"), tree, where)),
            outs=tuple(path for path, cached in outs if cached),
            reports=tuple([path for path, cached in outs if not cached] + metrics + plots),
            metrics=tuple(metrics),
        ))
    _check_order(stages)
    return stages


def _producers(stages: list[DvcStage], dep: str) -> list[DvcStage]:
    return [s for s in stages if any(_inside(dep, out) or _inside(out, dep) for out in s.outputs)]


def _check_order(stages: list[DvcStage]) -> None:
    position = {s.name: i for i, s in enumerate(stages)}
    for stage in stages:
        for dep in stage.deps:
            for producer in _producers(stages, dep):
                if position[producer.name] >= position[stage.name]:
                    raise RecloopError(f"dvc.yaml lists stage {stage.name} before {producer.name}, which writes "
                                       f"its input {dep}: list stages in the order they run")


def plan(stages: list[DvcStage], target: str | None = None) -> list[DvcStage]:
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
