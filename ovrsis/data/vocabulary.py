"""Class vocabularies: one loader and one name rule for every place that takes class names.

A vocabulary can be written inline in a config (a list) or shipped as a file, because
benchmark class lists are long and shared between datasets and prompts.

**The class-name rule** (config lists, ``.txt`` and ``.json`` files, the predictor alike):
one entry is one class. Inside an entry, a comma separates *sub-prompts* (synonyms):
``"road, parking lot"`` (CAT-Seg style) and ``"road,parking lot"`` (SegEarth-OV style) are the
same class with two sub-prompts, ``road`` and ``parking lot``. Whitespace around each
sub-prompt is dropped. A literal comma inside a sub-prompt is written ``\\,``. How the
sub-prompts are combined is the model's choice (``MODEL.TEXT.SYNONYMS``: the first, or the
mean of their embeddings; the training-free segmentor takes the max probability).
Entries that look like unsplit lists (holding ``;``, ``|`` or a tab) are warned about once.

**One spelling per class.** Every entry point that takes class names (config ``CLASS_NAMES`` /
``SEEN_CLASSES`` / ``UNSEEN_CLASSES``, class files, benchmark records and their prompts, the
predictor, ``tools/demo.py``, the web demo, sweeps' overrides, a model's ``set_vocabulary``) runs
them through :func:`check_class_names`: each entry is stripped and its inner whitespace runs become
one space (:func:`normalize_class_name`), and two entries that name the same class — equal
sub-prompts up to case (CLIP's tokenizer lower-cases) and spaces around the commas, e.g.
``water`` and ``"Water "`` — are an error, because CLIP would score them identically and the
class would be split between the two ids at random.
"""
from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Union

from ..errors import ConfigError, check_path

logger = logging.getLogger(__name__)

VocabularySpec = Union[Sequence[str], str, os.PathLike]
_SEPARATOR = re.compile(r"(?<!\\),")
_LIST_LIKE = re.compile(r"[;|\t]")
_WHITESPACE = re.compile(r"\s+")
_warned: set[str] = set()


def split_subprompts(name: str) -> list[str]:
    """Sub-prompts of one class entry: ``"road,parking lot"`` → ``["road", "parking lot"]``.

    Splits on commas not preceded by a backslash, strips whitespace, turns ``\\,`` into ``,``
    and drops empty parts. Raises :class:`ConfigError` if nothing is left.
    """
    parts = [p.strip().replace("\\,", ",") for p in _SEPARATOR.split(name)]
    parts = [p for p in parts if p]
    if not parts:
        raise ConfigError(f"class name {name!r} holds no sub-prompt")
    return parts


def normalize_class_name(name: str) -> str:
    """The canonical spelling of one class entry: surrounding whitespace dropped, every inner run
    of whitespace (spaces, tabs, newlines) made one space. ``"  Water\tbody "`` → ``"Water body"``."""
    return _WHITESPACE.sub(" ", name).strip()


def class_key(name: str) -> tuple[str, ...]:
    """What makes two entries the same class: their sub-prompts, case-folded. ``"Road,Parking lot"``
    and ``"road, parking lot"`` share the key ``("road", "parking lot")``."""
    return tuple(part.casefold() for part in split_subprompts(normalize_class_name(name)))


def check_class_names(names: Sequence[object], source: str = "class names") -> list[str]:
    """The one check every class-name entry point runs; returns the normalised entries.

    Args:
        names: the entries, in class-id order.
        source: where they came from (a config key, a file, an argument), named in errors.

    Returns:
        ``[normalize_class_name(n) for n in names]``, order kept (it defines the class ids).

    Raises:
        ConfigError: no entry, an entry that is not a string or holds no sub-prompt, or two entries
        naming the same class (:func:`class_key`), e.g. ``water`` and ``"Water "``.
    """
    names = list(names)
    if not all(isinstance(name, str) for name in names):
        raise ConfigError(f"{source}: class names must be strings, got {names!r}")
    if not names:
        raise ConfigError(f"{source} is empty: give at least one class name")
    normalised = [normalize_class_name(name) for name in names]
    if not all(normalised):
        raise ConfigError(f"{source}: class {normalised.index('')} has an empty name")
    first: dict[tuple[str, ...], int] = {}
    clashes = []
    for index, name in enumerate(normalised):
        key = class_key(name)
        if key in first:
            clashes.append(f"{names[first[key]]!r} (class {first[key]}) and {names[index]!r} (class {index})")
        else:
            first[key] = index
        if _LIST_LIKE.search(names[index]) and name not in _warned:
            _warned.add(name)
            logger.warning("%s: class name %r looks like an unsplit list; separate sub-prompts with ',' "
                           "(one class per entry/line)", source, name)
    if clashes:
        raise ConfigError(
            f"{source}: duplicate class names: {'; '.join(clashes)} name the same class (names are compared "
            "ignoring case and spaces: CLIP reads them alike). Give each class once; ids follow the order")
    return normalised


def display_name(name: str) -> str:
    """Short label of a class entry for tables and legends: its first sub-prompt."""
    return split_subprompts(name)[0]


def load_class_names(spec: VocabularySpec, key: str = "class names") -> list[str]:
    """Return the class entries given inline or by a ``.txt``/``.json`` file.

    ``.txt``: one class per line, blank lines skipped. ``.json``: a list of strings. Entries
    are normalised and checked by :func:`check_class_names`; order is kept because it defines
    the contiguous class ids. Each entry may hold comma-separated sub-prompts (module docstring).

    Args:
        spec: a list of names, or a path to a ``.txt``/``.json`` file.
        key: the config key the vocabulary came from, named in errors.

    Raises:
        ConfigError: empty vocabulary, an empty or non-string name, two names for one class
        (:func:`check_class_names`), a missing or unreadable file.
    """
    if isinstance(spec, (str, os.PathLike)):
        names = _read_vocabulary_file(Path(spec), key)
        source = f"{key} ({spec})"
    else:
        names = list(spec)
        source = key
    return check_class_names(names, source)


def _read_vocabulary_file(path: Path, key: str) -> list:
    suffix = path.suffix.lower()
    if suffix not in (".txt", ".json"):
        raise ConfigError(f"{key}: a class-name file must end in .txt or .json, got {str(path)!r}")
    check_path(str(path), key, "file", "a class-name file: one class per line (.txt) or a JSON list")
    try:
        text = path.read_text(encoding="utf-8-sig")  # tolerate a byte-order mark
    except UnicodeDecodeError as err:
        raise ConfigError(f"{key}: {path} is not UTF-8 text ({err})") from err
    if suffix == ".txt":
        return [line for line in text.splitlines() if line.strip()]
    try:
        names = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{key}: {path} is not valid JSON: {err}") from err
    if not isinstance(names, list):
        raise ConfigError(f"{key}: {path} must hold a JSON list of strings")
    return names
