"""Latency figures people can trust on a shared machine.

- The candidate and its reference (the teacher) run interleaved, call by call (A B A B ...), on the same
  inputs, so whatever else the machine does slows both alike and a speed-up is a ratio from one window.
- The interleaved run is repeated in `windows` windows. The spread of the per-window medians says whether the
  machine was steady over the measurement; the jitter (IQR / median of the repeated calls of one input)
  says whether single calls were steady. Either above the threshold flags the figure noisy, with the reason.
- The speed-up is the median over windows of reference median / candidate median; its interval is the
  lowest and highest per-window ratio (with k windows it covers the true median ratio with probability
  1 - 2^(1-k): 94 % for 5).
- The thread count is pinned for the measurement and restored after.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

Inputs = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Settings:
    runs: int = 20  # timed calls per model per window at batch 1 (larger batches: an eighth, at least 3)
    warmup: int = 3
    windows: int = 5
    threads: int | None = 1  # None: leave torch's setting as it is
    noise_threshold: float = 0.10

    @classmethod
    def from_config(cls, cfg) -> Settings:
        """From an EvaluateConfig (duck-typed: the search's probes pass the same config)."""
        return cls(runs=cfg.latency_runs, warmup=cfg.warmup_runs, windows=getattr(cfg, "windows", 5),
                   threads=getattr(cfg, "threads", 1), noise_threshold=getattr(cfg, "noise_threshold", 0.10))

    def runs_at(self, batch: int) -> int:
        # a batch of 32 costs about as much as 30 single calls: fewer repeats keep a window short; at least 3
        # per window, so with the default 5 windows each input is timed 15 times (jitter needs 4)
        return self.runs if batch == 1 else max(3, self.runs // 8)


@contextlib.contextmanager
def pinned_threads(threads: int | None) -> Iterator[int]:
    """torch's intra-op thread count set to `threads` inside, restored after (even on an error)."""
    before = torch.get_num_threads()
    if threads is not None and threads != before:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


@dataclass
class Samples:
    """One model's timed calls: (window, input index, wall seconds, CPU seconds) per call."""

    calls: list[tuple[int, int, float, float]] = field(default_factory=list)

    def wall(self) -> list[float]:
        return [c[2] for c in self.calls]

    def window_medians(self) -> list[float]:
        windows = sorted({c[0] for c in self.calls})
        return [statistics.median(c[2] for c in self.calls if c[0] == w) for w in windows]


def model_caller(model: torch.nn.Module, device: torch.device, inputs: list[Inputs]) -> Callable[[int], None]:
    """call(i) runs the model on inputs[i] (moved to the device beforehand, so the copy is not timed)."""
    placed = [{k: v.to(device) for k, v in x.items()} for x in inputs]

    def call(i: int) -> None:
        model(**placed[i])
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return call


@torch.no_grad()
def interleave(calls: list[Callable[[int], None]], n_inputs: int, runs: int, windows: int,
               warmup: int) -> list[Samples]:
    """Every window: for each of `runs` inputs, each caller in turn (A B A B ...). Warm-up calls are not timed."""
    for call in calls:
        for i in range(warmup):
            call(i % n_inputs)
    samples = [Samples() for _ in calls]
    for w in range(windows):
        for r in range(runs):
            j = (w * runs + r) % n_inputs
            for call, s in zip(calls, samples, strict=True):
                c0, t0 = time.process_time(), time.perf_counter()
                call(j)
                s.calls.append((w, j, time.perf_counter() - t0, time.process_time() - c0))
    return samples


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def jitter(s: Samples) -> float | None:
    """Median over inputs of IQR / median of that input's repeated calls (inputs differ in length, so their
    times are not pooled); None when no input was called at least 4 times."""
    per_input: dict[int, list[float]] = {}
    for _, j, t, _ in s.calls:
        per_input.setdefault(j, []).append(t)
    ratios = []
    for times in per_input.values():
        if len(times) >= 4:
            q1, _, q3 = statistics.quantiles(times, n=4)
            ratios.append((q3 - q1) / statistics.median(times))
    return statistics.median(ratios) if ratios else None


def summary(s: Samples, batch: int, threshold: float) -> dict:
    """p50, p95, throughput, the run-to-run spread, the jitter and the CPU share, and why it is noisy, if so."""
    wall = s.wall()
    medians = s.window_medians()
    p50 = statistics.median(wall)
    spread = (max(medians) - min(medians)) / statistics.median(medians) if len(medians) > 1 else None
    jit = jitter(s)
    busy = sum(c[3] for c in s.calls)
    reasons = []
    if spread is not None and spread > threshold:
        reasons.append(f"run-to-run spread {spread:.0%} > {threshold:.0%}")
    if jit is not None and jit > threshold:
        reasons.append(f"call-to-call jitter {jit:.0%} > {threshold:.0%}")
    return {
        "batch": batch, "p50_ms": round(p50 * 1000, 3), "p95_ms": round(percentile(wall, 0.95) * 1000, 3),
        "throughput_per_s": round(batch / p50, 2), "spread": _r(spread), "jitter": _r(jit),
        # CPU time / wall time: well under 1 at one thread means the process waited for a core (contention);
        # evidence for a reader, not a flag (a GPU model, or one that sleeps, also reads low)
        "cpu_share": _r(busy / sum(wall)) if sum(wall) > 0 else None,
        "calls": len(wall), "noisy": bool(reasons), "reasons": reasons,
    }


def speedup(reference: Samples, candidate: Samples) -> tuple[float, list[float]]:
    """reference / candidate, window by window (each ratio from calls made side by side): the median of the
    per-window ratios, and their lowest and highest."""
    per_window = [r / c for r, c in zip(reference.window_medians(), candidate.window_medians(), strict=True)]
    return statistics.median(per_window), [min(per_window), max(per_window)]


def measure_batch(candidate: Callable[[int], None], reference: Callable[[int], None] | None, n_inputs: int,
                  batch: int, settings: Settings) -> dict:
    """One batch size: the candidate's figures, and with a reference, the reference's and the speed-up."""
    calls = [candidate] if reference is None else [reference, candidate]
    samples = interleave(calls, n_inputs, settings.runs_at(batch), settings.windows, settings.warmup)
    row = summary(samples[-1], batch, settings.noise_threshold)
    if reference is None:
        return row
    ref = summary(samples[0], batch, settings.noise_threshold)
    ratio, interval = speedup(samples[0], samples[1])
    width = (interval[1] - interval[0]) / ratio
    reasons = row["reasons"] + [f"teacher: {r}" for r in ref["reasons"]]
    if width > settings.noise_threshold and settings.windows > 1:
        reasons.append(f"speed-up interval {width:.0%} of the speed-up > {settings.noise_threshold:.0%}")
    row.update({"teacher_p50_ms": ref["p50_ms"], "teacher_p95_ms": ref["p95_ms"], "teacher_spread": ref["spread"],
                "teacher_jitter": ref["jitter"], "speedup": round(ratio, 4),
                "speedup_interval": [round(v, 4) for v in interval], "noisy": bool(reasons), "reasons": reasons})
    return row


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def workload(tokenizer, texts: list[str], max_length: int, sizes: list[int]) -> dict[int, list[Inputs]]:
    """The inputs timed at each batch size: batch 1 cycles through up to 16 real texts, one at a time; a larger
    batch is one padded batch of that many texts (repeated when there are fewer)."""
    keep = ("input_ids", "attention_mask")

    def encode(chunk: list[str]) -> Inputs:
        enc = tokenizer(chunk, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        return {k: enc[k] for k in keep if k in enc}

    out: dict[int, list[Inputs]] = {}
    for size in sorted(set(sizes)):
        out[size] = [encode([t]) for t in texts[:16]] if size == 1 else \
            [encode([texts[i % len(texts)] for i in range(size)])]
    return out
