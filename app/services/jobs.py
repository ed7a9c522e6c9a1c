"""Jobs: submission (ids -> engine recipe -> dry run -> rows -> commit -> enqueue), cancellation, reports.

A recipe that cannot run is refused here with a 422 naming the field, by the same dry run the worker does
first (`make_plan`: datasets and the model's config are read, no weights are loaded).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import uuid

from kombu.exceptions import OperationalError as BrokerError
from redis import RedisError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from worker.celery_app import enqueue_job
from worker.engine import EngineError, Recipe, make_plan, parse_recipe
from worker.engine.hub_fetch import HubUnavailableError, hub_time_limit
from worker.engine.recipe import ArchiveRef, DistillConfig, LocalRef

from ..api.schemas_jobs import JobCreate
from ..db.base import new_id
from ..db.models import DatasetRecord, Job, ModelRecord
from ..errors import Conflict, NotFound, Unavailable, Unprocessable
from ..repositories import jobs as repo
from ..repositories.datasets import get_dataset
from ..repositories.models import get_model
from ..settings import Settings
from ..store import fetch_inputs, get_store
from .preflight import check_memory
from .user_terms import InputNames

log = logging.getLogger("distillery.jobs")


class IdempotencyKeyReused(Unprocessable):
    code = "idempotency_key_reused"


class JobNotFinished(Conflict):
    code = "job_not_finished"


class JobAlreadyFinished(Conflict):
    code = "job_finished"


class InputDeleted(Conflict):
    code = "input_deleted"


class HubUnavailable(Unavailable):
    code = "hub_unavailable"


HUB_RETRY_AFTER = 30  # seconds: a hub outage is seldom over sooner


def invalid(field: str, message: str, code: str | None = None) -> Unprocessable:
    error = {"field": field, "message": message, **({"code": code} if code else {})}
    return Unprocessable(f"{field}: {message}", errors=[error])


def get_job(session: Session, owner: str, job_id: str) -> Job:
    job = repo.get_job(session, owner, job_id)
    if job is None:
        raise NotFound(f"no job {job_id}")
    return job


# ---- ids -> engine recipe ---------------------------------------------------------------------


def _dataset_path(session: Session, owner: str, dataset_id: str, field: str, names: InputNames | None) -> str:
    # A relative path is a store key: each worker fetches it into its own data_dir, the engine's base_dir.
    record = get_dataset(session, owner, dataset_id)
    if record is None:  # another owner's id reads exactly like an unknown one
        raise invalid(field, f"no dataset {dataset_id}", "unknown_dataset")
    if names is not None:
        names.paths[record.path] = f"dataset {dataset_id}"
    return record.path


def build_recipe(session: Session, settings: Settings, owner: str, body: JobCreate,
                 names: InputNames | None = None) -> dict:
    """The engine recipe the body stands for: registered ids become references and absolute paths (`names`
    records which id each path stands for, to say errors in the client's terms)."""
    if unknown := body.unknown_gates():
        raise invalid(f"gates.per_task.{unknown[0]}", f"{unknown[0]} is not an eval task in data.eval")
    recipe = body.model_dump(mode="json", exclude={"teacher", "data"})
    teacher = body.teacher.model_dump(mode="json")
    if "model" in teacher:
        record = get_model(session, owner, teacher["model"])
        if record is None:
            raise invalid("teacher.model", f"no model {teacher['model']}", "unknown_model")
        teacher = dict(record.source)
        if teacher.get("source") == "store":  # an upload: the engine reads it as a directory under base_dir
            teacher = {"source": "local", "path": teacher["prefix"].rstrip("/")}
            if names is not None:
                names.paths[teacher["path"]] = f"model {record.id}"
        elif teacher.get("source") == "local" and record.sha256:
            # a folder its owner may still change: the engine loads a copy verified against this digest
            teacher["sha256"] = record.sha256
    recipe["teacher"] = teacher
    data = body.data
    recipe["data"] = {
        "train": _dataset_path(session, owner, data.train, "data.train", names) if data.train else None,
        "eval": {name: _dataset_path(session, owner, ds, f"data.eval.{name}", names)
                 for name, ds in data.eval.items()},
    }
    recipe["tasks"] = {  # each task names its own datasets by id
        name: {**spec.model_dump(mode="json"),
               "train": _dataset_path(session, owner, spec.train, f"tasks.{name}.train", names),
               "eval": _dataset_path(session, owner, spec.eval, f"tasks.{name}.eval", names)}
        for name, spec in body.tasks.items()}
    for index, stage in enumerate(body.stages):
        # A path in the body would reach files under the roots that belong to other owners.
        if isinstance(stage, DistillConfig) and isinstance(stage.student.model, LocalRef | ArchiveRef):
            raise invalid(f"stages.{index}.student.model.source",
                          "a student model must come from the hub (source hf) or be bundled; local and archive "
                          "paths are not accepted in a job")
    return recipe


# ---- the dry run -------------------------------------------------------------------------------

def dry_run(settings: Settings, recipe: Recipe) -> None:
    import torch

    planned = recipe
    if recipe.device == "cuda" and not torch.cuda.is_available():
        # The API host needs no GPU: everything else is checked on CPU, the device by the GPU worker.
        planned = recipe.model_copy(update={"device": "cpu"})
    work_dir = settings.data_dir / "plans" / uuid.uuid4().hex
    try:
        # Uploads are kept here since they were checked; another API replica fetches them from the store.
        fetch_inputs(get_store(settings), settings.data_dir, recipe.model_dump(mode="json"))
        # On a request thread: an uncached hub model's config is fetched within the setting's bound, never with
        # huggingface_hub's own minutes of retries.
        with hub_time_limit(settings.hub_timeout_seconds):
            plan = make_plan(planned, base_dir=settings.data_dir,
                             roots=[settings.uploads_dir, *settings.model_roots], work_dir=work_dir)
        check_memory(settings, plan, "gpu" if recipe.device == "cuda" else "cpu")
    except HubUnavailableError as exc:  # an outage the client cannot fix: 503, retry later
        field = exc.field or "teacher.id"
        raise HubUnavailable(f"{field}: {exc.message}", headers={"Retry-After": str(HUB_RETRY_AFTER)},
                             errors=[{"field": field, "message": exc.message, "code": exc.code}]) from None
    except EngineError as exc:
        raise invalid(exc.field or "body", exc.message, exc.code) from None
    except FileNotFoundError as exc:
        raise invalid("body", f"an input is missing from the artifact store: {exc}", "missing_input") from None
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)  # archives are unpacked here; the worker unpacks its own


# ---- submission --------------------------------------------------------------------------------


def _input_ids(body: JobCreate) -> list[tuple[str, type, str]]:
    """(field, row class, id) for every registered dataset and model the job names."""
    refs: list[tuple[str, type, str]] = []
    if isinstance(model := body.teacher.model_dump(mode="json").get("model"), str):
        refs.append(("teacher.model", ModelRecord, model))
    if body.data.train:
        refs.append(("data.train", DatasetRecord, body.data.train))
    refs += [(f"data.eval.{name}", DatasetRecord, ds) for name, ds in body.data.eval.items()]
    for name, spec in body.tasks.items():
        refs += [(f"tasks.{name}.train", DatasetRecord, spec.train), (f"tasks.{name}.eval", DatasetRecord, spec.eval)]
    return refs


def _lock_inputs(session: Session, owner: str, body: JobCreate) -> None:
    """Re-read the job's datasets and model in the transaction that commits it, after the dry run's seconds.

    `distillery gc` may have deleted one meanwhile: then the job is refused, never committed pointing at nothing.
    On PostgreSQL the rows are read FOR SHARE, so that gc (which locks what it deletes FOR UPDATE SKIP LOCKED)
    cannot delete them before this commit. SQLite renders no FOR SHARE, and needs none: it serialises writers,
    this transaction already holds the write lock (the job's row is flushed), and gc's transaction starts with a
    write, so gc decides and deletes either wholly before this read or wholly after this commit."""
    refs = _input_ids(body)
    for cls in (ModelRecord, DatasetRecord):
        ids = sorted({ref_id for _, c, ref_id in refs if c is cls})
        if not ids:
            continue
        found = set(session.scalars(select(cls.id).where(cls.id.in_(ids), cls.owner == owner)
                                    .order_by(cls.id).with_for_update(read=True)))
        gone = [(field, ref_id) for field, c, ref_id in refs if c is cls and ref_id not in found]
        if gone:
            session.rollback()
            kind = "model" if cls is ModelRecord else "dataset"
            raise InputDeleted(f"{gone[0][0]}: {kind} {gone[0][1]} was deleted while the job was being submitted",
                               errors=[{"field": field, "message": f"{kind} {ref_id} was deleted", "code":
                                        "input_deleted"} for field, ref_id in gone])


def request_hash(submitted: dict) -> str:
    canonical = json.dumps(submitted, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _replay(session: Session, owner: str, key: str, digest: str) -> Job | None:
    row = repo.get_idempotency_key(session, owner, key)
    if row is None:
        return None
    if row.request_hash != digest:
        raise IdempotencyKeyReused(
            "this Idempotency-Key was used with a different body; use a new key for a new job",
            errors=[{"field": "Idempotency-Key", "message": "already used with a different body"}])
    return repo.get_job(session, owner, row.job_id)


def submit(session: Session, settings: Settings, owner: str, body: JobCreate,
           idempotency_key: str | None) -> tuple[Job, bool]:
    """Returns (job, created). An idempotent replay returns the first job and created=False."""
    submitted = body.model_dump(mode="json", exclude_unset=True)
    digest = request_hash(submitted)
    if idempotency_key is not None and (job := _replay(session, owner, idempotency_key, digest)) is not None:
        return job, False
    names = InputNames(settings.data_dir)
    with names.speaking():
        try:
            recipe = parse_recipe(build_recipe(session, settings, owner, body, names))
        except EngineError as exc:
            raise invalid(exc.field or "body", exc.message, exc.code) from None
    if recipe.device == "cuda" and not settings.gpu_workers:
        # `distillery serve` on a host without CUDA: the job would wait on a queue no worker takes
        raise invalid("device", "no GPU worker serves this instance (this host has no CUDA); use device cpu",
                      "no_gpu_worker")
    session.commit()  # end the read transaction: no pooled connection is held through the dry run's seconds
    with names.speaking():  # the dry run reads the inputs by the paths the ids stand for
        dry_run(settings, recipe)
    queue = "gpu" if recipe.device == "cuda" else "cpu"
    try:
        job = repo.create_job(
            session, job_id=new_id("job"), owner=owner, queue=queue, request=submitted,
            recipe=recipe.model_dump(mode="json"),
            # a multi-task or search job runs its stages once per student or trial: its events tell those apart
            stage_kinds=[] if recipe.tasks or recipe.search else [s.kind for s in recipe.stages],
            idempotency=(idempotency_key, digest) if idempotency_key is not None else None)
        _lock_inputs(session, owner, body)
        session.commit()  # before enqueueing: the worker re-reads the row by id
    except IntegrityError:
        # Two identical requests raced on the same key: the unique constraint picked a winner.
        session.rollback()
        job = _replay(session, owner, idempotency_key, digest) if idempotency_key is not None else None
        if job is None:
            raise
        return job, False
    # The job is committed as queued: a failed send is not the client's problem (201 all the same), since the
    # reconciler sends queued jobs without a live lease again every reconcile_seconds.
    try:
        enqueue_job(settings, job.id, queue)
    except (OSError, BrokerError, RedisError) as exc:  # the broker is down or restarting: expected, one line
        log.warning("could not enqueue %s on %s (broker unreachable: %s); the reconciler will send it",
                    job.id, queue, exc)
    except Exception:
        log.exception("could not enqueue %s on %s; the reconciler will send it", job.id, queue)
    return job, True


# ---- cancellation and reports ------------------------------------------------------------------


def cancel(session: Session, owner: str, job_id: str) -> Job:
    changed = repo.request_cancel(session, owner, job_id)
    session.commit()
    job = repo.get_job(session, owner, job_id, fresh=True)
    if job is None:
        raise NotFound(f"no job {job_id}")
    if not changed:
        raise JobAlreadyFinished(f"job {job_id} has already finished ({job.status}); only queued or running "
                                 "jobs can be cancelled")
    return job


def report(session: Session, owner: str, job_id: str) -> dict:
    job = get_job(session, owner, job_id)
    if job.report is not None:
        return job.report
    if job.status not in repo.TERMINAL:
        raise JobNotFinished(f"job {job_id} has not finished ({job.status}); the report is written at the end")
    raise NotFound(f"job {job_id} ended ({job.status}) before its report was written")
