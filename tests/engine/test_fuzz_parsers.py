"""Fuzzing the upload parsers directly (the volume half; tests/app/test_fuzz_uploads.py sends fewer cases
through the real API). Properties, for every generated archive, JSONL and CSV file:

- the parser succeeds or raises the engine's EngineError (the API's 4xx); nothing else escapes;
- nothing is written outside the upload's own folder, no link is created, and a refusal leaves no half-unpacked
  folder behind;
- a message never names the server's paths;
- memory stays bounded (tracemalloc's peak for one parse), whatever the input claims.

A short budget runs in CI (about 20 s). A long run on demand:

    DISTILLERY_FUZZ_EXAMPLES=5000 .venv/bin/python -m pytest tests/engine/test_fuzz_parsers.py \
        tests/app/test_fuzz_uploads.py -p no:cacheprovider -q

A failing case is printed by hypothesis as the input that broke it.
"""

from __future__ import annotations

import os
import tempfile
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import event, given
from hypothesis import strategies as st

from tests.recipe_strategies import fuzz_settings
from tests.upload_strategies import archives, csv_files, jsonl_files
from worker.engine.archive import ArchiveLimits, unpack_archive
from worker.engine.data import load_dataset, scan_dataset
from worker.engine.errors import EngineError
from worker.engine.model_checks import check_model_dir

LIMITS = ArchiveLimits(max_entries=50, max_total_bytes=8 * 1024**2, max_ratio=100, min_free_bytes=0)
MAX_PEAK = 48 * 1024**2  # the parsers' own memory: far below what the inputs claim (bombs of gigabytes)


def bounded(call: Callable[[], Any]) -> tuple[Any, EngineError | None]:
    """Run one parse under tracemalloc: (result, None) or (None, the engine's error); the peak is checked."""
    tracemalloc.start()
    try:
        return call(), None
    except EngineError as exc:
        return None, exc
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < MAX_PEAK, f"the parse peaked at {peak} bytes"


def everything_under(root: Path) -> set[Path]:
    return {Path(d) / n for d, dirs, files in os.walk(root) for n in (*dirs, *files)}


@given(archive=archives())
@fuzz_settings(default=150)
def test_archives_unpack_or_are_refused_inside_their_folder(archive: tuple[str, bytes]) -> None:
    name, blob = archive
    with tempfile.TemporaryDirectory() as tmp:
        sandbox = Path(tmp)
        upload = sandbox / "upload"
        upload.mkdir()
        path = upload / name
        path.write_bytes(blob)
        target = upload / "unpacked"

        unpacked, error = bounded(lambda: unpack_archive(path, target, LIMITS))
        if error is not None:
            assert not target.exists(), "a refused archive left files behind"
        else:  # then the checks the API makes before it keeps an upload
            _, error = bounded(lambda: check_model_dir(unpacked, "the archive"))
        event("accepted" if error is None else f"refused: {type(error).__name__}")
        if error is not None:
            assert tmp not in error.message, error.message
        found = everything_under(sandbox)
        assert all(p in (upload, path) or p.is_relative_to(target) for p in found), sorted(found)
        assert not any(p.is_symlink() for p in found)
        if unpacked is not None:
            assert unpacked.is_relative_to(target) and (unpacked / "config.json").is_file()
            assert sum(p.stat().st_size for p in found if p.is_file() and p != path) <= LIMITS.max_total_bytes


@given(kind=st.sampled_from(["jsonl", "csv"]), data=st.data())
@fuzz_settings(default=200)
def test_dataset_files_load_or_name_the_problem(kind: str, data: st.DataObject) -> None:
    blob = data.draw(jsonl_files() if kind == "jsonl" else csv_files())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"upload.{kind}"
        path.write_bytes(blob)
        loaded, error = bounded(lambda: load_dataset(path, 64 * 1024))
        scanned, scan_error = bounded(lambda: scan_dataset(path, 64 * 1024))
        event("loaded" if error is None else "refused")
        if error is not None:
            assert error.message.startswith(f"upload.{kind}"), error.message  # the user's file, then the line
            assert tmp not in error.message, error.message
            assert scan_error is not None and scan_error.message == error.message  # the API says what the worker
        else:
            assert scan_error is None and scanned == loaded.schema()
