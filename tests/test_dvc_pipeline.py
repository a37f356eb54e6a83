"""dvc.yaml as the record of pipeline state: complete code deps and params, and metrics that git holds."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from components.stages import STAGES

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "components"
# Paths reach DVC through `${paths.*}` in deps and outs, not through a stage's `params`.
TEMPLATED_SECTIONS = {"paths"}

sys.path.insert(0, str(Path(__file__).parent / "flows"))
from checkouts import SLICE_A, SLICE_B, copy_checkout, set_params, tool_env  # noqa: E402


def _dvc_stages() -> dict[str, dict]:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def _module_file(module: str, root: Path) -> Path | None:
    """The file that runs when `module` is imported: a package's __init__.py or the module's .py."""
    base = root.joinpath(*module.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None  # a namespace package, or a name inside a module (`from components.config import Params`)


def _module_name(file: Path, root: Path) -> str:
    return ".".join(file.relative_to(root).with_suffix("").parts).removesuffix(".__init__")


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imported(file: Path, root: Path) -> set[str]:
    """Every project module `file` may import, at module level or inside functions (`if TYPE_CHECKING` aside).

    `from a import b` yields both `a` and `a.b`: b may be a submodule; names that are not resolve to no file.
    """
    module = _module_name(file, root)
    package = module if file.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(file.read_text(), filename=str(file)))
    return {n for n in names if n == PACKAGE or n.startswith(PACKAGE + ".")}


def import_closure(module: str, root: Path = REPO) -> set[str]:
    """Repository-relative files of every project module that importing `module` can run, parents included."""
    files: set[Path] = set()
    todo = [module]
    while todo:
        parts = todo.pop().split(".")
        # Importing a.b.c runs a/__init__.py and a/b/__init__.py first.
        for i in range(1, len(parts) + 1):
            file = _module_file(".".join(parts[:i]), root)
            if file is not None and file not in files:
                files.add(file)
                todo.extend(_imported(file, root))
    return {str(f.relative_to(root)) for f in files}


def _covered(file: str, deps: list[str]) -> bool:
    return any(file == dep or file.startswith(dep.rstrip("/") + "/") for dep in deps)


def _code_deps(spec: dict) -> list[str]:
    return [d for d in spec.get("deps", []) if isinstance(d, str) and (d == PACKAGE or d.startswith(PACKAGE + "/"))]


def test_every_dvc_stage_is_in_the_stage_table():
    assert list(_dvc_stages()) == list(STAGES)


@pytest.mark.parametrize("name", list(STAGES))
def test_stage_code_deps_cover_the_import_closure_of_its_function(name):
    spec = _dvc_stages()[name]
    deps = _code_deps(spec)
    # An empty __init__.py runs nothing (and DVC warns about empty deps).
    needed = {f for f in import_closure(STAGES[name].library.__module__) if (REPO / f).read_text().strip()}
    needed.add("components/stages.py")
    missing = sorted(f for f in needed if not _covered(f, deps))
    assert not missing, (f"dvc.yaml stage {name} runs code it does not list in deps, so a change there "
                         f"re-runs nothing: add {', '.join(missing)} (or a folder above)")


@pytest.mark.parametrize("name", list(STAGES))
def test_stage_code_deps_exist(name):
    gone = [d for d in _code_deps(_dvc_stages()[name]) if not (REPO / d).exists()]
    assert not gone, f"dvc.yaml stage {name} lists code deps that are not in the repository: {', '.join(gone)}"


def unlisted_sections(spec: dict, sections) -> list[str]:
    """The params sections a stage reads that its dvc.yaml entry `spec` does not list (templated ones aside)."""
    listed = [p for p in spec.get("params", []) if isinstance(p, str)]
    return [s for s in sections if s not in TEMPLATED_SECTIONS
            and not any(s == key or s.startswith(key + ".") for key in listed)]


@pytest.mark.parametrize("name", list(STAGES))
def test_stage_params_cover_the_sections_it_reads(name):
    missing = unlisted_sections(_dvc_stages()[name], STAGES[name].sections)
    assert not missing, f"dvc.yaml stage {name} reads params it does not list: {', '.join(missing)}"


def test_import_closure_follows_parents_submodules_relative_and_local_imports(tmp_path):
    files = {
        "components/__init__.py": "",
        "components/stage.py": "from components.data import tables\nfrom components.config import Params\n",
        "components/config.py": "class Params: ...\n",
        "components/data/tables.py": "def read():\n    from .format import columns\n",
        "components/data/format.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                     "    from components import serving\n",
        "components/serving.py": "",
        "components/unused.py": "",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert import_closure("components.stage", tmp_path) == {
        "components/__init__.py", "components/stage.py", "components/config.py", "components/data/tables.py",
        "components/data/format.py"}


def _fill(text: str, params: dict) -> str:
    """dvc.yaml's `${a.b}` templating, from params.yaml."""
    while "${" in text:
        start = text.index("${")
        end = text.index("}", start)
        value: object = params
        for part in text[start + 2:end].strip().split("."):
            value = value[part]  # type: ignore[index]
        text = text[:start] + str(value) + text[end + 1:]
    return text


def _outputs(kind: str) -> list[tuple[str, bool]]:
    """(path, cached?) of every `outs`/`metrics`/`plots` entry of every stage, templating filled in."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    found = []
    for spec in _dvc_stages().values():
        for entry in spec.get(kind, []):
            path, opts = next(iter(entry.items())) if isinstance(entry, dict) else (entry, {})
            found.append((_fill(path, params), (opts or {}).get("cache", True)))
    return found


def _git_ignored(paths: list[str]) -> set[str]:
    """The paths git ignores, as files or as folders (outputs may not exist yet, so ask for a file inside too)."""
    asked = [p for path in paths for p in (path, f"{path}/x")]
    # --no-index: judge by the ignore rules, not by whether a file happens to be committed already.
    done = subprocess.run(["git", "check-ignore", "--no-index", "--stdin"], cwd=REPO, input="\n".join(asked),
                          capture_output=True, text=True)
    assert done.returncode in (0, 1), done.stderr
    ignored = set(done.stdout.split())
    return {path for path in paths if path in ignored or f"{path}/x" in ignored}


def _top_level_plot_files() -> list[str]:
    """The files the top-level `plots` of dvc.yaml draw."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    plots = yaml.safe_load((REPO / "dvc.yaml").read_text()).get("plots", [])
    return sorted({_fill(f, params) for plot in plots for spec in plot.values() for f in (spec.get("y") or {})})


def test_metrics_and_plots_are_in_git_and_cached_outputs_are_not():
    charts = _outputs("metrics") + _outputs("plots")
    assert all(not cached for _, cached in charts), "metrics and plots stay out of the DVC cache, like DVC's examples"
    in_git = [path for path, _ in charts] + _top_level_plot_files()
    ignored = _git_ignored(in_git)
    assert not ignored, f".gitignore hides {sorted(ignored)}: no commit or experiment would hold them"
    cached = [path for path, cached in _outputs("outs") if cached]
    assert _git_ignored(cached) == set(cached), "data outputs belong in the DVC cache, not in git"


def _run(args: list[str], cwd: Path) -> str:
    done = subprocess.run(args, cwd=cwd, env=tool_env(), capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(args)}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    return done.stdout


def _commit(repo: Path, message: str) -> None:
    _run(["git", "add", "-A"], repo)
    _run(["git", "-c", "user.name=recloop", "-c", "user.email=recloop@example.com", "commit", "-q", "-m", message],
         repo)


def _ingest_metrics(experiment_row: dict) -> dict:
    return experiment_row["data"]["metrics"]["reports/ingest.json"]["data"]


@pytest.mark.slow
def test_experiments_and_commits_carry_metrics_that_dvc_compares(tmp_path):
    repo = copy_checkout(tmp_path / "repo")
    set_params(repo, {"ingest.path": SLICE_A})
    _run(["dvc", "repro", "ingest"], repo)
    _commit(repo, "ingest slice A")
    _run(["git", "branch", "-M", "main"], repo)
    assert _run(["git", "ls-files", "reports/ingest.json"], repo).strip() == "reports/ingest.json"

    _run(["dvc", "exp", "run", "-S", f"ingest.path={SLICE_B}", "ingest"], repo)
    baseline, = (row for row in json.loads(_run(["dvc", "exp", "show", "--json"], repo)) if row["name"] == "main")
    experiment, = (run for exp in baseline["experiments"] for run in exp["revs"])
    assert _ingest_metrics(baseline)["interactions"] == 1259
    assert _ingest_metrics(experiment)["interactions"] == 408
    diff = json.loads(_run(["dvc", "metrics", "diff", "main", "--json"], repo))["reports/ingest.json"]
    assert diff["interactions"] == {"old": 1259, "new": 408, "diff": 408 - 1259}

    _commit(repo, "ingest slice B")
    diff = json.loads(_run(["dvc", "metrics", "diff", "HEAD~1", "HEAD", "--json"], repo))["reports/ingest.json"]
    for key in ("interactions", "users", "items"):
        old, new = diff[key]["old"], diff[key]["new"]
        assert isinstance(old, int) and isinstance(new, int) and old != new, (key, diff[key])
