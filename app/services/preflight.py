"""Submit-time checks beyond the recipe's own dry run: will the job fit in a worker's memory?"""

from __future__ import annotations

from ..errors import Unprocessable
from ..settings import Settings


class InsufficientMemory(Unprocessable):
    code = "insufficient_memory"


def check_memory(settings: Settings, plan, queue: str) -> None:
    """Refuse (422, naming the stage that peaks) a job whose estimated peak exceeds what its queue's workers
    have. Unknown budgets (an unconfigured GPU queue) are not checked; the worker then reports an OOM."""
    from worker.engine.memory import GB, estimate

    budget = settings.memory_budget(queue)
    if budget is None:
        return
    needed = estimate(plan)
    if needed.peak_bytes <= budget:
        return
    message = (f"this job needs {needed.describe()}, more than the {budget / GB:.1f} GB a {queue} worker has; "
               "lower batch_size or max_length, or distil into a smaller student")
    raise InsufficientMemory(message, errors=[{"field": needed.where, "message": message,
                                               "code": "insufficient_memory",
                                               "estimate_bytes": needed.peak_bytes, "budget_bytes": budget}])
