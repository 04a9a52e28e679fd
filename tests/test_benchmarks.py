"""Benchmark datasets: records and protocols, preparation scripts on raw-format fixtures made
here, the label checks, tiled inference, and the benchmark runner on synthetic data."""
from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ovrsis  # noqa: F401  (compat shims before detectron2)
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog

from ovrsis.config import add_ovrsis_config, flatten_config
from ovrsis.data import DatasetError, load_folder_dataset
from ovrsis.errors import ConfigError
from ovrsis.data.benchmarks import (ALL_RECORDS, PROTOCOLS, RECORDS, SUITES, inference_from_config,
                                    register_benchmark_datasets)
from ovrsis.data.benchmarks import classes as C
from ovrsis.evaluation.benchmark_table import DatasetResult, table_rows, to_csv, to_markdown
from ovrsis.data.tile_grid import tile_starts
from ovrsis.modeling.tiling import TilingSettings, tiled_probabilities

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = str(REPO / "configs" / "quickstart.yaml")


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch, one_thread):
    """Single-threaded (conftest.py); caches stay in tmp."""
    monkeypatch.setenv("OVRSIS_CACHE", str(tmp_path / "cache"))


def load_script(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module  # dataclasses look their module up while the script runs
    spec.loader.exec_module(module)
    return module


def prepare(script: str, *args: str) -> None:
    load_script(REPO / "datasets" / f"{script}.py").main(list(args))


def save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def paint(colours, blocks: list[tuple[int, int, int, int, int]], size: tuple[int, int], fill) -> np.ndarray:
    """An RGB label: ``fill`` everywhere, then ``(class index, y0, y1, x0, x1)`` blocks."""
    label = np.zeros((*size, 3), dtype=np.uint8)
    label[:] = fill
    for index, y0, y1, x0, x1 in blocks:
        label[y0:y1, x0:x1] = colours[index]
    return label


def masks_of(root: Path, name: str) -> dict[str, np.ndarray]:
    record = RECORDS[name]
    image_dir, mask_dir = record.folders(str(root))
    samples = load_folder_dataset(name, image_dir, mask_dir, record.image_ext, record.mask_ext)
    return {s["image_id"]: np.asarray(Image.open(s["sem_seg_file_name"])) for s in samples}


def rgb(size=(64, 64), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


# ------------------------------------------------------------------ records, protocols, suites


def test_catalog_is_consistent():
    for record in ALL_RECORDS:
        script = record.prepare.split()[1]
        assert (REPO / script).is_file(), f"{record.name}: {script} missing"
        assert record.protocol in PROTOCOLS
        assert len(record.prompt_classes) <= len(record.classes)
    for suite in SUITES.values():
        for name in suite.datasets:
            assert name in RECORDS or name in DatasetCatalog.list(), name
    assert RECORDS["gsnet_potsdam_val"].ignore_value == 5 and len(RECORDS["gsnet_potsdam_val"].prompt_classes) == 5
    assert RECORDS["v1_loveda_all"].classes[0] == "no-data" and RECORDS["v2_loveda_all"].classes[0] == "Background"
    assert len(RECORDS["ovrsis95k_train"].classes) == 35 and len(RECORDS["landdiscover50k_train"].classes) == 40


def test_protocols_round_trip_through_the_config():
    """Every protocol names real config keys, and a config applying it is recognised as it."""
    for protocol in PROTOCOLS.values():
        cfg = get_cfg()
        add_ovrsis_config(cfg)
        cfg.merge_from_list(protocol.config_overrides())
        assert inference_from_config(cfg) == protocol
    cfg = get_cfg()
    add_ovrsis_config(cfg)
    cfg.merge_from_list(["TEST.INFERENCE_MODE", "slide", "TEST.SLIDE.WINDOW", 320])
    assert inference_from_config(cfg).name == "custom"


def test_missing_dataset_names_path_and_command(tmp_path):
    register_benchmark_datasets(str(tmp_path))
    with pytest.raises(DatasetError) as err:
        DatasetCatalog.get("v1_vaihingen_all")
    message = str(err.value)
    assert str(tmp_path / "Vaihingen" / "imgs") in message
    assert "python datasets/prepare_vaihingen.py" in message
    meta = MetadataCatalog.get("gsnet_flair_test")
    assert meta.ignore_label == 12 and len(meta.stuff_classes) == 13 and len(meta.prompt_classes) == 12


# ------------------------------------------------------------------ preparation scripts


def isprs_raw(raw: Path) -> None:
    """Two 520x520 Potsdam tiles (one train, one MMSeg-val), colour-coded with black boundaries."""
    for tile in ("2_10", "2_13"):
        save(raw / "2_Ortho_RGB" / f"top_potsdam_{tile}_RGB.tif", rgb((520, 520)))
        label = paint(C.ISPRS_COLOURS, [(1, 0, 256, 0, 256), (4, 256, 520, 256, 520), (5, 0, 10, 300, 520)],
                      (520, 520), C.ISPRS_COLOURS[0])
        label[100, :] = C.ISPRS_BOUNDARY
        save(raw / "5_Labels_all_noBoundary" / f"top_potsdam_{tile}_label_noBoundary.tif", label)


def test_potsdam_colours_tiles_splits_and_rerun(tmp_path, capsys):
    raw, root = tmp_path / "raw", tmp_path / "root"
    isprs_raw(raw)
    prepare("prepare_potsdam", "--raw", str(raw), "--root", str(root))
    v1 = masks_of(root, "v1_potsdam_all")
    assert sorted(v1) == sorted(f"top_potsdam_{t}_{y}_{x}" for t in ("2_10", "2_13") for y in (0, 256) for x in (0, 256))
    top_left = v1["top_potsdam_2_10_0_0"]
    assert top_left.shape == (256, 256) and top_left[0, 0] == 1 and top_left[100, 0] == 255  # building, boundary
    assert v1["top_potsdam_2_10_256_256"][0, 0] == 4  # car
    assert v1["top_potsdam_2_10_0_256"][0, 100] == 5 and v1["top_potsdam_2_10_0_256"][50, 100] == 0  # clutter, road
    gsnet = masks_of(root, "gsnet_potsdam_val")  # val tile only, 512 crops aligned to the border
    assert sorted(gsnet) == [f"top_potsdam_2_13_{y}_{x}" for y in (0, 8) for x in (0, 8)]
    assert gsnet["top_potsdam_2_13_8_8"][-1, -1] == 4 and gsnet["top_potsdam_2_13_0_0"][100, 0] == 5  # boundary
    out = capsys.readouterr().out
    assert "converted 2 raw images" in out and "Clutter/background" in out  # progress + histogram

    before = {p: p.stat().st_mtime_ns for p in root.rglob("*.png")}
    prepare("prepare_potsdam", "--raw", str(raw), "--root", str(root))
    assert "converted 0 raw images, 2 already prepared" in capsys.readouterr().out
    assert before == {p: p.stat().st_mtime_ns for p in root.rglob("*.png")}


def test_isaid_instance_colours_and_aeroseg_seen_masks(tmp_path):
    raw, root = tmp_path / "raw", tmp_path / "root"
    for split, stem in (("train", "P0001"), ("val", "P0002")):
        save(raw / split / "images" / f"{stem}.png", rgb((300, 520)))
        label = paint(C.ISAID_COLOURS, [(13, 0, 128, 0, 128), (3, 128, 256, 0, 256)], (300, 520), C.ISAID_BACKGROUND)
        save(raw / split / "Semantic_masks" / "images" / f"{stem}_instance_color_RGB.png", label)
    prepare("prepare_isaid", "--raw", str(raw), "--root", str(root))
    every = masks_of(root, "v1_isaid_all")
    assert sorted(every) == ["P0001_0_0", "P0002_0_0"]  # 256 tile at x=256 is all background: dropped
    mask = every["P0001_0_0"]
    assert mask[0, 0] == 13 and mask[200, 0] == 3 and mask[0, 200] == 255  # plane, tennis court, background
    assert list(masks_of(root, "v1_isaid_val")) == ["P0002_0_0"]

    prepare("prepare_aeroseg", "--root", str(root))
    seen = RECORDS["aeroseg_isaid_train_seen"]
    derived = masks_of(root, "aeroseg_isaid_train_seen")["P0001_0_0"]
    assert derived[0, 0] == seen.classes.index("plane")
    assert derived[200, 0] == 255  # tennis court is unseen
    val = MetadataCatalog.get("aeroseg_isaid_val")
    assert "tennis court" in val.unseen_classes and len(val.stuff_classes) == 15


def test_loveda_v1_keeps_nodata_v2_shifts_it(tmp_path):
    raw, root = tmp_path / "raw", tmp_path / "root"
    for area, stem in (("Urban", "3514"), ("Rural", "2522")):
        save(raw / "Val" / area / "images_png" / f"{stem}.png", rgb((32, 32)))
        save(raw / "Val" / area / "masks_png" / f"{stem}.png", np.arange(32 * 32, dtype=np.uint8).reshape(32, 32) % 8)
    prepare("prepare_loveda", "--raw", str(raw), "--root", str(root))
    v1, v2 = masks_of(root, "v1_loveda_all")["2522"], masks_of(root, "v2_loveda_all")["2522"]
    assert v1[0, :8].tolist() == list(range(8))
    assert v2[0, :8].tolist() == [255, 0, 1, 2, 3, 4, 5, 6]


def test_uavid_colour_labels_v1_and_merged_v2(tmp_path):
    raw, root = tmp_path / "raw", tmp_path / "root"
    for split, seq in (("train", "seq1"), ("val", "seq16"), ("test", "seq21")):
        save(raw / f"uavid_{split}" / seq / "Images" / "000000.png", rgb((40, 64)))
        blocks = [(i, 0, 40, 8 * i, 8 * i + 8) for i in range(8)]
        save(raw / f"uavid_{split}" / seq / "Labels" / "000000.png", paint(C.UAVID_COLOURS, blocks, (40, 64), 0))
    prepare("prepare_uavid", "--raw", str(raw), "--root", str(root))
    v1, v2 = masks_of(root, "v1_uavid_all"), masks_of(root, "v2_uavid_all")
    assert sorted(v1) == ["seq16_000000", "seq1_000000"]  # default splits: train + val
    assert v1["seq1_000000"][0, ::8].tolist() == list(range(8))
    assert v2["seq1_000000"][0, ::8].tolist() == [0, 1, 2, 3, 4, 5, 5, 6]  # moving + static car → Car
    assert RECORDS["piseg_uavid_zs"].mask_dir == RECORDS["v2_uavid_all"].mask_dir  # Pi-Seg's split reuses V2's masks


def test_flair_multiband_tif_to_v2_and_gsnet_ids(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    raw, root = tmp_path / "raw", tmp_path / "root"
    folder = raw / "D012_2019" / "Z1_UA"
    (folder / "img").mkdir(parents=True)
    (folder / "msk").mkdir()
    tifffile.imwrite(folder / "img" / "IMG_000123.tif", np.random.default_rng(0).integers(0, 256, (5, 16, 20), np.uint8))
    raw_ids = (np.arange(16 * 20).reshape(16, 20) % 19 + 1).astype(np.uint8)
    tifffile.imwrite(folder / "msk" / "MSK_000123.tif", raw_ids)
    prepare("prepare_flair", "--raw", str(raw), "--root", str(root))
    v2, gsnet = masks_of(root, "v2_flair_test")["IMG_000123"], masks_of(root, "gsnet_flair_test")["IMG_000123"]
    assert v2[0, :14].tolist() == list(range(12)) + [255, 255]
    assert gsnet[0, :14].tolist() == list(range(12)) + [12, 12]


def test_downstream_threshold_and_suffixes(tmp_path):
    raw, root = tmp_path / "raw", tmp_path / "root"
    save(raw / "val" / "images" / "am100_sat.jpg", rgb((24, 24)))
    gt = np.zeros((24, 24), np.uint8)
    gt[:, 12:] = 255
    gt[0, 0] = 127
    gt[0, 1] = 128
    save(raw / "val" / "gt" / "am100_mask.png", gt)
    prepare("prepare_downstream", "--dataset", "chn6cug_test", "--raw", str(raw), "--root", str(root))
    mask = masks_of(root, "chn6cug_test")["am100"]
    assert mask[0, :2].tolist() == [0, 1] and mask[5, 20] == 1 and mask[5, 5] == 0
    jpg = Path(RECORDS["chn6cug_test"].folders(str(root))[0]) / "am100.jpg"
    assert jpg.read_bytes() == (raw / "val" / "images" / "am100_sat.jpg").read_bytes()  # copied, not re-encoded


# ------------------------------------------------------------------ clear errors


def test_corrupt_image_is_named(tmp_path):
    raw, root = tmp_path / "raw", tmp_path / "root"
    isprs_raw(raw)
    bad = raw / "2_Ortho_RGB" / "top_potsdam_2_13_RGB.tif"
    bad.write_bytes(b"not an image")
    with pytest.raises(DatasetError, match=re.escape(str(bad))):
        prepare("prepare_potsdam", "--raw", str(raw), "--root", str(root))


def test_unpaired_label_is_named(tmp_path):
    raw, root = tmp_path / "raw", tmp_path / "root"
    isprs_raw(raw)
    (raw / "2_Ortho_RGB" / "top_potsdam_2_13_RGB.tif").unlink()
    with pytest.raises(DatasetError, match="labels without an image.*top_potsdam_2_13_label_noBoundary"):
        prepare("prepare_potsdam", "--raw", str(raw), "--root", str(root))


def test_out_of_range_label_fails_the_check(tmp_path):
    raw, root = tmp_path / "raw", tmp_path / "root"
    save(raw / "train" / "src" / "DJI_0001.JPG", rgb((20, 20)))
    mask = np.zeros((20, 20), np.uint8)
    mask[3, 3] = 7  # UDD5 has ids 0..4
    save(raw / "train" / "gt" / "DJI_0001.png", mask)
    with pytest.raises(DatasetError, match=r"id 7 in 1 masks.*DJI_0001\.png"):
        prepare("prepare_udd5", "--raw", str(raw), "--root", str(root))


def test_unknown_colour_is_an_error_unless_mapped(tmp_path):
    raw, root = tmp_path / "raw", tmp_path / "root"
    isprs_raw(raw)
    path = raw / "5_Labels_all_noBoundary" / "top_potsdam_2_10_label_noBoundary.tif"
    label = np.asarray(Image.open(path)).copy()
    label[5, 5] = (1, 2, 3)
    save(path, label)
    with pytest.raises(DatasetError, match=r"colours outside the class table: \(1, 2, 3\) x1"):
        prepare("prepare_potsdam", "--raw", str(raw), "--root", str(root))
    prepare("prepare_potsdam", "--raw", str(raw), "--root", str(root), "--unknown-colour", "255")
    assert masks_of(root, "v1_potsdam_all")["top_potsdam_2_10_0_0"][5, 5] == 255


# ------------------------------------------------------------------ tiled inference


def test_tile_starts():
    assert tile_starts(1000, 384, 256) == [0, 256, 512, 616]
    assert tile_starts(300, 384, 256) == [0]
    assert tile_starts(600, 256, 256, remainder="drop") == [0, 256]
    assert tile_starts(200, 256, 256, remainder="drop") == []


def test_tiles_stitch_and_chunk_exactly():
    """A scorer independent per class and pixel must give the same map tiled, chunked or not."""
    image = torch.arange(3 * 50 * 70, dtype=torch.float32).reshape(3, 50, 70)

    def score(tiles, names):  # per-pixel, per-class value, resolution kept
        weights = torch.tensor([float(len(n)) for n in names]).view(1, -1, 1, 1)
        return tiles[:, :1] * weights / 1e4

    names = ["a", "bb", "ccc", "dddd", "eeeee"]
    whole = tiled_probabilities(image, score, names, (50, 70), TilingSettings(tile=100, stride=100))
    tiled = tiled_probabilities(image, score, names, (50, 70), TilingSettings(tile=32, stride=16, batch=3,
                                                                             class_chunk=2))
    torch.testing.assert_close(tiled, whole)


def test_tiled_equals_whole_image_inference_when_one_tile_covers_it():
    import ovrsis.modeling  # noqa: F401  (registers the meta-architecture)
    from detectron2.modeling import build_model
    from ovrsis.engine import setup_cfg

    model = build_model(setup_cfg(QUICKSTART, ["MODEL.DEVICE", "cpu"])).eval()
    classes = ["water", "tree", "road"]
    x = {"image": torch.randint(0, 256, (3, 90, 70), dtype=torch.uint8), "height": 45, "width": 35}

    def score(tiles, names):
        return model.predict_logits(model._to_clip_input(model._normalize(tiles)), names).sigmoid()

    whole = model._inference_whole(x, classes)
    tiled = tiled_probabilities(x["image"], score, classes, (45, 35), TilingSettings(tile=128, stride=64))
    assert torch.equal(tiled, whole.cpu())
    several = tiled_probabilities(x["image"], score, classes, (45, 35), TilingSettings(tile=48, stride=32, batch=2))
    assert several.shape == whole.shape and not torch.equal(several, whole.cpu())


def mmcv_imrescale(image: np.ndarray, long_side: int) -> np.ndarray:
    """SegEarth-OV's test resize, written out: mmcv ``rescale_size`` with scale (long, long) and
    keep_ratio, then ``cv2.resize(INTER_LINEAR)`` on the (H, W, 3) uint8 array."""
    import cv2

    h, w = image.shape[:2]
    factor = min(long_side / max(h, w), long_side / min(h, w))
    return cv2.resize(image, (int(w * factor + 0.5), int(h * factor + 0.5)), interpolation=cv2.INTER_LINEAR)


@pytest.mark.parametrize("size,long_side", [((517, 733), 448), ((733, 517), 448), ((120, 90), 448),
                                            ((300, 1000), 896), ((448, 300), 448)])
def test_long_side_resize_is_opencv_on_uint8_exactly(size, long_side):
    from ovrsis.modeling.tiling import resize_long_side, window_average

    rng = np.random.default_rng(sum(size))
    array = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    image = torch.from_numpy(array).permute(2, 0, 1)
    expected = torch.from_numpy(mmcv_imrescale(array, long_side)).permute(2, 0, 1)
    got = resize_long_side(image, long_side)  # the default: opencv
    assert got.dtype == torch.uint8 and torch.equal(got, expected)
    floated = resize_long_side(image, long_side, "float")
    assert floated.shape == expected.shape
    if max(size) != long_side:
        assert not torch.equal(floated.round().to(torch.uint8), expected)  # the float resize is not the official one
    # Both tiled paths resize through it: windows see exactly the OpenCV-resized pixels.
    settings = TilingSettings(tile=224, stride=112, batch=4, long_side=long_side)
    averaged = window_average(image, lambda tiles, names: tiles[:, :2].float(), ["a", "b"], settings)
    assert torch.equal(averaged, expected[:2].float())
    stitched = tiled_probabilities(image, lambda tiles, names: tiles[:, :1].float(), ["a"], tuple(expected.shape[-2:]),
                                   settings)
    assert torch.equal(stitched, expected[:1].float())


def test_protocol_c_resizes_with_opencv_by_default():
    from ovrsis.modeling.tiling import resize_long_side

    cfg = get_cfg()
    add_ovrsis_config(cfg)
    cfg.merge_from_list(PROTOCOLS["P-C"].config_overrides())
    assert cfg.TEST.TILED.RESIZE == "opencv" and TilingSettings.from_config(cfg.TEST.TILED).resize == "opencv"
    cfg.merge_from_list(["TEST.TILED.RESIZE", "float"])
    assert inference_from_config(cfg).name == "custom"
    with pytest.raises(ValueError, match="TEST.TILED.RESIZE"):
        resize_long_side(torch.zeros(3, 8, 8), 4, "area")
    with pytest.raises(ValueError, match="resize one of"):
        TilingSettings(long_side=448, resize="area")


# ------------------------------------------------------------------ method configs vs their records
CONFIGS = sorted(p for p in (REPO / "configs").rglob("*.yaml") if "sweeps" not in p.parts)
_INFERENCE_PREFIXES = ("TEST.INFERENCE_MODE", "TEST.WHOLE.", "TEST.SLIDE.", "TEST.TILED.", "INPUT.MIN_SIZE_TEST",
                       "INPUT.MAX_SIZE_TEST")


def _protocol_comment(path: Path) -> str | None:
    """The config's ``# Protocol ...`` comment (with its ``#   `` continuation lines), from the file
    or, failing that, the nearest of its ``_BASE_`` files."""
    import yaml

    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("# Protocol "):
            comment = [line[2:]]
            for following in lines[i + 1:]:
                if not following.startswith("#   "):
                    break
                comment.append(following[4:])
            return " ".join(comment)
    base = (yaml.safe_load(path.read_text()) or {}).get("_BASE_")
    return _protocol_comment(path.parent / base) if base else None


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(REPO / "configs")))
def test_config_evaluates_as_its_protocol_record_or_says_so(path):
    """Every config: evaluated as the records of its test datasets say (datasets.md §1.3), or it
    states in a ``# Protocol <label>: ...`` comment the protocol it runs (the method's official
    evaluation) and names the records' protocol; overlays (no ``_BASE_``) set no inference key."""
    import yaml

    raw = yaml.safe_load(path.read_text()) or {}
    if "_BASE_" not in raw and path.name != "base.yaml":
        assert not [k for k in flatten_config(raw) if k.startswith(_INFERENCE_PREFIXES)], "an overlay changes inference"
        return
    cfg = get_cfg()
    add_ovrsis_config(cfg)
    cfg.set_new_allowed(True)
    cfg.merge_from_file(str(path))
    actual = inference_from_config(cfg)
    differing = sorted({RECORDS[name].protocol for name in cfg.DATASETS.TEST if name in RECORDS} - {actual.name})
    comment = _protocol_comment(path)
    if comment is not None:  # whatever it says must be true
        label = "custom" if actual.name == "custom" else actual.label
        assert comment.startswith(f"Protocol {label}:"), f"runs {actual.describe()}, says {comment!r}"
    if differing:
        assert comment is not None, (f"runs {actual.describe()}, its test datasets' records say {differing}: set "
                                     "them or add a '# Protocol ...' comment")
        assert all(name in comment for name in differing), comment


# ------------------------------------------------------------------ tables and the runner


def test_table_means_split_scores_and_subsets():
    def result(name, miou, macc, training=False, **extra):
        protocol = {"dataset": name.upper(), "split": "all", "label": f"{name} v1, P-A v1", "mean_classes": [],
                    "foreground": None, **extra.pop("protocol", {})}
        return DatasetResult(name, {"mIoU": miou, "mACC": macc, "fwIoU": 1.0, **extra}, protocol)

    results = [result("train", 90.0, 95.0), result("a", 30.0, 40.0, **{"s-mIoU": 50.0, "u-mIoU": 10.0,
                                                                       "h-mIoU": 16.0}),
               result("b", 20.0, None, **{"IoU-x": 10.0, "IoU-y": 60.0, "IoU-z": 0.0, "ACC-x": 50.0, "ACC-y": 70.0,
                                          "protocol": {"mean_classes": ["x", "y"]}})]
    rows = {row["dataset"]: row for row in table_rows(results, "train")}
    assert rows["b"]["mIoU"] == 35.0 and rows["b"]["mACC"] == 60.0  # class subset
    assert rows["mean"]["mIoU"] == pytest.approx((90 + 30 + 35) / 3)
    assert rows["mean_without_training_set"]["mIoU"] == pytest.approx(32.5)
    assert rows["mean"]["h-mIoU"] == 16.0 and math.isnan(rows["train"]["s-mIoU"])
    markdown = to_markdown(results, "train", "T")
    assert "Mean w/o TRAIN (all) (2 sets)" in markdown and "90.00 / 95.00" in markdown
    assert to_csv(results, "train").splitlines()[0] == "dataset,title,mIoU,mACC,fwIoU,s-mIoU,u-mIoU,h-mIoU,protocol"


def run_benchmark(tmp_path: Path, *args: str) -> str:
    runner = load_script(REPO / "eval_scripts" / "run_benchmark.py")
    opts = ["MODEL.DEVICE", "cpu", "DATASETS.SYNTHETIC.ROOT", str(tmp_path / "synthetic"),
            "DATASETS.SYNTHETIC.NUM_TRAIN", "2", "DATASETS.SYNTHETIC.NUM_VAL", "3", "DATALOADER.NUM_WORKERS", "0"]
    return runner.main(runner.build_parser().parse_args(["--config-file", QUICKSTART, *args, *opts]))


def test_runner_writes_table_with_protocol(tmp_path):
    out = tmp_path / "bench"
    markdown = run_benchmark(tmp_path, "--suite", "synthetic", "--output", str(out))
    assert "| synthetic_rs_val" in markdown and "s-mIoU" in markdown
    assert (out / "table.md").read_text() == markdown
    header, row = (out / "table.csv").read_text().splitlines()
    assert header.startswith("dataset,title,mIoU,mACC,fwIoU,s-mIoU")
    saved = json.loads((out / "inference" / "synthetic_rs_val" / "sem_seg_metrics.json").read_text())
    assert saved["protocol"]["inference"]["mode"] == "whole" and saved["protocol"]["label"] in row


def test_runner_resumes_and_applies_benchmark_protocols(tmp_path):
    """Two datasets; after losing one result only that one is evaluated again."""
    out = tmp_path / "bench"
    root = tmp_path / "root"
    save(root / "UDD5" / "all" / "src" / "a.jpg", rgb((40, 48)))
    save(root / "UDD5" / "all" / "gt" / "a.png", np.random.default_rng(1).integers(0, 5, (40, 48), dtype=np.uint8))
    args = ("--datasets", "synthetic_rs_val", "v2_udd5_all", "--output", str(out), "DATASETS.ROOT", str(root))
    run_benchmark(tmp_path, *args)
    udd5 = json.loads((out / "results" / "v2_udd5_all.json").read_text())
    assert udd5["protocol"]["inference"]["name"] == "P-B"  # V2's protocol, not the config's whole-image mode
    kept = (out / "results" / "synthetic_rs_val.json").stat().st_mtime_ns
    os.remove(out / "results" / "v2_udd5_all.json")
    markdown = run_benchmark(tmp_path, *args)
    assert (out / "results" / "synthetic_rs_val.json").stat().st_mtime_ns == kept
    assert (out / "results" / "v2_udd5_all.json").is_file()
    assert "Mean (2 sets)" in markdown


def test_runner_names_the_protocol_flag_when_a_model_refuses_the_default_protocol(tmp_path):
    """SegEarth-OV runs only its own windows (P-C); a benchmark whose default is P-B says which
    datasets asked for it and how to choose (``--protocol``), and ``--protocol config`` scores it."""
    root = tmp_path / "root"
    save(root / "UDD5" / "all" / "src" / "a.jpg", rgb((40, 48)))
    save(root / "UDD5" / "all" / "gt" / "a.png", np.random.default_rng(1).integers(0, 5, (40, 48), dtype=np.uint8))
    runner = load_script(REPO / "eval_scripts" / "run_benchmark.py")
    segearth = str(REPO / "configs" / "segearth_ov" / "base.yaml")
    opts = ["MODEL.DEVICE", "cpu", "MODEL.CLIP.ARCH", "ovrsis-tiny-vit", "MODEL.CLIP.PRETRAINED", "",
            "MODEL.TRAINING_FREE.SIMFEATUP_WEIGHTS", "", "DATASETS.ROOT", str(root), "DATALOADER.NUM_WORKERS", "0"]
    args = ["--config-file", segearth, "--datasets", "v2_udd5_all", "--output", str(tmp_path / "bench")]
    with pytest.raises(ConfigError, match=r"P-B v1, the benchmark's default protocol for v2_udd5_all: .*--protocol"):
        runner.main(runner.build_parser().parse_args([*args, *opts]))
    markdown = runner.main(runner.build_parser().parse_args([*args, "--protocol", "config", *opts]))
    assert "| v2_udd5_all" in markdown
