"""Predictor, demo outputs (GeoTIFF / GeoJSON / pictures), web demo, dataset browser and plots.

A tiny random model from configs/quickstart.yaml is saved once (with perturbed weights, so a
prediction can only match if the checkpoint was really loaded) and shared by the tests.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import ovrsis
from ovrsis.data.raster import RasterError, RasterSettings
from ovrsis.errors import ConfigError
from ovrsis.visualization import class_colors
from tool_modules import import_tools

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = str(REPO / "configs" / "quickstart.yaml")
NAMES = ["water", "tree, forest", "building"]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OVRSIS_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def tools():
    return import_tools("demo", "web_demo", "browse_dataset", "analyze_logs", "confusion_matrix", "visualize_model")


@pytest.fixture(scope="module")
def checkpoint(quickstart_checkpoint) -> str:
    return quickstart_checkpoint(1)


@pytest.fixture(scope="module")
def predictor(checkpoint):
    return ovrsis.Predictor(QUICKSTART, checkpoint, device="cpu")


def _rgb(h: int = 80, w: int = 96, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.zeros((h, w, 3), np.uint8)
    image[: h // 2] = (30, 80, 160)
    image[h // 2:, : w // 2] = (40, 140, 50)
    image[h // 2:, w // 2:] = (150, 150, 150)
    return np.clip(image.astype(int) + rng.integers(-20, 20, image.shape), 0, 255).astype(np.uint8)


def _write_png(path: Path, rgb: np.ndarray) -> str:
    cv2.imwrite(str(path), rgb[:, :, ::-1])
    return str(path)


def _write_geotiff(path: Path, bands: np.ndarray):
    """(C, H, W) array as a GeoTIFF in UTM 33N; returns (path, crs, transform)."""
    import rasterio
    from rasterio.crs import CRS
    from rasterio.transform import from_origin

    crs, transform = CRS.from_epsg(32633), from_origin(500000.0, 5200000.0, 10.0, 10.0)
    with rasterio.open(path, "w", driver="GTiff", height=bands.shape[1], width=bands.shape[2], count=bands.shape[0],
                       dtype=bands.dtype.name, crs=crs, transform=transform) as dst:
        dst.write(bands)
    return str(path), crs, transform


def test_import_ovrsis_stays_light():
    code = ("import sys, ovrsis; heavy = [m for m in ('ovrsis.predictor', 'detectron2.modeling', 'open_clip') "
            "if m in sys.modules]; assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
    from ovrsis.predictor import Predictor

    assert ovrsis.Predictor is Predictor
    with pytest.raises(AttributeError):
        ovrsis.NoSuchThing  # noqa: B018


def test_predictor_equals_model_evaluation_output(predictor, checkpoint, tmp_path):
    """Same file through the evaluation path (test mapper + separately loaded model) and the predictor."""
    from detectron2.modeling import build_model

    from ovrsis.checkpoint import OVRSISCheckpointer
    from ovrsis.data.mappers import SemanticSegmentationMapper

    path = _write_png(tmp_path / "scene.png", _rgb())
    result = predictor.predict(path, NAMES)
    cfg = predictor.cfg
    model = build_model(cfg).eval()
    OVRSISCheckpointer.from_config(cfg, model, save_dir="").load(checkpoint)
    model.set_vocabulary(NAMES)
    record = SemanticSegmentationMapper(cfg, is_train=False)({"file_name": path})
    with torch.no_grad():
        expected = model([record])[0]["sem_seg"]
    assert result.probabilities.shape == (3, 80, 96)
    assert torch.equal(result.probabilities, expected)
    assert np.array_equal(result.labels, expected.argmax(0).numpy())
    assert result.class_names == NAMES and result.info is not None and result.image.shape == (80, 96, 3)
    # an in-memory array gives the same; another vocabulary gives its own number of maps
    assert torch.equal(predictor.predict(_rgb(), NAMES).probabilities, expected)
    other = predictor.predict(_rgb(), ["road", "car"])
    assert other.probabilities.shape == (2, 80, 96) and set(np.unique(other.labels)) <= {0, 1}


def test_predictor_checks_inputs(predictor, tmp_path):
    with pytest.raises(ConfigError, match="empty"):
        predictor.predict(_rgb(), [])
    with pytest.raises(ConfigError, match="duplicate"):
        predictor.predict(_rgb(), ["water", "water"])
    with pytest.raises(ConfigError, match="inference mode"):
        ovrsis.Predictor(predictor.cfg, inference_mode="sliding")
    with pytest.raises(ConfigError, match="does not exist"):
        ovrsis.Predictor(predictor.cfg, str(tmp_path / "missing.pth"))


def test_sixteen_bit_four_band_input_needs_and_uses_band_selection(predictor, tmp_path):
    rng = np.random.default_rng(3)
    bands = rng.integers(200, 3000, (4, 48, 64)).astype(np.uint16)
    path, _, _ = _write_geotiff(tmp_path / "s2.tif", bands)
    with pytest.raises(RasterError, match="BANDS"):
        predictor.predict(path, NAMES)
    with pytest.raises(RasterError, match="SCALING"):
        predictor.predict(path, NAMES, RasterSettings(bands=(3, 2, 1)))
    settings = RasterSettings(bands=(3, 2, 1), scaling="fixed", value_range=(0.0, 3000.0))
    result = predictor.predict(path, NAMES, settings)
    expected_rgb = np.rint(bands[[2, 1, 0]].transpose(1, 2, 0) / 3000.0 * 255).astype(np.uint8)
    assert np.array_equal(result.image, expected_rgb)
    assert torch.equal(result.probabilities, predictor.predict(expected_rgb, NAMES).probabilities)


def test_tiled_equals_whole_when_one_tile_covers_the_image(predictor, checkpoint):
    tiled = ovrsis.Predictor(predictor.cfg, inference_mode="tiled", opts=["TEST.TILED.TILE", "256"])
    calls = []
    result = tiled.predict(_rgb(), NAMES, progress=lambda done, total: calls.append((done, total)))
    assert tiled.model.inference_mode == "tiled" and calls == [(1, 1)]
    assert torch.allclose(result.probabilities, predictor.predict(_rgb(), NAMES).probabilities, atol=1e-6)
    # several tiles at the stored resolution: progress reaches the tile count
    small = ovrsis.Predictor(predictor.cfg, inference_mode="tiled",
                             opts=["TEST.TILED.TILE", "48", "TEST.TILED.STRIDE", "32", "TEST.TILED.BATCH", "2",
                                   "INPUT.MIN_SIZE_TEST", "0"])
    calls.clear()
    out = small.predict(_rgb(), NAMES, progress=lambda done, total: calls.append((done, total)))
    assert out.probabilities.shape == (3, 80, 96)
    assert calls[-1] == (6, 6) and [d for d, _ in calls] == [2, 4, 6]  # 2 x 3 tiles, 2 per batch


def test_demo_geotiff_round_trip_and_outputs(tools, checkpoint, predictor, tmp_path):
    import rasterio

    rng = np.random.default_rng(4)
    bands = rng.integers(100, 4000, (4, 40, 56)).astype(np.uint16)
    path, crs, transform = _write_geotiff(tmp_path / "scene.tif", bands)
    out = tmp_path / "out"
    code = tools["demo"].main([path, "--config-file", QUICKSTART, "--weights", checkpoint, "--classes", *NAMES,
                               "--bands", "3", "2", "1", "--scaling", "percentile", "--percentiles", "1", "99",
                               "--output", str(out), "--heatmaps", "--probabilities", "--geojson",
                               "MODEL.DEVICE", "cpu"])
    assert code == 0
    expected = predictor.predict(path, NAMES, RasterSettings(bands=(3, 2, 1), scaling="percentile",
                                                              percentiles=(1.0, 99.0)))
    with rasterio.open(out / "scene_labels.tif") as src:
        assert src.crs == crs and src.transform == transform and (src.height, src.width) == (40, 56)
        assert np.array_equal(src.read(1), expected.labels.astype(np.uint8))
        assert src.colormap(1)[0][:3] == tuple(class_colors(["water", "tree", "building"])[0].tolist())
    with rasterio.open(out / "scene_probabilities.tif") as src:
        assert src.crs == crs and src.count == 3 and src.descriptions == ("water", "tree", "building")
        assert np.allclose(src.read(), expected.probabilities.numpy())
    overlay = cv2.imread(str(out / "scene_overlay.png"))
    assert overlay.shape == (40, 56, 3)
    for name in ("scene_mask.png", "scene_heat_00_water.png", "scene_heat_01_tree.png", "scene_heat_02_building.png"):
        image = cv2.imread(str(out / name))
        assert image is not None and image.size > 0 and image.std() > 0, name
    geo = json.loads((out / "scene.geojson").read_text())
    _assert_rfc7946_collection(geo)
    assert geo["coordinate_system"].startswith("EPSG:4326")
    assert sum(f["properties"]["pixels"] for f in geo["features"]) == 40 * 56  # polygons tile the map
    lon, lat = geo["features"][0]["geometry"]["coordinates"][0][0]
    assert 14.0 < lon < 16.0 and 46.0 < lat < 48.0  # UTM 33N, x 500 km, y 5200 km
    assert json.loads((out / "classes.json").read_text())[1]["class"] == "tree, forest"


def _assert_rfc7946_collection(geo: dict) -> None:
    """RFC 7946 §7.1: a FeatureCollection never carries "coordinates", "geometry" or "properties"."""
    assert geo["type"] == "FeatureCollection" and isinstance(geo["features"], list)
    assert not {"coordinates", "geometry", "properties"} & set(geo), sorted(geo)
    for feature in geo["features"]:
        assert feature["type"] == "Feature" and not {"coordinates", "features"} & set(feature)


def test_demo_plain_png_gets_png_label_map_and_pixel_polygons(tools, checkpoint, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    _write_png(folder / "a.png", _rgb(32, 40, 1))
    _write_png(folder / "b.png", _rgb(24, 24, 2))
    classes = tmp_path / "classes.txt"
    classes.write_text("water\ntree, forest\n")
    out = tmp_path / "out"
    assert tools["demo"].main([str(folder), "--config-file", QUICKSTART, "--weights", checkpoint,
                               "--classes-file", str(classes), "--output", str(out), "--geojson"]) == 0
    assert tools["demo"].main([str(folder / "*.png"), "--config-file", QUICKSTART, "--weights", checkpoint,
                               "--classes", "water", "--scaling", "percentile_dataset", "--output",
                               str(tmp_path / "stretched")]) == 0
    assert (tmp_path / "stretched" / "a_overlay.png").is_file()
    labels = cv2.imread(str(out / "b_labels.png"), cv2.IMREAD_UNCHANGED)
    assert labels.shape == (24, 24) and labels.max() <= 1
    geo = json.loads((out / "a.geojson").read_text())
    _assert_rfc7946_collection(geo)
    assert geo["coordinate_system"].startswith("pixel")
    bands, _, _ = _write_geotiff(tmp_path / "l8.tif", np.full((4, 16, 16), 9000, np.uint16))
    with pytest.raises(RasterError, match="--bands sets INPUT.RASTER.BANDS"):
        tools["demo"].main([bands, "--config-file", QUICKSTART, "--weights", checkpoint, "--classes", "water",
                            "--output", str(out)])
    with pytest.raises(ConfigError, match="share the file stem"):
        tools["demo"].expand_inputs([str(folder / "a.png"), str(folder / "a.png")])
    with pytest.raises(ConfigError, match="does not exist"):
        tools["demo"].expand_inputs([str(tmp_path / "nothing.tif")])


def _multipart(fields: dict, boundary: str = "ovrsis-test-boundary") -> tuple:
    lines = []
    for name, value in fields.items():
        lines.append(f"--{boundary}".encode())
        if isinstance(value, tuple):
            filename, data, ctype = value
            lines.append(f'Content-Disposition: form-data; name="{name}"; filename="{filename}"'.encode())
            lines.append(f"Content-Type: {ctype}".encode())
        else:
            lines.append(f'Content-Disposition: form-data; name="{name}"'.encode())
            data = value.encode()
        lines += [b"", data]
    lines += [f"--{boundary}--".encode(), b""]
    return b"\r\n".join(lines), f"multipart/form-data; boundary={boundary}"


def test_web_demo_round_trip(tools, predictor):
    import base64
    import re
    import time

    server = tools["web_demo"].DemoServer(("127.0.0.1", 0), predictor, ["water", "tree"], quiet=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    start = time.perf_counter()
    try:
        host, port = server.server_address[:2]
        assert host == "127.0.0.1"
        url = f"http://{host}:{port}"
        page = urllib.request.urlopen(url + "/", timeout=10).read().decode()
        assert 'enctype="multipart/form-data"' in page and "water\ntree" in page
        ok, png = cv2.imencode(".png", _rgb()[:, :, ::-1])
        body, ctype = _multipart({"image": ("scene.png", png.tobytes(), "image/png"),
                                  "classes": "water\ntree, forest\nbuilding\n"})
        request = urllib.request.Request(url + "/segment", data=body, headers={"Content-Type": ctype})
        reply = urllib.request.urlopen(request, timeout=30).read().decode()
        found = re.search(r'id="result" alt="prediction" src="data:image/png;base64,([^"]+)"', reply)
        assert found and "tree: " in reply
        picture = cv2.imdecode(np.frombuffer(base64.b64decode(found.group(1)), np.uint8), cv2.IMREAD_COLOR)
        assert picture is not None and picture.shape[0] > 100 and picture.std() > 0
        raw = urllib.request.urlopen(urllib.request.Request(url + "/segment?format=png", data=body,
                                                            headers={"Content-Type": ctype}), timeout=30).read()
        assert raw.startswith(b"\x89PNG")
        bad, _ = _multipart({"image": ("scene.png", png.tobytes(), "image/png"), "classes": ""}), None
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(urllib.request.Request(url + "/segment", data=bad[0],
                                                          headers={"Content-Type": bad[1]}), timeout=30)
        assert err.value.code == 400 and "empty" in err.value.read().decode()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert not thread.is_alive() and time.perf_counter() - start < 30


@pytest.mark.parametrize("form, expected", [
    ({}, ["scene_l8.tif", "4 data band(s)", "set the Bands field"]),  # multi-band: which bands?
    ({"bands": "3 2 1"}, ["scene_l8.tif", "uint16 values", "set the Scaling field to 'fixed' (with the Range field"]),
    ({"bands": "3 2 1", "scaling": "fixed", "range": "9000"}, ["Range takes two numbers"]),
    ({"bands": "3 2 x"}, ["Bands must be whole numbers"]),
    ({"bands": "3 2 7", "scaling": "percentile"}, ["scene_l8.tif", "the Bands field [3, 2, 7] names band(s) [7]"]),
    ({"bands": "3 2 1", "scaling": "percentile"}, None),
    ({"bands": "3, 2, 1", "scaling": "fixed", "range": "0 10000"}, None),
])
def test_web_demo_sixteen_bit_upload_is_answered_for_the_browser(tools, predictor, tmp_path, form, expected):
    """A 16-bit 4-band GeoTIFF upload: the answer names the uploaded file (never the server's
    temporary copy) and the form fields to fill in (never a config key); filled in, it segments."""
    import html

    bands = np.stack([np.full((24, 32), v, np.uint16) for v in (8000, 9000, 10000, 12000)])
    bands[:, :12] += 3000
    path, _, _ = _write_geotiff(tmp_path / "scene_l8.tif", bands)
    server = tools["web_demo"].DemoServer(("127.0.0.1", 0), predictor, ["water"], quiet=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        body, ctype = _multipart({"image": ("scene_l8.tif", Path(path).read_bytes(), "image/tiff"),
                                  "classes": "water\ntree", **form})
        request = urllib.request.Request(f"http://{host}:{port}/segment", data=body, headers={"Content-Type": ctype})
        if expected is None:
            page = urllib.request.urlopen(request, timeout=30).read().decode()
            assert 'id="result"' in page and "tree: " in page
            return
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(request, timeout=30)
        assert err.value.code == 400
        message = html.unescape(re.search(r'<p class="error">(.*?)</p>', err.value.read().decode(), re.S).group(1))
        for text in expected:
            assert text in message, message
        assert "INPUT.RASTER" not in message and "form." not in message and "upload.tif" not in message
        assert tempfile.gettempdir() not in message, message
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_browse_config_registered_dataset(tools, tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir(), masks.mkdir()
    for i in range(3):
        _write_png(images / f"t{i}.png", _rgb(32, 32, i))
        mask = np.zeros((32, 32), np.uint8)
        mask[16:] = 1
        mask[:4] = 255
        cv2.imwrite(str(masks / f"t{i}.png"), mask)
    output = tmp_path / "browse.png"
    entry = (f"{{tiny_browse: {{IMAGE_ROOT: {images}, MASK_ROOT: {masks}, CLASS_NAMES: [water, 'tree, forest'], "
             "UNSEEN_CLASSES: ['tree, forest'], SEEN_CLASSES: [water]}}")
    assert tools["browse_dataset"].main(["tiny_browse", "--num", "2", "--output", str(output),
                                         "DATASETS.REGISTER", entry]) == 0
    picture = cv2.imread(str(output))
    assert picture is not None and picture.shape[0] > 200 and picture.std() > 0
    with pytest.raises(ConfigError, match="not registered"):
        tools["browse_dataset"].main(["tiny_brows"])


def test_analyze_logs_and_confusion_matrix_plots(tools, tmp_path):
    runs = []
    for r, scale in enumerate((1.0, 2.0)):
        run = tmp_path / f"run{r}"
        run.mkdir()
        lines = [{"iteration": i, "total_loss": scale / (i + 1), "lr": 0.001 * (1 - i / 40)} for i in range(0, 40, 4)]
        lines.insert(2, {"iteration": 8, "total_loss": 99.0, "lr": 0.001})  # superseded by the later (resumed) line
        lines.append({"iteration": 39, "sem_seg/mIoU": 40.0 + r})
        (run / "metrics.json").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
        runs.append(str(run))
    series = tools["analyze_logs"].read_metrics(runs[0])
    assert dict(series["total_loss"])[8] == pytest.approx(1 / 9) and series["sem_seg/mIoU"] == [(39, 40.0)]
    assert tools["analyze_logs"].smooth([(0, 1.0), (1, 3.0), (2, 5.0)], 2) == [(0, 1.0), (1, 2.0), (2, 4.0)]
    curves = tmp_path / "curves.png"
    assert tools["analyze_logs"].main([*runs, "--output", str(curves), "--smooth", "3"]) == 0
    assert cv2.imread(str(curves)).std() > 0
    with pytest.raises(ConfigError, match="not logged"):
        tools["analyze_logs"].main([runs[0], "--keys", "nope"])

    conf = [[50, 5, 0], [10, 30, 0], [0, 20, 5]]
    metrics = {"dataset": "toy", "metrics": {"mIoU": 40.0, "s-mIoU": 45.0, "u-mIoU": 10.0, "h-mIoU": 16.0},
               "class_names": ["water", "tree", "cloud"], "seen_classes": ["water", "tree"],
               "unseen_classes": ["cloud"], "confusion_matrix_gt_rows": conf}
    (tmp_path / "sem_seg_metrics.json").write_text(json.dumps(metrics))
    for normalize in ("true", "pred", "none"):
        out = tmp_path / f"cm_{normalize}.png"
        assert tools["confusion_matrix"].main([str(tmp_path), "--normalize", normalize, "--output", str(out)]) == 0
        assert cv2.imread(str(out)).std() > 0
    with pytest.raises(ConfigError, match="confusion_matrix_gt_rows"):
        (tmp_path / "bad.json").write_text("{}")
        tools["confusion_matrix"].main([str(tmp_path / "bad.json")])


def test_visualization_helpers():
    from ovrsis import visualization as vis

    colors = vis.palette(60)
    assert colors.shape == (60, 3) and len({tuple(c) for c in colors}) == 60
    labels = np.array([[0, 1], [255, 2]])
    image = np.full((2, 2, 3), 100, np.uint8)
    painted = vis.colorize(labels, colors[:3])
    assert painted[1, 0].tolist() == [0, 0, 0] and painted[0, 1].tolist() == colors[1].tolist()
    assert np.array_equal(vis.overlay(image, labels, colors[:3], alpha=0.0), image)
    full = vis.overlay(image, labels, colors[:3], alpha=1.0)
    assert full[0, 0].tolist() == colors[0].tolist() and full[1, 0].tolist() == [100, 100, 100]  # ignore: image
    with pytest.raises(ValueError, match="palette"):
        vis.colorize(np.array([[5]]), colors[:3])
    assert vis.heatmap(np.array([[0.0, 1.0]])).shape == (1, 2, 3)
    with pytest.raises(ValueError, match="does not match"):
        vis.confusion_figure(np.zeros((2, 3)), ["a", "b"])


def test_predictor_drives_the_training_free_segmentor(tmp_path):
    """Any meta-architecture with set_vocabulary/forward: SegEarth-OV's, tiny and random, with its
    sliding window reporting progress through the same hook."""
    opts = ["MODEL.CLIP.ARCH", "ovrsis-tiny-vit", "MODEL.CLIP.PRETRAINED", "", "MODEL.CLIP.IMAGE_SIZE", "64",
            "MODEL.TRAINING_FREE.SIMFEATUP_WEIGHTS", "", "TEST.TILED.TILE", "32", "TEST.TILED.STRIDE", "16",
            "TEST.TILED.LONG_SIDE", "64"]
    predictor = ovrsis.Predictor(str(REPO / "configs" / "segearth_ov" / "base.yaml"), device="cpu", opts=opts)
    assert type(predictor.model).__name__ == "TrainingFreeSegmentor"
    calls = []
    result = predictor.predict(_rgb(40, 48), ["water", "tree, forest", "building"],
                               progress=lambda done, total: calls.append((done, total)))
    assert result.probabilities.shape == (3, 40, 48) and result.labels.shape == (40, 48)
    assert calls and calls[-1][0] == calls[-1][1]


def test_visualize_model_hooks_cost_rotation_views_and_decoder(tools, tmp_path):
    import torch.nn.functional as F

    predictor = ovrsis.Predictor(QUICKSTART, device="cpu", opts=["MODEL.COST.ROTATIONS", "[0, 1]"])
    path = _write_png(tmp_path / "scene.png", _rgb())
    view = tools["visualize_model"].capture_model_view(predictor, path, NAMES)
    templates = len(predictor.cfg.MODEL.TEXT.TEMPLATES)
    assert view["cost"].shape == (2, templates, 3, 8, 8) and view["embedding"].shape == (3, 32, 8, 8)
    assert view["cost"].abs().max() <= 1.0 + 1e-5  # cosines
    final = view["prediction"].probabilities
    # whole-image protocol: the final map is the decoder's sigmoid resized to the image
    assert torch.allclose(F.interpolate(view["decoder"][None], size=final.shape[-2:], mode="bilinear",
                                        align_corners=False)[0], final, atol=1e-6)
    out = tmp_path / "view.png"
    assert tools["visualize_model"].main([path, "--config-file", QUICKSTART, "--classes", "water", "tree",
                                          "--output", str(out), "MODEL.DEVICE", "cpu"]) == 0
    assert cv2.imread(str(out)).std() > 0
