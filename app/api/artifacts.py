"""/v1/jobs/{id}/artifacts and /v1/artifacts/{id}/download: what a finished job produced.

The worker writes the files under data_dir and one Artifact row for each (a whole model directory is one
tar file, built once by the worker); the API serves the rows and streams the files, never building
anything in memory.
"""

from __future__ import annotations

import logging

from fastapi import Request
from fastapi.responses import Response

from ..errors import NotFound
from ..repositories import artifacts as repo
from ..storage import StoreError
from ..store import get_store
from .deps import AppSettings, Db, Owner
from .docs import ArtifactId, JobId, problems
from .pagination import After, Limit, Page, decode_cursor, encode_cursor
from .ranges import file_response
from .routing import api_router
from .schemas_assets import ArtifactOut

router = api_router(tags=["artifacts"])
log = logging.getLogger("distillery.api")


def _out(row) -> ArtifactOut:
    return ArtifactOut(id=row.id, name=row.name, media_type=row.media_type, size_bytes=row.size_bytes,
                       sha256=row.sha256, download_url=f"/v1/artifacts/{row.id}/download", created_at=row.created_at)


@router.get("/jobs/{job_id}/artifacts", response_model=Page[ArtifactOut], summary="A job's artifacts",
            description="The files a job produced (the compressed model as one archive, its report...), oldest "
                        "first, each with its download URL. Empty until the job has finished.",
            responses=problems(400, 401, 404, 422))
def list_artifacts(job_id: JobId, owner: Owner, db: Db, after: After = None,
                   limit: Limit = 50) -> Page[ArtifactOut]:
    found = repo.list_job_artifacts(db, owner, job_id, decode_cursor(after), limit)
    if found is None:
        raise NotFound(f"no job {job_id}")
    rows, more = found
    return Page[ArtifactOut](data=[_out(r) for r in rows], has_more=more,
                             next_cursor=encode_cursor(rows[-1].id) if more else None)


@router.get("/artifacts/{artifact_id}", response_model=ArtifactOut, summary="An artifact",
            description="One artifact's name, size, sha256 (the download's ETag) and download URL: what a client "
                        "needs to resume and verify a download without a HEAD request.",
            responses=problems(401, 404, 422))
def get_artifact(artifact_id: ArtifactId, owner: Owner, db: Db) -> ArtifactOut:
    row = repo.get_artifact(db, owner, artifact_id)
    if row is None:
        raise NotFound(f"no artifact {artifact_id}")
    return _out(row)


_DOWNLOAD_DESCRIPTION = """Streams the artifact from the store; when the service presigns (S3 store), a GET answers 307
with a short-lived presigned URL of the object store instead (HEAD still answers here).

- `ETag` is strong: `"<sha256 of the content>"`. `If-None-Match` with it answers 304.
- `Accept-Ranges: bytes`. One range per request (`bytes=a-b`, `bytes=a-`, `bytes=-n`) answers 206 with
  `Content-Range`; a range that starts past the end answers 416 with `Content-Range: bytes */<size>`.
- **Several ranges in one request are not served as multipart/byteranges: the full body is sent with 200.**
  A malformed Range is likewise ignored (200).
- `If-Range` with the current ETag keeps the Range (206); any other value (an older ETag, a date) gets the
  whole body (200), so a resumed download never splices two versions.
- `Content-Disposition: attachment` carries the artifact's name (an ASCII `filename` and, for other names,
  `filename*`). HEAD returns the same headers without the body.
"""


@router.head("/artifacts/{artifact_id}/download", summary="An artifact's download headers, without the body",
             operation_id="head_artifact_download", response_class=Response,
             responses={200: {"description": "the headers a GET would send"}, **problems(401, 404, 416, 422)})
@router.get(
    "/artifacts/{artifact_id}/download", summary="Download an artifact", operation_id="download_artifact",
    description=_DOWNLOAD_DESCRIPTION, response_class=Response,
    responses={
        200: {"description": "the whole content", "content": {"application/octet-stream": {
            "schema": {"type": "string", "format": "binary"}, "example": "(the artifact's bytes, e.g. a tar archive)"}},
              "headers": {"ETag": {"schema": {"type": "string"}, "description": "\"<sha256>\""},
                          "Content-Disposition": {"schema": {"type": "string"}}}},
        206: {"description": "the requested byte range", "content": {"application/octet-stream": {
            "schema": {"type": "string", "format": "binary"}, "example": "(bytes a..b of the artifact)"}},
              "headers": {"Content-Range": {"schema": {"type": "string"}, "description": "bytes a-b/size"}}},
        304: {"description": "If-None-Match matched the ETag"},
        307: {"description": "the S3 store presigns downloads: fetch the Location (it honours Range)",
              "headers": {"Location": {"schema": {"type": "string"}}}},
        **problems(401, 404, 416, 422),
    },
)
def download_artifact(artifact_id: ArtifactId, request: Request, owner: Owner, db: Db,
                      settings: AppSettings) -> Response:
    row = repo.get_artifact(db, owner, artifact_id)
    if row is None:
        raise NotFound(f"no artifact {artifact_id}")
    # Release the connection now: the request's session would otherwise be held for the whole transfer.
    db.close()
    store = get_store(settings)
    try:
        size = store.size(row.path)
    except StoreError:
        size = None
    if size != row.size_bytes:
        # The row outlived its file, or points outside the store: a fault of ours, but nothing to serve.
        log.error("artifact %s: file %s missing, outside the store or of the wrong size", row.id, row.path)
        raise NotFound(f"the content of artifact {artifact_id} is not available")
    url = store.presign(row.path, row.name) if request.method == "GET" else None
    if url is not None and "if-none-match" not in request.headers:
        # The bytes come straight from the object store; the store answers Range itself. HEAD stays here, so
        # the ETag and size are the API's.
        return Response(status_code=307, headers={"Location": url, "ETag": f'"{row.sha256}"',
                                                  "Cache-Control": "private"})
    return file_response(method=request.method, headers=request.headers,
                         read=lambda start, end: store.open_range(row.path, start, end), size=size,
                         sha256=row.sha256, media_type=row.media_type, filename=row.name)
