"""Saving candidates and loading artifacts back.

An artifact is a directory: config.json, the tokenizer, the weights and `distillery.json`.
- Float models (distilled, pruned, fp16/bf16) are saved with `save_pretrained` as safetensors and load
  with `AutoModel...from_pretrained(dir)`, unless heads were pruned (a shape a BERT/GPT-2 config
  cannot express; transformers 5 dropped `prune_heads`).
- int8/int4 models are a state dict in `model.pt` (torchao tensors cannot be saved as safetensors) that
  loads with `torch.load(weights_only=True)`.
`load_artifact(dir)` loads every kind; it is the documented loader.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import torch

from .candidate import Candidate
from .errors import ArtifactError, VerificationError
from .tasks import get_task
from .tasks.base import encode

META = "distillery.json"
STATE_DICT = "model.pt"
FORMAT_VERSION = 1


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def save_candidate(candidate: Candidate, out: Path) -> Path:
    """Write the candidate to `out`, atomically: a half-written directory is never visible."""
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    q = candidate.quantization
    model = candidate.model
    if q is not None and q.get("format") == "torch-state-dict":
        model.config.save_pretrained(tmp)
        from .stages.quantize import cpu_state_dict

        with warnings.catch_warnings():  # torch's own quantized-tensor pickling uses TypedStorage
            warnings.filterwarnings("ignore", message="TypedStorage is deprecated")
            torch.save(cpu_state_dict(model), tmp / STATE_DICT)
    else:
        model.save_pretrained(tmp, safe_serialization=True)
    backend = getattr(candidate.tokenizer, "_tokenizer", None)
    if backend is not None:  # padding set by an earlier batched call would be saved too: same model, other bytes
        backend.no_padding()
        backend.no_truncation()
    candidate.tokenizer.save_pretrained(tmp)
    _write_json(tmp / META, {
        "format_version": FORMAT_VERSION,
        "task": candidate.task.name,
        "weights": STATE_DICT if q is not None and q.get("format") == "torch-state-dict" else "safetensors",
        "structure": candidate.structure,
        "quantization": q,
        "loader": "distillery.load_artifact(dir)",
        "plain_transformers": needs_plain_load(candidate.structure, q),
    })
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


def needs_plain_load(structure: dict, quantization: dict | None) -> bool:
    """True when `AutoModel...from_pretrained(dir)` alone reloads the artifact."""
    return not structure.get("heads") and (quantization is None or quantization.get("format") == "safetensors")


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for file in sorted(path.glob("*.safetensors")):
        state.update(load_file(file))
    return state


def load_artifact(path: str | Path, device: str | torch.device = "cpu"):
    """Load an artifact directory written by Distillery. Returns (model, tokenizer), in eval mode.

    >>> model, tokenizer = load_artifact("out/artifact")
    """
    from transformers import AutoConfig, AutoTokenizer

    path = Path(path)
    try:
        meta = json.loads((path / META).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path} is not a Distillery artifact (cannot read {META}: {exc})") from None
    task = get_task(meta["task"])
    cls = task.auto_class()
    structure, q = meta.get("structure") or {}, meta.get("quantization")
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    if needs_plain_load(structure, q):
        model = cls.from_pretrained(path, local_files_only=True, trust_remote_code=False, dtype="auto")
    else:
        config = AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=False)
        model = cls.from_config(config, dtype=torch.float32)
        if structure:
            from .stages.structured import apply_structure

            apply_structure(model, structure)
        if q is not None and q.get("format") == "torch-state-dict":
            from .stages.quantize import rebuild_quantized

            model = rebuild_quantized(model, q)
            with warnings.catch_warnings():  # torch's quantized-tensor unpickling uses TypedStorage
                warnings.filterwarnings("ignore", message="TypedStorage is deprecated")
                state = torch.load(path / STATE_DICT, map_location="cpu", weights_only=True)
            model.load_state_dict(state, assign=True)
        else:
            state = _load_safetensors(path)
            missing, unexpected = model.load_state_dict(state, strict=False)
            tied = set(getattr(model, "_tied_weights_keys", None) or {})
            untied = [k for k in missing if k not in tied and "lm_head" not in k]
            if untied or unexpected:
                raise ArtifactError(f"{path}: weights do not match the model (missing {untied[:3]}, "
                                    f"unexpected {unexpected[:3]})")
            model.tie_weights()
            if q is not None:  # a cast saved as safetensors (a head-pruned one: no plain load)
                from .stages.quantize import rebuild_quantized

                model = rebuild_quantized(model, q)
    model.eval()
    return model.to(device), tokenizer


# What torch's CUDA and CPU allocators say when an allocation fails (RuntimeError or OSError); the worker
# (worker/oom.py, outside the engine) recognises the same, so such a failure stays an out-of-memory one.
_OOM_MESSAGES = ("out of memory", "can't allocate memory", "cannot allocate memory", "not enough memory",
                 "std::bad_alloc")


def _out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):  # CUDA's, a RuntimeError
        return True
    return isinstance(exc, RuntimeError | OSError) and any(m in str(exc).lower() for m in _OOM_MESSAGES)


@torch.no_grad()
def verify_reload(candidate: Candidate, path: Path, texts: list[str], max_length: int) -> float:
    """Reload the saved artifact and compare its outputs with the in-memory model; return the max
    absolute difference, raising if they disagree (a broken artifact must never be reported as done)."""
    try:
        model, _ = load_artifact(path, device=candidate.device)
    except (ArtifactError, RuntimeError, OSError, ValueError, KeyError) as exc:
        if _out_of_memory(exc):
            raise  # the job is too large for this machine (the worker says out_of_memory), not a broken artifact
        text = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        raise VerificationError(f"the artifact saved at {path} failed verification: it cannot be reloaded "
                                f"({text})") from None
    task = candidate.task
    enc = encode(candidate.tokenizer, texts[:8] or ["hello world"], max_length)
    batch = enc.batch(list(range(len(enc)))).to(candidate.device)
    expected = task.forward(candidate.model, batch)[0].float()
    got = task.forward(model, batch)[0].float()
    diff = float((expected - got).abs().max())
    scale = float(expected.abs().max()) or 1.0
    dtype = next((p.dtype for p in candidate.model.parameters()), torch.float32)
    tol = 5e-2 if dtype in (torch.float16, torch.bfloat16) else 1e-3
    if not diff <= tol * max(1.0, scale):  # NaN counts as a difference
        raise VerificationError(f"the artifact saved at {path} failed verification: reloaded, its outputs differ "
                                f"from the model in memory (max abs diff {diff:.3g}, tolerance "
                                f"{tol * max(1.0, scale):.3g})")
    return diff
