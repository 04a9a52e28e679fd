"""Class vocabularies: one loader for every place that takes a list of class names.

A vocabulary can be written inline in a config (a list) or shipped as a file, because
benchmark class lists are long and shared between datasets and prompts.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Union

VocabularySpec = Union[Sequence[str], str, os.PathLike]


def load_class_names(spec: VocabularySpec) -> list[str]:
    """Return the class names given inline or by a ``.txt``/``.json`` file.

    ``.txt``: one class per line, blank lines skipped. ``.json``: a list of strings.
    Names are stripped of surrounding whitespace; order is kept because it defines the
    contiguous class ids.
    """
    if isinstance(spec, (str, os.PathLike)):
        names = _read_vocabulary_file(Path(spec))
        source = str(spec)
    else:
        names = list(spec)
        source = "the given list"
    if not all(isinstance(name, str) for name in names):
        raise ValueError(f"vocabulary from {source} must hold only strings, got {names!r}")
    names = [name.strip() for name in names]
    if not names or not all(names):
        raise ValueError(f"vocabulary from {source} is empty or holds an empty class name")
    return names


def _read_vocabulary_file(path: Path) -> list:
    suffix = path.suffix.lower()
    if suffix not in (".txt", ".json"):
        raise ValueError(f"vocabulary file must end in .txt or .json, got {str(path)!r}")
    if not path.is_file():
        raise FileNotFoundError(f"vocabulary file not found: {path}")
    text = path.read_text(encoding="utf-8-sig")  # tolerate a byte-order mark
    if suffix == ".txt":
        return [line for line in text.splitlines() if line.strip()]
    try:
        names = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"vocabulary file {path} is not valid JSON: {err}") from err
    if not isinstance(names, list):
        raise ValueError(f"vocabulary file {path} must hold a JSON list of strings")
    return names
