"""The registered model is portable: signature, input example, pinned requirements, and it loads and predicts
in a fresh virtualenv that has the packages but not this checkout (MLflow's code paths bring `components`)."""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from components.registry.registry import CHAMPION, promote, using_store
from components.serving.package import package
from components.serving.pyfunc import EXAMPLE_K, REQUIREMENTS, pip_requirements

pytestmark = pytest.mark.slow

REPO = Path(__file__).parents[2]
# Run by the fresh interpreter from a folder outside the repository: `components` must not be
# importable before loading, and must come from the model's own code afterwards.
LOAD_AND_PREDICT = """
import importlib.util, json, sys
before = importlib.util.find_spec("components") is not None
import mlflow.pyfunc
model = mlflow.pyfunc.load_model(sys.argv[1])
out = model.predict(model.input_example)
print(json.dumps({"importable_before": before, "components": sys.modules["components"].__file__,
                  "rows": out.groupby("query").size().tolist(), "strategies": sorted(set(out["strategy"])),
                  "columns": out.columns.tolist()}))
"""


@pytest.fixture(scope="module")
def cfg(registry_cfg):
    return registry_cfg.model_copy(update={"model_name": "recloop-portable-test"})


@pytest.fixture(scope="module")
def champion(cfg, tiny_paths) -> int:
    version = package(cfg, tiny_paths).version
    promote(cfg, version)
    return version


@pytest.fixture(scope="module")
def fresh_python(tmp_path_factory) -> Path:
    """A virtualenv without recloop: its only extra path is this environment's site-packages, as a plain
    line, so the editable install's finder (a `.pth` that runs code) is not run there."""
    venv = tmp_path_factory.mktemp("fresh") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "packages-only.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def test_the_champion_loads_and_predicts_in_a_venv_without_this_checkout(cfg, champion, fresh_python, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"MLFLOW_TRACKING_URI": cfg.uri,
                                                                       "MLFLOW_REGISTRY_URI": cfg.uri}
    done = subprocess.run([str(fresh_python), "-c", LOAD_AND_PREDICT, f"models:/{cfg.model_name}@{CHAMPION}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["importable_before"] is False
    assert not Path(result["components"]).is_relative_to(REPO)  # the model's copy, not this checkout
    assert result["rows"] == [EXAMPLE_K, EXAMPLE_K] and result["strategies"] == ["history"]
    assert result["columns"] == ["query", "rank", "item_id", "title", "score", "like_prob", "strategy", "propensity",
                                 "request_id"]


def test_the_model_carries_a_signature_an_input_example_and_pinned_requirements(cfg, champion, tmp_path):
    import mlflow

    with using_store(cfg):
        local = Path(mlflow.artifacts.download_artifacts(f"models:/{cfg.model_name}@{CHAMPION}",
                                                         dst_path=str(tmp_path)))
    mlmodel = (local / "MLmodel").read_text()
    assert "signature:" in mlmodel and "saved_input_example_info" in mlmodel
    assert (local / "code" / "components" / "serving" / "pyfunc.py").is_file()
    requirements = (local / "requirements.txt").read_text().split()
    assert "recloop" not in " ".join(requirements)
    assert set(pip_requirements()) <= set(requirements)


def test_requirements_are_the_pyproject_pins_of_every_package_the_model_code_imports():
    declared = {Requirement(r).name.lower(): str(Requirement(r).specifier)
                for r in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]}
    pinned = {Requirement(r).name.lower(): str(Requirement(r).specifier) for r in pip_requirements()}
    assert pinned == {name: declared[name] for name in pinned}
    required = {name.lower() for name in REQUIREMENTS}
    unpinned = {module for module in _third_party_imports("components.serving.mlflow_model")
                if not {d.lower() for d in _distributions(module)} & required}
    # Imported only inside the BentoML service's optional features, which the MLflow model never turns on
    # (it builds no ANN index and opens no feedback store): the portable model stays small without them.
    assert unpinned <= {"faiss", "psycopg"}
    assert not _module_level_imports(unpinned)


def _module_level_imports(modules: set[str]) -> set[str]:
    """Which of `modules` a serving file imports at import time (not in a function, not for type checking)."""
    found = set()
    for file in (REPO / "components" / "serving").glob("*.py"):
        for node in ast.parse(file.read_text()).body:
            if isinstance(node, ast.Import):
                found.update(a.name.split(".")[0] for a in node.names if a.name.split(".")[0] in modules)
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in modules:
                found.add(node.module.split(".")[0])
    return found


def _third_party_imports(module: str) -> set[str]:
    """Top-level names of the non-project modules imported by the project files `module` loads."""
    loaded = subprocess.run([sys.executable, "-c", f"import sys, {module}; print('\\n'.join(sys.modules))"],
                            check=True, capture_output=True, text=True, cwd=REPO).stdout.split()
    names: set[str] = set()
    for name in (m for m in loaded if m == "components" or m.startswith("components.")):
        file = REPO.joinpath(*name.split("."))
        file = file / "__init__.py" if file.is_dir() else file.with_suffix(".py")
        if not file.is_file():
            continue  # a namespace package
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in ("__future__", "components")}


def _distributions(module: str) -> list[str]:
    from importlib.metadata import packages_distributions

    return packages_distributions().get(module, [module])
