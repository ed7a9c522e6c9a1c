"""`distillery jobs submit`: turn a recipe that names local files into one the service takes.

A recipe written for `distillery compress` names files; the service wants ids. Data files are uploaded
(`POST /v1/datasets`) unless a dataset with the same sha256 is already there; a local teacher directory is
reused when a registered model has the same content, else registered by path when the service accepts the
path (it runs on this machine, under its model roots), else uploaded as a deterministic tar; an archive
teacher is uploaded. Values that are already ids (`ds_...`, `{model: mdl_...}`, hub and bundled teachers) pass
through. Nothing is uploaded before the recipe itself has passed the engine's own validation.
"""

from __future__ import annotations

import copy
import hashlib
import sys
from pathlib import Path
from typing import Any

from distillery.client import Client, ValidationError
from distillery.client.resources import dir_manifest_sha256, pack_model_dir


class RecipeInputError(Exception):
    """The recipe file or a file it names is unusable: exit 2, naming the field."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field and not message.startswith(field) else message)
        self.field = field


def note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def read_recipe(path: Path) -> dict[str, Any]:
    from worker.engine.errors import RecipeError
    from worker.engine.recipe import read_recipe_file

    try:
        return read_recipe_file(path)
    except RecipeError as exc:
        raise RecipeInputError(exc.message, exc.field) from None


def check_recipe(data: dict[str, Any]) -> None:
    """The engine's validation (pydantic only, no torch), so that a typo fails before anything is uploaded.
    A registered teacher (`{model: mdl_...}`) is a service form the engine does not know: it is checked as a
    stand-in; the service checks the id itself."""
    from worker.engine.errors import RecipeError
    from worker.engine.recipe import parse_recipe

    probe = copy.deepcopy(data)
    if isinstance(probe.get("teacher"), dict) and "model" in probe["teacher"]:
        if set(probe["teacher"]) != {"model"}:
            raise RecipeInputError("a registered teacher is {model: mdl_...} alone", "teacher")
        probe["teacher"] = {"source": "bundled"}
    try:
        parse_recipe(probe)
    except RecipeError as exc:
        raise RecipeInputError(exc.message, exc.field) from None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


class Uploader:
    def __init__(self, client: Client, base_dir: Path) -> None:
        self.client, self.base_dir = client, base_dir
        self._datasets: dict[str, str] | None = None  # sha256 -> id of what the service already has

    def _local(self, value: str) -> Path:
        path = Path(value).expanduser()
        return (path if path.is_absolute() else self.base_dir / path).resolve()

    def data_file(self, value: Any, field: str) -> Path | None:
        """The local file a data entry names; None for a dataset id (or a value the service will refuse)."""
        if not isinstance(value, str):
            return None
        path = self._local(value)
        if path.is_file():
            return path
        if value.startswith("ds_"):
            return None
        raise RecipeInputError(f"no such file {path}", field)

    def teacher_path(self, ref: Any) -> Path | None:
        """The local directory or archive a teacher names; None when it is already a service reference."""
        if not isinstance(ref, dict) or ref.get("source") not in ("local", "archive"):
            return None
        path = self._local(ref["path"])
        if ref["source"] == "archive":
            if not path.is_file():
                raise RecipeInputError(f"no such archive {path}", "teacher.path")
        elif not path.is_dir():
            raise RecipeInputError(f"{path} is not a directory", "teacher.path")
        elif not (path / "config.json").is_file():
            raise RecipeInputError(f"{path} is not a model directory (no config.json)", "teacher.path")
        return path

    def dataset(self, path: Path, shown: str, field: str) -> str:
        if self._datasets is None:
            self._datasets = {d.sha256: d.id for d in self.client.datasets.list()}
        digest = _sha256(path)
        if digest in self._datasets:
            note(f"{field}: {shown} is already uploaded as {self._datasets[digest]}")
        else:
            self._datasets[digest] = self.client.datasets.upload(path).id
            note(f"{field}: uploaded {shown} as {self._datasets[digest]}")
        return self._datasets[digest]

    def teacher(self, path: Path, shown: str, archive: bool) -> dict[str, str]:
        models = list(self.client.models.list())
        if archive:
            return {"model": self._upload(path, _sha256(path), models, shown)}
        manifest = dir_manifest_sha256(path)
        for m in models:
            if m.source == {"source": "local", "path": str(path)} and m.sha256 == manifest:
                note(f"teacher: {shown} is already registered as {m.id}")
                return {"model": m.id}
        packed = pack_model_dir(path)
        try:
            digest = _sha256(packed)
            if found := next((m for m in models if m.source.get("source") == "store" and m.sha256 == digest), None):
                note(f"teacher: {shown} is already uploaded as {found.id}")
                return {"model": found.id}
            try:
                model = self.client.models.register(path.name, path=path)
                note(f"teacher: registered {shown} by path as {model.id}")
                return {"model": model.id}
            except ValidationError:
                pass  # not a path the service can read (another machine, or outside its roots): upload it
            return {"model": self._upload(packed, digest, [], shown, name=path.name)}
        finally:
            packed.unlink(missing_ok=True)

    def _upload(self, archive: Path, digest: str, models: list, shown: str, name: str | None = None) -> str:
        if found := next((m for m in models if m.source.get("source") == "store" and m.sha256 == digest), None):
            note(f"teacher: {shown} is already uploaded as {found.id}")
            return found.id
        note(f"teacher: uploading {shown} ({archive.stat().st_size / 1e6:.1f} MB)")
        model = self.client.models.upload(archive, name=name)
        note(f"teacher: uploaded {shown} as {model.id}")
        return model.id


def prepare(client: Client, recipe_path: Path) -> dict[str, Any]:
    """The recipe at `recipe_path` with its local files uploaded and replaced by ids. Every file is found
    before the first upload starts."""
    data = read_recipe(recipe_path)
    check_recipe(data)
    up = Uploader(client, recipe_path.resolve().parent)
    teacher = up.teacher_path(data["teacher"])
    spec = data.get("data") or {}
    entries = ([("data.train", "train", None)] if spec.get("train") is not None else []) + [
        (f"data.eval.{name}", "eval", name) for name in spec.get("eval") or {}]
    files = {field: up.data_file(spec[key] if name is None else spec[key][name], field)
             for field, key, name in entries}
    if teacher is not None:
        data["teacher"] = up.teacher(teacher, data["teacher"]["path"], data["teacher"]["source"] == "archive")
    for field, key, name in entries:
        if (path := files[field]) is not None:
            shown = spec[key] if name is None else spec[key][name]
            if name is None:
                spec[key] = up.dataset(path, shown, field)
            else:
                spec[key][name] = up.dataset(path, shown, field)
    return data
