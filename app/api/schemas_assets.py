"""Request and response models for models, datasets and artifacts, with the examples OpenAPI shows."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from worker.engine.fields import HubId, Revision, Strict, UserPath

SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
WHEN = "2025-01-01T12:00:00Z"


# SQLite hands back naive datetimes for timezone-aware columns; they were written in UTC.
UtcDatetime = Annotated[datetime, AfterValidator(lambda v: v if v.tzinfo else v.replace(tzinfo=UTC))]


# ---- request: the engine's model references, less `archive` (uploads take the multipart form) ---------
# These mirror worker.engine.recipe's LocalRef, HubRef and BundledRef, with the same field types
# (worker/engine/fields.py); the endpoint also validates the stored reference with the engine's ModelRef.


class LocalSource(Strict):
    source: Literal["local"]
    path: UserPath = Field(description="an absolute path to a Hugging Face model directory under an allowed root",
                      examples=["/models/minilm"])


class HubSource(Strict):
    source: Literal["hf"]
    id: HubId
    revision: Revision = Field(description="a full 40-character commit sha (pinned, so a moved branch cannot "
                               "change the teacher)", examples=["c9745ed1d9f207416be6d2e6f8de32d1f16199bf"])


class BundledSource(Strict):
    source: Literal["bundled"]
    name: Literal["all-MiniLM-L6-v2"] = "all-MiniLM-L6-v2"


ModelSource = Annotated[LocalSource | HubSource | BundledSource, Field(discriminator="source")]


class ModelCreate(Strict):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"name": "minilm", "source": {"source": "local", "path": "/models/minilm"}},
        {"name": "minilm-hub", "source": {"source": "hf", "id": "sentence-transformers/all-MiniLM-L6-v2",
                                          "revision": "c9745ed1d9f207416be6d2e6f8de32d1f16199bf"}},
        {"name": "minilm-bundled", "source": {"source": "bundled", "name": "all-MiniLM-L6-v2"}},
    ]})
    name: str = Field(min_length=1, max_length=200)
    source: ModelSource


# ---- responses -----------------------------------------------------------------------------------------


class ModelOut(BaseModel):
    model_config = ConfigDict(from_attributes=True, json_schema_extra={"examples": [{
        "id": "mdl_01jh8z6k2v9qf3w7t0c5x4y1ab", "name": "minilm",
        "source": {"source": "local", "path": "/models/minilm"},
        "size_bytes": 90_868_376, "sha256": SHA, "created_at": WHEN}]})
    id: str
    name: str
    source: dict[str, Any] = Field(description="the engine's model reference the worker resolves; an upload "
                                   "is {source: store, prefix: uploads/models/<id>/}: its unpacked files in the "
                                   "artifact store")
    size_bytes: int | None = Field(description="bytes of the uploaded archive, or of the local directory's "
                                   "files; null for a hub reference")
    sha256: str | None = Field(description="an upload: sha256 of the archive as sent; a local or bundled "
                               "directory: sha256 of its manifest (sorted 'path sha256' lines); a hub "
                               "reference: null (the revision pins it)")
    created_at: UtcDatetime


class DatasetOut(BaseModel):
    model_config = ConfigDict(from_attributes=True, json_schema_extra={"examples": [{
        "id": "ds_01jh8z6k2v9qf3w7t0c5x4y1ab", "name": "topics-eval", "kind": "classification",
        "rows": 480, "columns": ["text", "label"], "size_bytes": 41_213, "sha256": SHA, "created_at": WHEN}]})
    id: str
    name: str
    kind: Literal["text", "classification", "similarity", "retrieval", "multiple-choice"]  # data.py's DatasetKind
    rows: int
    columns: list[str]
    size_bytes: int
    sha256: str = Field(description="sha256 of the file as uploaded")
    created_at: UtcDatetime


class ArtifactOut(BaseModel):
    model_config = ConfigDict(from_attributes=True, json_schema_extra={"examples": [{
        "id": "art_01jh8z6k2v9qf3w7t0c5x4y1ab", "name": "model.tar", "media_type": "application/x-tar",
        "size_bytes": 23_112_704, "sha256": SHA,
        "download_url": "/v1/artifacts/art_01jh8z6k2v9qf3w7t0c5x4y1ab/download", "created_at": WHEN}]})
    id: str
    name: str
    media_type: str
    size_bytes: int
    sha256: str = Field(description="sha256 of the content; the download's strong ETag")
    download_url: str
    created_at: UtcDatetime


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with its $defs substituted in place, for use inside `openapi_extra` or
    `responses` content, where a local "#/$defs/..." reference would not resolve."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            # a discriminator's mapping names $defs too; propertyName alone still says how to choose
            return {k: resolve({"propertyName": v["propertyName"]} if k == "discriminator" else v)
                    for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    return resolve(schema)
