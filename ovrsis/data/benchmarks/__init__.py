"""Benchmark datasets and protocols of datasets.md as data: records, inference protocols, suites.

``register_benchmark_datasets(root)`` registers every record under the dataset root
(nothing is read until a dataset is requested; a missing one names its expected folders
and preparation command).
"""
from __future__ import annotations

from .catalog import ALL_RECORDS, RECORDS
from .inference import PROTOCOLS, InferenceProtocol, get_protocol, inference_from_config
from .records import DatasetRecord, describe_protocol, protocol_record, register_records
from .suites import SUITES, Suite, get_suite


def register_benchmark_datasets(root: str) -> None:
    """Register every benchmark split of the catalog with folders under ``root``."""
    register_records(ALL_RECORDS, root)


__all__ = [
    "ALL_RECORDS", "DatasetRecord", "InferenceProtocol", "PROTOCOLS", "RECORDS", "SUITES", "Suite",
    "describe_protocol", "get_protocol", "get_suite", "inference_from_config", "protocol_record",
    "register_benchmark_datasets", "register_records",
]
