"""CPU process defaults (ovrsis/runtime.py): set before torch loads, in every entry point."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from ovrsis.runtime import CPU_DEFAULTS, apply_cpu_defaults

REPO = Path(__file__).resolve().parents[1]
ENTRY_POINTS = sorted(str(p.relative_to(REPO)) for p in [REPO / "train_net.py", *(REPO / "tools").glob("*.py"),
                                                       *(REPO / "eval_scripts").glob("*.py")])
LOADS_OPENMP = ("torch", "torchvision", "detectron2", "open_clip", "fvcore", "timm")
SETS_DEFAULTS = ("ovrsis", "_common")  # _common imports ovrsis first


def test_defaults_respect_the_user_and_the_opt_out():
    env = {}
    assert apply_cpu_defaults(env) == CPU_DEFAULTS and env == {"OMP_WAIT_POLICY": "PASSIVE"}
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert apply_cpu_defaults(env) == {} and env == {"OMP_WAIT_POLICY": "ACTIVE"}
    env = {"OVRSIS_CPU_DEFAULTS": "0"}
    assert apply_cpu_defaults(env) == {} and "OMP_WAIT_POLICY" not in env


def test_importing_ovrsis_sets_the_environment_before_torch_loads():
    code = ("import os, sys; import ovrsis; assert 'torch' not in sys.modules; "
            "print(os.environ.get('OMP_WAIT_POLICY'))")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "PASSIVE"


def _first_import(tree: ast.Module, prefixes) -> float:
    """Line of the first top-level import of a module starting with one of ``prefixes`` (inf if none)."""
    for node in tree.body:
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
        if any(n == p or n.startswith(p + ".") for n in names for p in prefixes):
            return node.lineno
    return float("inf")


@pytest.mark.parametrize("path", ENTRY_POINTS)
def test_entry_point_imports_ovrsis_before_torch(path):
    tree = ast.parse((REPO / path).read_text())
    first_torch = _first_import(tree, LOADS_OPENMP)
    if first_torch == float("inf"):
        return  # imports torch only through ovrsis modules (or not at all)
    assert _first_import(tree, SETS_DEFAULTS) < first_torch, (
        f"{path}: import ovrsis before torch/detectron2 so OpenMP starts with ovrsis' CPU defaults")
