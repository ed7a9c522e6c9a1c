"""Safe unpacking of model archives (tar, tar.gz/.bz2/.xz, zip).

Refused before anything is written: links, devices, absolute paths, `..`, a name that is not UTF-8 or too long
for the file system, an entry that repeats a name or names both a file and a folder, too many entries.
While writing, three budgets are counted, so that a lying header or a decompression bomb stops at the first
one reached instead of filling the disk: the bytes written (max_total_bytes), the bytes written per byte of
archive (max_ratio), and the free space left on the target's disk (min_free_bytes). The archive is read
through a bounded stream: no single read (a tar pax or long-name header, a zip's central directory) may be
larger than MAX_HEADER_BYTES, and nothing is decompressed past the budget, so memory and time stay bounded.
Any failure to read the archive is an UnsafeInputError naming the archive and the entry.
"""

from __future__ import annotations

import bz2
import errno
import gzip
import lzma
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from .errors import EngineError, UnsafeInputError

_CHUNK = 1 << 20
MAX_HEADER_BYTES = 8 * 1024**2  # a pax/long-name header or a zip's central directory: kilobytes in practice
NAME_MAX = 255  # bytes in one path component (Linux NAME_MAX): longer names fail with ENAMETOOLONG
PATH_MAX = 1024  # bytes in an entry's whole name; a model's files have short names
# What reading a corrupt archive raises, from tarfile, zipfile and the decompressors (OSError: gzip's
# BadGzipFile, bz2's "Invalid data stream"; ValueError and RuntimeError: odd headers, encrypted zip entries).
_READ_ERRORS = (tarfile.TarError, zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, NotImplementedError,
                ValueError, RuntimeError, OSError)


class DiskSpaceError(EngineError):
    """Writing would leave less free space on the disk than the reserve: the server's state, not a bad
    archive (the service answers 507; the same upload succeeds once space is freed)."""

    code = "insufficient_storage"


@dataclass(frozen=True)
class ArchiveLimits:
    max_entries: int = 10_000
    max_total_bytes: int = 20 * 1024**3  # the upload cap: a 7B model in fp16 is ~14 GB
    max_ratio: float = 100.0  # bytes written per byte of archive; weights barely compress (~1.1x)
    min_free_bytes: int = 1024**3  # free space the unpacking must leave on the target's disk


def shown(name: str) -> str:
    """An entry name for a message: quoted, and cut short when it is long."""
    return repr(name if len(name) <= 120 else name[:120] + "...")


def _safe_relative(name: str, archive: Path) -> PurePosixPath:
    if not name or "\x00" in name:
        raise UnsafeInputError(f"{archive.name}: an entry has an empty or invalid name")
    try:
        size = len(name.encode("utf-8"))  # tar names that are not UTF-8 come back with lone surrogates
    except UnicodeEncodeError:
        raise UnsafeInputError(f"{archive.name}: entry {shown(name)} has a name that is not UTF-8") from None
    posix = PurePosixPath(name.replace("\\", "/"))
    if posix.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise UnsafeInputError(f"{archive.name}: entry {shown(name)} has an absolute path")
    if ".." in posix.parts:
        raise UnsafeInputError(f"{archive.name}: entry {shown(name)} points outside the archive (..)")
    if size > PATH_MAX or any(len(p.encode()) > NAME_MAX for p in posix.parts):
        raise UnsafeInputError(f"{archive.name}: entry {shown(name)} has a name longer than {PATH_MAX} bytes "
                               f"or a part longer than {NAME_MAX}")
    return posix


@dataclass
class _Names:
    """The paths written so far: a name may appear once, and never as both a file and a folder."""

    archive: Path
    files: set[PurePosixPath] = field(default_factory=set)
    dirs: set[PurePosixPath] = field(default_factory=set)

    def add(self, rel: PurePosixPath, name: str, is_dir: bool) -> None:
        for parent in list(rel.parents)[:-1]:  # every folder above it, without the archive's root
            if parent in self.files:
                raise UnsafeInputError(f"{self.archive.name}: {shown(parent.as_posix())} is both a file and a "
                                       f"folder (entry {shown(name)})")
            self.dirs.add(parent)
        if (is_dir and rel in self.files) or (not is_dir and rel in self.dirs):
            raise UnsafeInputError(f"{self.archive.name}: {shown(name)} is both a file and a folder")
        if rel in self.files:
            raise UnsafeInputError(f"{self.archive.name}: entry {shown(name)} appears more than once")
        (self.dirs if is_dir else self.files).add(rel)


class _Budget:
    def __init__(self, limits: ArchiveLimits, archive: Path, target: Path) -> None:
        self.limits, self.archive, self.target, self.entries, self.bytes = limits, archive, target, 0, 0
        self.by_ratio = int(limits.max_ratio * max(archive.stat().st_size, 1))
        self.cap = min(limits.max_total_bytes, self.by_ratio)
        self.names = _Names(archive)

    def entry(self) -> None:
        self.entries += 1
        if self.entries > self.limits.max_entries:
            raise UnsafeInputError(
                f"{self.archive.name}: more than {self.limits.max_entries} entries; refused"
            )

    def over(self, written: int) -> UnsafeInputError:
        if written > self.limits.max_total_bytes:
            return UnsafeInputError(f"{self.archive.name}: unpacks to more than {self.limits.max_total_bytes} "
                                    "bytes (decompression bomb or oversized model); refused")
        return UnsafeInputError(f"{self.archive.name}: expands to more than {self.limits.max_ratio:g} times its "
                                f"size ({self.by_ratio} bytes; decompression bomb); refused")

    def check_disk(self, incoming: int) -> None:
        if shutil.disk_usage(self.target).free - incoming < self.limits.min_free_bytes:
            raise DiskSpaceError(f"{self.archive.name}: unpacking it would leave less than "
                                 f"{self.limits.min_free_bytes} bytes free on the server's disk; try again later")

    def copy(self, src: BinaryIO, dest: Path) -> None:
        with open(dest, "xb") as out:
            while chunk := src.read(_CHUNK):
                self.bytes += len(chunk)
                if self.bytes > self.cap:
                    raise self.over(self.bytes)
                self.check_disk(len(chunk))
                out.write(chunk)


class _Bounded:
    """A read-only view of an archive's (decompressed) bytes that refuses any single read larger than
    MAX_HEADER_BYTES and any position past `limit`: a header claiming gigabytes, or a seek over a huge
    'member' that is never written, stops here instead of filling memory or burning CPU."""

    def __init__(self, raw: BinaryIO, limit: int, budget: _Budget) -> None:
        self.raw, self.limit, self.budget = raw, limit, budget

    def _check(self, position: int) -> None:
        if position > self.limit:
            raise self.budget.over(position)

    def read(self, n: int | None = -1) -> bytes:
        if n is not None and n > MAX_HEADER_BYTES:
            raise UnsafeInputError(f"{self.budget.archive.name}: a header or directory larger than "
                                   f"{MAX_HEADER_BYTES} bytes; refused")
        want = MAX_HEADER_BYTES + 1 if n is None or n < 0 else n
        self._check(self.raw.tell() + want if n is not None and n >= 0 else self.raw.tell())
        data = self.raw.read(want)
        if len(data) > MAX_HEADER_BYTES:
            raise UnsafeInputError(f"{self.budget.archive.name}: a header or directory larger than "
                                   f"{MAX_HEADER_BYTES} bytes; refused")
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 0:
            self._check(offset)
        elif whence == 1:
            self._check(self.raw.tell() + offset)
        position = self.raw.seek(offset, whence)
        self._check(position)
        return position

    def tell(self) -> int:
        return self.raw.tell()

    def seekable(self) -> bool:
        return True

    def close(self) -> None:
        self.raw.close()

    def __enter__(self) -> _Bounded:
        return self

    def __exit__(self, *exc: object) -> None:
        self.raw.close()


def _decompressed(archive: Path) -> BinaryIO:
    with open(archive, "rb") as fh:
        magic = fh.read(6)
    if magic.startswith(b"\x1f\x8b"):
        return gzip.open(archive, "rb")  # type: ignore[return-value]
    if magic.startswith(b"BZh"):
        return bz2.open(archive, "rb")  # type: ignore[return-value]
    if magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.open(archive, "rb")  # type: ignore[return-value]
    return open(archive, "rb")  # closed by the caller


def _write_entry(budget: _Budget, target: Path, name: str, is_dir: bool, open_src: Callable[[], BinaryIO]) -> None:
    """Check the entry's name against those before it, then make the folder or copy the file."""
    rel = _safe_relative(name, budget.archive)
    if not rel.parts:  # "./" or ".": the archive's own root (tar -C dir . writes it)
        if not is_dir:
            raise UnsafeInputError(f"{budget.archive.name}: entry {shown(name)} is a file without a name")
        return
    budget.names.add(rel, name, is_dir)
    dest = target.joinpath(*rel.parts)
    if is_dir:
        dest.mkdir(parents=True, exist_ok=True)
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open_src() as src:
        budget.copy(src, dest)


def _unpack_tar(archive: Path, target: Path, budget: _Budget) -> None:
    # The decompressed stream may hold the written bytes, a 512-byte header (and padding) per entry, and a
    # few large headers; past that it is a bomb or a lie.
    limit = budget.cap + 1024 * (budget.limits.max_entries + 2) + 2 * MAX_HEADER_BYTES
    stream = _Bounded(_decompressed(archive), limit, budget)
    with stream, tarfile.TarFile(fileobj=stream, mode="r") as tf:  # type: ignore[arg-type]
        for member in tf:  # streaming: members are checked one by one, before each is written
            budget.entry()
            if member.issym() or member.islnk():
                raise UnsafeInputError(f"{archive.name}: entry {shown(member.name)} is a link; links are refused")
            if not (member.isfile() or member.isdir()):
                raise UnsafeInputError(f"{archive.name}: entry {shown(member.name)} is not a regular file")

            def source(member: tarfile.TarInfo = member) -> BinaryIO:
                src = tf.extractfile(member)
                if src is None:
                    raise UnsafeInputError(f"{archive.name}: entry {shown(member.name)} cannot be read")
                return src

            _write_entry(budget, target, member.name, member.isdir(), source)


def _unpack_zip(archive: Path, target: Path, budget: _Budget) -> None:
    raw = _Bounded(open(archive, "rb"), archive.stat().st_size, budget)  # noqa: SIM115 - closed below
    with raw, zipfile.ZipFile(raw) as zf:  # type: ignore[arg-type]
        for info in zf.infolist():
            budget.entry()
            if stat.S_ISLNK(info.external_attr >> 16):
                raise UnsafeInputError(f"{archive.name}: entry {shown(info.filename)} is a link; links are refused")
            _write_entry(budget, target, info.filename, info.filename.endswith("/"),  # is_dir() fails on ""
                         lambda info=info: zf.open(info))



def unpack_archive(archive: Path, target: Path, limits: ArchiveLimits | None = None) -> Path:
    """Unpack into `target` (created empty) and return the directory that holds config.json."""
    limits = limits or ArchiveLimits()
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    budget = _Budget(limits, archive, target)
    try:
        try:
            if zipfile.is_zipfile(archive):
                _unpack_zip(archive, target, budget)
            else:
                _unpack_tar(archive, target, budget)
        except EngineError:
            raise
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskSpaceError(f"{archive.name}: the server's disk is full; try again later") from None
            if exc.errno is not None and exc.filename is not None:  # writing an entry: never name our path
                raise UnsafeInputError(f"{archive.name}: an entry cannot be written ({exc.strerror})") from None
            raise UnsafeInputError(f"{archive.name}: not a readable archive ({reason(exc)})") from None
        except _READ_ERRORS as exc:
            raise UnsafeInputError(f"{archive.name}: not a readable archive ({reason(exc)})") from None
        if (target / "config.json").is_file():
            return target
        children = [p for p in target.iterdir() if p.is_dir()]
        if len(children) == 1 and (children[0] / "config.json").is_file():
            return children[0]
        raise UnsafeInputError(f"{archive.name}: no config.json at the top of the archive or in its one folder")
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)  # never leave a half-unpacked or refused model behind
        raise


def reason(exc: BaseException) -> str:
    """The first line of a reader's error, short; never a path of ours (OSError's filename is left out)."""
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return (text.splitlines() or [type(exc).__name__])[0][:200] or type(exc).__name__
