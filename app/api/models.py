"""/v1/models: register a teacher by reference (JSON) or by uploading an archive (multipart)."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
from fastapi import Request, Response
from pydantic import ValidationError

from worker.engine.recipe import drop_union_tags

from ..db.base import new_id
from ..errors import BadRequest, NotFound, PayloadTooLarge, Unprocessable
from ..intake import (
    ARCHIVE_SUFFIXES,
    CheckedModel,
    check_bundled_model,
    check_engine_reference,
    check_local_model,
    unpack_model,
)
from ..model_copy import copy_local_model
from ..repositories import models as repo
from ..settings import Settings
from ..storage import LocalStore
from ..store import get_store, upload_dir
from .deps import AppSettings, Db, Owner
from .docs import ModelId, problems
from .limits import SLOW
from .pagination import After, Limit, Page, decode_cursor, encode_cursor
from .routing import api_router
from .schemas_assets import BundledSource, HubSource, LocalSource, ModelCreate, ModelOut, inline_schema
from .uploads import media_type, receive_upload, unsupported_media_type

router = api_router(tags=["models"])
MAX_JSON_BYTES = 64 * 1024

_REQUEST_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": inline_schema(ModelCreate)},
        "multipart/form-data": {
            "schema": {
                "type": "object", "required": ["archive"],
                "properties": {
                    "archive": {"type": "string", "format": "binary",
                                "description": "a .tar, .tar.gz, .tgz or .zip of a Hugging Face model directory "
                                               "(config.json at the top or in its one folder); streamed to disk, "
                                               "413 past the upload limit"},
                    "name": {"type": "string", "maxLength": 200, "description": "defaults to the file's name"},
                },
            },
            "encoding": {"archive": {"contentType": "application/gzip, application/x-tar, application/zip"}},
            "example": {"archive": "minilm.tar.gz (binary: the model directory, archived)", "name": "minilm"},
        },
    },
}


def _validation_errors(exc: ValidationError) -> list[dict]:
    errors = []
    for err in exc.errors():
        # "source.hf.revision" reads "source.revision"
        loc = [str(p) for p in drop_union_tags(err["loc"])]
        errors.append({"field": ".".join(loc) or "body", "message": err["msg"]})
    return errors


async def _json_body(request: Request) -> ModelCreate:
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_JSON_BYTES:
            raise PayloadTooLarge(f"a JSON body is limited to {MAX_JSON_BYTES} bytes; upload archives as multipart")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the body is not valid JSON ({exc})") from None
    except RecursionError:  # nested deeper than the parser goes: no model reference is
        raise BadRequest("the body is nested too deeply") from None
    try:
        return ModelCreate.model_validate(data)
    except ValidationError as exc:
        errors = _validation_errors(exc)
        raise Unprocessable("; ".join(f"{e['field']}: {e['message']}" for e in errors), errors=errors) from None


def _check_reference(body: ModelCreate, settings: Settings) -> CheckedModel:
    source = body.source
    if isinstance(source, LocalSource):
        checked = check_local_model(source.path, settings.model_roots)
    elif isinstance(source, HubSource):
        checked = CheckedModel(source.model_dump(), None, None)
    else:
        assert isinstance(source, BundledSource)
        checked = check_bundled_model(source.name)
    check_engine_reference(checked.source)
    return checked


async def _upload(request: Request, model_id: str, settings: Settings) -> tuple[str, CheckedModel, Path]:
    """Stream the archive into a staging directory, unpack and check it there, then promote the model
    directory to uploads/models/<id> with one rename. Any failure leaves nothing behind."""
    store = LocalStore(settings.data_dir)
    staging = store.staging(model_id)
    try:
        form = await receive_upload(request, file_field="archive", dest_dir=staging,
                                    max_bytes=settings.max_upload_bytes, suffixes=ARCHIVE_SUFFIXES)
        name = form.fields.get("name", "").strip() or form.filename.split(".", 1)[0]
        if len(name) > 200:
            raise Unprocessable("name is longer than 200 characters",
                                errors=[{"field": "name", "message": "at most 200 characters"}])
        unpacked = await anyio.to_thread.run_sync(unpack_model, form.file.path, staging / "unpacked", settings)
        final = store.promote(unpacked, store.uploads / "models" / model_id)
    finally:
        store.discard(staging)  # the archive itself is not kept: the unpacked directory is the model
    # A store reference, not this machine's path: workers elsewhere fetch the files by prefix.
    prefix = f"{store.relative(final)}/"
    return name, CheckedModel({"source": "store", "prefix": prefix}, form.file.size_bytes, form.file.sha256), final


@router.post(
    "/models", status_code=201, response_model=ModelOut, summary="Register a teacher model",
    description="Either JSON naming a reference (a local directory under the configured roots, a hub id at "
                "a pinned revision, or the bundled all-MiniLM-L6-v2), or multipart/form-data with an "
                "`archive` file and an optional `name`. Local directories and archives are checked as the "
                "worker will check them: no custom code, no pickles that run code, no links out of the roots.",
    responses={201: {"headers": {"Location": {"description": "the new model's URL",
                                              "schema": {"type": "string"}}}},
               **problems(400, 401, 413, 415, 422, 429, 507)},
    openapi_extra={"requestBody": _REQUEST_BODY}, dependencies=[SLOW],
)
async def create_model(request: Request, response: Response, owner: Owner, db: Db,
                       settings: AppSettings) -> ModelOut:
    model_id = new_id("mdl")
    kind = media_type(request)
    final: Path | None = None
    if kind == "application/json":
        body = await _json_body(request)
        name = body.name
        if isinstance(body.source, LocalSource) and settings.remote_store:
            # Workers elsewhere read teachers from the store: the checked directory is copied there.
            checked, final = await anyio.to_thread.run_sync(
                lambda: copy_local_model(body.source.path, model_id, settings.data_dir, settings.model_roots,
                                         settings.max_unpacked_bytes))
        else:
            checked = await anyio.to_thread.run_sync(_check_reference, body, settings)
    elif kind == "multipart/form-data":
        name, checked, final = await _upload(request, model_id, settings)
    else:
        raise unsupported_media_type("application/json or multipart/form-data")
    def save() -> ModelOut:
        if final is not None:  # the checked files go to the shared store (a no-op for the local one)
            upload_dir(get_store(settings), final, checked.source["prefix"])
        row = repo.add_model(db, id=model_id, owner=owner, name=name, source=checked.source,
                             size_bytes=checked.size_bytes, sha256=checked.sha256)
        db.commit()  # before answering: the session dependency commits only after the response is sent
        return ModelOut.model_validate(row)

    try:
        out = await anyio.to_thread.run_sync(save)
    except BaseException:
        if final is not None:
            LocalStore.discard(final)
        raise
    response.headers["Location"] = f"/v1/models/{model_id}"
    return out


@router.get("/models", response_model=Page[ModelOut], summary="List models, oldest first",
            responses=problems(400, 401, 422))
def list_models(owner: Owner, db: Db, after: After = None, limit: Limit = 50) -> Page[ModelOut]:
    rows, more = repo.list_models(db, owner, decode_cursor(after), limit)
    return Page[ModelOut](data=[ModelOut.model_validate(r) for r in rows], has_more=more,
                          next_cursor=encode_cursor(rows[-1].id) if more else None)


@router.get("/models/{model_id}", response_model=ModelOut, summary="One model",
            responses=problems(401, 404, 422))
def get_model(model_id: ModelId, owner: Owner, db: Db) -> ModelOut:
    row = repo.get_model(db, owner, model_id)
    if row is None:
        raise NotFound(f"no model {model_id}")
    return ModelOut.model_validate(row)
