"""The dry run: everything that can be checked before any weight is loaded or any step is taken.

The service calls this at submit time, so that a recipe that cannot run is a 422 naming the field,
not a failed job an hour later. `run` calls it first too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .architecture import ModelInfo
from .data import Dataset, load_dataset
from .errors import DataError, EngineError, ModelReferenceError, RecipeError
from .recipe import EvaluateConfig, QuantizeConfig, Recipe
from .references import ResolvedModel, resolve
from .stages import Stage, StageEnv, build_stage
from .tasks import get_task


@dataclass
class Plan:
    recipe: Recipe
    teacher: ResolvedModel
    info: ModelInfo
    env: StageEnv
    stages: list[Stage] = field(default_factory=list)
    infos: list[ModelInfo] = field(default_factory=list)  # model shape after each stage


def pick_device(wanted: str) -> torch.device:
    if wanted == "cuda" and not torch.cuda.is_available():
        raise RecipeError("device cuda was asked for but no CUDA device is available", field="device")
    if wanted == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(wanted)


def _load_data(path: str, base_dir: Path, roots: Sequence[Path], field: str) -> Dataset:
    from .references import check_under_roots

    raw = Path(path)
    full = raw if raw.is_absolute() else base_dir / raw
    try:
        return load_dataset(check_under_roots(full, roots, "dataset path"))
    except EngineError as exc:
        exc.field = exc.field or field
        raise


def _model_info(resolved: ResolvedModel) -> ModelInfo:
    from transformers import AutoConfig

    kw = {"revision": resolved.revision, "trust_remote_code": False}
    if resolved.local_dir is not None:
        kw["local_files_only"] = True
    try:
        return ModelInfo.from_config(AutoConfig.from_pretrained(resolved.name_or_path, **kw))
    except (OSError, ValueError, KeyError) as exc:
        where = resolved.name_or_path + (f"@{resolved.revision}" if resolved.revision else "")
        msg = str(exc).splitlines()[0][:300]
        if resolved.revision:
            msg = "not in the local Hugging Face cache and the hub cannot be reached (offline)"
        raise ModelReferenceError(f"cannot read the config of {where}: {msg}", field="teacher") from None


def make_plan(recipe: Recipe, *, base_dir: Path, roots: Sequence[Path], work_dir: Path) -> Plan:
    task = get_task(recipe.task)
    roots = list(roots)
    device = pick_device(recipe.device)
    train = _load_data(recipe.data.train, base_dir, roots, "data.train") if recipe.data.train else None
    evals = {name: _load_data(p, base_dir, roots, f"data.eval.{name}") for name, p in recipe.data.eval.items()}
    for name, ds in evals.items():
        task.check_dataset(ds, "eval", f"data.eval.{name}")
    try:
        teacher = resolve(recipe.teacher, roots=roots, base_dir=base_dir, work_dir=work_dir)
    except EngineError as exc:
        exc.field = exc.field or "teacher"
        raise
    info = _model_info(teacher)
    task.check_architectures(info.architectures)
    env = StageEnv(task=task, device=device, seed=recipe.seed, max_length=recipe.max_length, train=train,
                   eval=evals, work_dir=work_dir, base_dir=base_dir, roots=roots)
    plan = Plan(recipe=recipe, teacher=teacher, info=info, env=env)
    quantized_at: int | None = None
    for index, config in enumerate(recipe.stages):
        if quantized_at is not None and not isinstance(config, EvaluateConfig):
            raise RecipeError(f"stage {index} ({config.kind}) comes after quantize (stage {quantized_at}); "
                              "quantize must be the last transforming stage", field=f"stages.{index}")
        if isinstance(config, QuantizeConfig):
            quantized_at = index
        stage = build_stage(config, index)
        if stage.requires_train_data and train is None:
            raise DataError(f"stage {index} ({config.kind}) needs data.train", field="data.train")
        info = stage.validate(info, env)
        plan.stages.append(stage)
        plan.infos.append(info)
    return plan
