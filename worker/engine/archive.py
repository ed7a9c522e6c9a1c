"""Safe unpacking of model archives (tar, tar.gz, zip).

Refused before anything is written outside the target: links, devices, absolute paths, `..`,
too many entries, and more bytes than the cap (counted while writing, so a lying header or a
decompression bomb stops at the cap instead of filling the disk).
"""

from __future__ import annotations

import shutil
import stat
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from .errors import UnsafeInputError

_CHUNK = 1 << 20


@dataclass(frozen=True)
class ArchiveLimits:
    max_entries: int = 10_000
    max_total_bytes: int = 20 * 1024**3  # a 7B model in fp16 is ~14 GB


def _safe_relative(name: str, archive: Path) -> PurePosixPath:
    if not name or "\x00" in name:
        raise UnsafeInputError(f"{archive.name}: an entry has an empty or invalid name")
    posix = PurePosixPath(name.replace("\\", "/"))
    if posix.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise UnsafeInputError(f"{archive.name}: entry {name!r} has an absolute path")
    if ".." in posix.parts:
        raise UnsafeInputError(f"{archive.name}: entry {name!r} points outside the archive (..)")
    return posix


class _Budget:
    def __init__(self, limits: ArchiveLimits, archive: Path) -> None:
        self.limits, self.archive, self.entries, self.bytes = limits, archive, 0, 0

    def entry(self) -> None:
        self.entries += 1
        if self.entries > self.limits.max_entries:
            raise UnsafeInputError(
                f"{self.archive.name}: more than {self.limits.max_entries} entries; refused"
            )

    def copy(self, src: BinaryIO, dest: Path) -> None:
        with open(dest, "xb") as out:
            while chunk := src.read(_CHUNK):
                self.bytes += len(chunk)
                if self.bytes > self.limits.max_total_bytes:
                    raise UnsafeInputError(
                        f"{self.archive.name}: unpacks to more than {self.limits.max_total_bytes} bytes "
                        "(decompression bomb or oversized model); refused"
                    )
                out.write(chunk)


def _unpack_tar(archive: Path, target: Path, budget: _Budget) -> None:
    try:
        tf = tarfile.open(archive, mode="r:*")  # noqa: SIM115 - closed by the `with` below
    except (tarfile.TarError, OSError) as exc:
        raise UnsafeInputError(f"{archive.name}: not a readable tar archive ({exc})") from None
    with tf:
        for member in tf:  # streaming: members are checked one by one, before each is written
            budget.entry()
            rel = _safe_relative(member.name, archive)
            if member.issym() or member.islnk():
                raise UnsafeInputError(f"{archive.name}: entry {member.name!r} is a link; links are refused")
            if not (member.isfile() or member.isdir()):
                raise UnsafeInputError(f"{archive.name}: entry {member.name!r} is not a regular file")
            dest = target.joinpath(*rel.parts)
            if member.isdir():
                dest.mkdir(parents=True, exist_ok=True)
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            src = tf.extractfile(member)
            if src is None:
                raise UnsafeInputError(f"{archive.name}: entry {member.name!r} cannot be read")
            budget.copy(src, dest)


def _unpack_zip(archive: Path, target: Path, budget: _Budget) -> None:
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UnsafeInputError(f"{archive.name}: not a readable zip archive ({exc})") from None
    with zf:
        for info in zf.infolist():
            budget.entry()
            rel = _safe_relative(info.filename, archive)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise UnsafeInputError(f"{archive.name}: entry {info.filename!r} is a link; links are refused")
            dest = target.joinpath(*rel.parts)
            if info.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src:
                budget.copy(src, dest)


def unpack_archive(archive: Path, target: Path, limits: ArchiveLimits | None = None) -> Path:
    """Unpack into `target` (created empty) and return the directory that holds config.json."""
    limits = limits or ArchiveLimits()
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    budget = _Budget(limits, archive)
    try:
        if zipfile.is_zipfile(archive):
            _unpack_zip(archive, target, budget)
        else:
            _unpack_tar(archive, target, budget)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)  # never leave a half-unpacked model behind
        raise
    if (target / "config.json").is_file():
        return target
    children = [p for p in target.iterdir() if p.is_dir()]
    if len(children) == 1 and (children[0] / "config.json").is_file():
        return children[0]
    raise UnsafeInputError(f"{archive.name}: no config.json at the top of the archive or in its one folder")
