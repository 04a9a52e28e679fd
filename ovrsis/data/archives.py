"""Raw downloads as users get them: zip, split zip (``X.z01 … X.zip``) and tar archives.

:func:`find_archives` lists the archives under a download folder (a split archive is one
entry: its parts in disk order); :func:`unpack` extracts one into a folder, once (a marker
holds the parts' sizes and times, so a re-run skips it and a changed download redoes it).

Split zips: Info-ZIP's ``zip -s`` writes parts whose central directory gives every member's
offset *relative to the part (disk) it starts on*. Joining the parts with ``cat`` keeps
those relative offsets, so ``unzip`` and Python's :mod:`zipfile` read garbage (``unzip``
exits 12, nothing extracted). ``zip -s 0 X.zip --out joined.zip`` rewrites the offsets;
:func:`open_split_zip` does the same in memory (APPNOTE.TXT 4.3.12 disk-number-start and
relative-offset fields, 4.3.14–4.3.16 zip64 end records): it reads the parts as one stream
and rebuilds only the central directory with absolute zip64 offsets, so nothing is copied.

Errors are :class:`~ovrsis.errors.DatasetError` naming the archive.
"""
from __future__ import annotations

import io
import os
import re
import shutil
import struct
import tarfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import DatasetError

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
_SPLIT_PART = re.compile(r"\.z(\d{2,})$", re.IGNORECASE)
_MARKER = ".ovrsis-unpacked"


@dataclass(frozen=True)
class Archive:
    """One downloaded archive: ``parts`` in disk order (one part unless split)."""

    parts: tuple[Path, ...]

    @property
    def path(self) -> Path:
        """The ``.zip`` / ``.tar…`` file (the last part of a split zip)."""
        return self.parts[-1]

    @property
    def name(self) -> str:
        """The file name without its archive suffix (``2_Ortho_RGB.zip`` → ``2_Ortho_RGB``)."""
        name = self.path.name
        for suffix in (".zip",) + TAR_SUFFIXES:
            if name.lower().endswith(suffix):
                return name[: -len(suffix)]
        return self.path.stem

    @property
    def kind(self) -> str:
        if self.path.name.lower().endswith(".zip"):
            return "split zip" if len(self.parts) > 1 else "zip"
        return "tar"

    def fingerprint(self) -> str:
        return ";".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in self.parts)

    def describe(self) -> str:
        extra = f" ({len(self.parts)} parts)" if len(self.parts) > 1 else ""
        return f"{self.path}{extra}"


def is_archive(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and (name.endswith(".zip") or name.endswith(TAR_SUFFIXES) or bool(_SPLIT_PART.search(name)))


def find_archives(raw: Path) -> list[Archive]:
    """Archives at or under ``raw`` (a folder, or one archive file), sorted by path.

    Split-zip parts ``X.z01, X.z02, …`` are grouped with ``X.zip`` (the last disk). A part
    without its ``.zip`` is an error naming the parts found.
    """
    if raw.is_file():  # one archive named: with its split parts beside it, whichever part was named
        files = sorted(p for p in raw.parent.iterdir() if p.stem == raw.stem and is_archive(p))
    else:
        files = sorted(p for p in raw.rglob("*") if is_archive(p) and not p.name.startswith("."))
    parts: dict[Path, list[tuple[int, Path]]] = {}
    archives = []
    for path in files:
        match = _SPLIT_PART.search(path.name)
        if match:
            parts.setdefault(path.with_suffix(""), []).append((int(match.group(1)), path))
    for path in files:
        if _SPLIT_PART.search(path.name):
            continue
        split = sorted(parts.pop(path.with_suffix(""), []))
        if split and [n for n, _ in split] != list(range(1, len(split) + 1)):
            raise DatasetError(f"split archive {path}: parts {[p.name for _, p in split]} are not numbered "
                               f".z01 … .z{len(split):02d} without gaps; a part is missing")
        archives.append(Archive(tuple(p for _, p in split) + (path,)))
    if parts:
        orphans = sorted(str(p) for group in parts.values() for _, p in group)
        raise DatasetError(f"split-zip parts without their last part (the .zip file): {orphans[:5]}; download "
                           "every part of the archive into the same folder")
    return archives


def members(archive: Archive) -> dict[str, int]:
    """The files inside ``archive`` (folders left out): name → uncompressed size in bytes."""
    if archive.kind == "tar":
        with _open_tar(archive) as tar:
            return {m.name: m.size for m in tar.getmembers() if m.isfile()}
    with open_zip(archive) as zf:
        return {i.filename: i.file_size for i in zf.infolist() if not i.is_dir()}


def extracted_beside(archive: Archive) -> Path | None:
    """The folder where ``archive`` was already extracted next to itself (every member present
    with its size, under the archive's folder or a folder named after it), or None."""
    files = members(archive)
    for base in (archive.path.parent, archive.path.parent / archive.name):
        if files and all((base / name).is_file() and (base / name).stat().st_size == size
                         for name, size in files.items()):
            return base
    return None


def unpack(archive: Archive, dest: Path) -> bool:
    """Extract ``archive`` into ``dest`` unless a marker says this exact download is there.

    Returns whether it extracted. Members are written under ``dest`` only (absolute names and
    ``..`` are refused); an interrupted extraction leaves no marker and is redone.
    """
    if is_unpacked(archive, dest):
        return False
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    print(f"unpacking {archive.describe()} ({archive.kind}) into {dest}", flush=True)
    if archive.kind == "tar":
        with _open_tar(archive) as tar:
            for member in tar.getmembers():
                _safe_name(archive, member.name)
            tar.extractall(dest, filter="data") if hasattr(tarfile, "data_filter") else tar.extractall(dest)
    else:
        with open_zip(archive) as zf:
            for info in zf.infolist():
                _safe_name(archive, info.filename)
            try:
                zf.extractall(dest)
            except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as err:
                raise DatasetError(f"cannot extract {archive.describe()}: {err}{_joined_hint(archive)}") from err
    (dest / _MARKER).write_text(archive.fingerprint())
    return True


def is_unpacked(archive: Archive, dest: Path) -> bool:
    """Whether ``dest`` holds a finished extraction of exactly this download of ``archive``."""
    marker = dest / _MARKER
    return marker.is_file() and marker.read_text() == archive.fingerprint()


def open_zip(archive: Archive) -> zipfile.ZipFile:
    """A :class:`zipfile.ZipFile` over a single or split zip (module docstring)."""
    if len(archive.parts) > 1:
        return open_split_zip(archive.parts)
    try:
        return zipfile.ZipFile(archive.path)
    except (zipfile.BadZipFile, OSError) as err:
        raise DatasetError(f"cannot read zip archive {archive.path}: {err}{_joined_hint(archive)}") from err


def _joined_hint(archive: Archive) -> str:
    """Why a single file starting with the split-archive signature cannot be read."""
    if len(archive.parts) > 1:
        return ""
    with open(archive.path, "rb") as f:
        if f.read(4) != b"PK\x07\x08":
            return ""
    return ("; it starts with the split-archive signature: a split zip joined with `cat` (its offsets are per part) "
            "or a first part renamed. Put the original parts X.z01, X.z02, … X.zip side by side and pass their "
            "folder as --raw")


def open_split_zip(parts: Sequence[Path]) -> zipfile.ZipFile:
    """Read split-zip ``parts`` (disk order, the ``.zip`` last) as one archive, without copying them."""
    sizes = [p.stat().st_size for p in parts]
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    stream = _Concat(list(parts), sizes)
    try:
        directory, count = _absolute_directory(stream, starts, parts[-1])
    except (struct.error, ValueError, IndexError) as err:
        raise DatasetError(f"split zip {parts[-1]}: unreadable central directory ({err})") from err
    total = sum(sizes)
    tail = directory + _zip64_end(count, len(directory), total)
    stream.tail = tail
    try:
        return _SplitZip(stream)
    except zipfile.BadZipFile as err:
        raise DatasetError(f"split zip {parts[-1]}: {err}") from err


class _SplitZip(zipfile.ZipFile):
    """A zip over a :class:`_Concat` stream, which it closes with itself."""

    def close(self) -> None:
        stream = self.fp
        super().close()
        if stream is not None:
            stream.close()


class _Concat(io.RawIOBase):
    """Read-only stream over the parts, then ``tail`` (the rebuilt directory)."""

    def __init__(self, parts: list[Path], sizes: list[int]) -> None:
        self._parts, self._sizes, self._pos = parts, sizes, 0
        self._handles: dict[int, io.BufferedReader] = {}
        self.tail = b""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def _length(self) -> int:
        return sum(self._sizes) + len(self.tail)

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._length()}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, size: int = -1) -> bytes:
        end = self._length() if size is None or size < 0 else min(self._length(), self._pos + size)
        chunks, pos, start = [], self._pos, 0
        for index, length in enumerate(self._sizes):
            lo, hi = max(pos, start), min(end, start + length)
            if lo < hi:
                handle = self._handles.get(index) or self._handles.setdefault(index, open(self._parts[index], "rb"))
                handle.seek(lo - start)
                chunks.append(handle.read(hi - lo))
            start += length
        lo, hi = max(pos, start), end
        if lo < hi:
            chunks.append(self.tail[lo - start:hi - start])
        data = b"".join(chunks)
        self._pos += len(data)
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()
        super().close()


def _absolute_directory(stream: _Concat, starts: list[int], last: Path) -> tuple[bytes, int]:
    """The central directory with every entry's offset made absolute (zip64 extra) and disk 0."""
    end_size = min(stream._length(), 65557)
    stream.seek(-end_size, 2)
    tail = stream.read(end_size)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0:
        raise ValueError(f"no end-of-central-directory record in the last part {last.name}")
    (_, _, cd_disk, _, count, cd_size, cd_offset, _) = struct.unpack("<IHHHHIIH", tail[at:at + 22])
    if 0xFFFF in (cd_disk, count) or 0xFFFFFFFF in (cd_size, cd_offset):  # zip64: locator just before
        locator = tail[at - 20:at]
        sig, z64_disk, z64_offset, _ = struct.unpack("<IIQI", locator)
        if sig != 0x07064B50:
            raise ValueError("zip64 end-of-central-directory locator missing")
        stream.seek(starts[z64_disk] + z64_offset)
        record = stream.read(56)
        (sig, _, _, _, _, cd_disk, _, count, cd_size, cd_offset) = struct.unpack("<IQHHIIQQQQ", record)
        if sig != 0x06064B50:
            raise ValueError("zip64 end-of-central-directory record missing")
    stream.seek(starts[cd_disk] + cd_offset)
    raw = stream.read(cd_size)
    out, pos = bytearray(), 0
    for _ in range(count):
        head = list(struct.unpack("<IHHHHHHIIIHHHHHII", raw[pos:pos + 46]))
        if head[0] != 0x02014B50:
            raise ValueError(f"bad central-directory entry at byte {pos}")
        name_len, extra_len, comment_len = head[10], head[11], head[12]
        name = raw[pos + 46:pos + 46 + name_len]
        extra = raw[pos + 46 + name_len:pos + 46 + name_len + extra_len]
        comment = raw[pos + 46 + name_len + extra_len:pos + 46 + name_len + extra_len + comment_len]
        pos += 46 + name_len + extra_len + comment_len
        usize, csize, disk, offset = head[9], head[8], head[13], head[16]
        kept, z64 = bytearray(), None
        i = 0
        while i + 4 <= len(extra):
            tag, length = struct.unpack("<HH", extra[i:i + 4])
            body = extra[i + 4:i + 4 + length]
            if tag == 0x0001:
                z64 = body
            else:
                kept += extra[i:i + 4 + length]
            i += 4 + length
        if z64 is not None:  # fields present only where the 32/16-bit field is saturated (APPNOTE 4.5.3)
            fields, j = {}, 0
            for key, saturated, fmt in (("usize", usize == 0xFFFFFFFF, "<Q"), ("csize", csize == 0xFFFFFFFF, "<Q"),
                                        ("offset", offset == 0xFFFFFFFF, "<Q"), ("disk", disk == 0xFFFF, "<I")):
                if saturated:
                    width = struct.calcsize(fmt)
                    fields[key] = struct.unpack(fmt, z64[j:j + width])[0]
                    j += width
            usize, csize = fields.get("usize", usize), fields.get("csize", csize)
            offset, disk = fields.get("offset", offset), fields.get("disk", disk)
        absolute = starts[disk] + offset
        sizes = b""
        if usize >= 0xFFFFFFFF:
            sizes += struct.pack("<Q", usize)
        if csize >= 0xFFFFFFFF:
            sizes += struct.pack("<Q", csize)
        new_extra = struct.pack("<HH", 0x0001, len(sizes) + 8) + sizes + struct.pack("<Q", absolute) + bytes(kept)
        head[8] = 0xFFFFFFFF if csize >= 0xFFFFFFFF else csize
        head[9] = 0xFFFFFFFF if usize >= 0xFFFFFFFF else usize
        head[11], head[13], head[16] = len(new_extra), 0, 0xFFFFFFFF
        out += struct.pack("<IHHHHHHIIIHHHHHII", *head) + name + new_extra + comment
    return bytes(out), count


def _zip64_end(count: int, cd_size: int, cd_offset: int) -> bytes:
    """Zip64 end record + locator + end record for a single-disk archive whose directory
    (``cd_size`` bytes) starts at ``cd_offset``."""
    record = struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, count, count, cd_size, cd_offset)
    locator = struct.pack("<IIQI", 0x07064B50, 0, cd_offset + cd_size, 1)
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return record + locator + end


def _open_tar(archive: Archive) -> tarfile.TarFile:
    try:
        return tarfile.open(archive.path)
    except (tarfile.TarError, OSError) as err:
        raise DatasetError(f"cannot read tar archive {archive.path}: {err}") from err


def _safe_name(archive: Archive, name: str) -> None:
    parts = Path(name).parts
    if os.path.isabs(name) or ".." in parts:
        raise DatasetError(f"archive {archive.path} holds a member outside its folder ({name!r}); refusing to extract")
