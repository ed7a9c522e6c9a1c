"""The registry of stage configs: the recipe's `stages` union is built from it.

A stage kind is a pydantic config class (its `kind` literal, plus a `method` literal when several configs share
a kind, as the three prunings do) registered here under its tag, and a Stage class registered for that config
in stages/base.py. A kind registered after the recipe models were built (a plugin, a test) rebuilds them, so
`parse_recipe`, the API's body model and the JSON Schema all see it.
"""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import BaseModel, Discriminator, Tag

_CONFIGS: dict[str, type[BaseModel]] = {}  # tag ("distill", "prune:magnitude") -> config class
_USERS: list[type[BaseModel]] = []  # models with a `stages` field to rebuild when the union grows


def stage_tag(value: Any) -> str | None:
    """The union's discriminator: the kind, or kind:method for a kind several configs share."""
    if isinstance(value, BaseModel):
        value = value.model_dump()
    if not isinstance(value, dict) or not isinstance(value.get("kind"), str):
        return None
    kind = value["kind"]
    return f"{kind}:{value.get('method')}" if any(t.startswith(kind + ":") for t in _CONFIGS) else kind


def _or(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


def unknown_stage_message() -> str:
    kinds: dict[str, list[str]] = {}
    for tag in _CONFIGS:
        kind, _, method = tag.partition(":")
        kinds.setdefault(kind, [])
        if method:
            kinds[kind].append(method)
    described = [f"{k} (method {_or(m)})" if m else k for k, m in kinds.items()]
    return f"unknown stage: kind must be {_or(described)}"


def stage_union() -> Any:
    members = tuple(Annotated[cls, Tag(tag)] for tag, cls in _CONFIGS.items())
    return Annotated[Union[members],  # noqa: UP007 - a union built from a tuple of members
                     Discriminator(stage_tag, custom_error_type="unknown_stage",
                                   custom_error_message=unknown_stage_message())]


def stage_tags() -> frozenset[str]:
    return frozenset(_CONFIGS)


def uses_stages(model: type[BaseModel]) -> type[BaseModel]:
    """Mark a model whose `stages` field holds the union, so that registering a kind later rebuilds it."""
    _USERS.append(model)
    return model


def _with_subclasses(cls: type) -> list[type]:
    return [cls, *(c for sub in cls.__subclasses__() for c in _with_subclasses(sub))]


def register_stage_config(tag: str, config: type[BaseModel]) -> None:
    _CONFIGS[tag] = config
    _rebuild()


def unregister_stage_config(tag: str) -> None:
    _CONFIGS.pop(tag, None)
    _rebuild()


def _rebuild() -> None:
    union = stage_union()
    for model in [m for user in _USERS for m in _with_subclasses(user)]:
        model.model_fields["stages"].annotation = list[union]
        model.model_rebuild(force=True)
