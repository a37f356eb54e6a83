"""One dvc.yaml stage run through DVC's Python API, as `dvc repro --single-item <stage>` runs it.

DVC decides whether the stage changed, runs its `recloop <stage>` command, and records the result in
dvc.lock and its cache; so after a flow run `dvc status` is clean, `dvc push` has what was built, and
the flow keeps no record of its own. The API (rather than a `dvc` subprocess per stage) tells exactly
which stages ran, and imports DVC once per flow run instead of once per stage.
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import yaml

from components.errors import RecloopError

LOCK_FILE = Path("dvc.lock")
PARAMS_FILE = Path("params.yaml")
# `recloop` exits with 2 on a user's mistake (bad params, malformed data): running it again cannot help.
USER_ERROR = 2


class StageFailed(RuntimeError):
    """A stage failed in a way that may pass (a crash, a killed process, DVC's lock held by another run)."""


def check_dvc_params(params_path: str, overrides: list[str] | None) -> None:
    """DVC runs every stage with ./params.yaml as it is: refuse a flow run that asks for anything else."""
    if overrides:
        raise RecloopError(f"--set {' '.join(overrides)}: the training pipeline runs through DVC, which reads "
                           "params.yaml alone; edit params.yaml, or try values with `dvc exp run -S key=value`")
    if Path(params_path).resolve() != PARAMS_FILE.resolve():
        raise RecloopError(f"--params {params_path}: the training pipeline runs through DVC, which reads "
                           f"{PARAMS_FILE.resolve()}; run it from the folder of that params file")


def _stage_env() -> dict[str, str]:
    # The stage commands are `recloop <stage>`: the one installed beside this interpreter runs them.
    return {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def reproduce(name: str) -> bool:
    """`dvc repro --single-item <name>` in the working directory's DVC project; True if the stage ran
    (or DVC restored its outputs from its run cache), False if DVC found it unchanged."""
    from dvc.exceptions import DvcException, ReproductionError
    from dvc.lock import LockError
    from dvc.repo import Repo
    from dvc.stage.exceptions import StageCmdFailedError

    try:
        with Repo() as repo:
            return bool(repo.reproduce(name, single_item=True, run_env=_stage_env()))
    except LockError as e:
        raise StageFailed(f"stage {name}: {e}") from None
    except ReproductionError as e:
        cause = e.__cause__
        if isinstance(cause, StageCmdFailedError):
            code = re.search(r"exited with (-?\d+)", str(cause))
            if code and int(code[1]) == USER_ERROR:
                raise RecloopError(f"stage {name}: `recloop {name}` stopped on the error above") from None
            raise StageFailed(f"stage {name}: {cause}") from None
        # Missing inputs, an output claimed twice: DVC's own complaints are the user's to fix.
        raise RecloopError(f"stage {name}: {cause or e}") from None
    except DvcException as e:  # not a DVC project, dvc.yaml unreadable
        raise RecloopError(f"dvc repro {name}: {e}") from None


def recorded_outputs(name: str, lock_file: Path = LOCK_FILE) -> dict[str, str]:
    """The stage's outputs and their hashes as `lock_file` (a pipeline's dvc.lock) records them."""
    lock = yaml.safe_load(lock_file.read_text()) if lock_file.exists() else {}
    entry = ((lock or {}).get("stages") or {}).get(name) or {}
    return {out["path"]: out.get("md5") or out.get("etag") or "" for out in entry.get("outs", [])}
