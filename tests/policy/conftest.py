import sys
from pathlib import Path

# The continual tests' real MovieLens slice and tiny champion (tests/continual/continual_data.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "continual"))
