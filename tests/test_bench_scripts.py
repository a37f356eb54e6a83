"""The benchmark scripts are run by hand, not by the suite: this at least keeps each one compiling and
its `--help` answering, so a refactor elsewhere cannot leave one broken until someone needs its numbers."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
SCRIPTS = sorted(p for p in BENCH.glob("*.py") if p.name != "provenance.py")


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_each_benchmark_script_compiles(script: Path) -> None:
    compile(script.read_text(), str(script), "exec")


@pytest.mark.parametrize("script", ["step.py", "softmax.py"])
def test_the_step_benchmarks_answer_help(script: str) -> None:
    # Imports its helpers and parses its options without running a step.
    done = subprocess.run([sys.executable, str(BENCH / script), "--help"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--shapes" in done.stdout
