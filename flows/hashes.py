"""Content hashes of files and folders: what the stage cache keys on and what each stage task returns."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

ABSENT = "absent"
# Bytecode is derived from the sources beside it and differs between interpreters: never part of a hash.
_SKIPPED_DIRS = {"__pycache__"}
_SKIPPED_SUFFIXES = {".pyc"}


def _file_hash(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def content_hash(path: Path | str) -> str:
    """sha256 of a file's bytes; of a folder, of its files' relative paths and hashes; `absent` if missing."""
    path = Path(path)
    if path.is_file():
        return _file_hash(path)
    if not path.is_dir():
        return ABSENT
    files = sorted(
        p for p in path.rglob("*")
        if p.is_file() and p.suffix not in _SKIPPED_SUFFIXES
        and not _SKIPPED_DIRS.intersection(p.relative_to(path).parts)
    )
    listing = "".join(f"{p.relative_to(path).as_posix()}\0{_file_hash(p)}\n" for p in files)
    return hashlib.sha256(listing.encode()).hexdigest()


def content_hashes(paths: list[str] | tuple[str, ...]) -> dict[str, str]:
    return {p: content_hash(p) for p in paths}


def value_hash(value: Any) -> str:
    """sha256 of a JSON-able value (params sections, hash maps), independent of dict order."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()
