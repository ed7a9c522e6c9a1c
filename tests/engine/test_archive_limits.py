"""Archive unpacking under hostile input: the caps (bytes, ratio, free disk) are counted while writing, headers
cannot claim unbounded memory, and every malformed name is an UnsafeInputError naming the entry."""

from __future__ import annotations

import io
import shutil
import tarfile
import tracemalloc
import zipfile
from pathlib import Path

import pytest

from worker.engine.archive import ArchiveLimits, DiskSpaceError, unpack_archive
from worker.engine.errors import UnsafeInputError

F, D = tarfile.REGTYPE, tarfile.DIRTYPE


def tar(path: Path, entries: list[tuple[str, bytes, int]], mode: str = "w",
        fmt: int = tarfile.PAX_FORMAT) -> Path:
    with tarfile.open(path, mode, format=fmt) as tf:
        for name, data, kind in entries:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.size = len(data) if kind == F else 0
            tf.addfile(info, io.BytesIO(data) if kind == F else None)
    return path


MODEL = [("config.json", b"{}", F), ("model.safetensors", b"\1" * 64, F)]


@pytest.mark.parametrize("mode", ["w", "w:gz", "w:bz2", "w:xz"])
def test_every_tar_compression_round_trips_and_tar_dot_root_is_accepted(tmp_path, mode):
    archive = tar(tmp_path / "m.tar", [("./", b"", D), *((f"./{n}", d, k) for n, d, k in MODEL)], mode)
    out = unpack_archive(archive, tmp_path / "out")
    assert out == tmp_path / "out" and (out / "model.safetensors").read_bytes() == b"\1" * 64


@pytest.mark.parametrize(("entries", "message"), [
    ([*MODEL, ("config.json", b"{}", F)], "'config.json' appears more than once"),
    ([*MODEL, ("sub", b"x", F), ("sub", b"", D)], "'sub' is both a file and a folder"),
    ([*MODEL, ("sub", b"", D), ("sub", b"x", F)], "'sub' is both a file and a folder"),
    ([*MODEL, ("sub", b"x", F), ("sub/inner.txt", b"x", F)], "'sub' is both a file and a folder"),
    ([*MODEL, ("a//b.txt", b"x", F), ("a/./b.txt", b"x", F)], "appears more than once"),
    ([*MODEL, ("./", b"x", F)], "'./' is a file without a name"),
    ([*MODEL, (".", b"x", F)], "'.' is a file without a name"),
    ([*MODEL, ("a" * 256, b"x", F)], "a part longer than 255"),
    ([*MODEL, ("/".join(["d" * 200] * 8), b"x", F)], "a name longer than 1024 bytes"),
])
def test_conflicting_and_impossible_names_are_refused_by_name(tmp_path, entries, message):
    for fmt in (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT):
        target = tmp_path / "out"
        with pytest.raises(UnsafeInputError, match=message):
            unpack_archive(tar(tmp_path / "bad.tar", entries, fmt=fmt), target)
        assert not target.exists()


def test_non_utf8_names_are_refused(tmp_path):
    with tarfile.open(tmp_path / "raw.tar", "w", format=tarfile.GNU_FORMAT, encoding="latin-1") as tf:
        info = tarfile.TarInfo("caf\xe9.txt")
        tf.addfile(info, io.BytesIO(b""))
    with pytest.raises(UnsafeInputError, match="not UTF-8"):
        unpack_archive(tmp_path / "raw.tar", tmp_path / "out")


def test_zip_names_that_repeat_are_refused(tmp_path):
    archive = tmp_path / "dup.zip"
    with zipfile.ZipFile(archive, "w") as zf, pytest.warns(UserWarning, match="Duplicate name"):
        for name, data, _ in MODEL:
            zf.writestr(name, data)
        zf.writestr("config.json", b"{}")
    with pytest.raises(UnsafeInputError, match="appears more than once"):
        unpack_archive(archive, tmp_path / "out")


def test_the_ratio_cap_stops_a_bomb_while_writing(tmp_path):
    bomb = tar(tmp_path / "bomb.tar.gz", [*MODEL, ("zeros.bin", b"\0" * (20 * 1024**2), F)], "w:gz")
    assert bomb.stat().st_size < 100_000
    with pytest.raises(UnsafeInputError, match="more than 100 times its size"):
        unpack_archive(bomb, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    # With the ratio out of the way, the byte cap still holds; with both out of the way it unpacks.
    with pytest.raises(UnsafeInputError, match="unpacks to more than 1048576 bytes"):
        unpack_archive(bomb, tmp_path / "out", ArchiveLimits(max_total_bytes=1024**2, max_ratio=1e9))
    assert (unpack_archive(bomb, tmp_path / "out", ArchiveLimits(max_ratio=1e9)) / "zeros.bin").stat().st_size \
        == 20 * 1024**2


def test_a_huge_pax_header_is_refused_without_reading_it_into_memory(tmp_path):
    archive = tmp_path / "pax.tar.gz"
    with tarfile.open(archive, "w:gz", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo("config.json")
        info.pax_headers = {"comment": "x" * (64 * 1024**2)}  # a 64 MiB extended header
        tf.addfile(info, io.BytesIO(b""))
    tracemalloc.start()
    try:
        with pytest.raises(UnsafeInputError, match="header or directory larger than"):
            unpack_archive(archive, tmp_path / "out", ArchiveLimits(max_ratio=1e9))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 24 * 1024**2, peak


def test_unpacking_keeps_the_free_disk_reserve(tmp_path):
    archive = tar(tmp_path / "m.tar", MODEL)
    free = shutil.disk_usage(tmp_path).free
    with pytest.raises(DiskSpaceError, match="bytes free on the server's disk") as err:
        unpack_archive(archive, tmp_path / "out", ArchiveLimits(min_free_bytes=free + 1024**3))
    assert err.value.code == "insufficient_storage" and str(tmp_path) not in str(err.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_damaged_archives_are_unsafe_input_not_crashes(tmp_path, damage):
    good = tar(tmp_path / "m.tar.gz", [*MODEL, ("pad.bin", bytes(range(256)) * 400, F)], "w:gz").read_bytes()
    bad = {"truncate": good[: len(good) // 2], "flip": good[:40] + bytes(b ^ 0xFF for b in good[40:80]) + good[80:],
           "garbage": b"\x1f\x8b" + b"\0" * 100}[damage]
    (tmp_path / "bad.tar.gz").write_bytes(bad)
    with pytest.raises(UnsafeInputError, match=r"bad\.tar\.gz: not a readable archive") as err:
        unpack_archive(tmp_path / "bad.tar.gz", tmp_path / "out")
    assert str(tmp_path) not in str(err.value)
