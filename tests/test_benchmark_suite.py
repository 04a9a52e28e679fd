"""tools/benchmark_suite.py on the CPU at tiny sizes: every column, each precision, the files."""
from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import ovrsis  # noqa: F401  (compat shims before detectron2)
from tool_modules import import_tools

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "MODEL.CLIP.ARCH", "ovrsis-tiny-vit", "MODEL.CLIP.IMAGE_SIZE", "64", "MODEL.CLIP.GUIDANCE_LAYERS", "[1, 2]",
    "MODEL.AGGREGATOR.WINDOW_SIZE", "4", "MODEL.AGGREGATOR.HIDDEN_DIM", "32",
    "MODEL.AGGREGATOR.APPEARANCE_GUIDANCE_PROJ_DIM", "32", "MODEL.AGGREGATOR.TEXT_GUIDANCE_PROJ_DIM", "32",
    "MODEL.AGGREGATOR.NUM_HEADS", "2", "MODEL.DECODER.DIMS", "[32, 16]", "MODEL.DECODER.GUIDANCE_DIMS", "[32, 16]",
    "MODEL.DECODER.GUIDANCE_PROJ_DIMS", "[16, 8]", "INPUT.CROP.SIZE", "(64, 64)",
    "TEST.SLIDE.WINDOW", "64", "TEST.SLIDE.OVERLAP", "0.5", "TEST.SLIDE.CANVAS", "[96, 96]",
]


@pytest.fixture(scope="module")
def suite():
    return import_tools("benchmark_suite")["benchmark_suite"]


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("OVRSIS_CACHE", str(tmp_path / "cache"))


def test_default_configs_one_per_method(suite):
    configs = suite.default_configs()
    assert "configs/catseg/vitb16_384.yaml" in configs and "configs/ovrs/vitb16_384.yaml" in configs
    folders = [Path(c).parent.name for c in configs]
    assert len(folders) == len(set(folders)) and not {"sweeps", "real_imagery"} & set(folders)
    assert all((REPO / c).is_file() for c in configs)


def test_precision_sets_the_model_and_restores_the_flags(suite):
    model = SimpleNamespace(precision="fp32")
    before = torch.backends.cuda.matmul.allow_tf32
    with suite.precision("tf32", model):
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        assert model.precision == "fp32"
    assert torch.backends.cuda.matmul.allow_tf32 == before
    for name in ("bf16", "fp16"):
        with suite.precision(name, model):
            assert not torch.backends.cuda.matmul.allow_tf32 and model.precision == name
        assert model.precision == "fp32"
    with pytest.raises(ValueError, match="precision must be one of"):
        with suite.precision("fp8", model):
            pass


def test_suite_rows_and_files(suite, tmp_path):
    out = tmp_path / "suite"
    rows = suite.main(["--device", "cpu", "--configs", "configs/ovrs/vitb16_384.yaml", "--precisions", "fp32", "bf16", "fp16",
                       "--input-size", "48x80", "--num-classes", "3", "--train-batch", "2", "--warmup", "0",
                       "--iters", "1", "--output-dir", str(out), *TINY])
    assert [r["precision"] for r in rows] == ["fp32", "bf16", "fp16"]
    fp32, bf16, fp16 = rows
    assert fp32["max_abs_diff_vs_fp32"] == 0.0  # the same fixed image, same weights, deterministic
    assert 0.0 < bf16["max_abs_diff_vs_fp32"] < 0.1  # bf16 rounding, not a different model
    assert 0.0 < fp16["max_abs_diff_vs_fp32"] < bf16["max_abs_diff_vs_fp32"]  # 3 more mantissa bits
    for r in rows:
        assert r["params_M"] > r["trainable_M"] > 0 and r["eval_gflops"] > 0
        assert r["fps_whole"] > 0 and r["fps_slide"] > 0 and r["train_step_ms"] > 0 and r["train_peak_mem_mib"] > 0
        assert r["train_batch"] == 2 and r["infer_peak_mem_mib"] > 0
        # the dense last CLIP block never uses its (trained) q weights: DDP needs DIST.FIND_UNUSED_PARAMETERS
        assert r["unused_params"] == 1
        assert r["ddp_processes"] == 0 and math.isnan(r["ddp_step_ms"])  # one process on the CPU by default
    table = (out / "table.md").read_text()
    assert table.count("| configs/ovrs/vitb16_384.yaml |") == 3 and "max |Δ| vs fp32" in table
    with open(out / "table.csv") as f:
        csv_rows = list(csv.DictReader(f))
    assert [r["precision"] for r in csv_rows] == ["fp32", "bf16", "fp16"]
    assert tuple(csv_rows[0]) == suite.COLUMNS
    assert math.isclose(float(csv_rows[1]["fps_whole"]), bf16["fps_whole"])
    assert json.loads((out / "table.json").read_text())["rows"][0]["config"] == "configs/ovrs/vitb16_384.yaml"


def test_suite_rejects_bad_arguments(suite):
    with pytest.raises(SystemExit):
        suite.main(["--device", "cpu", "--iters", "0"])
    with pytest.raises(SystemExit):
        suite.main(["--device", "cpu", "--precisions", "fp8"])


def test_ddp_training_step_in_two_gloo_processes(tmp_path):
    """``--ddp 2`` runs the trainer's DDP-wrapped step in two launched processes (gloo on the
    CPU, NCCL on GPUs) and reports its time and the efficiency against one process."""
    out = tmp_path / "ddp"
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "benchmark_suite.py"), "--device", "cpu", "--ddp", "2",
         "--configs", "configs/catseg/vitb16_384.yaml", "--precisions", "fp32", "bf16", "--no-flops",
         "--input-size", "48x64", "--num-classes", "3", "--train-batch", "1", "--warmup", "0", "--iters", "2",
         "--output-dir", str(out), *TINY],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env=dict(os.environ, OVRSIS_CACHE=str(tmp_path / "cache")))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((out / "table.json").read_text())["rows"]
    assert [r["precision"] for r in rows] == ["fp32", "bf16"]
    for r in rows:
        assert r["ddp_processes"] == 2 and r["ddp_step_ms"] > 0
        assert math.isclose(r["ddp_efficiency"], r["train_step_ms"] / r["ddp_step_ms"])
    assert "DDP: 2 processes" in (out / "table.md").read_text()
