"""Class-id cross-check of every preparation script against the reference converter of its release.

Each case draws a raw label in the release's own encoding (colour table or index ids) as
vertical stripes, one per value of the reference table, runs the prepare script on it (in the
release layout, after a ``--dry-run`` that must write nothing) and asserts that the class
*name* every stripe gets in the prepared record equals the name the reference gives that
value. Reference tables (facts, transcribed; the source of each is named on its constant):

- ISPRS Potsdam/Vaihingen: mmsegmentation ``tools/dataset_converters/{potsdam,vaihingen}.py``
  ``color_map`` (BGR, as ``mmcv.imread`` returns it; index 0 = black boundary) with
  ``reduce_zero_label`` and ``PotsdamDataset``/``ISPRSDataset`` classes.
- iSAID: mmsegmentation ``tools/dataset_converters/isaid.py`` palette with ``iSAIDDataset`` classes.
- UAVid: the UAVid toolkit's colour table (``UAVidColorTransformer``); SegEarth-OV
  ``tools/dataset_converters/uavid.py`` + ``UAVidDataset`` for its 7-class ids.
- LoveDA: mmsegmentation ``LoveDADataset`` (reduce_zero_label).
- OpenEarthMap: ``bao18/open_earth_map`` README class ids; SegEarth-OV ``OpenEarthMapDataset``.
- UDD5 / VDD: SegEarth-OV ``UDD5Dataset`` / ``VDDDataset`` classes (index labels used as stored).
- DLRSD: third-party DLRSD loaders (``mask == class + 1`` with the alphabetical class dict).
- FLAIR #1: the FLAIR datasheet's class ids 1-19.
- FloodNet: the FloodNet-Supervised_v1.0 README class ids.
- FAST: GSNet's FAST class list (ids stored in ``semlabels/gray``).
- Binary sets: SegEarth-OV ``tools/dataset_converters/{whu,chn6-cug,deepglobe_road,xBD}.py``
  (grey >= 128, xBD >= 1).
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import ovrsis  # noqa: F401  (compat shims before detectron2)
from ovrsis.data import load_folder_dataset
from ovrsis.data.benchmarks import RECORDS
from test_prepare_layouts import run  # runs a datasets/prepare_*.py main in-process

REPO = Path(__file__).resolve().parents[1]
IGNORED = "<ignored>"


def save(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path)
    return path


def stripes(values: list, height: int, width: int) -> np.ndarray:
    """A label whose column block ``i`` holds ``values[i]`` (an id or an RGB colour)."""
    step = width // len(values)
    first = np.asarray(values[0])
    label = np.zeros((height, width) + first.shape, dtype=np.uint8)
    for i, value in enumerate(values):
        label[:, i * step:(i + 1) * step] = value
    label[:, len(values) * step:] = values[-1]
    return label


def rgb(height: int, width: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)


def norm(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", name.strip().lower())


# reference tables: release encoding → reference class name (sources in the module docstring)
MMSEG_ISPRS_BGR = {(0, 0, 0): IGNORED, (255, 255, 255): "impervious_surface", (255, 0, 0): "building",
                   (255, 255, 0): "low_vegetation", (0, 255, 0): "tree", (0, 255, 255): "car", (0, 0, 255): "clutter"}
ISPRS_REF = {bgr[::-1]: name for bgr, name in MMSEG_ISPRS_BGR.items()}  # drawn in RGB, as the files store it
ISPRS_ALIASES = {"impervious surface": "impervious surfaces", "clutter": "clutter/background"}
MMSEG_ISAID = {(0, 0, 0): IGNORED, (0, 0, 63): "ship", (0, 63, 63): "store_tank", (0, 63, 0): "baseball_diamond",
               (0, 63, 127): "tennis_court", (0, 63, 191): "basketball_court", (0, 63, 255): "Ground_Track_Field",
               (0, 127, 63): "Bridge", (0, 127, 127): "Large_Vehicle", (0, 0, 127): "Small_Vehicle",
               (0, 0, 191): "Helicopter", (0, 0, 255): "Swimming_pool", (0, 191, 127): "Roundabout",
               (0, 127, 191): "Soccer_ball_field", (0, 127, 255): "plane", (0, 100, 155): "Harbor"}
UAVID_TOOLKIT = {(0, 0, 0): "Background clutter", (128, 0, 0): "Building", (128, 64, 128): "Road",
                 (0, 128, 0): "Tree", (128, 128, 0): "Low vegetation", (64, 0, 128): "Moving car",
                 (192, 0, 192): "Static car", (64, 64, 0): "Human"}
UAVID_MERGED = {**UAVID_TOOLKIT, (0, 0, 0): "Background/Clutter", (64, 0, 128): "Car", (192, 0, 192): "Car"}
SEGEARTH_UAVID = dict(enumerate(("background", "building", "road", "car", "tree", "vegetation", "human"))) | {
    7: "car", 255: IGNORED}  # converter: moving car (7) written as 3
MMSEG_LOVEDA = {0: IGNORED} | {k + 1: n for k, n in enumerate(
    ("background", "building", "road", "water", "barren", "forest", "agricultural"))}
LOVEDA_ALIASES = {"agricultural": "agriculture land"}
OEM_README = {0: IGNORED} | {k + 1: n for k, n in enumerate(
    ("bareland", "rangeland", "developed space", "road", "tree", "water", "agriculture land", "building"))}
SEGEARTH_OEM = dict(enumerate(("background", "bareland", "grass", "pavement", "road", "tree", "water", "cropland",
                               "building")))
OEM_V2_ALIASES = {"bareland": "bareland, barren, dirt", "grass": "pasture, grass, lawn",
                  "pavement": "developed space", "road": "roads", "tree": "tree, forest", "water": "water, river",
                  "cropland": "agricultural land, cropland", "building": "buildings, roof, house"}
SEGEARTH_UDD5 = dict(enumerate(("vegetation", "building", "road", "vehicle", "other")))
SEGEARTH_VDD = dict(enumerate(("other", "wall", "road", "vegetation", "vehicle", "roof", "water")))
VDD_ALIASES = {"other": "other, background", "wall": "facade, wall", "vehicle": "vehicle, car"}
DLRSD_LOADERS = {k + 1: n for k, n in enumerate(
    ("airplane", "baresoil", "buildings", "cars", "chaparral", "court", "dock", "field", "grass", "mobilehome",
     "pavement", "sand", "sea", "ship", "tanks", "trees", "water"))}
DLRSD_ALIASES = {"baresoil": "bare soil", "mobilehome": "mobile home"}
FLAIR_DATASHEET = {k + 1: n for k, n in enumerate(
    ("building", "pervious surface", "impervious surface", "bare soil", "water", "coniferous", "deciduous",
     "brushwood", "vineyard", "herbaceous vegetation", "agricultural land", "plowed land", "swimming pool", "snow",
     "clear cut", "mixed", "ligneous", "greenhouse", "other"))}
FLOODNET_README = dict(enumerate(("Background", "Building-flooded", "Building-non-flooded", "Road-flooded",
                                  "Road-non-flooded", "Water", "Tree", "Vehicle", "Pool", "Grass")))
BINARY_128 = {0: "background", 127: "background", 128: "building", 255: "building"}
# grey = OpenCV BT.601 luma of a colour label, as the converters' cv2.IMREAD_GRAYSCALE computes it
WHU_COLOUR_128 = {(0, 0, 0): "background", (255, 0, 0): "background", (0, 255, 0): "building",
                  (255, 255, 255): "building"}
ROAD_128 = {0: "background", 127: "background", 128: "road", 255: "road"}
XBD_TARGETS = {0: "background", 1: "building", 2: "building", 4: "building"}


@dataclass
class Case:
    """One record fed by one release encoding. ``build(raw, label)`` writes the raw fixture around
    ``label`` and returns the output stem to read; ``expected``: our name for a reference name
    when the spelling differs (``None``: the reference name must be ours, normalised)."""

    script: str
    record: str
    reference: dict
    build: Callable[[Path, np.ndarray], str]
    args: tuple[str, ...] = ()
    aliases: dict = field(default_factory=dict)
    height: int = 16
    width: int = 64
    relabel: Callable[[str], str] | None = None  # reference name → the name the record must give


def potsdam(raw: Path, label: np.ndarray) -> str:
    save(raw / "2_Ortho_RGB" / "top_potsdam_2_13_RGB.tif", rgb(*label.shape[:2]))
    save(raw / "5_Labels_all_noBoundary" / "top_potsdam_2_13_label_noBoundary.tif", label)
    return "top_potsdam_2_13_0_0"


def vaihingen(raw: Path, label: np.ndarray) -> str:
    save(raw / "top" / "top_mosaic_09cm_area1.tif", rgb(*label.shape[:2]))
    save(raw / "gt_eroded" / "top_mosaic_09cm_area1_noBoundary.tif", label)
    return "top_mosaic_09cm_area1_0_0"


def isaid(raw: Path, label: np.ndarray) -> str:
    save(raw / "train" / "images" / "P0001.png", rgb(*label.shape[:2]))
    save(raw / "train" / "Semantic_masks" / "images" / "P0001_instance_color_RGB.png", label)
    return "P0001_0_0"


def uavid(raw: Path, label: np.ndarray) -> str:
    save(raw / "uavid_train" / "seq1" / "Images" / "000000.png", rgb(*label.shape[:2]))
    save(raw / "uavid_train" / "seq1" / "Labels" / "000000.png", label)
    return "seq1_000000"


def split_folder(image: str, label: str, split: str = "train") -> Callable[[Path, np.ndarray], str]:
    def build(raw: Path, ids: np.ndarray) -> str:
        save(raw / split / image / "DJI_0001.JPG", rgb(*ids.shape))
        save(raw / split / label / "DJI_0001.png", ids)
        return "DJI_0001"
    return build


def loveda(raw: Path, ids: np.ndarray) -> str:
    save(raw / "Val" / "Urban" / "images_png" / "3514.png", rgb(*ids.shape))
    save(raw / "Val" / "Urban" / "masks_png" / "3514.png", ids)
    return "3514"


def oem(raw: Path, ids: np.ndarray) -> str:
    top = raw / "OpenEarthMap_wo_xBD"
    save(top / "aachen" / "images" / "aachen_1.tif", rgb(*ids.shape))
    save(top / "aachen" / "labels" / "aachen_1.tif", ids)
    (top / "train.txt").write_text("aachen_1.tif\n")
    (top / "val.txt").write_text("")
    return "aachen_1"


def dlrsd_index(raw: Path, ids: np.ndarray) -> str:
    save(raw / "UCMerced_LandUse" / "Images" / "airplane" / "airplane00.tif", rgb(*ids.shape))
    image = Image.fromarray(ids, "P")  # palette PNG, as distributed: read as indices, not colours
    image.putpalette(np.random.default_rng(1).integers(0, 256, 768, dtype=np.uint8).tolist())
    (raw / "DLRSD" / "Images" / "airplane").mkdir(parents=True)
    image.save(raw / "DLRSD" / "Images" / "airplane" / "airplane00.png")
    return "airplane00"


def flair(raw: Path, ids: np.ndarray) -> str:
    import tifffile

    folder = raw / "D012_2019" / "Z1_UA"
    (folder / "img").mkdir(parents=True)
    (folder / "msk").mkdir(parents=True)
    tifffile.imwrite(folder / "img" / "IMG_000001.tif", np.random.default_rng(0).integers(
        0, 256, (*ids.shape, 5), np.uint8), photometric="minisblack", planarconfig="contig")
    tifffile.imwrite(folder / "msk" / "MSK_000001.tif", ids)
    return "IMG_000001"


def floodnet(raw: Path, ids: np.ndarray) -> str:
    save(raw / "val" / "val-org-img" / "6651.jpg", rgb(*ids.shape))
    save(raw / "val" / "val-label-img" / "6651_lab.png", ids)
    return "6651"


def fast(raw: Path, ids: np.ndarray) -> str:
    for split in ("train", "val"):  # a train/ beside val/: never mixed in
        save(raw / "FAST" / split / "images" / f"{split}_1.png", rgb(*ids.shape))
        save(raw / "FAST" / split / "semlabels" / "gray" / f"{split}_1.png", ids)
    return "val_1"


def binary(image: str, label: str, image_name: str, label_name: str) -> Callable[[Path, np.ndarray], str]:
    def build(raw: Path, grey: np.ndarray) -> str:
        save(raw / image / image_name, rgb(*grey.shape[:2]))
        save(raw / label / label_name, grey)
        return Path(image_name).stem.removesuffix("_sat")
    return build


def segearth_uavid(raw: Path, ids: np.ndarray) -> str:
    save(raw / "UAVid" / "img_dir" / "test" / "seq21_000000_0_1080_0_1280.png", rgb(*ids.shape))
    save(raw / "UAVid" / "ann_dir" / "test" / "seq21_000000_0_1080_0_1280.png", ids)
    return "seq21_000000_0_1080_0_1280"


CASES = {
    "potsdam_v1": Case("prepare_potsdam", "v1_potsdam_all", ISPRS_REF, potsdam, aliases=ISPRS_ALIASES,
                       height=256, width=256),
    "vaihingen_v1": Case("prepare_vaihingen", "v1_vaihingen_all", ISPRS_REF, vaihingen, aliases=ISPRS_ALIASES,
                         height=256, width=256),
    "isaid_v1": Case("prepare_isaid", "v1_isaid_all", MMSEG_ISAID, isaid, height=256, width=256,
                     relabel=lambda n: {"store_tank": "storage tank"}.get(n, n)),
    "uavid_v1": Case("prepare_uavid", "v1_uavid_all", UAVID_TOOLKIT, uavid),
    "uavid_v2": Case("prepare_uavid", "v2_uavid_all", UAVID_MERGED, uavid),
    "udd5": Case("prepare_udd5", "v1_udd5_all", SEGEARTH_UDD5, split_folder("src", "gt")),
    "vdd_v2": Case("prepare_vdd", "v2_vdd_all", SEGEARTH_VDD, split_folder("src", "gt"), aliases=VDD_ALIASES),
    "loveda_v2": Case("prepare_loveda", "v2_loveda_all", MMSEG_LOVEDA, loveda, aliases=LOVEDA_ALIASES),
    "oem_aeroseg": Case("prepare_openearthmap", "oem256_train", OEM_README, oem, height=256, width=256),
    "oem_v2": Case("prepare_openearthmap", "v2_openearthmap_all", SEGEARTH_OEM, oem, aliases=OEM_V2_ALIASES,
                   height=256, width=256),
    "dlrsd_index": Case("prepare_dlrsd", "v1_dlrsd_all", DLRSD_LOADERS, dlrsd_index, aliases=DLRSD_ALIASES,
                        width=68),
    "flair_v2": Case("prepare_flair", "v2_flair_test", FLAIR_DATASHEET, flair, width=76,
                     relabel=lambda n: n if list(FLAIR_DATASHEET.values()).index(n) < 12 else IGNORED),
    "flair_gsnet": Case("prepare_flair", "gsnet_flair_test", FLAIR_DATASHEET, flair, width=76,
                        relabel=lambda n: n if list(FLAIR_DATASHEET.values()).index(n) < 12 else IGNORED),
    "floodnet": Case("prepare_floodnet", "gsnet_floodnet_valtest", FLOODNET_README, floodnet,
                     relabel=lambda n: IGNORED if n == "Background" else n),
    "fast": Case("prepare_fast", "gsnet_fast_val", {0: "A220", 36: "Warship", 255: IGNORED}, fast),
    "whu_aerial_png": Case("prepare_downstream", "whu_aerial_val", BINARY_128,
                           binary("val/image", "val/label", "1.png", "1.png"), ("--dataset", "whu_aerial_val")),
    "whu_aerial_colour_label": Case("prepare_downstream", "whu_aerial_val", WHU_COLOUR_128,
                                    binary("val/image", "val/label", "2.tif", "2.tif"), ("--dataset", "whu_aerial_val")),
    "deepglobe_segearth": Case("prepare_downstream", "deepglobe_road_test", ROAD_128,
                               binary("DeepGlobe_test_1530/img", "DeepGlobe_test_1530/gt", "104_sat.jpg",
                                      "104_mask.png"), ("--dataset", "deepglobe_road_test")),
    "xbd": Case("prepare_downstream", "xbd_pre_test", XBD_TARGETS,
                binary("test/images", "test/targets", "a_00000001_pre_disaster.png",
                       "a_00000001_pre_disaster_target.png"), ("--dataset", "xbd_pre_test")),
    "segearth_uavid": Case("prepare_segearth", "segearth_uavid_test", SEGEARTH_UAVID, segearth_uavid,
                           ("--dataset", "segearth_uavid_test")),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_class_names_agree_with_the_reference_converter(name, tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("OVRSIS_CACHE", str(tmp_path / "cache"))
    case = CASES[name]
    values = list(case.reference)
    label = stripes(values, case.height, case.width)
    raw, root = tmp_path / "raw", tmp_path / "root"
    stem = case.build(raw, label)

    run(case.script, "--raw", str(raw), "--root", str(root), "--dry-run", *case.args)
    assert not root.exists(), "--dry-run wrote files"
    run(case.script, "--raw", str(raw), "--root", str(root), *case.args)

    record = RECORDS[case.record]
    image_dir, mask_dir = record.folders(str(root))
    samples = {s["image_id"]: s for s in load_folder_dataset(record.name, image_dir, mask_dir, record.image_ext,
                                                              record.mask_ext)}
    sample = samples.get(stem) or samples[f"{stem}_0_0"]  # tiled records: the first tile
    mask = np.asarray(Image.open(sample["sem_seg_file_name"]))
    step = case.width // len(values)
    for i, value in enumerate(values):
        reference = case.reference[value]
        if case.relabel is not None:
            reference = case.relabel(reference)
        wanted = IGNORED if reference == IGNORED else norm(case.aliases.get(norm(reference), reference))
        got_id = int(mask[0, i * step + step // 2])
        got = IGNORED if got_id == record.ignore_value else norm(record.classes[got_id])
        assert got == wanted, f"{name}: raw {value} is {got!r} here, {wanted!r} in the reference"
