"""Where things are, for tests in any tier."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the repository
DATA = ROOT / "tests" / "data"  # labelled pairs and other fixtures in files
