"""One error hierarchy for the engine: each error carries a stable code and a message a user can act on.

The CLI prints these without a traceback; the service (later) maps them to problem+json.
"""

from __future__ import annotations


class EngineError(Exception):
    """Base class: something the user can fix (bad recipe, bad data, unsafe input)."""

    code = "engine_error"
    internal = False  # True: a failure of the engine itself (CLI exit 1), not input the user can fix

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field  # dotted path into the recipe, when the error is about one field

    def __str__(self) -> str:
        if self.field and not self.message.startswith(self.field):
            return f"{self.field}: {self.message}"
        return self.message

    def to_dict(self) -> dict[str, str | None]:
        return {"code": self.code, "message": self.message, "field": self.field}


class RecipeError(EngineError):
    code = "invalid_recipe"


class ModelReferenceError(EngineError):
    """A teacher or student reference that cannot be resolved or loaded."""

    code = "invalid_reference"


class UnsafeInputError(EngineError):
    """Input refused for safety: paths outside roots, unsafe archives, code-running pickles."""

    code = "unsafe_input"


class DataError(EngineError):
    code = "invalid_data"


class StageError(EngineError):
    """A stage that cannot run with this model and config (found by the dry run or at run time)."""

    code = "stage_failed"


class ArtifactError(EngineError):
    code = "artifact_failed"


class VerificationError(ArtifactError):
    """A saved artifact that does not reload to the model in memory: a bug of ours, never reported as done."""

    internal = True


class Cancelled(EngineError):
    code = "cancelled"
