"""Latency you can trust: behaviour, not timings (the machines are noisy). Sleeping models stand in for real
ones: a sleep's length does not depend on how busy the CPU is, so the assertions hold on a loaded machine."""

from __future__ import annotations

import random
import time

import pytest
import torch
from torch import nn

from worker.engine.candidate import Candidate
from worker.engine.hardware import describe, parse_cpuinfo
from worker.engine.latency import Settings, interleave, measure_batch, pinned_threads
from worker.engine.measure import latency
from worker.engine.tasks import get_task

IDS = {"input_ids": torch.ones(1, 4, dtype=torch.long), "attention_mask": torch.ones(1, 4, dtype=torch.long)}


class Sleeper(nn.Module):
    """forward sleeps `seconds` (a callable: a random length for a noisy model) and logs its calls."""

    def __init__(self, name: str, seconds, log: list | None = None) -> None:
        super().__init__()
        self.name, self.seconds, self.log = name, seconds, log
        self.lin = nn.Linear(2, 2)

    def forward(self, input_ids, attention_mask=None):
        if self.log is not None:
            self.log.append(self.name)
        time.sleep(self.seconds() if callable(self.seconds) else self.seconds)
        return input_ids


def _caller(model: nn.Module):
    return lambda i: model(**IDS)


def test_teacher_and_candidate_alternate_call_by_call():
    log: list[str] = []
    teacher, student = Sleeper("A", 0, log), Sleeper("B", 0, log)
    interleave([_caller(teacher), _caller(student)], n_inputs=3, runs=4, windows=2, warmup=1)
    assert log[:2] == ["A", "B"]  # warm-up: each once, not timed
    assert log[2:] == ["A", "B"] * 8  # 2 windows x 4 runs, ABAB


def test_a_jittery_candidate_is_flagged_noisy_and_a_steady_one_is_not():
    rng = random.Random(0)
    settings = Settings(runs=10, warmup=1, windows=4, noise_threshold=0.10)
    steady = measure_batch(_caller(Sleeper("s", 0.02)), None, 1, 1, settings)
    noisy = measure_batch(_caller(Sleeper("n", lambda: rng.uniform(0, 0.02))), None, 1, 1, settings)
    assert noisy["noisy"] and any("jitter" in r or "spread" in r for r in noisy["reasons"])
    assert not steady["noisy"], steady["reasons"]
    assert steady["reasons"] == [] and steady["calls"] == 40


def test_speedup_is_the_ratio_from_one_window():
    settings = Settings(runs=6, warmup=1, windows=3)
    row = measure_batch(_caller(Sleeper("slow", 0.02)), _caller(Sleeper("teacher", 0.01)), 1, 1, settings)
    assert 0.35 < row["speedup"] < 0.65  # the candidate takes twice as long: half as fast
    lo, hi = row["speedup_interval"]
    assert lo <= row["speedup"] <= hi
    assert row["teacher_p50_ms"] < row["p50_ms"]


def test_threads_are_pinned_while_timing_and_restored_after():
    before = torch.get_num_threads()
    target = 1 if before != 1 else 2
    seen: list[int] = []

    class Spy(Sleeper):
        def forward(self, input_ids, attention_mask=None):
            seen.append(torch.get_num_threads())
            return input_ids

    model = Spy("spy", 0)
    lat = latency(Candidate(model, None, get_task("feature-extraction")), {1: [IDS]},
                  Settings(runs=2, warmup=0, windows=1, threads=target), 1)
    assert set(seen) == {target} and lat["threads"] == target
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), pinned_threads(target):
        raise RuntimeError("a failing measurement still restores the count")
    assert torch.get_num_threads() == before


SAMPLE = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8
"""


def test_cpu_model_and_matrix_instructions_come_from_cpuinfo():
    info = parse_cpuinfo(SAMPLE)
    assert info == {"cpu_model": "Intel(R) Xeon(R) Platinum 8480+", "logical_cpus": 2,
                    "matrix": ["AMX-BF16", "AMX-INT8", "AMX-TILE", "AVX512-BF16", "AVX512-VNNI"]}
    plain = parse_cpuinfo("processor : 0\nmodel name : AMD EPYC\nflags : fpu sse avx2\n")
    assert plain["matrix"] == [] and plain["cpu_model"] == "AMD EPYC"
    assert describe(torch.device("cpu"))["gpu"] is None


def test_every_batch_size_is_reported_and_legacy_fields_stay():
    teacher = Candidate(Sleeper("t", 0.002), None, get_task("feature-extraction"))
    student = Candidate(Sleeper("s", 0.001), None, get_task("feature-extraction"))
    batch = {k: v.repeat(4, 1) for k, v in IDS.items()}
    work = {1: [IDS], 4: [batch], 8: [batch]}
    lat = latency(student, work, Settings(runs=4, warmup=0, windows=2), 4, reference=(teacher, work))
    assert [r["batch"] for r in lat["batches"]] == [1, 4, 8]
    assert lat["throughput_batch"] == 4 and lat["batch1_p50_ms"] == lat["batches"][0]["p50_ms"]
    assert lat["reference"] == "teacher" and lat["speedup"] == lat["batches"][0]["speedup"]
    assert all(r["speedup"] is not None for r in lat["batches"])
    from worker.engine.report import Latency

    Latency.model_validate(lat)  # the typed report accepts it
