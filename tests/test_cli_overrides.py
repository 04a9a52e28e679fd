"""``KEY VALUE`` config overrides may precede options on every command line that takes them
(``run_benchmark.py --suite s MODEL.DEVICE cpu --output out``): one splitter, ovrsis.engine.cli."""
from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import ovrsis  # noqa: F401  (compat shims before detectron2)
from ovrsis.engine.cli import is_config_key, split_overrides

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = str(REPO / "configs" / "quickstart.yaml")
# Every script that takes trailing KEY VALUE overrides.
ENTRY_POINTS = ["train_net.py", "eval_scripts/run_benchmark.py", "eval_scripts/segearth_tables.py",
                "datasets/check_dataset.py", "tools/benchmark.py", "tools/benchmark_suite.py", "tools/model_stats.py",
                "tools/train_simfeatup.py", "tools/demo.py", "tools/web_demo.py", "tools/visualize_model.py",
                "tools/browse_dataset.py"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Tiny model only (see conftest.py)."""


def _script(path: str):
    sys.path.insert(0, str(REPO / "tools"))
    try:
        spec = importlib.util.spec_from_file_location(Path(path).stem + "_cli_test", REPO / path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(REPO / "tools"))


def test_split_overrides():
    argv = ["img.tif", "--classes", "water", "Road", "MODEL.DEVICE", "cpu", "--output", "out", "SEED", "3",
            "--native-resolution", "TEST.TILED.TILE", "256"]
    assert split_overrides(argv) == (["img.tif", "--classes", "water", "Road", "--output", "out", "--native-resolution"],
                                     ["MODEL.DEVICE", "cpu", "SEED", "3", "TEST.TILED.TILE", "256"])
    assert is_config_key("OUTPUT_DIR") and is_config_key("DATASETS.REGISTER.my_set".upper())
    assert not any(is_config_key(t) for t in ("--output", "water", "P-B", "WATER", "v1-dlrsd"))


@pytest.mark.parametrize("path", ENTRY_POINTS)
def test_every_override_taking_script_uses_the_one_splitter(path):
    """No script keeps its own REMAINDER parse or key regex: they all go through ovrsis.engine.cli."""
    text = (REPO / path).read_text()
    assert re.search(r"\b(parse_args_with_overrides|split_overrides)\(", text), path
    assert "parse_args(argv[:cut])" not in text and "re.fullmatch(r\"[A-Z]" not in text
    if "default_argument_parser" in text or "nargs=argparse.REMAINDER" in text or "add_common_args(" in text:
        assert "parse_args_with_overrides(" in text, path


def test_run_benchmark_takes_options_after_overrides(capsys):
    from ovrsis.engine.cli import parse_args_with_overrides

    script = _script("eval_scripts/run_benchmark.py")
    script.run(["MODEL.DEVICE", "cpu", "--list"])  # --list after a pair: the catalogue, not a bad key
    assert "Datasets:" in capsys.readouterr().out
    parsed = parse_args_with_overrides(script.build_parser(), ["--suite", "synthetic", "MODEL.DEVICE", "cpu",
                                                               "--output", "out", "SEED", "1"])
    assert parsed.output == "out" and parsed.suite == "synthetic" and parsed.opts == ["MODEL.DEVICE", "cpu", "SEED", "1"]


def test_model_stats_writes_json_named_after_overrides(tmp_path):
    out = tmp_path / "stats.json"
    report = _script("tools/model_stats.py").main(
        ["--config-file", QUICKSTART, "MODEL.DEVICE", "cpu", "--json", str(out), "--num-classes", "3"])
    assert report["overrides"] == ["MODEL.DEVICE", "cpu"] and json.loads(out.read_text())["overrides"] == ["MODEL.DEVICE", "cpu"]


def test_demo_takes_output_after_overrides(tmp_path):
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.zeros((16, 16, 3), np.uint8))
    out = tmp_path / "demo"
    assert _script("tools/demo.py").main([str(image), "--config-file", QUICKSTART, "--classes", "water", "tree",
                                          "MODEL.DEVICE", "cpu", "--output", str(out)]) == 0
    assert (out / "a_overlay.png").is_file()
