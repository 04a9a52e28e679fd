"""Benchmark suites: which datasets one table holds, and which of them is in-domain.

A suite reproduces one published table (datasets.md §1.4, §8). Where the reference
protocol has a quirk that changes numbers, the suite with the benchmark's name keeps it
and a suite with a ``-heldout`` suffix corrects it.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..synthetic import TRAIN_NAME as SYNTHETIC_TRAIN, VAL_NAME as SYNTHETIC_VAL  # noqa: N811


@dataclass(frozen=True)
class Suite:
    name: str
    title: str
    datasets: tuple[str, ...]  # in the column order of the paper's table
    training_dataset: str | None = None  # in-domain entry: the "mean w/o" row leaves it out
    notes: tuple[str, ...] = ()


_V1_OTHERS = ("v1_potsdam_all", "v1_vaihingen_all", "v1_uavid_all", "v1_udd5_all", "v1_loveda_all", "v1_vdd_all")
_V1_NOTE = ("Mean = RSKT-Seg's 'Mean of All Datasets' (training set included); Mean w/o = Pi-Seg Table III.",)


def _v1(train: str, other: str, split: str, suffix: str, notes: tuple[str, ...]) -> Suite:
    title = {"dlrsd": "DLRSD", "isaid": "iSAID"}[train]
    in_domain = f"v1_{train}_{split}"
    datasets = (in_domain, f"v1_{other}_all") if train == "dlrsd" else (f"v1_{other}_all", in_domain)
    return Suite(f"v1-{train}{suffix}", f"OVRSISBench V1, {title}-trained", datasets + _V1_OTHERS, in_domain,
                 _V1_NOTE + notes)


SUITES: dict[str, Suite] = {s.name: s for s in (
    _v1("dlrsd", "isaid", "all", "", ("Reference quirk kept: DLRSD is scored on DLRSD_all, which holds the "
                                      "training images.",)),
    _v1("dlrsd", "isaid", "val", "-heldout", ("Corrected: DLRSD is scored on its val split only.",)),
    _v1("isaid", "dlrsd", "all", "", ("Reference quirk kept: iSAID is scored on iSAID_all, which holds the "
                                      "training images.",)),
    _v1("isaid", "dlrsd", "val", "-heldout", ("Corrected: iSAID is scored on its val split only.",)),
    Suite("v2", "OVRSISBench V2 (OVRSIS95K-trained)", (
        "v2_dlrsd_all", "v2_flair_test", "v2_isaid_all", "v2_loveda_all", "v2_openearthmap_all",
        "v2_potsdam_all", "v2_uavid_all", "v2_udd5_all", "v2_vaihingen_all", "v2_vdd_all"),
        notes=("Mean over the 10 sets = Pi-Seg Table IV.",)),
    Suite("downstream", "Downstream single-class tasks (Pi-Seg Table V)", (
        "whu_aerial_val", "whu_sat2_test", "inria_test", "xbd_pre_test", "chn6cug_test", "deepglobe_road_test",
        "massachusetts_road_test", "spacenet_road_test", "wbssi_val"),
        notes=("mIoU/mACC are 2-class means (Pi-Seg); fg-IoU is the foreground IoU SegEarth-OV reports. "
               "Do not compare one with the other.",)),
    Suite("aeroseg", "AerOSeg seen/unseen (trained on seen classes of each set)", (
        "aeroseg_isaid_val", "aeroseg_dlrsd_val", "aeroseg_oem_val"),
        notes=("Average s/u/h = means of the per-dataset values (h not recomputed), as AerOSeg reports.",
               "Each dataset needs its own model (trained on aeroseg_<set>_train_seen): run once per "
               "checkpoint with --datasets.")),
    Suite("piseg-uavid-zs", "Pi-Seg UAVid seen/unseen (Table XI)", ("piseg_uavid_zs",),
          notes=("mIoU/mACC ('overall') average the six foreground classes; clutter is scored but left out.",)),
    Suite("gsnet", "GSNet (LandDiscover50K-trained)", (
        "gsnet_flair_test", "gsnet_fast_val", "gsnet_potsdam_val", "gsnet_floodnet_valtest"),
        notes=("GSNet's Avg. is the mean mIoU over the four sets.",)),
    Suite("synthetic", "Synthetic scenes (pipeline check)", (SYNTHETIC_VAL,), SYNTHETIC_TRAIN,
          notes=("Built-in generated scenes with seen/unseen classes; checks the pipeline, not a method.",)),
)}


def get_suite(name: str) -> Suite:
    try:
        return SUITES[name]
    except KeyError:
        raise KeyError(f"unknown suite {name!r}; known: {sorted(SUITES)}") from None
