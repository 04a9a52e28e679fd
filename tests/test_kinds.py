"""Issue 22 — the kinds as matrices: every meta-architecture x inference mode x image shape,
the raster conformance matrix (entry points x raster kinds), no-data end to end, one ignore
value per dataset, every file-naming config key through one path check, honest resume."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

import ovrsis
from ovrsis.config import flatten_config
from ovrsis.errors import ConfigError
from tool_modules import import_tools

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = str(REPO / "configs" / "quickstart.yaml")
SEGEARTH = str(REPO / "configs" / "segearth_ov" / "synthetic.yaml")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("OVRSIS_CACHE", str(tmp_path / "cache"))


# ------------------------------------------------------------------ meta-architecture x mode x shape
ARCHS = {"CostAggregationSegmentor": QUICKSTART, "TrainingFreeSegmentor": SEGEARTH}
MODES = {
    "whole": ["TEST.INFERENCE_MODE", "whole"],
    "slide": ["TEST.INFERENCE_MODE", "slide"],
    "tiled": ["TEST.INFERENCE_MODE", "tiled", "TEST.TILED.TILE", "32", "TEST.TILED.STRIDE", "24",
              "TEST.TILED.LONG_SIDE", "0"],
    "tiled_long_side": ["TEST.INFERENCE_MODE", "tiled", "TEST.TILED.TILE", "32", "TEST.TILED.STRIDE", "24",
                        "TEST.TILED.LONG_SIDE", "64"],
    "tiled_min_size_test": ["TEST.INFERENCE_MODE", "tiled", "TEST.TILED.TILE", "32", "TEST.TILED.STRIDE", "24",
                            "TEST.TILED.LONG_SIDE", "0", "INPUT.MIN_SIZE_TEST", "48", "INPUT.MAX_SIZE_TEST", "96"],
}
SHAPES = {"1x1": (1, 1), "1xN": (1, 57), "Nx1": (57, 1), "tiny": (3, 5), "odd": (37, 23),
          "extreme_wide": (1, 6000), "extreme_tall": (700, 2), "larger_than_window": (150, 110)}
# the cells that refuse, and the key their message must name
REFUSALS = {("TrainingFreeSegmentor", "whole"): "TEST.INFERENCE_MODE",
            ("TrainingFreeSegmentor", "slide"): "TEST.INFERENCE_MODE"}
_predictors: dict = {}


def _predictor(arch: str, mode: str):
    if (arch, mode) not in _predictors:
        try:
            _predictors[arch, mode] = ovrsis.Predictor(ARCHS[arch], device="cpu", opts=MODES[mode])
        except ConfigError as err:
            _predictors[arch, mode] = err
    return _predictors[arch, mode]


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("arch", list(ARCHS))
def test_every_architecture_mode_and_shape_runs_or_refuses_naming_the_key(arch, mode, shape):
    predictor = _predictor(arch, mode)
    if (arch, mode) in REFUSALS:
        assert isinstance(predictor, ConfigError) and REFUSALS[arch, mode] in str(predictor)
        return
    assert not isinstance(predictor, Exception), predictor
    h, w = SHAPES[shape]
    image = np.random.default_rng(h * 7919 + w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    result = predictor.predict(image, ["water", "tree", "road"])
    assert result.probabilities.shape == (3, h, w) and result.labels.shape == (h, w)
    assert torch.isfinite(result.probabilities).all()


@pytest.mark.parametrize("size, max_size, expected", [
    ((1, 6000), 2560, (1, 2560)),  # detectron2 rounds the short side to 0 here (Pillow then fails)
    ((448, 12), 0, (1792, 48)),  # MAX_SIZE_TEST 0 = no cap (the SegEarth-OV configs), not a 0x0 target
    ((5, 7), 0, (48, 67)),
])
def test_test_resize_keeps_every_side_at_least_one_pixel(size, max_size, expected):
    from ovrsis.data.mappers import ResizeShortestEdge

    image = np.zeros((*size, 3), np.uint8)
    out = ResizeShortestEdge(48, max_size).get_transform(image).apply_image(image)
    assert out.shape[:2] == expected


@pytest.mark.parametrize("shape", [(448, 12), (3000, 20), (1, 500)])
def test_segearth_shipped_p_c_geometry_on_strips(shape):
    """SegEarth-OV's own geometry (224 windows, stride 112, long side 448) on strip-shaped images:
    SimFeatUp's padding must not crash (it did with reflect padding on a 1-patch-wide grid)."""
    predictor = _predictor("TrainingFreeSegmentor", "shipped")
    result = predictor.predict(np.full((*shape, 3), 90, np.uint8), ["water", "road"])
    assert result.probabilities.shape == (2, *shape) and torch.isfinite(result.probabilities).all()


MODES["shipped"] = []


# ------------------------------------------------------------------ no-data, end to end
def _geotiff(path: Path, bands: np.ndarray, nodata=None, mask=None) -> str:
    """(C, H, W) array as a GeoTIFF in UTM 33N, with a declared no-data value or an internal mask band."""
    import rasterio
    from rasterio.crs import CRS
    from rasterio.transform import from_origin

    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        with rasterio.open(path, "w", driver="GTiff", height=bands.shape[1], width=bands.shape[2],
                           count=bands.shape[0], dtype=bands.dtype.name, crs=CRS.from_epsg(32633),
                           transform=from_origin(500000.0, 5200000.0, 10.0, 10.0), nodata=nodata) as dst:
            dst.write(bands)
            if mask is not None:
                dst.write_mask(mask.astype(np.uint8) * 255)
    return str(path)


def _scene(h: int = 24, w: int = 32) -> np.ndarray:
    return np.random.default_rng(3).integers(1, 256, (3, h, w)).astype(np.uint8)


def _no_data_input(kind: str, folder: Path) -> tuple:
    """(path, extra demo arguments, valid (H, W)) with no-data in the first 8 columns."""
    import cv2

    bands = _scene()
    valid = np.ones(bands.shape[1:], bool)
    valid[:, :8] = False
    if kind == "declared value":
        bands[:, ~valid] = 0
        return _geotiff(folder / "declared.tif", bands, nodata=0), [], valid
    if kind == "mask band":
        return _geotiff(folder / "masked.tif", bands, mask=valid), [], valid
    if kind == "alpha mask":
        rgba = np.dstack([bands.transpose(1, 2, 0), valid.astype(np.uint8) * 255])
        cv2.imwrite(str(folder / "alpha.png"), rgba[:, :, [2, 1, 0, 3]])
        return str(folder / "alpha.png"), [], valid
    bands[:, ~valid] = 7  # "config key": a PNG cannot declare one; INPUT.RASTER.NODATA does
    cv2.imwrite(str(folder / "plain.png"), bands.transpose(1, 2, 0)[:, :, ::-1])
    return str(folder / "plain.png"), ["INPUT.RASTER.NODATA", "[7]"], valid


@pytest.mark.parametrize("kind", ["declared value", "mask band", "alpha mask", "config key"])
def test_no_data_is_no_data_in_every_demo_output(kind, tmp_path):
    import json

    import cv2
    import rasterio

    demo = import_tools("demo")["demo"]
    path, extra, valid = _no_data_input(kind, tmp_path)
    out = tmp_path / "out"
    assert demo.main([path, "--config-file", QUICKSTART, "--classes", "water", "road", "--output", str(out),
                      "--probabilities", "--geojson", "MODEL.DEVICE", "cpu", *extra]) == 0
    stem = Path(path).stem
    if path.endswith(".tif"):
        with rasterio.open(out / f"{stem}_labels.tif") as src:
            labels, nodata = src.read(1), src.nodata
    else:
        labels, nodata = cv2.imread(str(out / f"{stem}_labels.png"), cv2.IMREAD_UNCHANGED), 255
    assert nodata == 255 and (labels[~valid] == 255).all() and (labels[valid] < 2).all()
    with rasterio.open(out / f"{stem}_probabilities.tif") as src:
        probs = src.read()
    assert np.isnan(probs[:, ~valid]).all() and np.isfinite(probs[:, valid]).all()
    polygons = json.loads((out / f"{stem}.geojson").read_text())["features"]
    assert sum(f["properties"]["pixels"] for f in polygons) == valid.sum()
    overlay = cv2.imread(str(out / f"{stem}_overlay.png"))
    assert (overlay[~valid] == 0).all() and overlay[valid].any()  # no-data: the (zeroed) image, not a class colour


def test_no_data_is_ignored_by_the_loss_and_left_out_of_evaluation(tmp_path):
    """A dataset declaring NODATA: the training mask gets the ignore value there, the test record
    carries the valid mask and the evaluator scores only valid pixels."""
    from detectron2.data import DatasetCatalog
    from PIL import Image

    from ovrsis.data import SemanticSegmentationMapper
    from ovrsis.data.mappers import NO_DATA_LABEL
    from ovrsis.engine import setup_cfg
    from ovrsis.evaluation import OpenVocabSemSegEvaluator

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    image = _scene(16, 16).transpose(1, 2, 0).copy()
    image[:, :4] = 9
    Image.fromarray(image).save(tmp_path / "images" / "a.png")
    Image.fromarray(np.ones((16, 16), np.uint8)).save(tmp_path / "masks" / "a.png")
    entry = {"IMAGE_ROOT": str(tmp_path / "images"), "MASK_ROOT": str(tmp_path / "masks"),
             "CLASS_NAMES": ["land", "water"], "NODATA": [9]}
    cfg = setup_cfg(QUICKSTART, ["DATASETS.REGISTER", str({"nd": entry}), "DATASETS.TRAIN", "('nd',)",
                                 "DATASETS.TEST", "('nd',)", "INPUT.CROP.ENABLED", "False", "INPUT.MIN_SIZE_TRAIN",
                                 "(16,)", "INPUT.MIN_SIZE_TEST", "16", "DATASETS.PREFLIGHT.ENABLED", "False"])
    record = DatasetCatalog.get("nd")[0]
    train = SemanticSegmentationMapper(cfg, True)(record)["sem_seg"]
    flipped = bool((train[:, -4:] == NO_DATA_LABEL).all())  # the random horizontal flip
    assert (train[:, -4:] if flipped else train[:, :4]).eq(NO_DATA_LABEL).all()
    assert (train[:, :12] if flipped else train[:, 4:]).eq(1).all()
    # the loss leaves no-data out entirely, also with ignore pixels counted as negatives (official)
    from ovrsis.modeling.losses import per_class_bce

    logits = torch.randn(1, 2, 16, 16)
    for as_negative in (True, False):
        garbage = logits.masked_fill((train == NO_DATA_LABEL)[None, None], 1e4)  # anything on no-data pixels
        assert per_class_bce(garbage, train[None], 255, as_negative) == per_class_bce(logits, train[None], 255, as_negative)
    reference = per_class_bce(logits[..., 4:] if not flipped else logits[..., :12], train[None][..., 4:] if not flipped
                              else train[None][..., :12], 255, True)
    assert torch.allclose(per_class_bce(logits, train[None], 255, True), reference)
    test = SemanticSegmentationMapper(cfg, False, "nd")(record)
    assert test["valid"].shape == (16, 16) and not test["valid"][:, :4].any() and test["valid"][:, 4:].all()
    evaluator = OpenVocabSemSegEvaluator("nd", distributed=False)
    scores = torch.zeros(2, 16, 16)
    scores[1, :, 4:] = 1  # right on the valid pixels, wrong (class 0) on the no-data strip
    evaluator.process([test], [{"sem_seg": scores}])
    assert evaluator._conf.sum() == 16 * 12 and evaluator._conf[1, 1] == 16 * 12


# ------------------------------------------------------------------ one ignore value per dataset
def _uint16_dataset(root: Path, ignore: int) -> list:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    from PIL import Image

    for i in range(2):
        Image.fromarray(np.full((32, 32, 3), 60 * i + 30, np.uint8)).save(root / "images" / f"{i}.png")
        mask = np.zeros((32, 32), np.uint16)
        mask[:, 16:] = 1
        mask[:4] = ignore
        Image.fromarray(mask).save(root / "masks" / f"{i}.png")
    entry = {"IMAGE_ROOT": str(root / "images"), "MASK_ROOT": str(root / "masks"), "CLASS_NAMES": ["a", "b"],
             "IGNORE_VALUE": ignore}
    return ["DATASETS.REGISTER", str({"big_ignore": entry}), "DATASETS.TRAIN", "('big_ignore',)",
            "DATASETS.TEST", "('big_ignore',)"]


def test_a_dataset_with_ignore_value_65535_trains(tmp_path):
    from ovrsis.engine import Trainer, setup_cfg

    opts = _uint16_dataset(tmp_path / "ds", 65535)
    cfg = setup_cfg(QUICKSTART, [*opts, "SOLVER.MAX_ITER", "2", "SOLVER.IMS_PER_BATCH", "2", "INPUT.CROP.SIZE",
                                 "(32, 32)", "INPUT.MIN_SIZE_TRAIN", "(32,)", "DATALOADER.NUM_WORKERS", "0",
                                 "TEST.EVAL_PERIOD", "0", "OUTPUT_DIR", str(tmp_path / "out")])
    trainer = Trainer(cfg)
    assert trainer.model.ignore_value == 65535
    trainer.train()
    assert trainer.iter == 2 and np.isfinite(trainer.storage.history("total_loss").latest())
    with pytest.raises(ConfigError, match=r"MODEL.LOSS.IGNORE_VALUE 255 contradicts.*65535.*-1"):
        Trainer.build_model(setup_cfg(QUICKSTART, [*opts, "MODEL.LOSS.IGNORE_VALUE", "255"]))


def test_one_bit_png_masks_are_index_maps(tmp_path):
    from PIL import Image

    from ovrsis.data import read_mask
    from ovrsis.data.preflight import scan_records

    bits = np.zeros((8, 8), bool)
    bits[2:5] = True
    Image.fromarray(bits).convert("1").save(tmp_path / "m.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "i.png")
    mask = read_mask(str(tmp_path / "m.png"))
    assert mask.dtype == np.uint8 and np.array_equal(mask, bits.astype(np.uint8))
    report = scan_records("bits", [{"file_name": str(tmp_path / "i.png"), "sem_seg_file_name": str(tmp_path / "m.png")}],
                          ["land", "road"], 255, use_cache=False)
    assert report.ok, report.describe()


# ------------------------------------------------------------------ honest resume
def _train_opts(out: Path, max_iter: int, **extra) -> list:
    opts = {"OUTPUT_DIR": str(out), "SOLVER.MAX_ITER": max_iter, "SOLVER.IMS_PER_BATCH": 2,
            "SOLVER.CHECKPOINT_PERIOD": 3, "TEST.EVAL_PERIOD": 0, "DATALOADER.NUM_WORKERS": 0,
            "DATASETS.SYNTHETIC.NUM_TRAIN": 4, "DATASETS.SYNTHETIC.NUM_VAL": 2, "INPUT.CROP.SIZE": (64, 64),
            "INPUT.MIN_SIZE_TRAIN": (64,), "SOLVER.WARMUP_ITERS": 2, "SOLVER.WARMUP_FACTOR": 0.1,
            "DATASETS.PREFLIGHT.ENABLED": False, **extra}
    return [str(x) for kv in opts.items() for x in kv]


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory, one_thread) -> Path:
    """A run of MAX_ITER 8 stopped after 3 iterations (checkpoint model_0000002.pth)."""
    from ovrsis.engine import Trainer, setup_cfg

    out = tmp_path_factory.mktemp("interrupted")
    trainer = Trainer(setup_cfg(QUICKSTART, _train_opts(out, 8)))
    trainer.resume_or_load(resume=False)
    trainer.max_iter = 3
    trainer.train()
    return out


@pytest.mark.parametrize("case", ["solver keys changed", "optimizer changed", "nothing to resume",
                                  "output dir missing", "no readable checkpoint"])
def test_resume_applies_changed_solver_keys_or_refuses_or_says_nothing_was_resumed(case, interrupted_run, tmp_path,
                                                                                   caplog):
    import logging
    import shutil

    from detectron2.solver import build_lr_scheduler

    from ovrsis.engine import Trainer, setup_cfg
    from ovrsis.engine.trainer import build_param_groups
    from ovrsis.errors import CheckpointError

    out = tmp_path / "run"
    extra = {}
    if case in ("solver keys changed", "optimizer changed", "no readable checkpoint"):
        shutil.copytree(interrupted_run, out)
    if case == "solver keys changed":
        extra = {"SOLVER.BASE_LR": 0.0003, "SOLVER.MAX_ITER": 20, "SOLVER.WEIGHT_DECAY": 0.01}
    elif case == "optimizer changed":
        extra = {"SOLVER.OPTIMIZER": "SGD"}
    elif case == "nothing to resume":
        out.mkdir()
    elif case == "no readable checkpoint":
        for path in out.glob("*.pth"):
            path.write_bytes(b"truncated")
    cfg = setup_cfg(QUICKSTART, _train_opts(out, 8, **extra))  # "output dir missing": never created
    trainer = Trainer(cfg)
    if case == "optimizer changed":
        with pytest.raises(CheckpointError, match=r"SOLVER.OPTIMIZER changed.*'ADAMW' -> 'SGD'"):
            trainer.resume_or_load(resume=True)
        return
    with caplog.at_level(logging.INFO, logger="ovrsis"):
        trainer.resume_or_load(resume=True)
    if case != "solver keys changed":
        assert trainer.start_iter == 0 and trainer.iter == 0
        assert "nothing" in caplog.text and "iteration 0" in caplog.text
        return
    assert trainer.start_iter == 3
    assert "SOLVER.BASE_LR 0.001 -> 0.0003" in caplog.text and "SOLVER.MAX_ITER 8 -> 20" in caplog.text
    # the learning rates are those of a run configured like this one, at iteration 3
    reference = torch.optim.AdamW(build_param_groups(cfg, trainer.model), lr=cfg.SOLVER.BASE_LR)
    schedule = build_lr_scheduler(cfg, reference)
    schedule.last_epoch = 3
    assert [g["lr"] for g in trainer.optimizer.param_groups] == pytest.approx(schedule.get_lr())
    assert all(g["weight_decay"] in (0.01, 0.0) for g in trainer.optimizer.param_groups)
    assert trainer.scheduler._max_iter == 20
    trainer.max_iter = 4
    trainer.train()
    assert trainer.iter == 4


# ------------------------------------------------------------------ one path check for every key naming a file
# keys whose name says "file/folder" but that the run does not read, and why
NOT_READ = {"OUTPUT_DIR": "written by the run", "DATASETS.SYNTHETIC.ROOT": "a cache the run creates"}
_PATH_NAME = ("WEIGHTS", "PRETRAINED", "FILE", "FILES", "ROOT", "DIR", "PATH", "PATHS")


def test_every_file_naming_key_goes_through_the_path_check():
    """A new key naming a file (…WEIGHTS, …_FILE, …ROOT, …) must be listed in PATH_KEYS (or here,
    with the reason the run does not read it)."""
    from detectron2.config import get_cfg

    from ovrsis.config import PATH_KEYS, add_ovrsis_config

    cfg = get_cfg()
    add_ovrsis_config(cfg)
    keys = flatten_config(cfg)
    named = {k for k, v in keys.items() if isinstance(v, str) and k.rsplit(".", 1)[-1].endswith(_PATH_NAME)}
    assert named - set(NOT_READ) == set(PATH_KEYS), "list the new key in ovrsis.config.PATH_KEYS"
    assert set(PATH_KEYS) <= set(keys)


def _bad_path(tmp_path: Path, kind: str, case: str) -> str:
    if case == "missing":
        return str(tmp_path / "absent" / "x.pth")
    if kind == "dir":  # a file where a folder is expected
        (tmp_path / "file.txt").write_text("x")
        return str(tmp_path / "file.txt")
    (tmp_path / "weights_folder.pth").mkdir()  # a folder where a file is expected
    return str(tmp_path / "weights_folder.pth")


def _path_keys():
    from ovrsis.config import PATH_KEYS

    return sorted(PATH_KEYS)


@pytest.mark.parametrize("entry", ["setup_cfg (train, eval, demo, benchmark)", "Predictor(config node)",
                                   "sweep validation"])
@pytest.mark.parametrize("case", ["missing", "wrong kind"])
@pytest.mark.parametrize("key", _path_keys())
def test_each_path_key_is_checked_at_each_entry_point(key, case, entry, tmp_path):
    from ovrsis.config import PATH_KEYS
    from ovrsis.engine import setup_cfg

    kind, what, used_when = PATH_KEYS[key]
    path = _bad_path(tmp_path, kind, case)
    opts = [key, path] + ([used_when, "True"] if used_when else [])
    expected = "does not exist" if case == "missing" else ("is a file" if kind == "dir" else "is a folder")
    if entry.startswith("setup_cfg"):
        with pytest.raises(ConfigError) as err:
            setup_cfg(QUICKSTART, opts)
    elif entry.startswith("Predictor"):
        with pytest.raises(ConfigError) as err:
            ovrsis.Predictor(setup_cfg(QUICKSTART), opts=opts)
    else:
        from ovrsis.sweep.resolve import check_config
        from ovrsis.sweep.spec import SweepError

        cfg = setup_cfg(QUICKSTART).clone()
        cfg.defrost()
        cfg.merge_from_list(opts)
        with pytest.raises(SweepError) as err:
            check_config(cfg, "run 0")
    assert key in str(err.value) and path in str(err.value) and expected in str(err.value)
    assert what in str(err.value)  # what the key should hold


# every prediction tool that takes --weights, and the rest of a command line that would run it
TOOL_COMMANDS = {
    "demo": lambda image, out: [image, "--classes", "water", "road", "--output", out],
    "predict_scene": lambda image, out: [image, "--classes", "water", "road", "--output", out, "--no-progress"],
    "visualize_model": lambda image, out: [image, "--classes", "water", "road", "--output", out + ".png"],
    "web_demo": lambda image, out: ["--port", "0"],
}


@pytest.mark.parametrize("case", ["missing", "wrong kind"])
@pytest.mark.parametrize("tool", sorted(TOOL_COMMANDS))
def test_a_bad_weights_flag_is_reported_under_the_flag(tool, case, tmp_path, capsys):
    """The tools set MODEL.WEIGHTS from ``--weights``: the error names the flag as well as the key
    (predict_scene's launcher prints it as its one ``ovrsis: error:`` line)."""
    from PIL import Image

    module = import_tools(tool)[tool]
    image = str(tmp_path / "scene.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    weights = _bad_path(tmp_path, "file", case)
    args = ["--config-file", QUICKSTART, "--weights", weights, "--device", "cpu",
            *TOOL_COMMANDS[tool](image, str(tmp_path / "out"))]
    if tool == "predict_scene":
        with pytest.raises(SystemExit):
            module.run(args)
        message = capsys.readouterr().err
    else:
        with pytest.raises(ConfigError) as err:
            module.main(args)
        message = str(err.value)
    assert "MODEL.WEIGHTS" in message and weights in message and "--weights sets MODEL.WEIGHTS" in message
    assert message.count("(flags: ") == 1


@pytest.mark.parametrize("key", [k for k in _path_keys() if k.endswith("WEIGHTS") and k != "MODEL.WEIGHTS"])
def test_a_stream_that_is_off_does_not_need_its_weights_file(key, tmp_path):
    from ovrsis.config import PATH_KEYS
    from ovrsis.engine import setup_cfg

    used_when = PATH_KEYS[key][2]
    assert used_when, key
    setup_cfg(QUICKSTART, [key, str(tmp_path / "absent.pth"), used_when, "False"])


def test_a_registered_project_path_key_is_checked_by_setup_and_sweep_validation(tmp_path):
    """register_path_key: a project's key naming a file gets the one path check (a key the
    project's add_*_config would add; OUTPUT_DIR stands in for it here)."""
    from ovrsis import config
    from ovrsis.engine import setup_cfg
    from ovrsis.sweep.resolve import check_config
    from ovrsis.sweep.spec import SweepError

    (tmp_path / "not_a_folder").write_text("x")
    opts = ["OUTPUT_DIR", str(tmp_path / "not_a_folder")]
    cfg = setup_cfg(QUICKSTART).clone()  # built before the key is registered
    cfg.defrost()
    cfg.merge_from_list(opts)
    config.register_path_key("OUTPUT_DIR", "dir", "a project's folder")
    try:
        config.register_path_key("OUTPUT_DIR", "dir", "a project's folder")  # same entry: no error
        with pytest.raises(ValueError, match="already registered"):
            config.register_path_key("OUTPUT_DIR", "file", "another thing")
        with pytest.raises(ConfigError, match="OUTPUT_DIR.*is a file"):
            setup_cfg(QUICKSTART, opts)
        with pytest.raises(SweepError, match="a project's folder"):
            check_config(cfg, "run 0")
    finally:
        del config.PATH_KEYS["OUTPUT_DIR"]


# ------------------------------------------------------------------ raster conformance: entry points x raster kinds
H, W = 10, 14
_rng = np.random.default_rng(5)
RGB8 = _rng.integers(1, 256, (H, W, 3), dtype=np.uint8)
GREY8 = _rng.integers(1, 256, (H, W), dtype=np.uint8)
NIR8 = np.arange(H * W, dtype=np.uint8).reshape(H, W) % 200 + 20  # data, not a 0/255 mask
U16 = _rng.integers(0, 65536, (H, W, 3), dtype=np.uint16)
F32 = _rng.random((H, W, 3)).astype(np.float32)
SMOOTH = np.dstack(np.broadcast_arrays(np.linspace(40, 200, W, dtype=np.float32)[None, :].repeat(H, 0),
                                       np.linspace(60, 180, H, dtype=np.float32)[:, None].repeat(W, 1),
                                       np.full((H, W), 120, np.float32))).astype(np.uint8)
HALF = np.ones((H, W), bool)
HALF[:, :5] = False  # the no-data / transparent columns


def _rio(path: Path, bands: np.ndarray, **profile) -> str:
    """(C, H, W) through rasterio (GDAL's defaults unless ``profile`` says otherwise)."""
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="GTiff", height=bands.shape[1], width=bands.shape[2],
                           count=bands.shape[0], dtype=bands.dtype.name, **profile) as dst:
            dst.write(bands)
    return str(path)


def _geo() -> dict:
    from rasterio.crs import CRS
    from rasterio.transform import from_origin

    return {"crs": CRS.from_epsg(32633), "transform": from_origin(500000.0, 5200000.0, 10.0, 10.0)}


def _png(path: Path, array: np.ndarray, mode: str | None = None) -> str:
    from PIL import Image

    Image.fromarray(array, mode).save(path)
    return str(path)


def _tifffile(path: Path, array: np.ndarray, **kwargs) -> str:
    import tifffile

    tifffile.imwrite(path, array, **kwargs)
    return str(path)


def _with_preview(path: Path) -> str:
    """An RGB page followed by a smaller preview page (not a band stack)."""
    import tifffile

    with tifffile.TiffWriter(path) as tif:
        tif.write(RGB8, photometric="rgb")
        tif.write(RGB8[::2, ::2].copy(), photometric="rgb")
    return str(path)


def _palette(path: Path) -> str:
    from PIL import Image

    image = Image.fromarray((np.arange(H * W).reshape(H, W) % 3).astype(np.uint8), "P")
    image.putpalette([200, 10, 10, 10, 200, 10, 10, 10, 200] + [0] * 759)
    image.save(path)
    return str(path)


def _cmyk(path: Path) -> str:
    from PIL import Image

    Image.fromarray(RGB8).convert("CMYK").save(path)
    return str(path)


PALETTE_RGB = np.array([[200, 10, 10], [10, 200, 10], [10, 10, 200]], np.uint8)[np.arange(H * W).reshape(H, W) % 3]
_masked = RGB8.copy()
_masked[~HALF] = 0

# kind -> (writer(folder) -> path, raster settings (config spelling), expected RGB or an error pattern,
#          expected valid mask or None, tolerance)
RASTER_KINDS = {
    "8-bit RGB PNG": (lambda d: _png(d / "rgb.png", RGB8), {}, RGB8, None, 0),
    "8-bit 1-band PNG": (lambda d: _png(d / "grey.png", GREY8), {}, np.repeat(GREY8[..., None], 3, 2), None, 0),
    "16-bit RGB TIFF": (lambda d: _rio(d / "u16.tif", U16.transpose(2, 0, 1)),
                        {"SCALING": "fixed", "RANGE": [0, 65535]},
                        np.rint(U16 / 65535 * 255).astype(np.uint8), None, 0),
    "16-bit RGB TIFF, no scaling chosen": (lambda d: _rio(d / "u16_auto.tif", U16.transpose(2, 0, 1)), {},
                                           r"uint16.*(SCALING|--scaling)", None, 0),
    "float32 RGB TIFF": (lambda d: _rio(d / "f32.tif", F32.transpose(2, 0, 1)), {"SCALING": "fixed", "RANGE": [0, 1]},
                         np.rint(F32 * 255).astype(np.uint8), None, 0),
    "RGB+NIR uint16, contiguous, BANDS": (lambda d: _rio(d / "rgbn16.tif", np.concatenate(
        [U16.transpose(2, 0, 1), U16[None, ..., 0]])), {"BANDS": [1, 2, 3], "SCALING": "fixed", "RANGE": [0, 65535]},
        np.rint(U16 / 65535 * 255).astype(np.uint8), None, 0),
    "RGB+NIR uint16, contiguous, no BANDS": (lambda d: _rio(d / "rgbn16_nob.tif", np.concatenate(
        [U16.transpose(2, 0, 1), U16[None, ..., 0]])), {"SCALING": "fixed", "RANGE": [0, 65535]},
        r"4 data band.*(BANDS|--bands)", None, 0),
    "RGB+NIR uint8, band 4 tagged alpha (GDAL default)": (lambda d: _rio(d / "rgbn8.tif", np.concatenate(
        [RGB8.transpose(2, 0, 1), NIR8[None]])), {}, r"band 4 is tagged alpha but is not a mask.*(BANDS|--bands)",
        None, 0),
    "RGB+NIR uint8, alpha-tagged, BANDS [4, 1, 2]": (lambda d: _rio(d / "rgbn8_b.tif", np.concatenate(
        [RGB8.transpose(2, 0, 1), NIR8[None]])), {"BANDS": [4, 1, 2]}, np.dstack([NIR8, RGB8[..., 0], RGB8[..., 1]]),
        None, 0),
    "5 bands, one per page (tifffile default)": (lambda d: _tifffile(d / "pages.tif", np.concatenate(
        [RGB8.transpose(2, 0, 1), NIR8[None], GREY8[None]])), {"BANDS": [3, 2, 1]}, RGB8[..., ::-1], None, 0),
    "5 bands, one per page, no BANDS": (lambda d: _tifffile(d / "pages_nob.tif", np.concatenate(
        [RGB8.transpose(2, 0, 1), NIR8[None], GREY8[None]])), {}, r"5 data band.*(BANDS|--bands)", None, 0),
    "RGB page + smaller preview page": (lambda d: _with_preview(d / "preview.tif"), {}, RGB8, None, 0),
    "RGB planar (band-interleaved)": (lambda d: _tifffile(d / "planar.tif", RGB8.transpose(2, 0, 1).copy(),
                                                          photometric="rgb", planarconfig="separate"), {}, RGB8, None, 0),
    "4 bands, extra sample unspecified": (lambda d: _tifffile(d / "extra.tif", np.dstack([RGB8, NIR8]),
                                                              photometric="rgb", extrasamples=[0]), {},
                                          r"4 data band.*(BANDS|--bands)", None, 0),
    "RGB + alpha mask (RGBA PNG)": (lambda d: _png(d / "rgba.png", np.dstack([RGB8, HALF.astype(np.uint8) * 255])),
                                    {}, _masked, HALF, 0),
    "declared no-data (GeoTIFF)": (lambda d: _rio(d / "nodata.tif", _masked.transpose(2, 0, 1), nodata=0, **_geo()),
                                   {}, _masked, HALF, 0),
    "palette PNG": (lambda d: _palette(d / "palette.png"), {}, PALETTE_RGB, None, 0),
    "CMYK TIFF": (lambda d: _cmyk(d / "cmyk.tif"), {}, r"CMYK", None, 0),
    "YCbCr JPEG TIFF": (lambda d: _rio(d / "ycbcr.tif", SMOOTH.transpose(2, 0, 1), compress="JPEG",
                                       photometric="YCBCR"), {}, SMOOTH, None, 8),
    "compressed (LZW, tiled) GeoTIFF": (lambda d: _rio(d / "lzw.tif", RGB8.transpose(2, 0, 1), compress="LZW", tiled=True,
                                                       blockxsize=16, blockysize=16, **_geo()), {}, RGB8, None, 0),
    "not georeferenced TIFF": (lambda d: _rio(d / "plain.tif", RGB8.transpose(2, 0, 1)), {}, RGB8, None, 0),
}
ENTRY_POINTS = ["training mapper", "test mapper", "Predictor", "demo", "check_dataset", "preparation reader",
                "scene reader"]
# entry points whose documented rule differs for a kind: (entry, kind) -> expected
DIFFERENT = {("preparation reader", "8-bit 1-band PNG"): r"single band.*--bands 1",
             # scenes are read window by window from one image: a band stack in pages is refused
             ("scene reader", "5 bands, one per page (tifffile default)"): r"TIFF pages",
             ("scene reader", "5 bands, one per page, no BANDS"): r"TIFF pages"}


def _settings(spec: dict):
    from ovrsis.data.raster import RasterSettings

    return RasterSettings.from_config(spec)


def _flags(spec: dict) -> list:
    flags = []
    if "BANDS" in spec:
        flags += ["--bands", *map(str, spec["BANDS"])]
    if "SCALING" in spec:
        flags += ["--scaling", spec["SCALING"]]
    if "RANGE" in spec:
        flags += ["--range", *map(str, spec["RANGE"])]
    return flags


@pytest.fixture(scope="module")
def shared_predictor(one_thread):
    return ovrsis.Predictor(QUICKSTART, device="cpu", opts=["INPUT.MIN_SIZE_TEST", "0"])


def _read_through(entry: str, path: str, spec: dict, folder: Path, predictor, monkeypatch) -> tuple:
    """(RGB the entry point feeds the model, its valid mask or None) — or the error it raises."""
    import copy
    import sys

    from ovrsis.engine import setup_cfg

    if entry in ("training mapper", "test mapper", "check_dataset"):
        (folder / "images").mkdir(exist_ok=True)
        (folder / "masks").mkdir(exist_ok=True)
        Path(path).rename(folder / "images" / Path(path).name)
        path = str(folder / "images" / Path(path).name)
        mask = np.zeros((H, W), np.uint8)
        mask[:, -1] = 1  # the last column: tells a horizontal flip apart
        _png(folder / "masks" / (Path(path).stem + ".png"), mask)
        entry_opts = {"IMAGE_ROOT": str(folder / "images"), "MASK_ROOT": str(folder / "masks"),
                      "CLASS_NAMES": ["land", "water"], **spec}
        opts = ["DATASETS.REGISTER", str({"kind": entry_opts}), "DATASETS.TRAIN", "('kind',)",
                "DATASETS.TEST", "('kind',)", "INPUT.CROP.ENABLED", "False", "INPUT.COLOR_AUG_SSD", "False",
                "INPUT.MIN_SIZE_TRAIN", f"({H},)", "INPUT.MIN_SIZE_TEST", "0", "DATASETS.PREFLIGHT.ENABLED", "False"]
        if entry == "check_dataset":
            sys.path.insert(0, str(REPO / "datasets"))
            try:
                import check_dataset
            finally:
                sys.path.remove(str(REPO / "datasets"))
            import contextlib
            import io

            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                code = check_dataset.main(["kind", *opts])
            if code:
                raise AssertionError(printed.getvalue())  # the report's message
            return None, None
        from detectron2.data import DatasetCatalog

        from ovrsis.data import SemanticSegmentationMapper

        cfg = setup_cfg(QUICKSTART, opts)
        record = DatasetCatalog.get("kind")[0]
        out = SemanticSegmentationMapper(cfg, entry == "training mapper", "kind")(record)
        rgb = out["image"].permute(1, 2, 0).numpy()
        if entry == "test mapper":
            return rgb, None if out.get("valid") is None else out["valid"].numpy()
        labels = out["sem_seg"].numpy()
        if (labels[:, 0] == 1).all():  # the random horizontal flip: undo it
            rgb, labels = rgb[:, ::-1], labels[:, ::-1]
        ignored = labels == -1  # no-data pixels: NO_DATA_LABEL in the training mask
        return rgb, ~ignored if ignored.any() else None
    if entry == "Predictor":
        result = predictor.predict(path, ["land", "water"], _settings(spec))
        return result.image, result.valid
    if entry == "scene reader":  # ovrsis.scene: whole scenes, window by window (here one window)
        from ovrsis.scene.source import SceneReader, scene_info, scene_settings

        info = scene_info(path)
        image = SceneReader(path, info, scene_settings(path, _settings(spec))).read(0, 0, info.height, info.width)
        return image.rgb, image.valid
    if entry == "preparation reader":
        from ovrsis.data.prepare import read_image

        return read_image(Path(path), _settings(spec))[0], None
    # demo: the real main (flags, errors, outputs) on a model built once
    demo = import_tools("demo")["demo"]
    from ovrsis.data.raster import RasterSettings

    def cached(config, weights=None, device=None, inference_mode=None, opts=()):
        clone = copy.copy(predictor)
        clone.cfg = setup_cfg(config, [*opts, "MODEL.DEVICE", "cpu"])
        clone.raster = RasterSettings.from_config(clone.cfg.INPUT.RASTER)
        clone._vocabulary = None
        return clone

    monkeypatch.setattr(demo, "Predictor", cached)
    out = folder / "demo"
    assert demo.main([path, "--config-file", QUICKSTART, "--classes", "land", "water", "--output", str(out),
                      "--alpha", "0", *_flags(spec)]) == 0
    import cv2

    return cv2.imread(str(out / f"{Path(path).stem}_overlay.png"))[:, :, ::-1], None


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("kind", list(RASTER_KINDS))
def test_raster_conformance(kind, entry, tmp_path, shared_predictor, monkeypatch):
    """Each cell: the exact pixels the entry point hands the model (and its no-data mask where it
    keeps one), or a clear error naming the file and the key/flag to set."""
    from ovrsis.errors import OVRSISError

    writer, spec, expected, valid, tolerance = RASTER_KINDS[kind]
    expected = DIFFERENT.get((entry, kind), expected)
    path = writer(tmp_path)
    if isinstance(expected, str):
        with pytest.raises((OVRSISError, AssertionError)) as err:
            _read_through(entry, path, spec, tmp_path, shared_predictor, monkeypatch)
        message = str(err.value)
        assert Path(path).name in message and re.search(expected, message, re.S), message
        return
    rgb, got_valid = _read_through(entry, path, spec, tmp_path, shared_predictor, monkeypatch)
    if rgb is None:  # check_dataset: no problem reported
        return
    assert rgb.shape == expected.shape and rgb.dtype == np.uint8
    assert np.abs(rgb.astype(int) - expected.astype(int)).max() <= tolerance
    if entry in ("training mapper", "test mapper", "Predictor", "scene reader"):
        assert (got_valid is None) if valid is None else np.array_equal(got_valid, valid)
