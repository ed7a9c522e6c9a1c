"""What a latency figure was measured on: the CPU model and its matrix instructions, or the GPU's name.

Matrix instructions decide how fast int8 and bf16 run on a CPU (VNNI for int8 dot products, AMX tiles for
int8/bf16 matrices), so a figure without them cannot be compared with one from another machine.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch

# /proc/cpuinfo flag -> the name people know; both spellings of VNNI occur (kernel and tool lists differ)
MATRIX_FLAGS = {
    "avx512_vnni": "AVX512-VNNI", "avx512vnni": "AVX512-VNNI", "avx_vnni": "AVX-VNNI",
    "avx512_bf16": "AVX512-BF16", "amx_tile": "AMX-TILE", "amx_int8": "AMX-INT8", "amx_bf16": "AMX-BF16",
    "amx_fp16": "AMX-FP16",
}


def parse_cpuinfo(text: str) -> dict:
    """The CPU model, its matrix instructions (in a stable order) and the number of logical CPUs listed."""
    model, flags, logical = None, set(), 0
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "processor":
            logical += 1
        elif key == "model name" and model is None:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:  # x86 says flags, arm64 Features
            flags = set(value.split())
    matrix = sorted({name for flag, name in MATRIX_FLAGS.items() if flag in flags})
    return {"cpu_model": model, "matrix": matrix, "logical_cpus": logical or None}


@functools.cache
def _cpu() -> dict:
    path = Path("/proc/cpuinfo")
    info = parse_cpuinfo(path.read_text(encoding="utf-8", errors="replace")) if path.is_file() else \
        {"cpu_model": None, "matrix": [], "logical_cpus": None}
    info["logical_cpus"] = info["logical_cpus"] or os.cpu_count()
    return info


def describe(device: torch.device) -> dict:
    """The hardware a measurement on `device` ran on (the CPU always: it feeds the GPU and runs the tokenizer)."""
    info = dict(_cpu())
    info["gpu"] = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return info
