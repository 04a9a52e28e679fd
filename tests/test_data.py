"""ovrsis.data: vocabularies, folder datasets and their checks, synthetic scenes, mappers."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ovrsis  # noqa: F401  (compat shims before detectron2)
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog

from ovrsis.config import add_ovrsis_config
from ovrsis.data import (
    DatasetError,
    SemanticSegmentationMapper,
    dataset_root,
    ensure_synthetic_dataset,
    load_class_names,
    register_datasets_from_config,
    register_folder_dataset,
    register_synthetic_datasets,
)
from ovrsis.data import synthetic
from ovrsis.data.mappers import ColorJitterTransform

CLASSES = ["water", "road", "building"]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Nothing a test generates may land in the user's real cache."""
    monkeypatch.setenv("OVRSIS_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    return ensure_synthetic_dataset(tmp_path_factory.mktemp("synthetic"))


def write_folder_dataset(root: Path, stems=("a", "b", "c"), size=(40, 56), mask_stems=None) -> Path:
    """Images (h×w = ``size``) and masks with ids ``0..len(CLASSES)-1`` under ``root``."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for stem in stems:
        image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        Image.fromarray(image).save(root / "images" / f"{stem}.jpg")
    for stem in stems if mask_stems is None else mask_stems:
        mask = rng.integers(0, len(CLASSES), size, dtype=np.uint8)
        mask[:4] = 255
        Image.fromarray(mask).save(root / "masks" / f"{stem}.png")
    return root


def register_tmp(name: str, root: Path, **kwargs) -> None:
    register_folder_dataset(name, root / "images", root / "masks", CLASSES, **kwargs)


def mapper_cfg(min_size_train=64, crop=(48, 48), color_aug=True):
    cfg = get_cfg()
    add_ovrsis_config(cfg)
    cfg.INPUT.MIN_SIZE_TRAIN = (min_size_train,)
    cfg.INPUT.MAX_SIZE_TRAIN = 1000
    cfg.INPUT.CROP.SIZE = crop
    cfg.INPUT.COLOR_AUG_SSD = color_aug
    cfg.INPUT.MIN_SIZE_TEST = 80
    cfg.INPUT.MAX_SIZE_TEST = 1000
    return cfg


# --- vocabulary ---------------------------------------------------------------------------


def test_vocabulary_from_list_txt_and_json(tmp_path):
    txt = tmp_path / "classes.txt"
    txt.write_text("water\n\n  road \nbuilding\n")
    js = tmp_path / "classes.json"
    js.write_text(json.dumps(CLASSES))
    assert load_class_names(CLASSES) == load_class_names(txt) == load_class_names(str(js)) == CLASSES


def test_vocabulary_errors_name_the_file(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(ValueError, match="empty.txt"):
        load_class_names(empty)
    with pytest.raises(ValueError, match="missing.json.*does not exist"):
        load_class_names(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="empty"):
        load_class_names([])
    with pytest.raises(ValueError, match="empty"):
        register_folder_dataset("test_empty_vocab", tmp_path, tmp_path, [])


# --- synthetic scenes ---------------------------------------------------------------------


def test_synthetic_generation_is_deterministic(tmp_path, scenes):
    again = ensure_synthetic_dataset(tmp_path / "again")
    files = sorted(p.relative_to(scenes) for p in scenes.rglob("*.png"))
    assert len(files) == 2 * (64 + 16)
    assert files == sorted(p.relative_to(again) for p in again.rglob("*.png"))
    assert all((scenes / f).read_bytes() == (again / f).read_bytes() for f in files)
    other_seed = ensure_synthetic_dataset(tmp_path / "other", num_train=1, num_val=1, seed=1)
    first = Path("val/images/00000.png")
    assert (other_seed / first).read_bytes() != (scenes / first).read_bytes()


def test_synthetic_labels(scenes):
    val = np.stack([np.asarray(Image.open(p)) for p in sorted((scenes / "val/masks").glob("*.png"))])
    train = np.stack([np.asarray(Image.open(p)) for p in sorted((scenes / "train/masks").glob("*.png"))])
    image = np.asarray(Image.open(scenes / "val/images/00000.png"))
    assert image.shape == (128, 128, 3) and val.shape[1:] == (128, 128)
    assert set(np.unique(val)) == set(range(len(synthetic.CLASS_NAMES)))  # valid ids, every class present
    assert set(np.unique(train)) == set(range(len(synthetic.SEEN_CLASSES))) | {255}  # unseen → ignore


def test_synthetic_registration_is_lazy_and_regenerates_on_new_parameters(tmp_path):
    register_synthetic_datasets(num_train=3, num_val=2, image_size=64)
    cache = tmp_path / "cache" / "synthetic_rs"
    assert not cache.exists()  # registering does not generate
    train = DatasetCatalog.get(synthetic.TRAIN_NAME)
    assert len(train) == 3 and train[0]["height"] == train[0]["width"] == 64
    assert len(DatasetCatalog.get(synthetic.VAL_NAME)) == 2
    register_synthetic_datasets(num_train=3, num_val=2, image_size=96)
    assert DatasetCatalog.get(synthetic.TRAIN_NAME)[0]["width"] == 96
    assert sorted(p.name for p in cache.iterdir()) == [
        "v1-size64-train3-val2-seed0",
        "v1-size96-train3-val2-seed0",
    ]  # no half-written staging folders left behind

    val_meta = MetadataCatalog.get(synthetic.VAL_NAME)
    assert val_meta.stuff_classes == list(synthetic.CLASS_NAMES)
    assert val_meta.unseen_classes == ["bare soil", "vehicle"]
    assert val_meta.seen_classes == ["water", "tree", "grass", "road", "building"]
    train_meta = MetadataCatalog.get(synthetic.TRAIN_NAME)
    assert train_meta.stuff_classes == train_meta.seen_classes == list(synthetic.SEEN_CLASSES)
    assert train_meta.unseen_classes == [] and train_meta.ignore_label == 255
    register_synthetic_datasets()  # restore the defaults for other tests


# --- folder datasets ----------------------------------------------------------------------


def test_folder_dataset_registration(tmp_path):
    root = write_folder_dataset(tmp_path / "ds")
    register_tmp("test_folder", root, seen_classes=["water", "road"], unseen_classes=["building"])
    records = DatasetCatalog.get("test_folder")
    assert [r["image_id"] for r in records] == ["a", "b", "c"]
    assert records[0]["file_name"].endswith("a.jpg") and records[0]["sem_seg_file_name"].endswith("a.png")
    assert (records[0]["height"], records[0]["width"]) == (40, 56)
    meta = MetadataCatalog.get("test_folder")
    assert meta.stuff_classes == CLASSES and meta.ignore_label == 255
    assert meta.seen_classes == ["water", "road"] and meta.unseen_classes == ["building"]
    assert meta.evaluator_type == "sem_seg"
    assert (meta.image_root, meta.sem_seg_root) == (str(root / "images"), str(root / "masks"))

    register_tmp("test_folder", root, ignore_value=0)  # re-registering replaces
    assert MetadataCatalog.get("test_folder").ignore_label == 0
    assert MetadataCatalog.get("test_folder").seen_classes == []
    with pytest.raises(ValueError, match="not in its class list"):
        register_tmp("test_folder", root, unseen_classes=["vehicle"])


def test_register_from_config(tmp_path):
    write_folder_dataset(tmp_path / "data" / "mini")
    (tmp_path / "classes.json").write_text(json.dumps(CLASSES))
    cfg = mapper_cfg()
    cfg.DATASETS.ROOT = str(tmp_path / "data")
    cfg.DATASETS.SYNTHETIC.NUM_TRAIN = 2
    (tmp_path / "register.yaml").write_text(
        "DATASETS:\n"
        "  REGISTER:\n"
        "    mini_all:\n"
        "      IMAGE_ROOT: mini/images\n"
        "      MASK_ROOT: mini/masks\n"
        f"      CLASS_NAMES: {tmp_path / 'classes.json'}\n"
        "      UNSEEN_CLASSES: [building]\n"
        "      IMAGE_EXT: jpg\n"
    )
    cfg.merge_from_file(str(tmp_path / "register.yaml"))
    register_datasets_from_config(cfg)
    assert dataset_root(cfg) == str(tmp_path / "data")
    assert len(DatasetCatalog.get("mini_all")) == 3
    assert MetadataCatalog.get("mini_all").unseen_classes == ["building"]
    assert len(DatasetCatalog.get(synthetic.TRAIN_NAME)) == 2

    cfg.DATASETS.REGISTER.mini_all.MASK_DIR = "typo"
    with pytest.raises(ValueError, match="MASK_DIR"):
        register_datasets_from_config(cfg)
    register_synthetic_datasets()


def test_missing_folder_is_named(tmp_path):
    root = write_folder_dataset(tmp_path / "ds")
    register_folder_dataset("test_missing", root / "images", root / "labels", CLASSES)
    with pytest.raises(DatasetError, match="mask folder not found: .*labels"):
        DatasetCatalog.get("test_missing")


def test_unpaired_files_are_named(tmp_path):
    root = write_folder_dataset(tmp_path / "ds", stems=("a", "b", "c"), mask_stems=("a", "b", "z"))
    register_tmp("test_unpaired", root)
    expected = r"1 of 3 images have no mask .*\(e\.g\. c\).*1 of 3 masks have no image .*z"
    with pytest.raises(DatasetError, match=expected):
        DatasetCatalog.get("test_unpaired")


def test_no_images_is_an_error(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    register_tmp("test_no_images", tmp_path)
    with pytest.raises(DatasetError, match="no images"):
        DatasetCatalog.get("test_no_images")


# --- mappers ------------------------------------------------------------------------------


def test_color_jitter_changes_colour_only():
    image = np.zeros((4, 4, 3), dtype=np.uint8)
    image[..., 0] = 200  # pure red
    neutral = ColorJitterTransform(0.0, 1.0, 1.0, 0.0, "RGB")
    assert np.array_equal(neutral.apply_image(image), image)
    green = ColorJitterTransform(0.0, 1.0, 1.0, 120.0, "RGB").apply_image(image)
    assert green.dtype == np.uint8 and green[0, 0].tolist() == [0, 200, 0]
    mask = np.arange(16, dtype=np.uint8).reshape(4, 4)
    assert np.array_equal(ColorJitterTransform(20.0, 1.3, 0.5, 10.0, "RGB").apply_segmentation(mask), mask)


def test_out_of_range_label_is_caught_by_the_mapper(tmp_path):
    root = write_folder_dataset(tmp_path / "ds")
    bad = np.zeros((40, 56), dtype=np.uint8)
    bad[5, 5], bad[6, 6] = 7, 200
    Image.fromarray(bad).save(root / "masks" / "b.png")
    register_tmp("test_bad_label", root)
    mapper = SemanticSegmentationMapper(mapper_cfg(), is_train=True, dataset_name="test_bad_label")
    records = DatasetCatalog.get("test_bad_label")
    mapper(records[0])
    with pytest.raises(DatasetError, match=r"b\.png holds ids \[7, 200\] outside 0\.\.2"):
        mapper(records[1])


def test_corrupt_image_is_named_by_the_mapper(tmp_path):
    root = write_folder_dataset(tmp_path / "ds")
    register_tmp("test_corrupt", root)
    records = DatasetCatalog.get("test_corrupt")
    (root / "images" / "c.jpg").write_bytes(b"not an image at all")
    mapper = SemanticSegmentationMapper(mapper_cfg(), is_train=True, dataset_name="test_corrupt")
    with pytest.raises(DatasetError, match=r"cannot read image .*c\.jpg"):
        mapper(records[2])


@pytest.mark.parametrize("min_size, crop", [(64, (48, 48)), (32, (48, 64))])
def test_train_mapper_output_has_crop_size(tmp_path, min_size, crop):
    """A crop larger than the resized image is reached by padding with ignore."""
    register_tmp("test_train_mapper", write_folder_dataset(tmp_path / "ds"))
    cfg = mapper_cfg(min_size_train=min_size, crop=crop)
    mapper = SemanticSegmentationMapper(cfg, is_train=True, dataset_name="test_train_mapper")
    for record in DatasetCatalog.get("test_train_mapper"):
        out = mapper(record)
        assert out["image"].shape == (3, *crop) and out["image"].dtype == torch.uint8
        assert out["sem_seg"].shape == crop and out["sem_seg"].dtype == torch.int64
        assert set(out["sem_seg"].unique().tolist()) <= {0, 1, 2, 255}
        assert (out["height"], out["width"]) == (40, 56)
    if min_size == 32:  # resized to 32×45, so the bottom rows are padding
        assert (out["sem_seg"][32:] == 255).all() and (out["image"][:, 32:] == 0).all()


def test_train_mapper_on_synthetic_defaults(scenes):
    register_synthetic_datasets(root=scenes.parent)
    cfg = mapper_cfg(min_size_train=128, crop=(96, 96))
    cfg.DATASETS.TRAIN = (synthetic.TRAIN_NAME,)
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 0.75
    mapper = SemanticSegmentationMapper(cfg, is_train=True)
    out = mapper(DatasetCatalog.get(synthetic.TRAIN_NAME)[0])
    assert out["image"].shape == (3, 96, 96)
    assert set(out["sem_seg"].unique().tolist()) <= set(range(len(synthetic.SEEN_CLASSES))) | {255}
    register_synthetic_datasets()


def test_test_mapper_keeps_original_size(tmp_path):
    register_tmp("test_test_mapper", write_folder_dataset(tmp_path / "ds"))
    mapper = SemanticSegmentationMapper(mapper_cfg(), is_train=False)
    out = mapper(DatasetCatalog.get("test_test_mapper")[0])
    assert out["image"].shape == (3, 80, 112)  # shortest edge 40 → MIN_SIZE_TEST 80
    assert (out["height"], out["width"]) == (40, 56)
    assert "sem_seg" not in out
