"""Streaming whole-scene prediction (ovrsis.scene, Predictor.predict_scene, tools/predict_scene.py).

One tiny quickstart model (perturbed random weights saved once) and small scenes scored with
small tiles, so that several panels, tile rows and batches straddling rows occur in a few
hundred pixels.
"""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import ovrsis
from ovrsis.data.raster import RasterSettings
from ovrsis.errors import ConfigError
from ovrsis.scene import SceneOptions
from ovrsis.visualization import class_colors
from tool_modules import import_tools

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = str(REPO / "configs" / "quickstart.yaml")
NAMES = ["water", "tree, forest", "building", "road"]
TILED = ["INPUT.MIN_SIZE_TEST", "0", "TEST.TILED.TILE", "64", "TEST.TILED.STRIDE", "48", "TEST.TILED.BATCH", "3"]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OVRSIS_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def checkpoint(quickstart_checkpoint) -> str:
    return quickstart_checkpoint(2)


@pytest.fixture(scope="module")
def predictors(checkpoint):
    """``predictors(batch)``: the tiled predictor with ``TEST.TILED.BATCH`` = batch, built once."""
    built = {}

    def get(batch: int = 3) -> ovrsis.Predictor:
        if batch not in built:
            built[batch] = ovrsis.Predictor(QUICKSTART, checkpoint, device="cpu", inference_mode="tiled",
                                            opts=TILED + ["TEST.TILED.BATCH", str(batch)])
        return built[batch]
    return get


@pytest.fixture(scope="module")
def predictor(predictors):
    return predictors(3)


def _bands(h: int, w: int, seed: int = 0) -> np.ndarray:
    """(3, H, W) uint8: water above, fields and town below, noise."""
    rng = np.random.default_rng(seed)
    image = np.zeros((3, h, w), np.int16)
    image[:, : h // 2] = np.array([30, 80, 160])[:, None, None]
    image[:, h // 2:, : w // 2] = np.array([40, 140, 50])[:, None, None]
    image[:, h // 2:, w // 2:] = 150
    image[:, :, w // 3: w // 3 + 6] = 210  # a road across
    return np.clip(image + rng.integers(-30, 30, image.shape), 0, 255).astype(np.uint8)


def _write(path: Path, bands: np.ndarray, **extra) -> str:
    import rasterio
    from rasterio.transform import from_origin

    profile = {"driver": "GTiff", "height": bands.shape[1], "width": bands.shape[2], "count": bands.shape[0],
               "dtype": bands.dtype.name, "crs": "EPSG:32633", "transform": from_origin(500000.0, 5200000.0, 10, 10)}
    with rasterio.open(path, "w", **{**profile, **extra}) as dst:
        dst.write(bands)
    return str(path)


def _read(path: str) -> np.ndarray:
    import rasterio

    with rasterio.open(path) as src:
        return src.read()


@pytest.mark.parametrize("panel_width,batch", [(4096, 3), (160, 3), (160, 8), (100, 1)])
def test_streamed_equals_in_memory_tiled(predictors, tmp_path, panel_width, batch):
    """Same labels pixel for pixel, probabilities within the uint8 step, for one panel and
    several, batches inside a row and straddling rows; no-data pixels stay no-data."""
    bands = _bands(230, 310)
    bands[:, :40, :50] = 0  # a no-data corner
    scene = _write(tmp_path / "scene.tif", bands, nodata=0)
    p = predictors(batch)
    reference = p.predict(scene, NAMES)
    result = p.predict_scene(scene, NAMES, str(tmp_path / "out"),
                             SceneOptions(probabilities="uint8", panel_width=panel_width, quicklook=0), progress=False)
    assert not result.skipped and result.outputs == [str(tmp_path / "out" / "scene_labels.tif"),
                                                     str(tmp_path / "out" / "scene_probabilities.tif")]
    labels = _read(result.outputs[0])[0]
    probabilities = _read(result.outputs[1])
    valid = np.ones(labels.shape, bool)
    valid[:40, :50] = False
    assert (labels[~valid] == 255).all() and (probabilities[:, ~valid] == 255).all()
    assert np.array_equal(labels[valid], reference.labels[valid])
    error = np.abs(probabilities[:, valid] / 254.0 - reference.probabilities.numpy()[:, valid])
    assert error.max() <= 0.5 / 254 + 1e-6


@pytest.mark.parametrize("driver", ["COG", "JP2OpenJPEG", "VRT", "PNG"])
def test_any_gdal_raster(predictor, tmp_path, driver):
    """A cloud-optimised GeoTIFF, a lossless JPEG 2000, a VRT over a GeoTIFF and a PNG (all written
    by GDAL from one GeoTIFF) are read window by window into the GeoTIFF's in-memory labels."""
    from rasterio.shutil import copy

    source = _write(tmp_path / "src.tif", _bands(100, 140))
    suffix = {"COG": ".tif", "JP2OpenJPEG": ".jp2", "VRT": ".vrt", "PNG": ".png"}[driver]
    options = {"JP2OpenJPEG": {"quality": 100, "reversible": "YES"}}.get(driver, {})
    scene = str(tmp_path / f"scene{suffix}")
    copy(source, scene, driver=driver, **options)
    assert np.array_equal(_read(scene), _read(source))
    result = predictor.predict_scene(scene, NAMES, str(tmp_path / "out"), SceneOptions(quicklook=0, panel_width=100),
                                     progress=False)
    assert np.array_equal(_read(result.outputs[0])[0], predictor.predict(source, NAMES).labels)


@pytest.mark.parametrize("fmt,dtype,nodata", [("uint8", "uint8", 255), ("float16", "float32", None),
                                              ("float32", "float32", None)])
def test_outputs_round_trip_as_valid_cogs(predictor, tmp_path, fmt, dtype, nodata):
    import rasterio
    from rio_cogeo.cogeo import cog_validate

    scene = _write(tmp_path / "geo.tif", _bands(70, 530))  # wider than a COG block: overviews
    result = predictor.predict_scene(scene, NAMES, str(tmp_path / "out"), SceneOptions(probabilities=fmt),
                                     progress=False)
    with rasterio.open(scene) as src:
        crs, transform = src.crs, src.transform
    for path in result.outputs[:2]:
        assert cog_validate(path, strict=True)[0], cog_validate(path)
        with rasterio.open(path) as src:
            assert src.crs == crs and src.transform == transform and src.overviews(1)
            assert json.loads(src.tags()["CLASS_NAMES"]) == NAMES
    with rasterio.open(result.outputs[0]) as src:
        assert src.nodata == 255 and src.dtypes[0] == "uint8"
        table = src.colormap(1)
        assert [table[i][:3] for i in range(len(NAMES))] == [tuple(c) for c in class_colors(NAMES).tolist()]
    with rasterio.open(result.outputs[1]) as src:
        assert src.count == len(NAMES) and src.dtypes[0] == dtype
        assert src.descriptions == ("water", "tree", "building", "road")
        assert (src.nodata == nodata) if nodata is not None else np.isnan(src.nodata)
        if fmt == "uint8":
            assert src.scales[0] == pytest.approx(1 / 254)
        if fmt == "float16":
            values = src.read(1)
            assert np.array_equal(values, values.astype(np.float16).astype(np.float32))
    assert os.path.getsize(result.outputs[-1]) > 0 and result.outputs[-1].endswith("_quicklook.png")


def test_rerun_skips_and_other_runs_refuse_to_mix(predictor, tmp_path):
    scene = _write(tmp_path / "s.tif", _bands(100, 120))
    out = str(tmp_path / "out")
    first = predictor.predict_scene(scene, NAMES, out, SceneOptions(quicklook=0), progress=False)
    assert not first.skipped
    again = predictor.predict_scene(scene, NAMES, out, SceneOptions(quicklook=0), progress=False)
    assert again.skipped and "skipped" in again.summary()
    with pytest.raises(ConfigError, match="another config, weights, vocabulary"):
        predictor.predict_scene(scene, NAMES[:3], out, SceneOptions(quicklook=0), progress=False)
    with pytest.raises(ConfigError, match="another config"):
        predictor.predict_scene(scene, NAMES, out, SceneOptions(probabilities="float32", quicklook=0), progress=False)
    with pytest.raises(ConfigError, match="LONG_SIDE"):
        p = ovrsis.Predictor(predictor.cfg, opts=["TEST.TILED.LONG_SIDE", "448"])
        p.predict_scene(scene, NAMES, str(tmp_path / "other"), progress=False)


def test_polygons_merged_across_windows_equal_whole_map(predictor, tmp_path, monkeypatch):
    """Polygons from windows of 37 pixels, merged across seams, cover what the whole-map
    polygonisation of :func:`ovrsis.export.label_polygons` covers, region by region."""
    from shapely.geometry import shape

    from ovrsis.data.raster import raster_info
    from ovrsis.export import label_polygons
    from ovrsis.scene import polygons

    monkeypatch.setattr(polygons, "WINDOW", 37)
    scene = _write(tmp_path / "p.tif", _bands(110, 130))
    result = predictor.predict_scene(scene, NAMES, str(tmp_path / "out"), SceneOptions(polygons=True, quicklook=0),
                                     progress=False)
    streamed = json.loads(Path(result.outputs[1]).read_text())
    whole = label_polygons(_read(result.outputs[0])[0], NAMES, raster_info(scene))

    def regions(collection: dict) -> list:
        return sorted((f["properties"]["class_id"], f["properties"]["pixels"], round(shape(f["geometry"]).area, 9))
                      for f in collection["features"])

    assert streamed["coordinate_system"] == whole["coordinate_system"] == "EPSG:4326 (longitude, latitude)"
    assert regions(streamed) == regions(whole)


def test_scene_evaluation_equals_evaluator(predictor, tmp_path):
    """Scene metrics from a label raster equal OpenVocabSemSegEvaluator's on the same pixels."""
    from detectron2.data import MetadataCatalog

    from ovrsis.evaluation.sem_seg_evaluator import OpenVocabSemSegEvaluator

    scene = _write(tmp_path / "e.tif", _bands(140, 160))
    gt = np.zeros((1, 140, 160), np.uint8)
    gt[0, 70:, :80], gt[0, 70:, 80:], gt[0, :, 53:59] = 1, 2, 3
    gt[0, :10] = 255  # ignored
    labels = _write(tmp_path / "e_gt.tif", gt)
    name = "scene_eval_test"
    MetadataCatalog.get(name).set(stuff_classes=NAMES, ignore_label=255, seen_classes=NAMES[:2],
                                  unseen_classes=NAMES[2:])
    evaluator = OpenVocabSemSegEvaluator(name, distributed=False)
    evaluator.reset()
    reference = predictor.predict(scene, NAMES)
    evaluator.process([{"sem_seg_file_name": labels, "height": 140, "width": 160}],
                      [{"sem_seg": reference.probabilities}])
    expected = evaluator.evaluate()["sem_seg"]
    options = SceneOptions(labels=labels, seen=tuple(NAMES[:2]), unseen=tuple(NAMES[2:]), quicklook=0,
                           panel_width=100)
    result = predictor.predict_scene(scene, NAMES, str(tmp_path / "out"), options, progress=False)
    assert set(expected) == set(result.metrics)
    for key, value in expected.items():
        assert result.metrics[key] == pytest.approx(value, nan_ok=True), key
    stored = json.loads(Path(tmp_path / "out" / "e_metrics.json").read_text())
    assert stored["metrics"]["mIoU"] == pytest.approx(expected["mIoU"])
    # a finished scene evaluated again (skipped prediction) gives the same numbers from its labels file
    again = predictor.predict_scene(scene, NAMES, str(tmp_path / "out"), options, progress=False)
    assert again.skipped and again.metrics["mIoU"] == pytest.approx(expected["mIoU"])


def test_percentile_scaling_uses_scene_statistics(predictor, tmp_path):
    """A 16-bit scene under 'percentile' is mapped with statistics of sampled windows, equal to
    the in-memory prediction under 'percentile_dataset' with those statistics."""
    import dataclasses

    from ovrsis.scene.source import scene_percentiles

    bands = (_bands(120, 140).astype(np.uint16) * 40 + 300).astype(np.uint16)
    scene = _write(tmp_path / "u16.tif", bands)
    settings = RasterSettings(scaling="percentile")
    stats = scene_percentiles([scene], settings)
    assert len(stats[0]) == 3 and all(lo < hi for lo, hi in zip(*stats))
    reference = predictor.predict(scene, NAMES, dataclasses.replace(settings, scaling="percentile_dataset",
                                                                    dataset_stats=stats))
    result = predictor.predict_scene(scene, NAMES, str(tmp_path / "out"), SceneOptions(quicklook=0), settings,
                                     progress=False)
    assert np.array_equal(_read(result.outputs[0])[0], reference.labels)


def _predict_in_child(predictor, scene: str, out: str, options: SceneOptions) -> None:  # pragma: no cover (child)
    torch.set_num_threads(1)
    predictor.predict_scene(scene, NAMES, out, options, progress=False)
    os._exit(0)


def test_sigkill_then_rerun_equals_uninterrupted(predictors, tmp_path):
    """A forked process (the loaded model, no start-up cost) predicting the scene is killed with
    SIGKILL after a few chunks; the rerun resumes from the partial files and equals a run that
    was never interrupted, probabilities included."""
    import multiprocessing

    predictor = predictors(1)
    scene = _write(tmp_path / "k.tif", _bands(420, 300))
    out = tmp_path / "killed"
    options = SceneOptions(probabilities="uint8", quicklook=0, panel_width=160)
    child = multiprocessing.get_context("fork").Process(target=_predict_in_child,
                                                        args=(predictor, scene, str(out), options))
    child.start()
    state = out / "k.scene-state.json"
    deadline = time.time() + 120
    while time.time() < deadline and child.is_alive():
        stored = json.loads(state.read_text()) if state.exists() else None
        if stored and sum(stored["next_row"]) >= 3:
            break
        time.sleep(0.01)
    assert child.is_alive(), "the run ended before it could be killed"
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    assert child.exitcode == -signal.SIGKILL
    assert (out / "k_labels.tif.partial").exists() and not (out / "k_labels.tif").exists()
    resumed = predictor.predict_scene(scene, NAMES, str(out), options, progress=False)
    assert not resumed.skipped and not state.exists() and not (out / "k_labels.tif.partial").exists()
    whole = predictor.predict_scene(scene, NAMES, str(tmp_path / "whole"), options, progress=False)
    for mine, uninterrupted in zip(resumed.outputs, whole.outputs):
        assert np.array_equal(_read(mine), _read(uninterrupted)), mine


def test_two_gloo_processes_equal_one(tool, predictor, checkpoint, tmp_path, monkeypatch):
    """Three scenes (a list file) over two gloo processes (the project's launcher, as
    ``tools/predict_scene.py --num-gpus 2`` runs it on CPU): one scene each, the third shared
    panel by panel. Files and the run's metrics equal those of one process."""
    from ovrsis.engine import launch
    from ovrsis.evaluation.metrics import segmentation_metrics

    folder, truth = tmp_path / "scenes", tmp_path / "truth"
    folder.mkdir(), truth.mkdir()
    for i, (h, w) in enumerate([(90, 120), (70, 110), (100, 260)]):
        _write(folder / f"s{i}.tif", _bands(h, w, seed=i))
        _write(truth / f"s{i}.tif", (_bands(h, w, seed=i)[:1] // 64).astype(np.uint8))
    listing = tmp_path / "scenes.txt"
    listing.write_text("scenes/s0.tif\nscenes/s1.tif  # comment\n\nscenes/s2.tif\n")
    arguments, overrides = tool.split_overrides(
        [str(listing), "--config-file", QUICKSTART, "--weights", checkpoint, "--classes", *NAMES, "--quicklook", "0",
         "--panel-width", "100", "--labels", str(truth), "--no-progress", "--output", str(tmp_path / "two"),
         "--num-gpus", "2", "MODEL.DEVICE", "cpu", *TILED])
    args = tool.build_parser().parse_args(arguments)
    monkeypatch.syspath_prepend(str(Path(tool.__file__).parent))  # the spawned processes import predict_scene.main
    launch(tool.main, 2, args=(args, overrides, tool.expand_scenes(args.inputs)))
    confusion = 0
    for i in range(3):
        options = SceneOptions(quicklook=0, panel_width=100, labels=str(truth / f"s{i}.tif"))
        one = predictor.predict_scene(str(folder / f"s{i}.tif"), NAMES, str(tmp_path / "one"), options,
                                      progress=False)
        assert np.array_equal(_read(str(tmp_path / "two" / f"s{i}_labels.tif")), _read(one.outputs[0])), i
        confusion = confusion + one.confusion
    assert not list((tmp_path / "two").glob("*rank*")), "the processes' partial files are assembled and removed"
    stored = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert stored["confusion_matrix_gt_rows"] == confusion.tolist()
    assert stored["metrics"]["mIoU"] == pytest.approx(segmentation_metrics(confusion, NAMES)["mIoU"])


@pytest.fixture(scope="module")
def tool():
    return import_tools("predict_scene")["predict_scene"]


def test_tool_inputs(tool, tmp_path):
    scenes = [_write(tmp_path / f"{n}.tif", _bands(20, 20)) for n in ("a", "b")]
    (tmp_path / "list.txt").write_text("a.tif\n# b\nb.tif\n")
    assert tool.expand_scenes([str(tmp_path / "list.txt")]) == scenes
    assert tool.expand_scenes([str(tmp_path / "*.tif")]) == scenes
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(ConfigError, match="names no scenes"):
        tool.expand_scenes([str(tmp_path / "empty.txt")])
    with pytest.raises(ConfigError, match="does not exist"):
        tool.run([scenes[0], str(tmp_path / "missing.tif"), "--config-file", QUICKSTART, "--classes", "a", "b",
                  "--output", str(tmp_path / "o")])
    with pytest.raises(ConfigError, match="one raster but 2 scenes"):
        tool.run([*scenes, "--config-file", QUICKSTART, "--classes", "a", "b", "--output", str(tmp_path / "o"),
                  "--labels", scenes[0]])
    (tmp_path / "gt").mkdir()
    with pytest.raises(ConfigError, match="no raster named a"):
        tool.label_raster(str(tmp_path / "gt"), scenes[0])
    truth = _write(tmp_path / "gt" / "a.tif", _bands(20, 20)[:1])
    assert tool.label_raster(str(tmp_path / "gt"), scenes[0]) == truth
    assert tool.label_raster(truth, scenes[1]) == truth and tool.label_raster(None, scenes[0]) is None


def test_slurm_jobs_get_chunks_of_scenes_and_the_run_arguments(tool, tmp_path):
    """--slurm submits one submitit job per chunk of scenes (here submitit's debug executor, which
    runs nothing until asked): each job runs this tool on its scenes with every argument but the
    Slurm ones, and requeues itself when preempted."""
    import submitit

    scenes = [_write(tmp_path / f"{n}.tif", _bands(20, 20)) for n in "abc"]
    argv = [str(tmp_path / "*.tif"), "--config-file", QUICKSTART, "--classes", "a", "b", "--output",
            str(tmp_path / "o"), "--slurm", "debug", "--jobs", "2", "--slurm-time", "1:00:00", "--probabilities",
            "MODEL.DEVICE", "cpu"]
    arguments, _ = tool.split_overrides(argv)
    args = tool.build_parser().parse_args(arguments)
    jobs = tool.submit(args, argv, tool.expand_scenes(args.inputs))
    calls = [job.submission().function for job in jobs]
    assert [c.argv[:2] for c in calls] == [(scenes[0], scenes[2]), (scenes[1], "--config-file")]
    rest = ["--config-file", QUICKSTART, "--classes", "a", "b", "--output", str(tmp_path / "o"), "--probabilities",
            "MODEL.DEVICE", "cpu"]
    assert list(calls[0].argv[2:]) == rest and list(calls[1].argv[1:]) == rest
    assert isinstance(calls[0].checkpoint(), submitit.helpers.DelayedSubmission)


SEGEARTH = str(REPO / "configs" / "segearth_ov" / "base.yaml")
SEGEARTH_MODEL = ["MODEL.CLIP.ARCH", "ovrsis-tiny-vit", "MODEL.CLIP.PRETRAINED", "", "MODEL.CLIP.IMAGE_SIZE", "64",
                  "MODEL.TRAINING_FREE.SIMFEATUP_WEIGHTS", ""]
SEGEARTH_TINY = SEGEARTH_MODEL + ["INPUT.MIN_SIZE_TEST", "0", "TEST.TILED.TILE", "32", "TEST.TILED.STRIDE", "16",
                                  "TEST.TILED.BATCH", "5", "TEST.TILED.LONG_SIDE", "0"]


@pytest.mark.parametrize("shape,panel_width", [((70, 110), 4096), ((70, 110), 48), ((1, 1), 48), ((5, 300), 48),
                                               ((300, 5), 48)])
def test_training_free_scene_equals_its_in_memory_prediction(shape, panel_width, tmp_path, one_thread):
    """SegEarth-OV streams too: the windows' query logits are blended as mmseg's slide averages
    them, then turned into class scores, so a streamed scene equals the segmentor's own
    prediction at the stored resolution (``TEST.TILED.LONG_SIDE 0``)."""
    predictor = ovrsis.Predictor(SEGEARTH, None, device="cpu", inference_mode="tiled", opts=SEGEARTH_TINY)
    torch.manual_seed(0)
    with torch.no_grad():  # random, non-trivial SimFeatUp and CLIP biases
        for p in predictor.model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    scene = _write(tmp_path / "scene.tif", _bands(*shape, seed=3))
    names = ["water", "vegetation", "building"]
    memory = predictor.predict(scene, names)
    result = predictor.predict_scene(scene, names, str(tmp_path / "out"),
                                     SceneOptions(quicklook=0, probabilities="float32", panel_width=panel_width),
                                     progress=False)
    labels = _read(str(tmp_path / "out" / "scene_labels.tif"))[0]
    assert np.array_equal(labels, memory.labels)
    probabilities = _read(str(tmp_path / "out" / "scene_probabilities.tif"))
    assert np.abs(probabilities - memory.probabilities.numpy()).max() < 1e-5
    assert (result.height, result.width) == shape
    if shape == (70, 110):
        assert probabilities.std(axis=(1, 2)).min() > 1e-3  # scores vary over the scene


def test_a_model_without_scene_scoring_is_refused(predictor, tmp_path, monkeypatch):
    monkeypatch.setattr(type(predictor.model), "scene_scoring", None)
    scene = _write(tmp_path / "scene.tif", _bands(40, 40))
    with pytest.raises(ConfigError, match="offers no scene scoring"):
        predictor.predict_scene(scene, NAMES, str(tmp_path / "out"), SceneOptions(quicklook=0), progress=False)


def test_tool_streams_segearth_at_the_stored_resolution(tool, tmp_path, one_thread):
    """``tools/predict_scene.py`` sets ``TEST.TILED.LONG_SIDE 0`` itself (the SegEarth-OV configs
    resize to a 448 long side for protocol P-C), as it sets ``INPUT.MIN_SIZE_TEST 0``."""
    scene = _write(tmp_path / "scene.tif", _bands(40, 90, seed=1))
    assert tool.run([scene, "--config-file", SEGEARTH, "--classes", "water", "vegetation", "--quicklook", "0",
                     "--no-progress", "--output", str(tmp_path / "out"), "MODEL.DEVICE", "cpu",
                     *SEGEARTH_MODEL, "TEST.TILED.TILE", "32", "TEST.TILED.STRIDE", "16"]) == 0
    assert _read(str(tmp_path / "out" / "scene_labels.tif")).shape == (1, 40, 90)
