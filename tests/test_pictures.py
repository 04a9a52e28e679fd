"""Every picture reads on its own: a label map has a legend, a score map a colour bar (demo mask and
heat-maps, visualize_model, browse_dataset, the web demo, confusion matrices); class colours fit the
class names (water blue, vegetation green) and never repeat."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

import ovrsis
from ovrsis import visualization as vis
from tool_modules import import_tools

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = str(REPO / "configs" / "quickstart.yaml")


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Tiny model only (see conftest.py)."""


@pytest.fixture(scope="module")
def tools():
    return import_tools("demo", "visualize_model", "web_demo")


def _has_colorbar(fig) -> bool:
    return any(ax.get_label() == "<colorbar>" for ax in fig.axes)


def _label_picture_ok(fig, names) -> bool:
    texts = {t.get_text() for legend in fig.legends for t in legend.get_texts()}
    return all(any(vis.display_name(n) in t for t in texts) for n in names)


def test_class_colours_fit_names_and_never_repeat():
    colors = vis.class_colors(["water", "low vegetation", "tree", "bare soil, built-up area", "road", "building",
                               "car", "cloud", "forest", "thing one", "thing two"])
    water, grass, tree = (c.astype(int) for c in colors[:3])
    assert water[2] > water[0] + 100 and water[2] > water[1]  # blue
    for green in (grass, tree, colors[8].astype(int)):
        assert green[1] > green[0] and green[1] > green[2]  # green shades, forest a darker tree
    assert len({tuple(c) for c in colors.tolist()}) == len(colors)
    many = vis.class_colors([f"class {i}" for i in range(70)])
    assert len({tuple(c) for c in many.tolist()}) == 70


@pytest.fixture()
def captured(monkeypatch, tools):
    """Every figure the tools save, by tool."""
    figures = []
    for name in ("demo", "visualize_model"):
        monkeypatch.setattr(tools[name], "save_figure", lambda fig, path, *a, **k: figures.append((path, fig)))
    monkeypatch.setattr(tools["web_demo"], "figure_png", lambda fig, *a, **k: figures.append(("web", fig)) or b"png")
    return figures


NAMES = ["water", "tree, forest", "building"]


def test_every_tool_picture_has_its_legend_or_colour_bar(tools, captured, tmp_path):
    image = tmp_path / "scene.png"
    rng = np.random.default_rng(0)
    cv2.imwrite(str(image), rng.integers(0, 255, (40, 48, 3), dtype=np.uint8))
    assert tools["demo"].main([str(image), "--config-file", QUICKSTART, "--classes", *NAMES, "--heatmaps",
                               "--output", str(tmp_path / "demo"), "MODEL.DEVICE", "cpu"]) == 0
    assert tools["visualize_model"].main([str(image), "--config-file", QUICKSTART, "--classes", *NAMES,
                                          "--output", str(tmp_path / "view.png"), "MODEL.DEVICE", "cpu"]) == 0
    predictor = ovrsis.Predictor(QUICKSTART, device="cpu")
    server = tools["web_demo"].DemoServer(("127.0.0.1", 0), predictor, NAMES, quiet=True)
    try:
        server.segment("scene.png", image.read_bytes(), NAMES)
    finally:
        server.server_close()
    kinds = {}
    for path, fig in captured:
        path = str(path)
        kind = ("heat" if "_heat_" in path else "mask" if path.endswith("_mask.png") else
                "view" if path.endswith("view.png") else "web")
        kinds[kind] = kinds.get(kind, 0) + 1
        if kind == "heat":
            assert _has_colorbar(fig), path
        else:
            assert _label_picture_ok(fig, NAMES), path
        if kind == "view":
            assert _has_colorbar(fig)  # the score panels
    assert kinds == {"mask": 1, "heat": 3, "view": 1, "web": 1}


def test_confusion_matrix_and_panels_have_colour_bars():
    fig = vis.confusion_figure(np.eye(3), ["a", "b", "c"])
    assert _has_colorbar(fig)
    fig = vis.panels_figure([[(np.zeros((4, 4)), "score", "viridis", 0.0, 1.0)]], legend=(["a"], vis.class_colors(["a"])))
    assert _has_colorbar(fig) and _label_picture_ok(fig, ["a"])
