"""Planning for several tasks and for search: which students a recipe asks for, the shared student's mixed
training set and loss weights, and the stage configs of a search point (checked in the dry run)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .architecture import ModelInfo
from .data import Dataset
from .errors import RecipeError
from .quantization import NO_QUANTIZATION, get_method, short_id
from .recipe import (
    DistillConfig,
    PruneMagnitudeConfig,
    PruneStructuredConfig,
    QuantizeConfig,
    Recipe,
    StudentSpec,
)

SHARED = "shared"


@dataclass(frozen=True)
class TrainGroup:
    """Examples [start, stop) of a mixed training set belong to one task; their batches' losses are scaled
    by `scale`, so that the expected loss is sum over tasks of weight_t * loss_t."""

    task: str
    start: int
    stop: int
    weight: float  # the task's share of the loss (the weights sum to 1)


@dataclass(frozen=True)
class StudentPlan:
    name: str  # the task's name, or "shared"
    kind: str  # per-task | shared
    tasks: tuple[str, ...]  # the tasks it is trained for and gated on
    train: Dataset
    groups: tuple[TrainGroup, ...] = ()


def combine(trains: dict[str, Dataset], weights: dict[str, float | None]) -> tuple[Dataset, tuple[TrainGroup, ...]]:
    """One training set from every task's (rows kept when all are of one kind, else reduced to their texts),
    with each task's loss weight: as given, else proportional to its number of examples."""
    kinds = {ds.kind for ds in trains.values()}
    same = len(kinds) == 1
    rows: list[dict] = []
    spans: list[tuple[str, int, int]] = []
    for name, ds in trains.items():
        start = len(rows)
        rows.extend(ds.rows if same else [{"text": t} for t in ds.texts()])
        spans.append((name, start, len(rows)))
    sizes = {name: stop - start for name, start, stop in spans}
    raw = {name: (weights.get(name) if weights.get(name) is not None else float(sizes[name])) for name in trains}
    total = sum(raw.values())
    groups = tuple(TrainGroup(name, start, stop, raw[name] / total) for name, start, stop in spans)
    first = next(iter(trains.values()))
    mixed = Dataset(path=first.path.with_name("tasks-combined"), kind=next(iter(kinds)) if same else "text",
                    rows=rows, sha256="+".join(ds.sha256[:16] for ds in trains.values()))
    return mixed, groups


def student_plans(recipe: Recipe, trains: dict[str, Dataset]) -> list[StudentPlan]:
    strategy = recipe.strategy_used()
    out: list[StudentPlan] = []
    if strategy in ("per-task", "both"):
        out += [StudentPlan(name, "per-task", (name,), ds) for name, ds in trains.items()]
    if strategy in ("shared", "both"):
        if strategy == "both" and SHARED in trains:
            raise RecipeError(f"a task may not be called {SHARED!r} when the shared student is asked for too",
                              field=f"tasks.{SHARED}")
        mixed, groups = combine(trains, {n: s.weight for n, s in recipe.tasks.items()})
        out.append(StudentPlan(SHARED, "shared", tuple(trains), mixed, groups))
    return out


# ---- search points ------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Point:
    depth: int
    sparsity: float
    quantization: str
    embeddings: str

    @property
    def id(self) -> str:
        q = short_id(self.quantization)
        return f"d{self.depth}-s{round(self.sparsity * 100):02d}-{q}" + ("e" if self.embeddings == "int8" else "")

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def grid(recipe: Recipe) -> list[Point]:
    """Every point of the space; int8 embeddings only with a method that quantizes them (int8-dynamic)."""
    space = recipe.search.space
    return [Point(d, s, q, e) for d in space.depth for s in space.sparsity for q in space.quantization
            for e in space.embeddings if e == "keep" or (q != NO_QUANTIZATION and get_method(q).int8_embeddings)]


def distill_config(recipe: Recipe, depth: int) -> DistillConfig:
    template = recipe.stages[0]
    return template.model_copy(update={"student": StudentSpec(num_layers=depth)})


def prune_config(recipe: Recipe, sparsity: float) -> PruneStructuredConfig | PruneMagnitudeConfig | None:
    if sparsity == 0:
        return None
    how = recipe.search.prune
    if how == "magnitude":
        return PruneMagnitudeConfig(kind="prune", method="magnitude", sparsity=sparsity)
    heads = sparsity if how == "heads-and-neurons" else 0.0
    return PruneStructuredConfig(kind="prune", method="structured", neurons=sparsity, heads=heads)


def quantize_config(point: Point) -> QuantizeConfig | None:
    if point.quantization == NO_QUANTIZATION:
        return None
    return QuantizeConfig(kind="quantize", method=point.quantization, embeddings=point.embeddings)


def point_configs(recipe: Recipe, point: Point) -> list:
    """The stages of one trial, in order: distil to the depth, prune, quantize (absent steps skipped)."""
    return [c for c in (distill_config(recipe, point.depth), prune_config(recipe, point.sparsity),
                        quantize_config(point)) if c is not None]


def check_space(recipe: Recipe, info: ModelInfo, validate) -> None:
    """Dry run of a search: every depth exists, and every distinct stage of the grid validates against the
    model (`validate(config, info, field)` runs the stage's own check and returns the info after it)."""
    space = recipe.search.space
    too_deep = [d for d in space.depth if d > info.num_layers]
    if too_deep:
        raise RecipeError(f"depth {too_deep[0]} is more than the teacher's {info.num_layers} layers",
                          field="search.space.depth")
    after_distill = validate(distill_config(recipe, min(space.depth)), info, "search.space.depth")
    for s in space.sparsity:
        cfg = prune_config(recipe, s)
        after = after_distill if cfg is None else validate(cfg, after_distill, "search.space.sparsity")
        for q in space.quantization:
            qcfg = quantize_config(Point(1, s, q, "keep"))
            if qcfg is not None:
                validate(qcfg, after, "search.space.quantization")
