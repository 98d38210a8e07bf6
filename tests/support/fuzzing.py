"""Access to the fuzz targets in ``fuzz/`` (not a package: they run as scripts under atheris).

The tests import the same ``check`` functions the fuzzers run, so the regular suite and the
fuzzing runs enforce one contract.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

#: The ``fuzz/`` folder at the top of the repository.
FUZZ_DIR = Path(__file__).resolve().parents[2] / "fuzz"


def load(name: str) -> ModuleType:
    """Import ``fuzz/<name>.py`` (``"fuzz_ogg"``, ``"_fuzzlib"``, ``"make_seeds"``…)."""
    if str(FUZZ_DIR) not in sys.path:
        sys.path.insert(0, str(FUZZ_DIR))
    return importlib.import_module(name)
