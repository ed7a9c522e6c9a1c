"""/v1/datasets: upload a JSONL or CSV file; every row is checked before the dataset exists."""

from __future__ import annotations

import anyio
from fastapi import Request, Response

from ..db.base import new_id
from ..errors import NotFound, Unprocessable
from ..intake import DATASET_SUFFIXES, check_dataset
from ..repositories import datasets as repo
from ..storage import LocalStore
from ..store import get_store
from .deps import AppSettings, Db, Owner
from .docs import DatasetId, problems
from .limits import SLOW
from .pagination import After, Limit, Page, decode_cursor, encode_cursor
from .routing import api_router
from .schemas_assets import DatasetOut
from .uploads import receive_upload

router = api_router(tags=["datasets"])

_REQUEST_BODY = {
    "required": True,
    "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["file"],
        "properties": {
            "file": {"type": "string", "format": "binary",
                     "description": "a .jsonl or .csv file (UTF-8). Rows are {text}, {text, label} or "
                                    "{text_a, text_b, score}; the columns of the first row set the kind. "
                                    "Streamed to disk, 413 past the upload limit."},
            "name": {"type": "string", "maxLength": 200, "description": "defaults to the file's name"},
        },
    }, "example": {"file": "topics.jsonl (binary: one JSON object per line)", "name": "topics-eval"}}},
}


@router.post(
    "/datasets", status_code=201, response_model=DatasetOut, summary="Upload a dataset",
    description="multipart/form-data with a `file` (.jsonl or .csv) and an optional `name`. Every row is "
                "validated; a bad file is refused with 422 whose detail is `file:line: reason`, and nothing "
                "is kept. The kind, row count, columns, size and sha256 are recorded.",
    responses={201: {"headers": {"Location": {"description": "the new dataset's URL",
                                              "schema": {"type": "string"}}}},
               **problems(400, 401, 413, 415, 422, 429, 507)},
    openapi_extra={"requestBody": _REQUEST_BODY}, dependencies=[SLOW],
)
async def create_dataset(request: Request, response: Response, owner: Owner, db: Db,
                         settings: AppSettings) -> DatasetOut:
    dataset_id = new_id("ds")
    store = LocalStore(settings.data_dir)
    staging = store.staging(dataset_id)
    try:
        form = await receive_upload(request, file_field="file", dest_dir=staging,
                                    max_bytes=settings.max_upload_bytes, suffixes=DATASET_SUFFIXES)
        name = form.fields.get("name", "").strip() or form.original_filename.replace("\\", "/").rsplit("/", 1)[-1]
        if len(name) > 200:
            raise Unprocessable("name is longer than 200 characters",
                                errors=[{"field": "name", "message": "at most 200 characters"}])
        # Checked under the user's file name, so that an error reads "train.jsonl:3: ...".
        checked = await anyio.to_thread.run_sync(check_dataset, form.file.path, settings.max_dataset_row_bytes)
        # The directory appears under datasets/ in one rename, with its file complete and checked.
        final_dir = store.promote(staging, store.uploads / "datasets" / dataset_id)
    except BaseException:
        store.discard(staging)
        raise
    final = final_dir / form.filename
    key = store.relative(final)  # the store key: the same relative path in every store

    def save() -> DatasetOut:
        # Into the shared store before the row exists (a no-op for the local store); the local copy stays, so
        # that this machine can dry-run jobs that use the dataset without fetching it back.
        get_store(settings).put_file(final, key)
        row = repo.add_dataset(db, id=dataset_id, owner=owner, name=name, path=key,
                               kind=checked.kind, rows=checked.rows, columns=checked.columns,
                               size_bytes=form.file.size_bytes, sha256=form.file.sha256)
        db.commit()  # before answering: the session dependency commits only after the response is sent
        return DatasetOut.model_validate(row)

    try:
        out = await anyio.to_thread.run_sync(save)
    except BaseException:
        store.discard(final_dir)
        raise
    response.headers["Location"] = f"/v1/datasets/{dataset_id}"
    return out


@router.get("/datasets", response_model=Page[DatasetOut], summary="List datasets, oldest first",
            responses=problems(400, 401, 422))
def list_datasets(owner: Owner, db: Db, after: After = None, limit: Limit = 50) -> Page[DatasetOut]:
    rows, more = repo.list_datasets(db, owner, decode_cursor(after), limit)
    return Page[DatasetOut](data=[DatasetOut.model_validate(r) for r in rows], has_more=more,
                            next_cursor=encode_cursor(rows[-1].id) if more else None)


@router.get("/datasets/{dataset_id}", response_model=DatasetOut, summary="One dataset",
            responses=problems(401, 404, 422))
def get_dataset(dataset_id: DatasetId, owner: Owner, db: Db) -> DatasetOut:
    row = repo.get_dataset(db, owner, dataset_id)
    if row is None:
        raise NotFound(f"no dataset {dataset_id}")
    return DatasetOut.model_validate(row)
