"""Writing outputs so that a reader (or a crashed run) never sees them half-written.

Every file or folder the pipeline writes goes through one of these:
- `replaced(path)` for any writer that takes a path (pandas, pyarrow, numpy, torch.save, a chart library);
- `write_text` / `write_bytes` / `write_json` for content already in memory;
- `staged_dir(target)` for a folder written whole;
- `staged_files(folder)` for several files that should land in an existing folder together.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _temp_name(path: Path) -> Path:
    """A hidden, unique name beside `path` that keeps its suffix (np.save and np.savez append theirs otherwise)."""
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp{path.suffix}")


@contextmanager
def replaced(path: Path) -> Iterator[Path]:
    """A temporary path beside `path`; write to it inside the block, and on success it replaces `path`.

    On error the temporary file is removed and `path` keeps its old content:
        with replaced(out / "items.parquet") as tmp:
            df.to_parquet(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: Path, data: bytes) -> None:
    with replaced(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: Path, text: str) -> None:
    with replaced(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, default=str) + "\n")


@contextmanager
def staged_dir(target: Path) -> Iterator[Path]:
    """A temporary folder beside `target`; on success it replaces `target` whole, on error it vanishes."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the output is an ordinary folder
    try:
        yield tmp
        if target.exists():
            old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-old-"))
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def staged_files(folder: Path) -> Iterator[Path]:
    """A temporary folder inside `folder`; on success each file written there replaces its namesake in `folder`.

    Files of `folder` that the block did not write are left alone; on error nothing in `folder` changes.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder, prefix=".staged-"))
    try:
        yield staging
        for written in sorted(staging.iterdir()):
            os.replace(written, folder / written.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
