"""Speed, memory and size measurements of a candidate, on the device it runs on."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from .candidate import Candidate
from .hardware import describe
from .latency import Inputs, Settings, measure_batch, model_caller, pinned_threads


def _tensor_bytes(t: torch.Tensor, seen: set[int]) -> int:
    """Bytes held by a tensor's storage (each storage once), looking inside torchao's quantized tensors."""
    if hasattr(t, "__tensor_flatten__"):  # a torchao tensor subclass: its int data, scales and zero points
        names, _ = t.__tensor_flatten__()
        return sum(_tensor_bytes(getattr(t, n), seen) for n in names)
    if t.is_quantized:  # torch.ao: int8 values plus per-row scales and offsets where there are some
        extra = 0
        if t.qscheme() in (torch.per_channel_affine, torch.per_channel_affine_float_qparams):
            extra = sum(q.numel() * q.element_size() for q in (t.q_per_channel_scales(), t.q_per_channel_zero_points()))
        return t.numel() * t.element_size() + extra
    ptr = t.untyped_storage().data_ptr()
    if ptr in seen:
        return 0
    seen.add(ptr)
    return t.untyped_storage().nbytes()


def resident_bytes(model: torch.nn.Module) -> int:
    """Bytes the model's weights take in memory: parameters and buffers, tied or shared storages once, and
    torch.ao's int8 modules, which keep their weights packed outside the parameters."""
    seen: set[int] = set()
    total = 0
    for module in model.modules():
        for t in (*module.parameters(recurse=False), *module.buffers(recurse=False)):
            total += _tensor_bytes(t, seen)
        if getattr(module, "_packed_params", None) is not None and callable(getattr(module, "weight", None)):
            total += _tensor_bytes(module.weight(), seen)
            bias = module.bias() if callable(getattr(module, "bias", None)) else None
            if bias is not None:
                total += _tensor_bytes(bias, seen)
    return total


class TensorPeak(TorchDispatchMode):
    """The peak of bytes held by tensors that ops allocate while the mode is on (CPU has no allocator peak
    counter). Every op's outputs are recorded by storage; a storage counts until its last reference dies.
    What kernels allocate and free inside one op (oneDNN scratch space) and allocator slack are not seen."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[StorageWeakRef, int] = {}
        self.current = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for ref in [r for r in self.live if r.expired()]:
            self.current -= self.live.pop(ref)
        # a view or in-place result shares an input's storage (a transposed weight, say): nothing new
        inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs))
                  if type(t) in (torch.Tensor, torch.nn.Parameter)}
        for t in tree_leaves(out):
            # plain tensors only: a torchao subclass output is a view of weights already counted
            if type(t) is torch.Tensor and t.untyped_storage().data_ptr() not in inputs:
                ref = StorageWeakRef(t.untyped_storage())
                if ref not in self.live:
                    self.live[ref] = t.untyped_storage().nbytes()
                    self.current += self.live[ref]
        self.peak = max(self.peak, self.current)
        return out


@torch.no_grad()
def latency(candidate: Candidate, workload: dict[int, list[Inputs]], settings: Settings, throughput_batch: int,
            reference: tuple[Candidate, dict[int, list[Inputs]]] | None = None) -> dict:
    """Latency at every batch size of `workload` (see latency.py: interleaved with the reference, the teacher,
    when given; windows; noise flags; threads pinned), the legacy batch-1 and throughput fields, and the peak
    memory of inference at the throughput batch (weights plus activations, see below)."""
    model, device = candidate.model, candidate.device
    model.eval()
    if reference is not None:
        reference[0].model.eval()
    if 1 not in workload or throughput_batch not in workload:
        raise ValueError(f"the workload must include batch 1 and the throughput batch {throughput_batch}")
    rows = []
    with pinned_threads(settings.threads) as threads:
        for size, inputs in sorted(workload.items()):
            ref_call = None if reference is None else model_caller(reference[0].model, reference[0].device,
                                                                   reference[1][size])
            rows.append(measure_batch(model_caller(model, device, inputs), ref_call, len(inputs), size, settings))
        call = model_caller(model, device, workload[throughput_batch])
        # Peak memory of inference at the larger batch = the candidate's weights in memory + the activation
        # peak above them. On CUDA the activation peak is the allocator's high-water mark over one call minus
        # what was allocated before; not the absolute mark, which would also count whatever else is resident
        # on the GPU (the teacher, a previous candidate). CPU has no such counter and RSS is blind to anything
        # below the allocator's cached pages (tiny models read 0), so one extra, untimed call runs under
        # TensorPeak, which counts the bytes of every tensor the ops allocate while they are alive.
        weights = resident_bytes(model)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            call(0)
            activations = torch.cuda.max_memory_allocated(device) - base
        else:
            with TensorPeak() as tracker:
                call(0)
            activations = tracker.peak
    one = next(r for r in rows if r["batch"] == 1)
    big = next(r for r in rows if r["batch"] == throughput_batch)
    reasons = [f"batch {r['batch']}: {why}" for r in rows for why in r["reasons"]]
    return {
        "device": str(device),
        "batch1_p50_ms": one["p50_ms"],
        "batch1_p95_ms": one["p95_ms"],
        "throughput_batch": throughput_batch,
        "throughput_per_s": big["throughput_per_s"],
        "peak_memory_bytes": weights + activations,
        "peak_memory_kind": "weights+cuda_allocator" if device.type == "cuda" else "weights+cpu_tensors",
        "weights_memory_bytes": weights,
        "activation_peak_bytes": activations,
        "threads": threads,
        "runs": settings.runs,
        "windows": settings.windows,
        "noise_threshold": settings.noise_threshold,
        "noisy": bool(reasons),
        "noisy_reasons": reasons,
        "reference": None if reference is None else "teacher",
        "reference_device": None if reference is None else str(reference[0].device),
        "speedup": one.get("speedup"),
        "speedup_interval": one.get("speedup_interval"),
        "batches": rows,
        "hardware": describe(device),
    }


def dir_size(path: Path) -> dict:
    files = [p for p in path.rglob("*") if p.is_file()]
    weights = [p for p in files if p.suffix in (".safetensors", ".pt", ".bin")]
    return {
        "size_bytes": sum(p.stat().st_size for p in files),
        "weights_bytes": sum(p.stat().st_size for p in weights),
    }
