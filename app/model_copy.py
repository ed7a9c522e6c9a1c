"""A teacher registered by local path, copied into the artifact store (store s3).

Workers on other machines read teachers from the store, not from the API machine's disk, and a path read
later, on each worker, could hold other weights than the ones checked here. So with a remote store the
registration copies the directory, with the checks a local registration makes (the path absolute and under
the model roots after resolving links, no link, hard link or odd file inside, no custom code, no pickles that
run code) plus a size cap, into the upload layout (uploads/models/<id>/), where jobs materialise it like an
uploaded archive. The copy is what is checked and hashed, so the recorded sha256 is that of the files workers
will read.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from .errors import Unprocessable
from .intake import CheckedModel, engine_errors
from .storage import LocalStore


def _refuse(message: str, code: str) -> Unprocessable:
    return Unprocessable(message, errors=[{"field": "source.path", "message": message, "code": code}])


def copy_local_model(path: str, model_id: str, data_dir: Path, roots: Sequence[Path],
                     max_bytes: int) -> tuple[CheckedModel, Path]:
    """Check and copy a local model directory to data_dir/uploads/models/<id> (staged, then one rename); return
    its store reference and the directory, which the caller puts into the store.

    The folder is read through the no-follow reader (worker/engine/safe_files.py), with the refusals of a local
    registration (links, hard links, odd files, Python files anywhere); the checks, the size cap and the copy
    read the files listed once, and a file that grows while it is copied is refused, so the cap holds."""
    from worker.engine.model_checks import check_model_dir, check_model_files
    from worker.engine.references import open_model_folder
    from worker.engine.safe_files import manifest_digest

    if not os.path.isabs(path):
        raise _refuse(f"model path {path!r} must be absolute", "invalid_path")
    store = LocalStore(data_dir)
    staging = store.staging(model_id)
    copy = staging / "copy"
    try:
        with engine_errors("source.path"):
            real, folder = open_model_folder(path, roots, Path("/"))
            with folder:
                check_model_files(folder.files, folder.open_file, path)  # fail fast, before copying gigabytes
                size = sum(folder.files.values())
                if size > max_bytes:
                    raise _refuse(f"the model directory holds {size} bytes, more than the {max_bytes} that may be "
                                  "copied into the artifact store", "too_large")
                copy.mkdir()
                digest = manifest_digest(folder.copy_into(copy))
            check_model_dir(copy, path)  # the copy is what workers read
        final = store.promote(copy, store.uploads / "models" / model_id)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    prefix = f"{store.relative(final)}/"
    return CheckedModel({"source": "store", "prefix": prefix, "copied_from": str(real)}, size, digest), final
