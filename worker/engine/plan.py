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
from .errors import DataError, EngineError, RecipeError
from .multi_plan import StudentPlan, check_space, student_plans
from .recipe import Recipe
from .references import ResolvedModel, read_config, resolve
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
    students: list[StudentPlan] = field(default_factory=list)  # with tasks: the students to make
    task_trains: dict[str, Dataset] = field(default_factory=dict)  # with tasks: each one's training set


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


def _load_tasks(recipe: Recipe, task, base_dir: Path, roots: list[Path]) -> tuple[dict, dict]:
    """Each task's train and eval sets, checked against the task kind; errors name tasks.<name>.<role>."""
    trains, evals = {}, {}
    for name, spec in recipe.tasks.items():
        trains[name] = _load_data(spec.train, base_dir, roots, f"tasks.{name}.train")
        task.check_dataset(trains[name], "train", f"tasks.{name}.train")
        evals[name] = _load_data(spec.eval, base_dir, roots, f"tasks.{name}.eval")
    return trains, evals


def _check_labels(recipe: Recipe, task, config, train: Dataset | None, trains: dict, evals: dict) -> None:
    """Labels against the teacher's classes now, not when a stage or an evaluation first reads them: every
    eval set's, and the training sets' when a distill stage trains on hard labels."""
    sets = [(f"tasks.{n}.eval" if recipe.tasks else f"data.eval.{n}", ds) for n, ds in evals.items()]
    if any(getattr(s, "hard_label_weight", 0) > 0 for s in recipe.stages):
        sets += [(f"tasks.{n}.train", ds) for n, ds in trains.items()]
        if train is not None and not trains:
            sets.append(("data.train", train))
    for field_name, ds in sets:
        task.check_labels(config, ds, field_name)


def _check_stages(plan: Plan, info: ModelInfo, record: bool) -> None:
    last: Stage | None = None  # a stage after which nothing may transform the model (quantize)
    train = plan.env.train
    for index, config in enumerate(plan.recipe.stages):
        stage = build_stage(config, index)
        if last is not None and stage.transforms_model:
            raise RecipeError(f"stage {index} ({config.kind}) comes after {last.config.kind} (stage {last.index}); "
                              f"{last.config.kind} must be the last transforming stage", field=f"stages.{index}")
        if stage.last_transform:
            last = stage
        if stage.requires_train_data and train is None:
            raise DataError(f"stage {index} ({config.kind}) needs data.train", field="data.train")
        info = stage.validate(info, plan.env)
        if record:
            plan.stages.append(stage)
            plan.infos.append(info)


def make_plan(recipe: Recipe, *, base_dir: Path, roots: Sequence[Path], work_dir: Path) -> Plan:
    recipe.check_tasks_and_search()
    task = get_task(recipe.task)
    roots = list(roots)
    device = pick_device(recipe.device)
    train = _load_data(recipe.data.train, base_dir, roots, "data.train") if recipe.data.train else None
    evals = {name: _load_data(p, base_dir, roots, f"data.eval.{name}") for name, p in recipe.data.eval.items()}
    trains: dict[str, Dataset] = {}
    if recipe.tasks:
        trains, evals = _load_tasks(recipe, task, base_dir, roots)
    for name, ds in evals.items():
        task.check_dataset(ds, "eval", f"tasks.{name}.eval" if recipe.tasks else f"data.eval.{name}")
    try:
        teacher = resolve(recipe.teacher, roots=roots, base_dir=base_dir, work_dir=work_dir)
    except EngineError as exc:
        exc.field = exc.field or "teacher"
        raise
    config = read_config(teacher, "teacher")
    info = ModelInfo.from_config(config)
    task.check_architectures(info.architectures)
    _check_labels(recipe, task, config, train, trains, evals)
    env = StageEnv(task=task, device=device, seed=recipe.seed, max_length=recipe.max_length, train=train,
                   eval=evals, work_dir=work_dir, base_dir=base_dir, roots=roots)
    plan = Plan(recipe=recipe, teacher=teacher, info=info, env=env)
    if recipe.tasks:
        plan.task_trains = trains
        plan.students = student_plans(recipe, trains)
        shared = [s for s in plan.students if s.kind == "shared"]
        env.train = shared[0].train if shared else plan.students[0].train
    if recipe.search is not None:
        _check_search(plan, info)
        return plan
    # Each student trains on its own data: the stages are checked against each one's training set.
    for student in plan.students:
        env.train = student.train
        _check_stages(plan, info, record=False)
    _check_stages(plan, info, record=True)
    return plan


def _check_search(plan: Plan, info: ModelInfo) -> None:
    if plan.env.train is None:
        raise DataError("search distils students: it needs data.train or tasks", field="data.train")

    def validate(config, before: ModelInfo, field: str) -> ModelInfo:
        try:
            return build_stage(config, 0).validate(before, plan.env)
        except EngineError as exc:
            raise type(exc)(exc.message, field=field) from None

    build_stage(plan.recipe.stages[0], 0).validate(info, plan.env)  # the training template itself
    check_space(plan.recipe, info, validate)
