"""Where things are, for tests in any tier."""

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent  # the repository
DATA = ROOT / "tests" / "data"  # labelled pairs and other fixtures in files
SCRIPTS = ROOT / "scripts"  # run as scripts, not a package


def load_script(name: str) -> ModuleType:
    """``scripts/<name>.py`` as module ``name`` (registered, so its dataclasses resolve)."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
