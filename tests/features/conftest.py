import sys
from pathlib import Path

# The MovieLens slice the model tests train on lives beside them (tests/models/recloop_data.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))

from recloop_data import movielens  # noqa: E402,F401
