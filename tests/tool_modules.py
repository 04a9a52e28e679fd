"""Import scripts of ``tools/`` (not a package) as modules, for the tests that drive them in-process."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

TOOLS = str(Path(__file__).resolve().parents[1] / "tools")


def import_tools(*names: str) -> dict[str, ModuleType]:
    """``{name: module}`` of ``tools/<name>.py``; ``tools/`` is on ``sys.path`` only while importing
    (the tools import each other's argument helpers, e.g. ``from demo import ...``)."""
    sys.path.insert(0, TOOLS)
    try:
        return {name: importlib.import_module(name) for name in names}
    finally:
        sys.path.remove(TOOLS)
