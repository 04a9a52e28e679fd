"""User-facing errors and the one check every path-like config key goes through.

An :class:`OVRSISError` is a mistake in the user's config, data or files, not a bug:
``train_net.py`` and the eval scripts print its message once, without a traceback, and exit
with status 2. Every message names the config key (or dataset / file) to fix.
"""
from __future__ import annotations

import difflib
import logging
import os
import re
from collections.abc import Iterable
from typing import Optional


class OVRSISError(Exception):
    """A problem with the user's config, data or files; the message says what to fix."""


class ConfigError(OVRSISError, ValueError):
    """A config key holds a value ovrsis cannot use."""


class DatasetError(OVRSISError, ValueError):
    """A dataset on disk does not match what its registration promises."""


class CheckpointError(OVRSISError, ValueError):
    """A checkpoint file is unreadable or does not fit the config."""


def check_path(path: str, key: str, kind: str = "file", expected: str = "") -> str:
    """Return ``path`` (user-expanded) if it exists as ``kind``; raise :class:`ConfigError` otherwise.

    Args:
        path: the value of the config key.
        key: the config key, e.g. ``"MODEL.WEIGHTS"``, named in the message.
        kind: ``"file"`` or ``"dir"``.
        expected: what the file/folder should hold, e.g. ``"an open_clip state dict"``.

    Raises:
        ConfigError: missing path, a folder where a file is expected or the reverse, or a
        file that cannot be opened for reading.
    """
    if kind not in ("file", "dir"):
        raise ValueError(f"kind must be 'file' or 'dir', got {kind!r}")
    path = os.path.expanduser(str(path))
    what = f" ({expected})" if expected else ""
    want = "a file" if kind == "file" else "a folder"
    if not os.path.exists(path):
        parent = os.path.dirname(os.path.abspath(path))
        hint = "" if os.path.isdir(parent) else f"; its folder {parent} does not exist either"
        raise ConfigError(f"{key}: {path!r} does not exist; expected {want}{what}{hint}")
    if kind == "file" and os.path.isdir(path):
        raise ConfigError(f"{key}: {path!r} is a folder; expected {want}{what}")
    if kind == "dir" and not os.path.isdir(path):
        raise ConfigError(f"{key}: {path!r} is a file; expected {want}{what}")
    if not os.access(path, os.R_OK):
        raise ConfigError(f"{key}: {path!r} is not readable (permissions); expected {want}{what}")
    return path


def describe_user_error(err: BaseException) -> Optional[str]:
    """The message of an :class:`OVRSISError` (also one re-raised from a DataLoader worker,
    whose text embeds the worker's traceback: only the final message is kept), else None."""
    if not isinstance(err, OVRSISError):
        return None
    text = str(err)
    if "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        text = last.split(": ", 1)[1] if re.match(r"^[\w.]+(Error|Exception): ", last) else last
    return text


class SuppressUserErrorTracebacks(logging.Filter):
    """Logging filter dropping records that carry an :class:`OVRSISError` traceback (detectron2
    logs "Exception during training" with the traceback before re-raising; the error is
    reported once, by the launcher)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], OVRSISError))


def close_names(name: str, candidates: Iterable[str], n: int = 5) -> str:
    """``" (did you mean 'a', 'b'?)"`` for the closest candidates, or ``""``."""
    matches = difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.5)
    return f" (did you mean {', '.join(repr(m) for m in matches)}?)" if matches else ""
