"""The recipe: data, validated by pydantic models with extra="forbid".

Stage configs are discriminated on `kind` (and, for prune, on `method`), so a typo names its field.
Behaviour is registered against these config classes in `stages/` (the pattern of torchao's handlers).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from .errors import RecipeError
from .fields import (
    MAX_ITEMS,
    MAX_LAYERS,
    MAX_STEPS,
    HubId,
    LayerCount,
    LayerIndex,
    Revision,
    Seed,
    Strict,
    UserPath,
)
from .quantization import get_method, method_names
from .quantization.registry import MethodName
from .recipe_judge import EvaluateConfig, Gates
from .recipe_multi import TASK_NAME, SearchConfig, Strategy, TaskSpec
from .stage_kinds import register_stage_config, stage_tags, stage_union, uses_stages

TaskName = Literal["feature-extraction", "sequence-classification", "causal-lm"]


# ---- model references -------------------------------------------------------------------------


class LocalRef(Strict):
    source: Literal["local"]
    path: UserPath = Field(examples=["/models/minilm"])
    # Set by the service for a registered folder: what loads is a copy whose files hash to this (safe_files.py).
    # exclude_if: a recipe without the digest dumps (and hashes) as it did before the field existed
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", exclude_if=lambda v: v is None,
                               description="the folder's digest at registration; its files must still match")


class HubRef(Strict):
    source: Literal["hf"]
    id: HubId
    revision: Revision


class ArchiveRef(Strict):
    source: Literal["archive"]
    path: UserPath = Field(description="a .tar, .tar.gz, .tgz or .zip holding a Hugging Face model directory")


class BundledRef(Strict):
    source: Literal["bundled"]
    name: Literal["all-MiniLM-L6-v2"] = "all-MiniLM-L6-v2"


ModelRef = Annotated[LocalRef | HubRef | ArchiveRef | BundledRef, Field(discriminator="source")]


# ---- data and gates ---------------------------------------------------------------------------


class DataSpec(Strict):
    train: UserPath | None = Field(None, description="transfer/calibration data: a JSONL or CSV file")
    eval: dict[str, UserPath] = Field(default_factory=dict, max_length=MAX_ITEMS,
                                      description="eval task name -> JSONL or CSV file")


# ---- stages -----------------------------------------------------------------------------------


class StudentSpec(Strict):
    layers: list[LayerIndex] | None = Field(None, min_length=1, max_length=MAX_LAYERS)
    num_layers: LayerCount | None = None
    model: ModelRef | None = None

    @model_validator(mode="after")
    def _one_way(self) -> StudentSpec:
        given = [k for k in ("layers", "num_layers", "model") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"give one of layers, num_layers or model, not {' and '.join(given)}")
        if self.layers is not None and len(set(self.layers)) != len(self.layers):
            raise ValueError("layers must not repeat")
        return self


class HiddenStates(Strict):
    # student layer -> teacher layer (1-based hidden-state indices; 0 is the embeddings output)
    layer_map: dict[LayerIndex, LayerIndex] | None = Field(None, max_length=MAX_LAYERS)
    weight: float = Field(1.0, ge=0)


class DistillConfig(Strict):
    kind: Literal["distill"]
    student: StudentSpec = Field(default_factory=StudentSpec)
    epochs: int = Field(3, ge=1, le=1000)
    max_steps: int | None = Field(None, ge=1, le=MAX_STEPS)
    time_budget_s: float | None = Field(None, gt=0, description="stop training after this many seconds")
    lr: float = Field(1e-4, gt=0, le=1)
    batch_size: int = Field(32, ge=1, le=4096)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    weight_decay: float = Field(0.01, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    temperature: float = Field(2.0, gt=0)
    logit_top_k: int = Field(64, ge=1, le=1_000_000, description="causal-lm: teacher logits kept per token")
    embedding_loss: Literal["mse", "cosine"] = "cosine"
    embedding_weight: float = Field(1.0, ge=0)
    logit_weight: float = Field(1.0, ge=0)
    hidden_states: HiddenStates | None = None
    hard_label_weight: float = Field(0.0, ge=0)


class PruneMagnitudeConfig(Strict):
    kind: Literal["prune"]
    method: Literal["magnitude"]
    sparsity: float = Field(gt=0, lt=1)
    scope: Literal["global", "layer"] = "global"


class PruneNMConfig(Strict):
    kind: Literal["prune"]
    method: Literal["n:m"]
    n: int = Field(2, ge=1, le=1024)  # groups wider than this are no pattern any kernel uses
    m: int = Field(4, ge=2, le=1024)

    @model_validator(mode="after")
    def _n_below_m(self) -> PruneNMConfig:
        if self.n >= self.m:
            raise ValueError(f"n ({self.n}) must be smaller than m ({self.m})")
        return self


class PruneStructuredConfig(Strict):
    kind: Literal["prune"]
    method: Literal["structured"]
    heads: float = Field(0.0, ge=0, lt=1, description="fraction of attention heads to remove in each layer")
    neurons: float = Field(0.0, ge=0, lt=1, description="fraction of feed-forward neurons to remove")

    @model_validator(mode="after")
    def _something(self) -> PruneStructuredConfig:
        if self.heads == 0 and self.neurons == 0:
            raise ValueError("set heads or neurons (fractions to remove) above 0")
        return self


# A registered method's name (worker/engine/quantization): the registry, not this file, lists them.
QuantMethod = MethodName


class QuantizeConfig(Strict):
    kind: Literal["quantize"]
    method: QuantMethod
    embeddings: Literal["keep", "int8"] = "keep"
    group_size: int = Field(32, description="int4 group size", ge=16, le=256)

    @model_validator(mode="after")
    def _embeddings(self) -> QuantizeConfig:
        if self.embeddings == "int8" and not get_method(self.method).int8_embeddings:
            with_embeddings = [n for n in method_names() if get_method(n).int8_embeddings]
            raise ValueError(f"embeddings: int8 goes with method {' or '.join(with_embeddings)} "
                             "(the methods that quantize the embedding table)")
        return self


for _tag, _config in (("distill", DistillConfig), ("prune:magnitude", PruneMagnitudeConfig),
                      ("prune:n:m", PruneNMConfig), ("prune:structured", PruneStructuredConfig),
                      ("quantize", QuantizeConfig), ("evaluate", EvaluateConfig)):
    register_stage_config(_tag, _config)
StageConfig = stage_union()  # the registered stage configs (stage_kinds.py); a later registration rebuilds Recipe


# ---- the recipe -------------------------------------------------------------------------------


@uses_stages
class Recipe(Strict):
    teacher: ModelRef
    task: TaskName
    data: DataSpec = Field(default_factory=DataSpec)
    stages: list[StageConfig] = Field(default_factory=list, max_length=MAX_ITEMS)
    gates: Gates = Field(default_factory=Gates)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    seed: Seed = 0
    max_length: int = Field(128, ge=8, le=8192, description="tokens per example")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Several tasks, each with its own data and gate (instead of data); see recipe_multi.py.
    tasks: dict[Annotated[str, Field(pattern=TASK_NAME)], TaskSpec] = Field(default_factory=dict,
                                                                           max_length=MAX_ITEMS)
    strategy: Strategy | None = Field(None, description="with tasks: per-task students, one shared student, or "
                                      "both (default per-task; shared with search)")
    search: SearchConfig | None = None

    @model_validator(mode="after")
    def _gates_name_eval_tasks(self) -> Recipe:
        unknown = sorted(set(self.gates.per_task) - set(self.data.eval) - set(self.tasks))
        if unknown:
            raise ValueError(f"gates.per_task names {unknown}, which are not eval tasks in data.eval")
        return self

    def check_tasks_and_search(self) -> None:
        """Cross-field checks of tasks, strategy and search. Not a pydantic validator: those errors carry no
        field, and these must name theirs (parse_recipe and the dry run call this)."""
        if self.tasks and (self.data.train is not None or self.data.eval):
            raise RecipeError("give data or tasks, not both: each task names its own train and eval", field="data")
        if self.strategy is not None and not self.tasks:
            raise RecipeError("strategy needs tasks (several tasks, each with train and eval)", field="strategy")
        if self.search is None:
            return
        if self.strategy in ("per-task", "both"):
            raise RecipeError("search makes one student for all tasks: use strategy shared (or leave it out)",
                              field="strategy")
        if len(self.stages) != 1 or not isinstance(self.stages[0], DistillConfig):
            raise RecipeError("with search, stages holds exactly one distill stage: the training every trial's "
                              "student gets (its depth, pruning and quantization come from search.space)",
                              field="stages")
        if self.stages[0].student != StudentSpec():  # any layers, num_layers or model would be overridden
            raise RecipeError("with search, the student's depth comes from search.space.depth",
                              field="stages.0.student")

    def strategy_used(self) -> Strategy | None:
        if not self.tasks:
            return None
        return self.strategy or ("shared" if self.search is not None else "per-task")

    def gate_for(self, task: str) -> float | None:
        spec = self.tasks.get(task)
        return spec.gate if spec is not None and spec.gate is not None else self.gates.required(task)

    def needs_gpu(self) -> bool:
        """A recipe needs a GPU when it asks for CUDA or for a GPU-only serving format."""
        return self.device == "cuda"


MODEL_REF_TAGS = frozenset({"local", "hf", "archive", "bundled"})


def drop_union_tags(loc: tuple | list, extra_tags: frozenset[str] = frozenset()) -> tuple:
    """Drop the union tags pydantic puts in error locations, so `stages.0.sparsity` reads as the user wrote it
    (the tag follows a list index or a model reference's key)."""
    tags = stage_tags() | MODEL_REF_TAGS | extra_tags
    out: list = []
    for i, part in enumerate(loc):
        prev = loc[i - 1] if i else None
        if part in tags and (isinstance(prev, int) or prev in ("teacher", "model", "source")):
            continue
        out.append(part)
    return tuple(out)


def _clean_loc(loc: tuple) -> str:
    return ".".join(str(p) for p in drop_union_tags(loc))


def parse_recipe(data: Any) -> Recipe:
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        message = "; ".join(f"{_clean_loc(e['loc']) or 'recipe'}: {e['msg']}" for e in errors)
        raise RecipeError(message, field=_clean_loc(errors[0]["loc"]) or None) from None
    recipe.check_tasks_and_search()
    return recipe


def read_recipe_file(path: str | Path) -> dict:
    """A recipe file (YAML, or JSON by its suffix) as data, not yet validated."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RecipeError(f"cannot read recipe {path}: {exc.strerror}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise RecipeError(f"{path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe is a mapping with teacher, task, data and stages")
    return data


def load_recipe(path: str | Path) -> Recipe:
    return parse_recipe(read_recipe_file(path))
