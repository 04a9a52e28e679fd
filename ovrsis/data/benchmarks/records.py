"""Declarative dataset records, their registration, and the protocol record of each score.

A :class:`DatasetRecord` holds every fact the evaluation of one registered split depends
on (folders, class names in id order, prompt names, ignore value, background policy,
seen/unseen classes, default inference protocol, known quirks). Registration turns
records into detectron2 catalog entries through the same folder loader as
config-registered datasets; :func:`protocol_record` turns a record plus the inference
actually used into the JSON-able "protocol" stored and printed beside each score.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from detectron2.data import MetadataCatalog

from ..folder_dataset import DatasetError, register_folder_dataset
from ..vocabulary import check_class_names
from .inference import InferenceProtocol

PREPARE_HINT = "datasets/README.md"


@dataclass(frozen=True)
class DatasetRecord:
    """One registered evaluation or training split. Bump ``version`` when a fact changes."""

    name: str  # catalog name, e.g. "v1_dlrsd_all"
    benchmark: str  # e.g. "OVRSISBench V1"
    title: str  # column title in tables, e.g. "DLRSD"
    split: str  # all | train | val | test | ...
    image_dir: str  # relative to the dataset root
    mask_dir: str
    classes: tuple[str, ...]  # registered names = mask ids 0..K-1
    prepare: str  # command that builds the folders from the raw download
    image_ext: str | None = None  # None accepts any image extension
    mask_ext: str = ".png"
    prompts: tuple[str, ...] = ()  # names the model scores, if not ``classes`` ("a, b" = synonyms)
    ignore_value: int = 255
    background: str = "every pixel is labelled; no background class"
    seen: tuple[str, ...] = ()
    unseen: tuple[str, ...] = ()
    mean_classes: tuple[str, ...] = ()  # classes the table's mIoU/mACC average over ("" = all)
    foreground: str | None = None  # single-class task: the class whose IoU is reported alone
    protocol: str = "P-B"  # default inference protocol (inference.PROTOCOLS)
    version: int = 1
    notes: tuple[str, ...] = ()  # quirks and uncertainties (datasets.md)

    def __post_init__(self) -> None:
        if self.prompts and len(self.prompts) > len(self.classes):
            raise ValueError(f"{self.name}: more prompts than classes")
        for group in (self.seen, self.unseen, self.mean_classes, (self.foreground,) if self.foreground else ()):
            unknown = [c for c in group if c not in self.classes]
            if unknown:
                raise ValueError(f"{self.name}: classes {unknown} are not in its class list")

    @property
    def prompt_classes(self) -> tuple[str, ...]:
        return self.prompts or self.classes

    def folders(self, root: str) -> tuple[str, str]:
        return os.path.join(root, self.image_dir), os.path.join(root, self.mask_dir)

    def missing_message(self, root: str) -> str:
        image_dir, mask_dir = (os.path.abspath(p) for p in self.folders(root))
        return (f"dataset {self.name!r} ({self.benchmark} {self.title}, {self.split}) is not prepared: expected "
                f"images in {image_dir} and masks in {mask_dir}. Build it with\n    {self.prepare} "
                f"--root {os.path.abspath(root)}\n(see {PREPARE_HINT}; the root is DATASETS.ROOT, else "
                "$DETECTRON2_DATASETS, else ./datasets)")


def register_records(records: Iterable[DatasetRecord], root: str) -> None:
    """Register every record under ``root`` (lazily: folders are read on first request)."""
    for record in records:
        image_dir, mask_dir = record.folders(root)

        def ensure_present(record: DatasetRecord = record, image_dir: str = image_dir,
                           mask_dir: str = mask_dir) -> None:
            if not (os.path.isdir(image_dir) and os.path.isdir(mask_dir)):
                raise DatasetError(record.missing_message(root))

        register_folder_dataset(
            record.name, image_dir, mask_dir, list(record.classes), ignore_value=record.ignore_value,
            seen_classes=list(record.seen), unseen_classes=list(record.unseen), image_ext=record.image_ext,
            mask_ext=record.mask_ext, before_load=ensure_present)
        MetadataCatalog.get(record.name).set(
            prompt_classes=check_class_names(record.prompt_classes, f"benchmark record {record.name!r} prompts"),
            benchmark_record=record)


def protocol_record(dataset_name: str, inference: InferenceProtocol | None) -> dict[str, Any]:
    """The protocol a score on ``dataset_name`` was measured under, as plain JSON data.

    Benchmark datasets contribute their record; any other registered dataset (synthetic,
    config-registered) its metadata, with ``version`` 0. ``inference=None`` means the
    caller did not say how predictions were made; the record says so instead of guessing.
    """
    meta = MetadataCatalog.get(dataset_name)
    record: DatasetRecord | None = meta.get("benchmark_record", None)
    if record is not None:
        dataset = {
            "protocol_id": record.name, "version": record.version, "benchmark": record.benchmark,
            "dataset": record.title, "split": record.split, "classes": list(record.classes),
            "prompts": list(record.prompt_classes), "ignore_value": record.ignore_value,
            "background": record.background, "seen_classes": list(record.seen),
            "unseen_classes": list(record.unseen), "mean_classes": list(record.mean_classes),
            "foreground": record.foreground, "notes": list(record.notes),
        }
    else:
        classes = list(meta.get("stuff_classes", []) or [])
        dataset = {
            "protocol_id": dataset_name, "version": 0, "benchmark": "registered dataset",
            "dataset": dataset_name, "split": "", "classes": classes,
            "prompts": list(meta.get("prompt_classes", None) or classes),
            "ignore_value": meta.get("ignore_label", None), "background": "",
            "seen_classes": list(meta.get("seen_classes", None) or []),
            "unseen_classes": list(meta.get("unseen_classes", None) or []),
            "mean_classes": [], "foreground": None, "notes": [],
        }
    dataset["inference"] = inference.as_dict() if inference is not None else None
    dataset["label"] = describe_protocol(dataset)
    return dataset


def describe_protocol(protocol: Mapping[str, Any]) -> str:
    """One line for logs and tables: ``v1_dlrsd_all v1, P-A v1``."""
    inference = protocol.get("inference")
    how = f"{inference['name']} v{inference['version']}" if inference else "inference unspecified"
    return f"{protocol['protocol_id']} v{protocol['version']}, {how}"
