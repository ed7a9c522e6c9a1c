"""Recognising an allocation failure, so that a job too large for its worker fails with a reason and the
worker process (whose memory is given back when the job's objects go) lives on to run the next job."""

from __future__ import annotations

# What torch's CPU and CUDA allocators, and other native code, say when an allocation fails.
_MESSAGES = ("can't allocate memory", "out of memory", "not enough memory", "cannot allocate memory",
             "std::bad_alloc")


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    import torch

    if isinstance(exc, torch.OutOfMemoryError):  # CUDA
        return True
    return isinstance(exc, RuntimeError | OSError) and any(m in str(exc).lower() for m in _MESSAGES)


def out_of_memory_message(exc: BaseException) -> str:
    first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
    return (f"the worker ran out of memory ({first}); lower batch_size or max_length, distil into a smaller "
            "student, or run it on a worker with more memory")
