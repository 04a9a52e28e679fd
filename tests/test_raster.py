"""Real remote-sensing input: rasters read faithfully or refused clearly, dataset mistakes found
before training, one class-name rule."""
from __future__ import annotations

import logging
import warnings

import cv2
import numpy as np
import pytest
import rasterio
import torch
from PIL import Image
from rasterio.transform import from_origin

import ovrsis  # noqa: F401
from detectron2.data import DatasetCatalog

from ovrsis.data import DatasetError, SemanticSegmentationMapper, load_class_names
from ovrsis.data.preflight import preflight, scan_registered
from ovrsis.data.raster import (RasterError, RasterSettings, dataset_percentiles, read_image, read_raster, read_rgb8,
                                to_rgb8)
from ovrsis.data.vocabulary import split_subprompts
from ovrsis.engine import setup_cfg
from ovrsis.errors import ConfigError

warnings.filterwarnings("ignore", category=rasterio.errors.NotGeoreferencedWarning)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OVRSIS_CACHE", str(tmp_path / "cache"))


def write_tif(path, array: np.ndarray, nodata=None, photometric=None, driver="GTiff") -> str:
    """array (H, W, C) → a GeoTIFF with a CRS and transform."""
    h, w, c = array.shape
    profile = dict(driver=driver, width=w, height=h, count=c, dtype=array.dtype, crs="EPSG:32618",
                   transform=from_origin(500000, 4000000, 10, 10), nodata=nodata)
    if photometric:
        profile["photometric"] = photometric
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array.transpose(2, 0, 1))
    return str(path)


def uint16_scene(h=24, w=32, bands=3, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(333, 3087, (h, w, bands)).astype(np.uint16)


# ------------------------------------------------------------------ 1. reading
def test_uint16_geotiff_is_read_with_its_values(tmp_path):
    scene = uint16_scene()
    path = write_tif(tmp_path / "s.tif", scene)
    array, info = read_raster(path)
    assert array.dtype == np.uint16 and np.array_equal(array, scene)
    assert info.count == 3 and info.crs.to_epsg() == 32618 and info.transform.a == 10


def test_non_8bit_without_a_scaling_choice_is_an_error_naming_everything(tmp_path):
    path = write_tif(tmp_path / "s.tif", uint16_scene())
    with pytest.raises(RasterError) as err:
        read_rgb8(path)
    message = str(err.value)
    for expected in ("s.tif", "uint16", "3 band", "333", "INPUT.RASTER.SCALING", "RANGE"):
        assert expected in message


def test_fixed_and_percentile_scaling(tmp_path):
    scene = uint16_scene()
    path = write_tif(tmp_path / "s.tif", scene)
    fixed = read_rgb8(path, RasterSettings(scaling="fixed", value_range=(0, 4000)))
    assert fixed.dtype == np.uint8
    assert np.array_equal(fixed, np.clip(np.rint(scene / 4000 * 255), 0, 255).astype(np.uint8))
    stretched = read_rgb8(path, RasterSettings(scaling="percentile", percentiles=(0, 100)))
    for c in range(3):  # min → 0, max → 255 per band
        assert stretched[..., c].min() == 0 and stretched[..., c].max() == 255


def test_four_band_uint16_tiff_needs_a_band_choice(tmp_path):
    scene = uint16_scene(bands=4)
    path = write_tif(tmp_path / "four.tif", scene)
    with pytest.raises(RasterError) as err:
        read_rgb8(path, RasterSettings(scaling="fixed", value_range=(0, 4000)))
    assert "four.tif" in str(err.value) and "4 band" in str(err.value) and "INPUT.RASTER.BANDS" in str(err.value)
    rgb = read_rgb8(path, RasterSettings(bands=(3, 2, 1), scaling="fixed", value_range=(0, 4000)))
    expected = np.clip(np.rint(scene[..., [2, 1, 0]] / 4000 * 255), 0, 255).astype(np.uint8)
    assert np.array_equal(rgb, expected)
    with pytest.raises(RasterError, match="names band"):
        read_rgb8(path, RasterSettings(bands=(5, 2, 1), scaling="fixed", value_range=(0, 4000)))


def test_single_band_16bit_png_is_not_clipped(tmp_path):
    values = (np.arange(20 * 20).reshape(20, 20) * 100).astype(np.uint16)
    path = str(tmp_path / "grey16.png")
    assert cv2.imwrite(path, values)
    array, info = read_raster(path)
    assert array.dtype == np.uint16 and array.max() == values.max() > 255
    rgb = to_rgb8(array, info, RasterSettings(scaling="fixed", value_range=(0, float(values.max()))))
    assert rgb.shape == (20, 20, 3) and rgb[..., 0].max() == 255 and (rgb[..., 0] == rgb[..., 2]).all()


def test_8bit_rgb_png_and_jpeg_read_as_pillow_does(tmp_path):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (16, 20, 3)).astype(np.uint8)
    for name in ("x.png", "x.jpg"):
        Image.fromarray(rgb).save(tmp_path / name)
        ours = read_rgb8(str(tmp_path / name))
        pillow = np.asarray(Image.open(tmp_path / name).convert("RGB"))
        assert np.abs(ours.astype(int) - pillow.astype(int)).max() <= (0 if name.endswith("png") else 2)


def test_rgba_png_alpha_is_dropped_only_when_it_is_a_mask(tmp_path):
    rgba = np.dstack([np.full((8, 8), v, np.uint8) for v in (10, 20, 30, 255)])
    rgba[0, 0, 3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    image = read_image(str(tmp_path / "a.png"))
    assert image.rgb[1, 1].tolist() == [10, 20, 30] and image.rgb[0, 0].tolist() == [0, 0, 0]
    assert image.valid is not None and not image.valid[0, 0] and image.valid.sum() == 63
    rgba[..., 3] = 128  # soft alpha: data, not a mask
    Image.fromarray(rgba, "RGBA").save(tmp_path / "b.png")
    with pytest.raises(RasterError, match=r"band 4 is tagged alpha but is not a mask.*INPUT.RASTER.BANDS"):
        read_rgb8(str(tmp_path / "b.png"))
    assert read_rgb8(str(tmp_path / "b.png"), RasterSettings(bands=(1, 2, 3)))[0, 0].tolist() == [10, 20, 30]


def test_float_raster_with_nodata(tmp_path):
    scene = np.random.default_rng(0).random((10, 12, 3)).astype(np.float32)
    scene[0, 0] = -9999
    path = write_tif(tmp_path / "f.tif", scene, nodata=-9999)
    rgb = read_rgb8(path, RasterSettings(scaling="percentile", percentiles=(0, 100)))
    assert rgb[0, 0].tolist() == [0, 0, 0]  # no-data → 0, excluded from the stretch
    assert rgb[1:, 1:].max() == 255


def test_jpeg2000_is_read(tmp_path):
    if "JP2OpenJPEG" not in rasterio.drivers.raster_driver_extensions().values():
        pytest.skip("GDAL without the JP2OpenJPEG driver")
    scene = uint16_scene(h=32, w=32)
    path = write_tif(tmp_path / "s.jp2", scene, driver="JP2OpenJPEG")
    array, _ = read_raster(path)
    assert array.dtype == np.uint16 and array.shape == (32, 32, 3)


def test_corrupt_and_empty_files_name_the_reason(tmp_path):
    (tmp_path / "empty.tif").write_bytes(b"")
    (tmp_path / "junk.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(RasterError, match=r"empty.tif.*0 bytes"):
        read_raster(str(tmp_path / "empty.tif"))
    with pytest.raises(RasterError, match=r"junk.tif.*truncated"):
        read_raster(str(tmp_path / "junk.tif"))


def test_dataset_percentiles_are_cached_and_deterministic(tmp_path):
    paths = [write_tif(tmp_path / f"{i}.tif", uint16_scene(seed=i)) for i in range(5)]
    settings = RasterSettings(scaling="percentile_dataset")
    first = dataset_percentiles(paths, settings, cache_dir=str(tmp_path / "stats"))
    assert len(list((tmp_path / "stats").iterdir())) == 1
    assert dataset_percentiles(paths, settings, cache_dir=str(tmp_path / "stats")) == first
    lo, hi = first
    assert all(333 <= v < 600 for v in lo) and all(2800 < v <= 3086 for v in hi)


def _dataset(root, images: dict, masks: dict) -> None:
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    for name, array in images.items():
        if name.endswith(".tif"):
            write_tif(root / "images" / name, array)
        elif isinstance(array, bytes):
            (root / "images" / name).write_bytes(array)
        else:
            Image.fromarray(array).save(root / "images" / name)
    for name, array in masks.items():
        Image.fromarray(array).save(root / "masks" / name)


def register(root, classes, **extra) -> list:
    entry = {"IMAGE_ROOT": str(root / "images"), "MASK_ROOT": str(root / "masks"), "CLASS_NAMES": classes, **extra}
    return ["DATASETS.REGISTER", str({"rs": entry}), "DATASETS.TRAIN", "('rs',)", "DATASETS.TEST", "('rs',)"]


def test_mapper_reads_bands_and_scaling_from_the_dataset_entry(tmp_path):
    scene = uint16_scene(h=32, w=32, bands=4)
    mask = np.zeros((32, 32), np.uint8)
    _dataset(tmp_path, {"a.tif": scene}, {"a.png": mask})
    cfg = setup_cfg("", ["MODEL.DEVICE", "cpu", "INPUT.CROP.ENABLED", "False", "INPUT.COLOR_AUG_SSD", "False",
                         *register(tmp_path, ["land", "water"], BANDS=[3, 2, 1], SCALING="fixed", RANGE=[0, 4000])])
    record = DatasetCatalog.get("rs")[0]
    for is_train in (True, False):
        out = SemanticSegmentationMapper(cfg, is_train, "rs")(record)
        assert out["image"].dtype == torch.uint8 and out["image"].shape[0] == 3
    test = SemanticSegmentationMapper(cfg, False, "rs")(record)
    expected = np.clip(np.rint(scene[..., [2, 1, 0]] / 4000 * 255), 0, 255).astype(np.uint8)
    resized = cv2.resize(expected, (test["image"].shape[2], test["image"].shape[1]), interpolation=cv2.INTER_LINEAR)
    assert np.abs(test["image"].permute(1, 2, 0).numpy().astype(int) - resized.astype(int)).mean() < 3


def test_percentile_dataset_scaling_in_the_mapper(tmp_path):
    _dataset(tmp_path, {f"{i}.tif": uint16_scene(h=16, w=16, seed=i) for i in range(3)},
             {f"{i}.png": np.zeros((16, 16), np.uint8) for i in range(3)})
    cfg = setup_cfg("", ["MODEL.DEVICE", "cpu", "INPUT.CROP.ENABLED", "False",
                         *register(tmp_path, ["a"], SCALING="percentile_dataset")])
    mapper = SemanticSegmentationMapper(cfg, False, "rs")
    assert "rs" in mapper.dataset_stats
    assert mapper(DatasetCatalog.get("rs")[0])["image"].dtype == torch.uint8


# ------------------------------------------------------------------ 2. pre-flight
def test_preflight_reports_every_kind_of_mistake_in_one_message(tmp_path):
    good = np.full((16, 16, 3), 90, np.uint8)
    ids = np.zeros((16, 16), np.uint8)
    out_of_range = ids.copy()
    out_of_range[0, 0] = 7
    _dataset(tmp_path,
             {"ok.png": good, "bad.png": b"\x89PNG\r\n\x1a\nbroken", "big.png": np.zeros((20, 16, 3), np.uint8),
              "rgb.png": good, "ids.png": good, "deep.tif": uint16_scene(16, 16)},
             {"ok.png": ids, "bad.png": ids, "big.png": ids, "rgb.png": np.zeros((16, 16, 3), np.uint8),
              "ids.png": out_of_range, "deep.png": ids})
    setup_cfg("", ["MODEL.DEVICE", "cpu", *register(tmp_path, ["a", "b"])])
    with pytest.raises(DatasetError) as err:
        preflight(["rs"])
    message = str(err.value)
    for expected in ("unreadable image", "bad.png", "size mismatch", "big.png", "colour-coded", "rgb.png",
                     "id 7", "ids.png", "raster settings cannot convert", "deep.tif"):
        assert expected in message, expected


def test_preflight_explains_binary_masks_saved_as_0_255(tmp_path):
    mask = np.zeros((16, 16), np.uint8)
    mask[4:12, 4:12] = 255
    _dataset(tmp_path, {f"{i}.png": np.full((16, 16, 3), 50, np.uint8) for i in range(3)},
             {f"{i}.png": mask for i in range(3)})
    setup_cfg("", ["MODEL.DEVICE", "cpu", *register(tmp_path, ["background", "building"])])
    report = scan_registered("rs")
    assert not report.ok
    assert "0/255" in report.describe() and "building" in report.describe()


def test_preflight_passes_and_caches_a_clean_dataset(tmp_path):
    _dataset(tmp_path, {f"{i}.png": np.full((16, 16, 3), 50, np.uint8) for i in range(60)},
             {f"{i}.png": (np.arange(256).reshape(16, 16) % 2).astype(np.uint8) for i in range(60)})
    setup_cfg("", ["MODEL.DEVICE", "cpu", *register(tmp_path, ["a", "b"])])
    first = preflight(["rs"])[0]  # 60 pairs: scanned by the process pool
    assert first.ok and not first.cached and first.histogram[:2].tolist() == [60 * 128, 60 * 128]
    second = preflight(["rs"])[0]
    assert second.cached and second.histogram[:2].tolist() == first.histogram[:2].tolist()


def test_check_dataset_script_takes_config_registered_datasets(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "check_dataset", Path(__file__).resolve().parents[1] / "datasets" / "check_dataset.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    _dataset(tmp_path, {"0.png": np.full((16, 16, 3), 50, np.uint8)}, {"0.png": np.zeros((16, 16), np.uint8)})
    entry = {"IMAGE_ROOT": str(tmp_path / "images"), "MASK_ROOT": str(tmp_path / "masks"), "CLASS_NAMES": ["a"]}
    assert script.main(["mine", "DATASETS.REGISTER", str({"mine": entry})]) == 0
    assert "no problem found" in capsys.readouterr().out


def test_evaluator_blames_the_mask_not_the_prediction(tmp_path):
    from ovrsis.evaluation import OpenVocabSemSegEvaluator

    _dataset(tmp_path, {"0.png": np.zeros((16, 16, 3), np.uint8), "1.png": np.zeros((16, 16, 3), np.uint8)},
             {"0.png": np.zeros((16, 16, 3), np.uint8), "1.png": np.zeros((20, 16), np.uint8)})
    setup_cfg("", ["MODEL.DEVICE", "cpu", *register(tmp_path, ["a", "b"])])
    evaluator = OpenVocabSemSegEvaluator("rs", distributed=False)
    records = {r["image_id"]: r for r in DatasetCatalog.get("rs")}
    pred = {"sem_seg": torch.zeros(2, 16, 16)}
    with pytest.raises(DatasetError, match="colour-coded"):
        evaluator.process([records["0"]], [pred])
    with pytest.raises(DatasetError, match=r"mask .*1.png is 16x20 but its image"):
        evaluator.process([records["1"]], [pred])


# ------------------------------------------------------------------ 3. one vocabulary rule
def test_one_class_name_rule():
    assert split_subprompts("road,parking lot") == ["road", "parking lot"]
    assert split_subprompts("road, parking lot") == ["road", "parking lot"]
    assert split_subprompts(r"a\, b") == ["a, b"]
    with pytest.raises(ConfigError, match="duplicate"):
        load_class_names(["road", "road"])


def test_expand_prompts_uses_the_rule_in_both_synonym_modes():
    from ovrsis.modeling.encoders.clip import expand_prompts

    texts, _ = expand_prompts(["road,parking lot"], ["a photo of {}"], "mean")
    assert texts == ["a photo of road", "a photo of parking lot"]
    texts, _ = expand_prompts(["road,parking lot"], ["a photo of {}"], "first")
    assert texts == ["a photo of road"]


def test_list_like_names_are_warned_about(tmp_path, caplog):
    path = tmp_path / "classes.txt"
    path.write_text("water\nroad; parking lot\n")
    with caplog.at_level(logging.WARNING, logger="ovrsis"):
        assert load_class_names(path) == ["water", "road; parking lot"]
    assert "unsplit list" in caplog.text


def test_jpeg_ycbcr_orthophoto_tiff_reads_as_rgb(tmp_path):
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[..., 0] = 200  # red
    path = tmp_path / "ortho.tif"
    with rasterio.open(path, "w", driver="GTiff", width=32, height=32, count=3, dtype="uint8", compress="JPEG",
                       photometric="YCBCR", crs="EPSG:32618", transform=from_origin(0, 0, 1, 1)) as dst:
        dst.write(rgb.transpose(2, 0, 1))
    out = read_rgb8(str(path))
    assert out.shape == (32, 32, 3) and abs(int(out[..., 0].mean()) - 200) < 8 and out[..., 2].mean() < 10


@pytest.mark.parametrize("band", [1, 2, 4])
def test_one_band_named_by_bands_is_grey_rgb(tmp_path, band):
    """``BANDS [b]``: band b feeds R, G and B (grey), from any band of a stack."""
    stack = (np.arange(5 * 6 * 4).reshape(5, 6, 4) * 7 % 251).astype(np.uint8)
    path = str(tmp_path / "stack.tif")
    with rasterio.open(path, "w", driver="GTiff", height=5, width=6, count=4, dtype="uint8") as dst:
        dst.write(stack.transpose(2, 0, 1))
    rgb = read_rgb8(path, RasterSettings(bands=(band,)))
    assert rgb.shape == (5, 6, 3)
    for channel in range(3):
        np.testing.assert_array_equal(rgb[..., channel], stack[..., band - 1])
