"""Speed, memory and size measurements of a candidate, on the device it runs on."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

from .candidate import Candidate


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_peak_reset() -> bool:
    """Reset the process's peak-RSS counter (Linux: writing 5 to clear_refs), so VmHWM measures one call."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _proc_status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


@torch.no_grad()
def latency(candidate: Candidate, inputs: list[dict[str, torch.Tensor]], batch: dict[str, torch.Tensor],
            runs: int, warmup: int) -> dict:
    """p50/p95 at batch 1 over `runs` requests (cycling through real eval texts), throughput at a larger
    batch, and the peak memory of the larger batch (CUDA allocator peak, or RSS growth on CPU)."""
    model, device = candidate.model, candidate.device
    model.eval()

    def call(x: dict[str, torch.Tensor]) -> None:
        model(**{k: v.to(device) for k, v in x.items()})

    for i in range(warmup):
        call(inputs[i % len(inputs)])
    _sync(device)
    times = []
    for i in range(runs):
        t0 = time.perf_counter()
        call(inputs[i % len(inputs)])
        _sync(device)
        times.append(time.perf_counter() - t0)
    times.sort()
    p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]

    n = batch["input_ids"].shape[0]
    call(batch)  # warm the larger shape
    peak: int | None = None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        base_kb = _proc_status_kb("VmRSS") if _rss_peak_reset() else None
    reps = max(2, min(10, runs // 4))
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        call(batch)
    _sync(device)
    elapsed = time.perf_counter() - t0
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) - base
    elif base_kb is not None and (hwm := _proc_status_kb("VmHWM")) is not None:
        peak = max(0, hwm - base_kb) * 1024
    return {
        "device": str(device),
        "batch1_p50_ms": round(statistics.median(times) * 1000, 3),
        "batch1_p95_ms": round(p95 * 1000, 3),
        "throughput_batch": n,
        "throughput_per_s": round(n * reps / elapsed, 2),
        "peak_memory_bytes": peak,
        "peak_memory_kind": "cuda_allocated" if device.type == "cuda" else "rss_growth",
        "threads": torch.get_num_threads(),
        "runs": runs,
    }


def dir_size(path: Path) -> dict:
    files = [p for p in path.rglob("*") if p.is_file()]
    weights = [p for p in files if p.suffix in (".safetensors", ".pt", ".bin")]
    return {
        "size_bytes": sum(p.stat().st_size for p in files),
        "weights_bytes": sum(p.stat().st_size for p in weights),
    }
