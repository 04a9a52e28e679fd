"""Every benchmark split of datasets.md as a :class:`DatasetRecord`.

Names: ``v1_*`` OVRSISBench V1 (RSKT-Seg), ``v2_*`` OVRSISBench V2 (Pi-Seg), ``gsnet_*`` and
``landdiscover50k_train`` GSNet, ``aeroseg_*`` AerOSeg seen/unseen, ``piseg_uavid_zs`` Pi-Seg's
UAVid split, and the downstream single-class sets by their own names. V1 and V2 register
the same folders under separate names where their class names, ids or inference differ,
so each registered name carries exactly one protocol.
"""
from __future__ import annotations

from . import classes as C
from .records import DatasetRecord

V1, V2, GSNET, DOWNSTREAM, AEROSEG, PISEG = (
    "OVRSISBench V1", "OVRSISBench V2", "GSNet", "downstream (V2 / SegEarth-OV)", "AerOSeg", "Pi-Seg")


def _cmd(script: str) -> str:
    return f"python datasets/prepare_{script}.py --raw <{script} download>"


_V1_LEAK = ("V1 evaluates the training dataset's `all` split, which contains the training images "
            "(datasets.md §9.4); the corrected suites use the `val` split instead.")


def _dlrsd_isaid(prefix: str, benchmark: str, protocol: str) -> list[DatasetRecord]:
    """DLRSD and iSAID: the same folders and classes in V1 and V2 (§3), all/train/val splits."""
    records = []
    for key, title, folder, ext, names, background, count in (
        ("dlrsd", "DLRSD", "DLRSD", ".jpg", C.DLRSD_CLASSES, "every pixel is labelled; no background class",
         {"all": 7002, "train": 5601, "val": 1401}),
        ("isaid", "iSAID", "iSAID", ".png", C.ISAID_CLASSES,
         "raw background (0,0,0) -> 255, ignored", {"all": 24439, "train": 18076, "val": 6363}),
    ):
        for split in ("all", "train", "val"):
            base = folder if split == "all" else f"{folder}_split/{split}"
            records.append(DatasetRecord(
                f"{prefix}_{key}_{split}", benchmark, title, split, f"{base}/imgs", f"{base}/D2masks", names,
                _cmd(key), image_ext=ext, background=background, protocol=protocol,
                notes=(f"{count[split]} 256x256 images in the benchmark package [paper]",)
                + ((_V1_LEAK,) if split == "all" and prefix == "v1" else ())))
    return records


def _isprs(prefix: str, benchmark: str, protocol: str) -> list[DatasetRecord]:
    return [
        DatasetRecord(f"{prefix}_potsdam_all", benchmark, "Potsdam", "all", "Potsdam/imgs", "Potsdam/D2masks",
                      C.ISPRS_CLASSES, _cmd("potsdam"), image_ext=".png",
                      background="'Clutter/background' is an evaluated class; boundary (black) -> 255",
                      protocol=protocol,
                      notes=("20,102 = 38 tiles x 23 x 23 non-overlapping 256 crops [derived]",)),
        DatasetRecord(f"{prefix}_vaihingen_all", benchmark, "Vaihingen", "all", "Vaihingen/imgs",
                      "Vaihingen/D2masks", C.ISPRS_CLASSES, _cmd("vaihingen"), image_ext=".png",
                      background="'Clutter/background' is an evaluated class; boundary (black) -> 255",
                      protocol=protocol, notes=("2,254 256x256 images [paper]; cutting recipe UNCERTAIN",)),
    ]


_LARGE = "native resolution (about 4000 px wide); P-T evaluates it tiled with bounded memory"

V1_RECORDS = _dlrsd_isaid("v1", V1, "P-A") + _isprs("v1", V1, "P-A") + [
    DatasetRecord("v1_uavid_all", V1, "UAVid", "all", "uavid/Images", "uavid/Labels", C.UAVID_V1_CLASSES,
                  _cmd("uavid"), image_ext=".png", background="'Background clutter' is an evaluated class",
                  protocol="P-A", notes=(_LARGE, "image count UNCERTAIN (§2.5)")),
    DatasetRecord("v1_udd5_all", V1, "UDD5", "all", "UDD5/all/src", "UDD5/all/gt", C.UDD5_V1_CLASSES,
                  _cmd("udd5"), image_ext=".jpg", background="'Other' is an evaluated class", protocol="P-A",
                  notes=(_LARGE, "train+val or val only: UNCERTAIN (§2.6)")),
    DatasetRecord("v1_loveda_all", V1, "LoveDA", "all", "LoveDA/images_png", "LoveDA/masks_png",
                  C.LOVEDA_V1_CLASSES, _cmd("loveda"), image_ext=".png",
                  background="raw 'no-data' (0) is kept as an evaluated class", protocol="P-A",
                  notes=("split (val or train+val) UNCERTAIN (§2.7)",)),
    DatasetRecord("v1_vdd_all", V1, "VDD", "all", "VDD/src", "VDD/gt", C.VDD_V1_CLASSES, _cmd("vdd"),
                  image_ext=".jpg", background="'Other' is an evaluated class", protocol="P-A",
                  notes=(_LARGE, "whether all 400 images: UNCERTAIN (§2.8)")),
]

V2_RECORDS = _dlrsd_isaid("v2", V2, "P-B") + _isprs("v2", V2, "P-B") + [
    DatasetRecord("ovrsis95k_train", V2, "OVRSIS95K", "train", "OVRSIS95K/train/img", "OVRSIS95K/train/mask",
                  C.OVRSIS95K_CLASSES, _cmd("ovrsis95k"), image_ext=".jpg",
                  background="'unlabeled areas, background, clutter' (id 34) is a trained, prompted class",
                  notes=("94,620 images [paper]",)),
    DatasetRecord("ovrsis95k_val", V2, "OVRSIS95K", "val", "OVRSIS95K/val/img", "OVRSIS95K/val/mask",
                  C.OVRSIS95K_CLASSES, _cmd("ovrsis95k"), image_ext=".jpg",
                  background="'unlabeled areas, background, clutter' (id 34) is a trained, prompted class"),
    DatasetRecord("v2_flair_test", V2, "FLAIR", "test", "FLAIR_test/image", "FLAIR_test/mask", C.FLAIR_CLASSES,
                  _cmd("flair"), image_ext=".png", background="raw 'other' and ids >= 13 -> 255, ignored",
                  notes=("test image count of the V2 package UNCERTAIN",)),
    DatasetRecord("v2_loveda_all", V2, "LoveDA", "all", "LoveDA/images_png", "LoveDA/masks_png2",
                  C.LOVEDA_V2_CLASSES, _cmd("loveda"), image_ext=".png",
                  background="raw no-data (0) -> 255 ignored; 'Background' (raw 1) evaluated"),
    DatasetRecord("v2_openearthmap_all", V2, "OpenEarth", "all", "OpenEarthMap/images", "OpenEarthMap/labels",
                  C.OEM_V2_CLASSES, _cmd("openearthmap"), image_ext=".tif", mask_ext=".tif",
                  background="raw 'unknown' (0) is evaluated as 'Background'",
                  notes=("which OEM splits form `all`: UNCERTAIN (§3.3)",)),
    DatasetRecord("v2_uavid_all", V2, "UAVid", "all", "uavid/Images", "uavid/Labels_v2", C.UAVID_V2_CLASSES,
                  _cmd("uavid"), image_ext=".png", background="'Background/Clutter' is an evaluated class",
                  notes=(_LARGE, "moving and static car merged into Car [derived]; mask folder name is ours")),
    DatasetRecord("v2_udd5_all", V2, "UDD5", "all", "UDD5/all/src", "UDD5/all/gt", C.UDD5_V2_CLASSES,
                  _cmd("udd5"), image_ext=".jpg", background="'Background/Clutter' is an evaluated class",
                  notes=(_LARGE,)),
    DatasetRecord("v2_vdd_all", V2, "VDD", "all", "VDD/src", "VDD/gt", C.VDD_V2_CLASSES, _cmd("vdd"),
                  image_ext=".jpg", background="'other, Background' is an evaluated class",
                  notes=(_LARGE, "names with ', ' prompt only their first synonym (§1.2)")),
]

GSNET_RECORDS = [
    DatasetRecord("landdiscover50k_train", GSNET, "LandDiscover50K", "train", "LandDiscover50K/TR_Image",
                  "LandDiscover50K/GT_ID", C.LANDDISCOVER50K_CLASSES, _cmd("landdiscover50k"),
                  image_ext=".png", ignore_value=0, background="id 0 'background' is the ignore value",
                  notes=("51,846 images [paper]",)),
    DatasetRecord("gsnet_fast_val", GSNET, "FAST", "val", "FAST/val/images", "FAST/val/semlabels/gray",
                  C.FAST_CLASSES, _cmd("fast"), image_ext=".png", background="unlabeled pixels are 255",
                  notes=("val image count UNCERTAIN",)),
    DatasetRecord("gsnet_flair_test", GSNET, "FLAIR", "test", "FLAIR/test/image", "FLAIR/test/mask",
                  C.FLAIR_CLASSES + ("other",), _cmd("flair"), image_ext=".png",
                  prompts=C.GSNET_FLAIR_PROMPTS, ignore_value=12,
                  background="'other' (id 12) is registered but is the ignore value; 12 prompts"),
    DatasetRecord("gsnet_potsdam_val", GSNET, "Potsdam", "val", "PotsdamSplit/img_dir/val",
                  "PotsdamSplit/ann_dir/val", C.GSNET_POTSDAM_CLASSES, _cmd("potsdam"), image_ext=".png",
                  prompts=C.GSNET_POTSDAM_CLASSES[:5], ignore_value=5,
                  background="clutter (id 5) is the ignore value; 5 prompts; boundary -> 5 as well",
                  notes=("MMSeg val split: 14 tiles -> 2,016 crops of 512x512",)),
    DatasetRecord("gsnet_floodnet_valtest", GSNET, "FloodNet", "val+test", "FloodNet/val+test/img",
                  "FloodNet/val+test/lbl", C.FLOODNET_CLASSES, _cmd("floodnet"), image_ext=".jpg",
                  ignore_value=0, background="'Background' (id 0) is prompted but is the ignore value",
                  notes=(_LARGE,)),
]


def _downstream(name: str, title: str, folder: str, split: str, names: tuple[str, ...], image_ext: str,
                note: str) -> DatasetRecord:
    return DatasetRecord(
        name, DOWNSTREAM, title, split, f"{folder}/{split}/images", f"{folder}/{split}/masks", names,
        f"python datasets/prepare_downstream.py --dataset {name} --raw <{title} download>",
        image_ext=image_ext, foreground=names[1],
        background="0 background, 1 foreground; Pi-Seg scores both (2-class mIoU), SegEarth-OV reports "
                   "foreground IoU only (§5)", notes=(note, "folder layout is ovrsis's (Pi-Seg's is not public)"))


DOWNSTREAM_RECORDS = [
    _downstream("whu_aerial_val", "WHU Aerial", "WHU_Aerial", "val", C.BUILDING_CLASSES, ".png",
                "1,036 tiles of 512x512 [external]"),
    _downstream("whu_sat2_test", "WHU Sat.II", "WHU_SatII", "test", C.BUILDING_CLASSES, ".tif",
                "3,726 tiles [paper]"),
    _downstream("inria_test", "Inria", "Inria", "test", C.BUILDING_CLASSES, ".png",
                "27 FCtL tiles -> 675 non-overlapping 1000x1000 crops [derived]"),
    _downstream("xbd_pre_test", "xBD (pre)", "xBD", "test", C.BUILDING_CLASSES, ".png",
                "pre-disaster test images, 933 of 1024x1024 [external]"),
    _downstream("chn6cug_test", "CHN6-CUG", "CHN6-CUG", "test", C.ROAD_CLASSES, ".jpg",
                "test split (SegEarth folder 'val'); count UNCERTAIN"),
    _downstream("deepglobe_road_test", "DeepGlobe", "DeepGlobe_road", "test", C.ROAD_CLASSES, ".jpg",
                "DeepGlobe_test_1530 of GlobalRoadSet"),
    _downstream("massachusetts_road_test", "Massachusetts", "Massachusetts_road", "test", C.ROAD_CLASSES, ".jpg",
                "Massachusetts_test_49 of GlobalRoadSet"),
    _downstream("spacenet_road_test", "SpaceNet", "SpaceNet_road", "test", C.ROAD_CLASSES, ".jpg",
                "SpaceNet_test_567 of GlobalRoadSet"),
    _downstream("wbssi_val", "WBS-SI", "WBS-SI", "val", C.WATER_CLASSES, ".jpg",
                "499 stems of SegEarth-OV's wbs-si_val.txt; masks stored as PNG here (reference: JPEG)"),
]


def _aeroseg(key: str, title: str, base: str, image_ext: str, names: tuple[str, ...], unseen: tuple[str, ...],
             masks: str, source: str) -> list[DatasetRecord]:
    """Seen-class training split (unseen pixels ignored) and all-class validation split.

    The 256x256 processed data are the V1 splits for iSAID and DLRSD (``masks`` =
    ``D2masks``) and a re-tiling of OpenEarthMap; ``prepare_aeroseg.py`` derives the
    seen-only training masks from them.
    """
    seen = tuple(c for c in names if c not in unseen)
    command = f"python datasets/prepare_aeroseg.py  (after datasets/{source})"
    note = "seen = group A of AerOSeg Table 1, reconstructed (datasets.md §7.1); verify before relying on it"
    return [
        DatasetRecord(f"aeroseg_{key}_train_seen", AEROSEG, title, "train (seen classes)", f"{base}/train/imgs",
                      f"{base}/train/{masks}_aeroseg_seen", seen, command, image_ext=image_ext,
                      background="unseen-class pixels -> 255 (UNCERTAIN: ignored vs background)", protocol="P-A",
                      notes=(note,)),
        DatasetRecord(f"aeroseg_{key}_val", AEROSEG, title, "val", f"{base}/val/imgs", f"{base}/val/{masks}",
                      names, command, image_ext=image_ext, seen=seen, unseen=unseen, protocol="P-A",
                      background="all classes evaluated", notes=(note, "inference mode not stated [paper]")),
    ]


AEROSEG_RECORDS = (
    _aeroseg("isaid", "iSAID", "iSAID_split", ".png", C.ISAID_CLASSES, C.AEROSEG_ISAID_UNSEEN, "D2masks",
             "prepare_isaid.py")
    + _aeroseg("dlrsd", "DLRSD", "DLRSD_split", ".jpg", C.DLRSD_CLASSES, C.AEROSEG_DLRSD_UNSEEN, "D2masks",
               "prepare_dlrsd.py")
    + _aeroseg("oem", "OpenEarthMap", "OpenEarthMap_256", ".png", C.OEM_OFFICIAL_CLASSES, C.AEROSEG_OEM_UNSEEN,
               "masks", "prepare_openearthmap.py")
)

AEROSEG_RECORDS.append(DatasetRecord(
    "oem256_train", AEROSEG, "OpenEarthMap", "train (all classes)", "OpenEarthMap_256/train/imgs",
    "OpenEarthMap_256/train/masks", C.OEM_OFFICIAL_CLASSES, _cmd("openearthmap"), image_ext=".png",
    background="raw 'unknown' (0) -> 255; official ids shifted down by one",
    notes=("AerOSeg's 256x256 re-tiling without xBD: 31,154 train patches [paper]; recipe UNCERTAIN",)))

PISEG_RECORDS = [
    DatasetRecord("piseg_uavid_zs", PISEG, "UAVid", "all", "uavid/Images", "uavid/Labels_v2", C.UAVID_V2_CLASSES,
                  _cmd("uavid"), image_ext=".png", seen=C.PISEG_UAVID_SEEN, unseen=C.PISEG_UAVID_UNSEEN,
                  mean_classes=C.PISEG_UAVID_SEEN + C.PISEG_UAVID_UNSEEN,
                  background="clutter is scored but left out of 'overall' (mean of the 6 foreground classes)",
                  notes=("training set not stated; V2 (OVRSIS95K) suggested [derived]",)),
]

SEGEARTH = "SegEarth-OV"


def _segearth(key: str, title: str, split: str, names: tuple[str, ...], prompts: tuple[str, ...],
              background: str, note: str) -> DatasetRecord:
    """SegEarth-OV's evaluation splits as its mmseg converters leave them (methods-part2.md §S.1),
    rewritten by ``prepare_segearth.py`` with reduce_zero_label applied where the reference does."""
    return DatasetRecord(
        f"segearth_{key}_{split}", SEGEARTH, title, split, f"SegEarth/{title}/images", f"SegEarth/{title}/masks",
        names, f"python datasets/prepare_segearth.py --dataset segearth_{key}_{split} --raw <SegEarth-OV data/>",
        prompts=prompts, background=background, protocol="P-C", notes=(note,))


SEGEARTH_RECORDS = [
    _segearth("openearthmap", "OpenEarthMap", "val", C.SEGEARTH_OEM_CLASSES, C.SEGEARTH_OEM_PROMPTS,
              "raw 'unknown' (0) is the evaluated class 'background'", "OEM val without the xBD images [code]"),
    _segearth("loveda", "LoveDA", "val", C.SEGEARTH_LOVEDA_CLASSES, C.SEGEARTH_LOVEDA_PROMPTS,
              "reduce_zero_label: no-data (0) -> 255; 'background' (raw 1) evaluated", "LoveDA val [code]"),
    _segearth("isaid", "iSAID", "val", ("background",) + C.ISAID_CLASSES, C.SEGEARTH_ISAID_PROMPTS,
              "'background' (id 0) is an evaluated class (16 classes)",
              "mmseg converter: 896x896 patches, overlap 384 -> 11,644 images [code]"),
    _segearth("potsdam", "Potsdam", "val", C.SEGEARTH_ISPRS_CLASSES, C.SEGEARTH_POTSDAM_PROMPTS,
              "reduce_zero_label: boundary (0) -> 255; clutter evaluated", "mmseg converter: 2,016 val images [code]"),
    _segearth("vaihingen", "Vaihingen", "val", C.SEGEARTH_ISPRS_CLASSES, C.SEGEARTH_VAIHINGEN_PROMPTS,
              "reduce_zero_label: boundary (0) -> 255; clutter evaluated",
              "mmseg converter: 398 val images; its class file differs from the paper's Table 7 [code]"),
    _segearth("uavid", "UAVid", "test", C.SEGEARTH_UAVID_CLASSES, C.SEGEARTH_UAVID_CLASSES,
              "'background' is an evaluated class; 255 ignored", "SegEarth-OV converter: 1280x1080 patches [code]"),
    _segearth("udd5", "UDD5", "val", C.SEGEARTH_UDD5_CLASSES, C.SEGEARTH_UDD5_CLASSES,
              "'background' (id 4) is an evaluated class", "UDD5 val [code]"),
    _segearth("vdd", "VDD", "test", C.SEGEARTH_VDD_CLASSES, C.SEGEARTH_VDD_CLASSES,
              "'background' (id 0) is an evaluated class", "VDD test [code]"),
]

ALL_RECORDS: tuple[DatasetRecord, ...] = tuple(
    V1_RECORDS + V2_RECORDS + GSNET_RECORDS + DOWNSTREAM_RECORDS + AEROSEG_RECORDS + PISEG_RECORDS
    + SEGEARTH_RECORDS)
RECORDS: dict[str, DatasetRecord] = {record.name: record for record in ALL_RECORDS}
assert len(RECORDS) == len(ALL_RECORDS), "duplicate dataset record names"
