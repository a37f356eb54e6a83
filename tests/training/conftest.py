import sys
from pathlib import Path

# The data fixtures live beside the model tests; both folders train on the same session-scoped model.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))

from recloop_data import item_text, movielens, trained  # noqa: F401
