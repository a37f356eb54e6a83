"""Which code produced a result: the commit, whether the tree differed from it, and a hash of how.

Every bench/*.py result JSON carries these keys, so a number names the code that ran it: a clean
tree is exactly its commit; a dirty one is its commit plus the changes whose hash is recorded (tracked
changes from `git diff HEAD` and the contents of untracked, not ignored, files).
"""
from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _git(*args: str) -> bytes:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, check=True).stdout


def provenance() -> dict:
    """{git_commit, git_dirty, git_diff_sha256 (null when clean), git_changed (paths that differ)}."""
    try:
        commit = _git("rev-parse", "HEAD").decode().strip()
        diff = _git("diff", "HEAD", "--binary")
        untracked = sorted(_git("ls-files", "--others", "--exclude-standard", "-z").decode().split("\0"))
        changed = _git("diff", "HEAD", "--name-only").decode().split()
    except (OSError, subprocess.CalledProcessError):
        # A copy of the tree without git (a lent GPU machine): what `bench/recipes.py pack` recorded.
        packed = REPO / ".device" / "provenance.json"
        if packed.exists():
            return json.loads(packed.read_text())
        return {"git_commit": "unknown", "git_dirty": None, "git_diff_sha256": None, "git_changed": []}
    untracked = [p for p in untracked if p]
    digest = hashlib.sha256(diff)
    for path in untracked:
        digest.update(b"\0untracked\0" + path.encode() + b"\0")
        file = REPO / path
        digest.update(file.read_bytes() if file.is_file() else b"")
    dirty = bool(diff or untracked)
    return {"git_commit": commit, "git_dirty": dirty, "git_diff_sha256": digest.hexdigest() if dirty else None,
            "git_changed": sorted(changed + untracked)}
