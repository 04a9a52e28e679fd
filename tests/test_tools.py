"""tools/model_stats.py and tools/benchmark.py: parameter accounting, FLOP counting, CLI and report."""
from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Iterator, Tuple

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ovrsis  # noqa: F401  (compat shims before detectron2)

REPO = Path(__file__).resolve().parents[1]
TOOLS = REPO / "tools"
TINY = [
    "MODEL.DEVICE", "cpu", "MODEL.CLIP.ARCH", "ovrsis-tiny-vit", "MODEL.CLIP.IMAGE_SIZE", "64",
    "MODEL.CLIP.GUIDANCE_LAYERS", "[1, 2]", "MODEL.AGGREGATOR.WINDOW_SIZE", "4", "MODEL.AGGREGATOR.HIDDEN_DIM", "32",
    "MODEL.AGGREGATOR.APPEARANCE_GUIDANCE_PROJ_DIM", "32", "MODEL.AGGREGATOR.TEXT_GUIDANCE_PROJ_DIM", "32",
    "MODEL.AGGREGATOR.NUM_HEADS", "2", "MODEL.DECODER.DIMS", "[32, 16]", "MODEL.DECODER.GUIDANCE_DIMS", "[32, 16]",
    "MODEL.DECODER.GUIDANCE_PROJ_DIMS", "[16, 8]",
]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OVRSIS_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def tools() -> Iterator[Tuple[ModuleType, ModuleType, ModuleType]]:
    """The tool scripts as modules (they import their ``_common`` sibling)."""
    sys.path.insert(0, str(TOOLS))
    try:
        yield tuple(importlib.import_module(name) for name in ("_common", "model_stats", "benchmark"))
    finally:
        sys.path.remove(str(TOOLS))


@pytest.fixture(scope="module")
def tiny_model(tools) -> nn.Module:
    common = tools[0]
    return common.build(common.load_cfg("", TINY))


def test_parameter_stats_partition_the_model(tools, tiny_model):
    stats = tools[1].parameter_stats(tiny_model, depth=2)
    params = list(tiny_model.parameters())
    assert stats["total"] == sum(p.numel() for p in params)
    assert stats["trainable"] == sum(p.numel() for p in params if p.requires_grad)
    assert 0 < stats["trainable"] <= stats["total"]
    assert stats["frozen"] == stats["total"] - stats["trainable"]
    rows = stats["modules"]
    for parts in ([r for r in rows if r["level"] == 1], [r for r in rows if r["leaf"]]):
        assert sum(r["total"] for r in parts) == stats["total"]
        assert sum(r["trainable"] for r in parts) == stats["trainable"]
    for r in rows:
        assert 0 <= r["trainable"] <= r["total"] and r["frozen"] == r["total"] - r["trainable"]
        assert r["level"] <= 2
    assert [r["name"] for r in rows if r["level"] == 1] == ["clip", "tap_pyramid", "aggregator", "decoder"]
    by_name = {r["name"]: r for r in rows}
    assert by_name["clip.logit_scale"]["type"] == "Parameter" and by_name["clip.logit_scale"]["leaf"]
    assert by_name["clip.visual"]["type"] == "VisionTransformer"


def test_parameter_stats_counts_shared_parameters_once(tools):
    shared = nn.Linear(4, 4)
    stats = tools[1].parameter_stats(nn.Sequential(shared, nn.ReLU(), shared), depth=1)
    assert stats["total"] == 20
    with pytest.raises(ValueError):
        tools[1].parameter_stats(shared, depth=0)


def test_sdpa_flop_handle(tools):
    class Attention(nn.Module):
        def forward(self, q, k, v):
            return F.scaled_dot_product_attention(q, k, v)

    q, k, v = torch.rand(1, 2, 5, 4), torch.rand(1, 2, 7, 4), torch.rand(1, 2, 7, 3)
    total, _, skipped = tools[1]._count(Attention(), (q, k, v))
    assert total == 2 * 5 * 7 * (4 + 3)  # Q·Kᵀ then attention·V, one multiply-add each
    assert "aten::scaled_dot_product_attention" not in skipped


def test_flop_stats_tiny(tools, tiny_model):
    names = tools[0].dummy_vocabulary(3)
    tiny_model.inference_mode = "slide"
    flops = tools[1].flop_stats(tiny_model, (64, 64), names)
    assert flops["per_image_gflops"] > 0 and flops["text_per_vocabulary_gflops"] > 0
    assert sum(flops["per_image_by_part_gflops"].values()) == pytest.approx(flops["per_image_gflops"])
    assert all(v >= 0 for v in flops["per_image_by_part_gflops"].values())
    assert flops["protocol"]["num_classes"] == 3 and flops["protocol"]["mode"] == "whole"
    assert tiny_model.clip.cache_text and tiny_model.inference_mode == "slide"  # both restored


def test_model_stats_cli_default_config(tmp_path):
    out = tmp_path / "stats.json"
    run = subprocess.run([sys.executable, str(TOOLS / "model_stats.py"), "--depth", "1", "--json", str(out)],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "154,289,378" in run.stdout and "25,115,873" in run.stdout
    stats = json.loads(out.read_text())["parameters"]
    assert (stats["total"], stats["trainable"]) == (154_289_378, 25_115_873)


def test_benchmark_report(tools, tmp_path):
    out = tmp_path / "bench.json"
    tools[2].main(["--iters", "2", "--warmup", "1", "--train", "--batch", "1", "--num-classes", "3",
                   "--input-size", "64x96", "--json", str(out), *TINY, "INPUT.CROP.SIZE", "(64, 64)",
                   "TEST.SLIDE.WINDOW", "64", "TEST.SLIDE.OVERLAP", "0.5", "TEST.SLIDE.CANVAS", "[96, 96]"])
    report = json.loads(out.read_text())
    for key in ("device", "threads", "torch", "config_file", "overrides", "input_hw", "num_classes", "precision"):
        assert key in report
    assert report["input_hw"] == [64, 96] and report["num_classes"] == 3
    assert set(report["results"]) == {"whole", "slide", "train"}
    for result in report["results"].values():
        assert result["iters"] == 2 and result["warmup"] == 1
        assert 0 < result["median_ms"] <= result["p90_ms"]
        assert result["mean_ms"] > 0 and result["first_call_ms"] > 0
        assert result["memory"]["peak_mib"] > 0 and result["memory"]["method"]
    assert report["results"]["slide"]["layout"]["clip_crops_per_image"] == 5  # 2×2 tiles + global view
    assert report["results"]["train"]["batch"] == 1 and report["results"]["train"]["images_per_s"] > 0
